"""``dogo pretrain``, ``dogo quickstart`` and ``dogo configs``: training runs and the configs they start from."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from dogo.core.errors import DogoError

if TYPE_CHECKING:
    from dogo.training.trainer import Trainer

EPILOG_PRETRAIN = """\
examples:
  dogo pretrain configs/fmnist-dogo.yaml                           # runs/fmnist-dogo-<timestamp>
  dogo pretrain quickstart                                         # a packaged config by name (`dogo configs`)
  dogo pretrain configs/fmnist-dogo.yaml train.epochs=3 train.keep_at=[0] --out runs/try   # + the untrained weights
  dogo pretrain --config-file reference/config/template.yaml     # the reference's own files (a clone in reference/)
  dogo pretrain --resume runs/try                                  # continue from checkpoints/last.pt
  dogo pretrain --resume runs/try train.epochs=200                 # ... and train longer
  torchrun --nproc_per_node 8 -m dogo pretrain configs/cifar10-dogo.yaml --out runs/ddp   # 8 GPUs
  torchrun --nproc_per_node 8 -m dogo pretrain --resume runs/ddp                           # resume it

A config with one entry under train.models is the single-model SSL baseline; two or more make
a DoGo cohort. Overrides are dotted keys with YAML values; unknown keys are errors.
Under torchrun, train.batch_size is the global batch (divided among the processes); only rank 0
writes the run directory. See the README's "Multi-GPU and multi-node" section.
"""


def add_pretrain(sub: argparse._SubParsersAction) -> None:
    """Add ``dogo pretrain`` to the CLI's sub-parsers."""
    from dogo.objectives import OBJECTIVES

    p = sub.add_parser(
        "pretrain",
        help="pretrain a model or a DoGo cohort from a YAML config",
        description=f"Pretrain one model or a DoGo cohort of peers, each with its own SSL objective "
        f"({', '.join(OBJECTIVES.names())}).",
        epilog=EPILOG_PRETRAIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", nargs="?", help="YAML config (dogo's schema or the reference's)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.epochs=3")
    p.add_argument("--config-file", dest="config_file", help="the same as CONFIG (the reference's train.py flag)")
    p.add_argument("--out", help="run directory (default runs/<config-name>-<timestamp>); must not exist")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its last checkpoint")
    p.set_defaults(func=cmd_pretrain)


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def cmd_pretrain(args: argparse.Namespace) -> int:
    from dogo.core import dist

    try:
        return _pretrain(args)
    finally:
        dist.cleanup()  # the process group of a torchrun launch (no-op otherwise)


def _say(message: str) -> None:
    """A progress line on stderr; under torchrun only rank 0 talks."""
    from dogo.core import console, dist

    if dist.is_main_process():
        console.info(message)


def _pretrain(args: argparse.Namespace) -> int:
    from dogo.core import dist
    from dogo.runs.rundir import removed_if_it_fails_early

    trainer = _resumed_trainer(args) if args.resume else _new_trainer(args)
    trainer.log = _say
    ranks = (
        f", {dist.world_size()} processes (global batch {trainer.config.train.batch_size})"
        if dist.is_distributed()
        else ""
    )
    settings = trainer.settings
    side_by_side = " side by side" if settings.concurrent_peers else ""
    _say(
        f"device {settings.device}, precision {settings.precision}, channels_last {settings.channels_last}, "
        f"allocator {settings.allocator}, {len(trainer.cohort)} peer(s){side_by_side}: "
        f"{', '.join(p.label for p in trainer.cohort.peers)}{ranks}"
    )
    new = not args.resume and dist.is_main_process()
    with removed_if_it_fails_early(trainer.run_dir, _say) if new else contextlib.nullcontext():
        trainer.fit()
    # Stopped by SIGINT/SIGTERM (a checkpoint was saved): the shell's convention, 128 + the signal number.
    stopped = getattr(signal.Signals, str(trainer.stop_requested), None)
    return 128 + stopped.value if stopped is not None else (1 if trainer.stop_requested else 0)


def _resumed_trainer(args: argparse.Namespace) -> Trainer:
    """``dogo pretrain --resume RUN_DIR [key=value ...]``: the run's trainer at its last checkpoint."""
    from dogo.training.trainer import Trainer

    if args.config or args.config_file:
        # `dogo pretrain --resume RUN key=value`: argparse puts the first override in `config`.
        overrides = ([args.config] if args.config else []) + args.overrides
        if args.config_file or not all("=" in o for o in overrides):
            raise DogoError("--resume takes the run directory's own config; pass only key=value overrides")
    else:
        overrides = args.overrides
    trainer = Trainer.resume(args.resume, overrides)  # every rank loads the checkpoint
    _say(f"resuming {args.resume} at step {trainer.step}")
    if trainer.step >= trainer.total_steps:
        _say(
            f"the run is already complete ({trainer.step} steps); pass train.epochs=N or train.max_steps=N "
            "to train longer"
        )
    return trainer


def _new_trainer(args: argparse.Namespace) -> Trainer:
    """``dogo pretrain CONFIG [key=value ...]``: a new run's trainer and its run directory."""
    from dogo.cli.quickstart import resolve_config_path
    from dogo.config import load_config
    from dogo.core import dist
    from dogo.runs.rundir import check_new_run_dir, default_run_dir, prepare_run_dir
    from dogo.training.step import process_device
    from dogo.training.trainer import Trainer

    path = args.config_file or args.config
    if args.config_file and args.config:
        args.overrides.insert(0, args.config)
    if path is None:
        raise DogoError(
            "no config: give CONFIG.yaml (see configs/), a packaged config's name (`dogo configs`) "
            "or --config-file PATH"
        )
    path = resolve_config_path(path)
    config = load_config(path, args.overrides, warn=_warn)
    process_device(config)  # under torchrun, the process group: rank 0 must pick the directory first
    # Rank 0 picks the directory (its timestamped name); the others get its path or its error. It is
    # created only once the data and models are set up, so a bad input leaves nothing behind.
    run_dir = dist.on_main_process(lambda: check_new_run_dir(args.out or default_run_dir(config)))
    trainer = Trainer(config, run_dir, log=_say)
    dist.on_main_process(lambda: prepare_run_dir(config, run_dir))
    _say(f"run directory: {run_dir}")
    return trainer


def add_configs(sub: argparse._SubParsersAction) -> None:
    """Add ``dogo configs`` to the CLI's sub-parsers."""
    g = sub.add_parser(
        "configs",
        help="list the configs shipped with dogo (usable by name from anywhere)",
        description="List the packaged configs; `dogo pretrain NAME` finds them from any folder.",
        epilog="examples:\n  dogo configs\n  dogo pretrain quickstart --out runs/mine\n"
        "  dogo pretrain fmnist-dogo train.epochs=5",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g.set_defaults(func=cmd_configs)


def cmd_configs(args: argparse.Namespace) -> int:
    import shutil
    import textwrap

    from dogo.cli.quickstart import packaged_config, packaged_configs

    configs = packaged_configs()
    column = max(map(len, configs)) + 2
    width = max(60, min(120, shutil.get_terminal_size((100, 24)).columns))
    for name, summary in configs.items():  # whole sentences, wrapped under their column
        print(textwrap.fill(summary, width, initial_indent=f"{name:<{column}}", subsequent_indent=" " * column))
    print(f"(in {packaged_config('quickstart').parent}; `dogo pretrain NAME` uses one by name)")
    return 0


def add_quickstart(sub: argparse._SubParsersAction) -> None:
    """Add ``dogo quickstart`` to the CLI's sub-parsers."""
    q = sub.add_parser(
        "quickstart",
        help="SimCLR alone vs in a DoGo cohort on digits, probed, in minutes",
        description="Pretrain a small SimCLR model alone and in a DoGo cohort with a larger peer "
        "on scikit-learn's digits (offline), probe both, print a table.",
        epilog="examples:\n  dogo quickstart                       # runs/quickstart/{simclr,dogo} "
        "(runs/quickstart-2/... when that exists)\n"
        "  dogo quickstart --out runs/qs         # runs/qs/simclr and runs/qs/dogo\n"
        "  dogo quickstart train.epochs=3        # a quicker, rougher table\n\n"
        "Afterwards: dogo evaluate runs/quickstart/dogo --protocol linear, dogo report runs/quickstart/simclr "
        "runs/quickstart/dogo (see `dogo evaluate --help`, `dogo report --help`).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument(
        "--out",
        default=None,
        help="folder for the two runs, used as given; must not hold them "
        "already (default runs/quickstart, else runs/quickstart-2, -3...)",
    )
    q.add_argument("overrides", nargs="*", metavar="key=value", help="overrides for both runs, e.g. train.epochs=5")
    q.set_defaults(func=cmd_quickstart)


def cmd_quickstart(args: argparse.Namespace) -> int:
    from dogo.cli.quickstart import run_quickstart

    run_quickstart(Path(args.out) if args.out else None, args.overrides)
    return 0
