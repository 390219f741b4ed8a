"""The ``dogo`` command line: pretrain, evaluate, report, datasets, prepare, quickstart.

Every user error (bad config key, missing dataset, damaged checkpoint...) ends as one line on
stderr and exit status 2, without a traceback; see :mod:`dogo.errors`. :func:`main` is the one
outer handler: a :class:`~dogo.errors.DogoError` or any ``OSError`` (the path and the reason)
is that line; any other exception is a bug, reported as one line with exit status 1 and its
traceback shown only with ``--debug``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import textwrap
import traceback
import warnings
from pathlib import Path

from dogo import __version__
from dogo.errors import DogoError

EPILOG_PRETRAIN = """\
examples:
  dogo pretrain configs/fmnist-dogo.yaml
  dogo pretrain quickstart                                         # a packaged config by name (`dogo configs`)
  dogo pretrain configs/fmnist-dogo.yaml train.epochs=3 train.models.0.width=0.5 --out runs/try
  dogo pretrain --config-file reference/config/template.yaml     # the reference's own files load too
  dogo pretrain --resume runs/try                                  # continue from checkpoints/last.pt
  dogo pretrain --resume runs/try train.epochs=200                 # ... and train longer
  torchrun --nproc_per_node 8 -m dogo pretrain configs/cifar10-dogo.yaml --out runs/ddp   # 8 GPUs
  torchrun --nproc_per_node 8 -m dogo pretrain --resume runs/ddp                           # resume it

A config with one entry under train.models is the single-model SSL baseline; two or more make
a DoGo cohort. Overrides are dotted keys with YAML values; unknown keys are errors.
Under torchrun, train.batch_size is the global batch (divided among the processes); only rank 0
writes the run directory. See the README's "Multi-GPU and multi-node" section.
"""

EPILOG_EVALUATE = """\
examples:
  dogo evaluate runs/try --protocol knn
  dogo evaluate runs/try --peer 0 --protocol linear epochs=20
  dogo evaluate runs/try --peer all --protocol fewshot fractions=[0.01,0.1] --json
  dogo evaluate runs/try --protocol transfer dataset=digits

Settings of each protocol (key=value) are validated; results land in RUN_DIR/eval/ as JSON.
"""


EPILOG_STUDY = """\
examples:
  dogo study studies/fashion-mnist.yaml                       # everything, then runs/study-fashion-mnist/report/
  dogo study studies/fashion-mnist.yaml --only student-alone --only dogo
  dogo study studies/fashion-mnist.yaml --publish docs/results/fashion-mnist
  dogo report runs/study-fashion-mnist --out docs/RESULTS.md   # the report again, from the result files

Each run trains and is evaluated in processes of its own; stopping the study (Ctrl-C, SIGTERM,
a killed shell) loses at most the step in flight. Editing an arm that has runs is refused,
naming it, unless --rerun ARM. With --publish DIR, finished runs published there and missing
here (a fresh clone) are copied back instead of trained again.
"""


EPILOG_EXPORT = """\
examples:
  dogo export runs/quickstart/dogo --peer student --format safetensors --out student.safetensors
  dogo export runs/try --peer 1 --checkpoint epoch-20 --format torchscript --out peer1.ts
  dogo export runs/try --format onnx --out encoder.onnx          # needs pip install 'dogo[onnx]'

Only the encoder is written (no heads, optimiser or other peers), with a sidecar FILE.json:
architecture, width, image size, normalisation, feature size, source checkpoint and its sha256.
Load without dogo: safetensors.torch.load_file(FILE) into a backbone of that architecture,
torch.jit.load(FILE), or onnxruntime.InferenceSession(FILE) (input "images", output "features").
"""

EPILOG_EMBED = """\
examples:
  dogo embed runs/quickstart/dogo --peer student --data digits --split test --out digits-test.npy
  dogo embed runs/try --data photos/ --out photos.safetensors     # every image file under photos/
  dogo embed runs/try --data cifar10 --root ~/data/cifar10 --split train --out train.safetensors

Features (N x feature_dim, float32) use exactly the evaluation-time preprocessing of the run.
.safetensors files also hold the labels of a labelled dataset; the sidecar FILE.json lists the
encoder, the data and, for a folder, the file of each row in order.
"""


def _protocol_help() -> str:
    """Every protocol's settings with their defaults, for `dogo evaluate --help`."""
    from dogo.evaluate import PROTOCOL_SETTINGS

    lines = ["\nprotocol settings (defaults):"]
    for name, settings in sorted(PROTOCOL_SETTINGS.items()):
        fields = ", ".join(
            f"{key}={'<required>' if field.is_required() else field.get_default(call_default_factory=True)}"
            for key, field in settings.model_fields.items()
        )
        lines.append(textwrap.fill(f"{name}: {fields}", 100, initial_indent="  ", subsequent_indent="      "))
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    from dogo.bench import add_bench_parser
    from dogo.evaluate import PROTOCOLS

    parser = argparse.ArgumentParser(
        prog="dogo",
        description="Self-supervised pretraining of small vision models with online mutual "
        "distillation (Distill-on-the-Go), and the evaluation suite that measures what it bought.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="run `dogo COMMAND --help` for the options and examples of each command",
    )
    parser.add_argument("--version", action="version", version=f"dogo {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error "
                        "(accepted anywhere on the line; also DOGO_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("pretrain", help="pretrain a model or a DoGo cohort from a YAML config",
                       description="Pretrain one model (SimCLR or SimSiam) or a DoGo cohort of peers.",
                       epilog=EPILOG_PRETRAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", help="YAML config (dogo's schema or the reference's)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.epochs=3")
    p.add_argument("--config-file", dest="config_file", help="the same as CONFIG (the reference's train.py flag)")
    p.add_argument("--out", help="run directory (default runs/<config-name>-<timestamp>); must not exist")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its last checkpoint")
    p.set_defaults(func=cmd_pretrain)

    e = sub.add_parser("evaluate", help="score a trained peer's frozen encoder with a protocol",
                       description="Score the frozen encoder of a run's peer(s) with an evaluation protocol.",
                       epilog=EPILOG_EVALUATE + _protocol_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("settings", nargs="*", metavar="key=value", help="protocol settings, e.g. epochs=20 k=50")
    e.add_argument("--protocol", required=True, choices=PROTOCOLS.names())
    e.add_argument("--peer", default="all", help="peer index or name (e.g. student), or 'all' (default)")
    e.add_argument("--checkpoint", default="last", help="last (default), epoch-N, or a .pt path")
    e.add_argument("--json", action="store_true", help="print the results as JSON")
    e.set_defaults(func=cmd_evaluate)

    r = sub.add_parser("report", help="write report.md and plots for one or more runs",
                       description="Tables (one row per run and peer) and PNG plots from runs' metrics and evaluations.",
                       epilog="examples:\n  dogo report runs/baseline runs/dogo --out reports/fmnist\n"
                       "  dogo report runs/study-fashion-mnist --out docs/RESULTS.md   # a study: paired differences",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories, or one study directory")
    r.add_argument("--out", default=None, help="output folder (default: the first run's report/); for a study, "
                   "a folder or a .md file (default STUDY_DIR/report/report.md)")
    r.set_defaults(func=cmd_report)

    add_bench_parser(sub)

    x = sub.add_parser("export", help="write one peer's encoder as safetensors, TorchScript or ONNX",
                       description="Export the encoder of one peer (no heads, optimiser or other peers) with a "
                       "sidecar JSON, loadable without dogo.",
                       epilog=EPILOG_EXPORT, formatter_class=argparse.RawDescriptionHelpFormatter)
    x.add_argument("run_dir", metavar="RUN_DIR")
    x.add_argument("--peer", default="0", help="peer index or name (default 0)")
    x.add_argument("--checkpoint", default="last", help="last (default), epoch-N, or a .pt path")
    x.add_argument("--format", required=True, choices=("safetensors", "torchscript", "onnx"))
    x.add_argument("--out", required=True, metavar="FILE", help="the file to write (its sidecar: FILE.json)")
    x.set_defaults(func=cmd_export)

    m = sub.add_parser("embed", help="features of every image of a dataset or folder, as .npy or .safetensors",
                       description="Run one peer's encoder over every image of a dataset or a folder of images "
                       "with the run's evaluation-time preprocessing and save the features.",
                       epilog=EPILOG_EMBED, formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("run_dir", metavar="RUN_DIR")
    m.add_argument("--data", required=True, metavar="DATASET_OR_FOLDER", help="a dataset name or a folder of images")
    m.add_argument("--split", default="train", help="dataset split (default train; ignored for a folder)")
    m.add_argument("--root", help="where the dataset is (default: dogo's usual search)")
    m.add_argument("--peer", default="0", help="peer index or name (default 0)")
    m.add_argument("--checkpoint", default="last", help="last (default), epoch-N, or a .pt path")
    m.add_argument("--batch-size", type=int, default=256)
    m.add_argument("--device", default="cpu", help="cpu (default), cuda, ...")
    m.add_argument("--out", required=True, metavar="FILE", help="FILE.npy or FILE.safetensors")
    m.set_defaults(func=cmd_embed)

    s = sub.add_parser("study", help="run a seeded study: every arm x seed trained, evaluated and reported",
                       description="Run every arm x seed of a study file as its own run, evaluate each with the "
                       "study's protocols, then write the study's report. Resumable: rerun the same command after "
                       "a stop, or after adding arms or seeds, and only what is missing runs.",
                       epilog=EPILOG_STUDY, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("study_file", metavar="STUDY.yaml")
    s.add_argument("--out", help="study directory (default runs/study-<name>)")
    s.add_argument("--jobs", type=int, default=1, help="runs at a time, the cores shared among them (default 1)")
    s.add_argument("--only", action="append", default=[], metavar="ARM", help="run only this arm (repeatable)")
    s.add_argument("--rerun", action="append", default=[], metavar="ARM",
                   help="train this arm again after its settings changed (its earlier runs are removed)")
    s.add_argument("--publish", metavar="DIR", help="copy configs, records, metrics and results here as runs finish")
    s.add_argument("--no-report", action="store_true", help="skip the report at the end")
    s.set_defaults(func=cmd_study)

    c = sub.add_parser("clean", help="free a run's disk space: its feature cache and all checkpoints but last.pt",
                       description="Remove a run's feature cache (RUN_DIR/cache) and/or its checkpoints except "
                       "checkpoints/last.pt, which evaluation, export and resume need. Without --cache or "
                       "--checkpoints, both.",
                       epilog="examples:\n  dogo clean runs/try                  # cache and old checkpoints\n"
                       "  dogo clean runs/try --cache          # only the feature cache (recomputed on demand)\n"
                       "  dogo clean runs/* --checkpoints      # epoch-N.pt and last.prev.pt of every run",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    c.add_argument("--cache", action="store_true", help="remove RUN_DIR/cache")
    c.add_argument("--checkpoints", action="store_true", help="remove epoch-N.pt and last.prev.pt (last.pt stays)")
    c.set_defaults(func=cmd_clean)

    g = sub.add_parser("configs", help="list the configs shipped with dogo (usable by name from anywhere)",
                       description="List the packaged configs; `dogo pretrain NAME` finds them from any folder.",
                       epilog="examples:\n  dogo configs\n  dogo pretrain quickstart --out runs/qs\n"
                       "  dogo pretrain fmnist-dogo train.epochs=5",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    g.set_defaults(func=cmd_configs)

    d = sub.add_parser("datasets", help="list the datasets dogo reads, where it looks, and what it found",
                       description="List known datasets, the folders searched for each and whether they were found.",
                       epilog="examples:\n  dogo datasets\n  dogo datasets --root ~/data     # also look in ~/data/<name>\n"
                       "  DOGO_DATA=~/data dogo datasets  # the same through the environment",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("--root", help="also look here")
    d.set_defaults(func=cmd_datasets)

    pr = sub.add_parser("prepare", help="decode a dataset split once into a memory-mapped image store on disk",
                        description="Decode one split into an image store (memory-mapped .npy files) that training "
                        "and evaluation read through the page cache, one copy for all processes. Atomic and "
                        "resumable: a killed prepare, run again, continues.",
                        epilog="examples:\n  dogo prepare fashion-mnist                        # $DOGO_DATA/stores or "
                        "~/.cache/dogo/stores\n  dogo prepare imagenet --root ~/ilsvrc --image-size 64 --split train\n"
                        "  dogo prepare imagefolder --root photos/ --out /scratch/photos-store --bad-files skip\n"
                        "  dogo prepare fashion-mnist --force              # rebuild a stale store\n\n"
                        "Training finds a store prepared at the default place by itself (dataset.store: auto);\n"
                        "dataset.store: on prepares it on first use.",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    pr.add_argument("dataset", help="dataset name (see `dogo datasets`)")
    pr.add_argument("--root", default=None, help="folder holding the dataset's files")
    pr.add_argument("--split", default="train", help="split to prepare (default train)")
    pr.add_argument("--image-size", type=int, default=None, help="side in pixels (folder and list datasets)")
    pr.add_argument("--out", default=None, help="store folder (default: the one training looks in)")
    pr.add_argument("--store-dir", default=None, help="folder of stores (as dataset.store_dir)")
    pr.add_argument("--bad-files", choices=("refuse", "skip"), default=None,
                    help="image files that cannot be decoded: refuse (default, all listed) or skip them")
    pr.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="a reader option as in dataset.options (YAML value), e.g. --option limit=1000")
    pr.add_argument("--force", action="store_true", help="rebuild a store that is stale or holds something else")
    pr.set_defaults(func=cmd_prepare)

    q = sub.add_parser("quickstart", help="SimCLR alone vs in a DoGo cohort on digits, probed, in minutes",
                       description="Pretrain a small SimCLR model alone and in a DoGo cohort with a larger peer "
                       "on scikit-learn's digits (offline), probe both, print a table.",
                       epilog="examples:\n  dogo quickstart                       # runs/quickstart-<timestamp>/{simclr,dogo}\n"
                       "  dogo quickstart --out runs/qs         # runs/qs/simclr and runs/qs/dogo\n"
                       "  dogo quickstart train.epochs=3        # a quicker, rougher table",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("--out", default=None, help="folder for the two runs, used as given; must not hold them "
                   "already (default runs/quickstart-<timestamp>)")
    q.add_argument("overrides", nargs="*", metavar="key=value", help="overrides for both runs, e.g. train.epochs=5")
    q.set_defaults(func=cmd_quickstart)

    for command in sub.choices.values():  # every command: how much to say on stderr
        loudness = command.add_mutually_exclusive_group()
        loudness.add_argument("-q", "--quiet", action="store_true",
                              help="warnings and errors only (no progress bar or progress lines)")
        loudness.add_argument("-v", "--verbose", action="store_true", help="more detail (a line per metrics row)")
    return parser


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def cmd_pretrain(args: argparse.Namespace) -> int:
    from dogo import dist

    try:
        return _pretrain(args)
    finally:
        dist.cleanup()  # the process group of a torchrun launch (no-op otherwise)


def _pretrain(args: argparse.Namespace) -> int:
    from dogo import dist
    from dogo.config import load_config
    from dogo.rundir import check_new_run_dir, default_run_dir, discard_new_run_dir, prepare_run_dir
    from dogo.runtime import resolve_device
    from dogo.train import Trainer

    from dogo import console

    def say(message: str) -> None:  # under torchrun only rank 0 talks
        if dist.is_main_process():
            console.info(message)

    if args.resume:
        if args.config or args.config_file:
            # `dogo pretrain --resume RUN key=value`: argparse puts the first override in `config`.
            overrides = ([args.config] if args.config else []) + args.overrides
            if args.config_file or not all("=" in o for o in overrides):
                raise DogoError("--resume takes the run directory's own config; pass only key=value overrides")
        else:
            overrides = args.overrides
        trainer = Trainer.resume(args.resume, overrides)  # every rank loads the checkpoint
        say(f"resuming {args.resume} at step {trainer.step}")
        if trainer.step >= trainer.total_steps:
            say(f"the run is already complete ({trainer.step} steps); pass train.epochs=N or train.max_steps=N "
                "to train longer")
    else:
        path = args.config_file or args.config
        if args.config_file and args.config:
            args.overrides.insert(0, args.config)
        if path is None:
            raise DogoError("no config: give CONFIG.yaml (see configs/), a packaged config's name (`dogo configs`) "
                            "or --config-file PATH")
        from dogo.quickstart import resolve_config_path

        path = resolve_config_path(path)
        config = load_config(path, args.overrides, warn=_warn)
        dist.init_from_env(config.train.dist_backend, resolve_device(config.train.device))  # torchrun only
        # Rank 0 picks the directory (its timestamped name); the others get its path or its error. It is
        # created only once the data and models are set up, so a bad input leaves nothing behind.
        run_dir = dist.on_main_process(lambda: check_new_run_dir(args.out or default_run_dir(config)))
        trainer = Trainer(config, run_dir)
        dist.on_main_process(lambda: prepare_run_dir(config, run_dir))
        say(f"run directory: {run_dir}")
    trainer.log = say
    ranks = f", {dist.world_size()} processes (global batch {trainer.config.train.batch_size})" if dist.is_distributed() else ""
    settings = trainer.settings
    side_by_side = " side by side" if settings.concurrent_peers else ""
    say(f"device {settings.device}, precision {settings.precision}, channels_last {settings.channels_last}, "
        f"allocator {settings.allocator}, {len(trainer.cohort)} peer(s){side_by_side}: "
        f"{', '.join(p.label for p in trainer.cohort.peers)}{ranks}")
    try:
        trainer.fit()
    except BaseException as exc:
        # A run that failed before its first checkpoint can be neither resumed nor reused by
        # --out as it stands: remove what it wrote, so that the same command can run again.
        if not args.resume and dist.is_main_process() and discard_new_run_dir(trainer.run_dir):
            removed = f"{trainer.run_dir} was removed: the run failed before its first checkpoint"
            if isinstance(exc, DogoError):  # still the one line of the error
                raise type(exc)(f"{exc} ({removed})") from None
            say(removed)
        raise
    # Stopped by SIGINT/SIGTERM (a checkpoint was saved): the shell's convention, 128 + the signal number.
    stopped = getattr(signal.Signals, str(trainer.stop_requested), None)
    return 128 + stopped.value if stopped is not None else (1 if trainer.stop_requested else 0)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from dogo.evaluation_runner import evaluate_run, format_table

    results = evaluate_run(Path(args.run_dir), args.protocol, args.settings, peer=args.peer, checkpoint=args.checkpoint)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(format_table(results))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from dogo.export import export_encoder

    out, sidecar = export_encoder(args.run_dir, args.out, args.format, peer=args.peer, checkpoint=args.checkpoint)
    print(f"wrote {out} and {sidecar}")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from dogo.embed import embed

    out, sidecar, rows = embed(args.run_dir, args.data, args.out, peer=args.peer, checkpoint=args.checkpoint,
                               split=args.split, root=args.root, batch_size=args.batch_size, device=args.device)
    print(f"wrote {out} ({rows} rows) and {sidecar}")
    return 0


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
    from dogo.layout import RunDir

    for run_dir in args.run_dirs:
        if not RunDir(run_dir).is_run():
            raise DogoError(f"{run_dir}: not a run directory (no config.yaml) nor a study directory (no study.yaml)")

    out = Path(args.out) if args.out else Path(args.run_dirs[0]) / "report"
    path = write_report([Path(p) for p in args.run_dirs], out)
    print(f"wrote {path}")
    return 0


def _say(message: str) -> None:
    from dogo import console

    console.info(message)


def cmd_study(args: argparse.Namespace) -> int:
    from dogo.study import run_study

    if args.jobs < 1:
        raise DogoError(f"--jobs {args.jobs}: give 1 or more")
    out, failures = run_study(args.study_file, args.out, jobs=args.jobs, only=args.only, rerun=args.rerun,
                              publish_to=args.publish, say=_say)
    if not args.no_report:
        from dogo.study.report import write_study_report

        print(f"wrote {write_study_report(out, out / 'report' / 'report.md')}")
    if failures:
        print(f"dogo study: {failures} run(s) failed; their logs are named above. Rerun the same command to retry "
              "them", file=sys.stderr)
        return 1
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    from dogo.disk import clean_run
    from dogo.rundir import check_run_dir

    both = not (args.cache or args.checkpoints)
    for run_dir in args.run_dirs:
        check_run_dir(run_dir)
    for run_dir in args.run_dirs:
        freed, removed = clean_run(run_dir, cache=both or args.cache, checkpoints=both or args.checkpoints)
        print(f"{run_dir}: removed {len(removed)} item(s), freed {freed / 1e6:.1f} MB")
    return 0


def cmd_configs(args: argparse.Namespace) -> int:
    from dogo.quickstart import packaged_config, packaged_configs

    for name, summary in packaged_configs().items():
        print(f"{name:<18} {summary}")
    print(f"(in {packaged_config('quickstart').parent}; `dogo pretrain NAME` uses one by name)")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from dogo.data import dataset_status

    rows = dataset_status(root=args.root) if args.root else dataset_status()
    for row in rows:
        mark = "found" if row.get("found") else "missing"
        print(f"{row['name']:<20} {mark:<8} {row.get('description', '')}")
        where = row.get("found_at") or ", ".join(str(p) for p in row.get("looks_in", []))
        print(f"{'':<20} {'':<8} {'at' if row.get('found') else 'looks in'}: {where}")
        if not row.get("found") and row.get("how_to_get"):
            print(f"{'':<20} {'':<8} get it: {row['how_to_get']}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    import yaml

    from dogo.data.source import prepare
    from dogo.errors import ConfigError

    options = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option {item!r}: expected KEY=VALUE")
        options[key] = yaml.safe_load(value)
    if args.image_size is not None:
        options["image_size"] = args.image_size
    if args.bad_files is not None:
        options["bad_files"] = args.bad_files
    store = prepare(args.dataset, root=args.root, split=args.split, options=options, out=args.out,
                    store_dir=args.store_dir, force=args.force, log=_say)
    print(store)
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from dogo.quickstart import run_quickstart

    run_quickstart(Path(args.out) if args.out else None, args.overrides)
    return 0


def _silence_stdout() -> None:
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("DOGO_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]  # accepted anywhere on the line, not only before COMMAND
    command = next((a for a in argv if not a.startswith("-")), "")
    try:
        return _main(argv)
    except KeyboardInterrupt:  # before or after training's own handler (which saves and exits 130)
        _error(command, "interrupted", debug)
        return 130
    except DogoError as exc:
        _error(command, f"error: {exc}", debug)
        return 2
    except OSError as exc:  # the file system said no: the path and its reason are what the user needs
        _error(command, f"error: {describe_os_error(exc)}", debug)
        return 2
    except MemoryError:
        _error(command, "error: out of memory; use a smaller batch, image size or dataset limit", debug)
        return 2
    except Exception as exc:  # noqa: BLE001 - anything else is dogo's bug: say so, keep the traceback for --debug
        detail = " ".join(str(exc).split())[:300]
        _error(command, f"internal error (a bug in dogo, please report it): {type(exc).__name__}: {detail}; "
               "rerun with --debug for the traceback", debug)
        return 1


def describe_os_error(exc: OSError) -> str:
    """``PATH: reason`` of an OSError (both paths of a rename), in one line."""
    reason = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    where = " -> ".join(paths) if paths else "a file"
    return f"{where}: {reason}"


def _error(command: str, message: str, debug: bool) -> None:
    from dogo import dist

    if dist.launched_rank() == 0:  # under torchrun every rank raises it (maybe before the group starts)
        print(f"dogo {command}: {message}" if command else f"dogo: {message}", file=sys.stderr)
    if debug and sys.exc_info()[0] is not None and not isinstance(sys.exc_info()[1], KeyboardInterrupt):
        traceback.print_exc()


def _main(argv: list[str]) -> int:
    parser = _parser()
    # key=value pairs may come after options (`--protocol knn k=20`): argparse leaves those over.
    args, extra = parser.parse_known_args(argv)
    listed = "settings" if hasattr(args, "settings") else "overrides"
    if extra and (not hasattr(args, listed) or any(a.startswith("-") or "=" not in a for a in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        getattr(args, listed).extend(extra)
    warnings.simplefilter("default")
    from dogo import console

    console.set_verbosity(console.QUIET if args.quiet else console.VERBOSE if args.verbose else console.NORMAL)
    try:
        status = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not as "Exception ignored" at exit
        return status
    except BrokenPipeError:
        # `dogo evaluate ... | head -1`: the reader is gone. Nothing more goes to stdout, no traceback;
        # exit as a process killed by SIGPIPE would (128 + 13).
        _silence_stdout()
        return 141
    finally:
        from dogo.runlock import release_all

        release_all()  # the run directories this command owned (also released by the OS at exit)


if __name__ == "__main__":
    sys.exit(main())
