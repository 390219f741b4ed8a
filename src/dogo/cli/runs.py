"""``dogo evaluate``, ``report``, ``export``, ``embed`` and ``clean``: what is done with trained runs."""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path

from dogo.core.errors import DogoError
from dogo.guards.arguments import count, device, settings

EPILOG_EVALUATE = """\
examples:
  dogo evaluate runs/quickstart/dogo                  # weighted kNN (--protocol knn), every peer
  dogo evaluate runs/quickstart/dogo --peer student --protocol linear epochs=20
  dogo evaluate runs/quickstart/dogo --peer all --protocol fewshot fractions=[0.01,0.1] --json
  dogo evaluate runs/try --protocol transfer dataset=digits
  dogo evaluate runs/try --protocol knn --at 0        # the untrained weights, kept by train.keep_at=[0]

Settings of each protocol (key=value) are validated; results land in RUN_DIR/eval/ as JSON.
"""

EPILOG_EXPORT = """\
examples:
  dogo export runs/quickstart/dogo --peer student --format safetensors --out student.safetensors  # + student.py
  dogo export runs/try --peer 1 --checkpoint last --format torchscript --out peer1.ts
  dogo export runs/try --format onnx --out encoder.onnx          # needs pip install 'dogo[onnx]'
  dogo export runs/try --peer 0 --at 0 --format safetensors --out untrained.safetensors  # the kept initialisation

Only the encoder is written (no heads, optimiser or other peers), with a sidecar FILE.json:
architecture, width, image size, normalisation, feature size, source checkpoint and its sha256.
Load without dogo: safetensors also writes the backbone's code beside the weights (student.py:
load("student.safetensors") -> nn.Module, preprocess(images); torch only), torch.jit.load(FILE), or
onnxruntime.InferenceSession(FILE) (input "images", output "features").
"""

EPILOG_EMBED = """\
examples:
  dogo embed runs/quickstart/dogo --peer student --data digits --split test --out digits-test.npy
  dogo embed runs/try --data photos/ --out photos.safetensors     # every image file under photos/
  dogo embed runs/try --data cifar10 --root ~/data/cifar10 --split train --out train.safetensors
  dogo embed runs/try --at 0 --data digits --split test --out untrained.npy   # the weights kept at step 0

Features (N x feature_dim, float32) use exactly the evaluation-time preprocessing of the run.
.safetensors files also hold the labels of a labelled dataset; the sidecar FILE.json lists the
encoder, the data and, for a folder, the file of each row in order.
"""


def add_checkpoint_choice(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint NAME`` or ``--at STEP`` (the weights kept at a step, ``train.keep_at``)."""
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--checkpoint", help="last (default), epoch-N, step-N, or a .pt path")
    which.add_argument(
        "--at",
        type=count(0),
        metavar="STEP",
        help="the weights kept at training step STEP "
        "(train.keep_at; 0 is the initialisation); the same as --checkpoint step-STEP",
    )


def chosen_checkpoint(args: argparse.Namespace) -> str:
    from dogo.runs.layout import step_name

    if args.at is None:
        return args.checkpoint or "last"
    if args.at < 0:
        raise DogoError(f"--at {args.at}: a step is >= 0; give 0 or more")
    return step_name(args.at)


def _protocol_help() -> str:
    """Every protocol's settings with their defaults, for `dogo evaluate --help`."""
    from dogo.evaluate import PROTOCOL_SETTINGS

    lines = ["\nprotocol settings (defaults):"]
    for name, model in sorted(PROTOCOL_SETTINGS.items()):
        fields = ", ".join(
            f"{key}={'<required>' if field.is_required() else field.get_default(call_default_factory=True)}"
            for key, field in model.model_fields.items()
        )
        lines.append(textwrap.fill(f"{name}: {fields}", 100, initial_indent="  ", subsequent_indent="      "))
    return "\n".join(lines)


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    """Add ``dogo evaluate`` to the CLI's sub-parsers."""
    from dogo.evaluate import PROTOCOLS

    e = sub.add_parser(
        "evaluate",
        help="score a trained peer's frozen encoder with a protocol",
        description="Score the frozen encoder of a run's peer(s) with an evaluation protocol.",
        epilog=EPILOG_EVALUATE + _protocol_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("settings", nargs="*", metavar="key=value", help="protocol settings, e.g. epochs=20 k=50")
    e.add_argument(
        "--protocol",
        default="knn",
        choices=PROTOCOLS.names(),
        help="the evaluation protocol (default knn: quick, no training)",
    )
    e.add_argument("--peer", default="all", help="peer index or name (e.g. student), or 'all' (default)")
    add_checkpoint_choice(e)
    e.add_argument("--json", action="store_true", help="print the results as JSON")
    e.set_defaults(func=cmd_evaluate, door=check_evaluate)


def check_evaluate(args: argparse.Namespace) -> None:
    """The protocol settings, validated at the door by the protocol's own settings model (the one the run's
    evaluation validates them with again): a bad value costs nothing, and RUN_DIR is not read."""
    from functools import partial

    from dogo.config import parse_override
    from dogo.evaluate import parse_settings

    settings(parse_override, partial(parse_settings, args.protocol))(args.settings)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from dogo.evaluate.runner import evaluate_run, format_table

    results = evaluate_run(
        Path(args.run_dir), args.protocol, args.settings, peer=args.peer, checkpoint=chosen_checkpoint(args)
    )
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(format_table(results))
    return 0


def add_report(sub: argparse._SubParsersAction) -> None:
    """Add ``dogo report`` to the CLI's sub-parsers."""
    r = sub.add_parser(
        "report",
        help="write report.md and plots for one or more runs",
        description="Tables (one row per run and peer) and PNG plots from runs' metrics and evaluations.",
        epilog="examples:\n  dogo report runs/quickstart/simclr runs/quickstart/dogo --out reports/quickstart\n"
        "  dogo report runs/study-fashion-mnist --out docs/RESULTS.md   # a study: paired differences",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories, or one study directory")
    r.add_argument(
        "--out",
        default=None,
        help="output folder (default: the first run's report/); for a study, "
        "a folder or a .md file (default STUDY_DIR/report/report.md)",
    )
    r.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from dogo.report import write_report
    from dogo.study import is_study_dir

    if len(args.run_dirs) == 1 and is_study_dir(args.run_dirs[0]):
        from dogo.study.report import write_study_report

        study_dir = Path(args.run_dirs[0])
        out = Path(args.out) if args.out else study_dir / "report" / "report.md"
        if out.suffix != ".md":
            out = out / "report.md"
        print(f"wrote {write_study_report(study_dir, out)}")
        return 0
    from dogo.runs.layout import RunDir

    for run_dir in args.run_dirs:
        if not RunDir(run_dir).is_run():
            raise DogoError(
                f"{run_dir}: not a run directory (no config.yaml) nor a study directory (no study.yaml); "
                "give a folder that `dogo pretrain` or `dogo study` made"
            )

    out = Path(args.out) if args.out else Path(args.run_dirs[0]) / "report"
    path = write_report([Path(p) for p in args.run_dirs], out)
    print(f"wrote {path}")
    return 0


def add_export(sub: argparse._SubParsersAction) -> None:
    """Add ``dogo export`` to the CLI's sub-parsers."""
    x = sub.add_parser(
        "export",
        help="write one peer's encoder as safetensors, TorchScript or ONNX",
        description="Export the encoder of one peer (no heads, optimiser or other peers) with a "
        "sidecar JSON, loadable without dogo.",
        epilog=EPILOG_EXPORT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    x.add_argument("run_dir", metavar="RUN_DIR")
    x.add_argument("--peer", default="0", help="peer index or name (default 0)")
    add_checkpoint_choice(x)
    x.add_argument("--format", required=True, choices=("safetensors", "torchscript", "onnx"))
    x.add_argument("--out", required=True, metavar="FILE", help="the file to write (its sidecar: FILE.json)")
    x.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from dogo.runs.export import export_encoder

    out, sidecar = export_encoder(
        args.run_dir, args.out, args.format, peer=args.peer, checkpoint=chosen_checkpoint(args)
    )
    if args.format == "safetensors":
        from dogo.runs.export_code import code_path

        print(f'wrote {out}, {sidecar} and {code_path(out)} (load("{out.name}") -> the encoder, torch only)')
    else:
        print(f"wrote {out} and {sidecar}")
    return 0


def add_embed(sub: argparse._SubParsersAction) -> None:
    """Add ``dogo embed`` to the CLI's sub-parsers."""
    from dogo.config.training import TrainConfig

    m = sub.add_parser(
        "embed",
        help="features of every image of a dataset or folder, as .npy or .safetensors",
        description="Run one peer's encoder over every image of a dataset or a folder of images "
        "with the run's evaluation-time preprocessing and save the features.",
        epilog=EPILOG_EMBED,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    m.add_argument("run_dir", metavar="RUN_DIR")
    m.add_argument("--data", required=True, metavar="DATASET_OR_FOLDER", help="a dataset name or a folder of images")
    m.add_argument("--split", default="train", help="dataset split (default train; ignored for a folder)")
    m.add_argument("--root", help="where the dataset is (default: dogo's usual search)")
    m.add_argument("--peer", default="0", help="peer index or name (default 0)")
    add_checkpoint_choice(m)
    m.add_argument("--batch-size", type=count(1), default=256)
    m.add_argument("--device", type=device(TrainConfig), default="cpu", help="cpu (default), cuda, cuda:N")
    m.add_argument("--out", required=True, metavar="FILE", help="FILE.npy or FILE.safetensors")
    m.set_defaults(func=cmd_embed)


def cmd_embed(args: argparse.Namespace) -> int:
    from dogo.runs.embed import embed

    out, sidecar, rows = embed(
        args.run_dir,
        args.data,
        args.out,
        peer=args.peer,
        checkpoint=chosen_checkpoint(args),
        split=args.split,
        root=args.root,
        batch_size=args.batch_size,
        device=args.device,
    )
    print(f"wrote {out} ({rows} rows) and {sidecar}")
    return 0


def add_clean(sub: argparse._SubParsersAction) -> None:
    """Add ``dogo clean`` to the CLI's sub-parsers."""
    c = sub.add_parser(
        "clean",
        help="free a run's disk space: its feature cache and all checkpoints but last.pt",
        description="Remove a run's feature cache (RUN_DIR/cache) and/or its checkpoints except "
        "checkpoints/last.pt, which evaluation, export and resume need. Without --cache or "
        "--checkpoints, both.",
        epilog="examples:\n  dogo clean runs/try                  # cache and old checkpoints\n"
        "  dogo clean runs/try --cache          # only the feature cache (recomputed on demand)\n"
        "  dogo clean runs/quickstart/* --checkpoints   # epoch-N.pt and last.prev.pt of both runs",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    c.add_argument("--cache", action="store_true", help="remove RUN_DIR/cache")
    c.add_argument("--checkpoints", action="store_true", help="remove epoch-N.pt and last.prev.pt (last.pt stays)")
    c.set_defaults(func=cmd_clean)


def cmd_clean(args: argparse.Namespace) -> int:
    from dogo.runs.disk import clean_run
    from dogo.runs.rundir import check_run_dir

    both = not (args.cache or args.checkpoints)
    for run_dir in args.run_dirs:
        check_run_dir(run_dir)
    for run_dir in args.run_dirs:
        freed, removed = clean_run(run_dir, cache=both or args.cache, checkpoints=both or args.checkpoints)
        print(f"{run_dir}: removed {len(removed)} item(s), freed {freed / 1e6:.1f} MB")
    return 0
