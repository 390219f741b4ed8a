"""``dogo bench`` on the command line."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from dogo.guards.arguments import count

EPILOG_BENCH = """\
examples:
  dogo bench configs/fmnist-dogo.yaml
  dogo bench configs/cifar10-dogo.yaml train.models.1.backbone=resnet18 train.models.1.name=peer --synthetic
      # the reference setting: two ResNet-18 SimCLR peers, batch 256, 32 px (CIFAR-shaped random images)
  dogo bench configs/fmnist-dogo.yaml --steps 10 --json > bench.json
  dogo bench configs/fmnist-dogo.yaml train.precision=fp32 --no-ceiling    # what bf16 buys
  dogo bench configs/fmnist-dogo.yaml train.allocator=system --no-reference  # what retaining memory buys
  dogo bench configs/cifar10-dogo.yaml train.models.1.backbone=resnet18 train.concurrent_peers=on --synthetic
      # against the reference setting above: what running its two peers side by side buys

Times real training steps of the configured cohort (data from memory, augmentation, forward,
losses, backward, optimiser) after warm-up, splits a step's time into its parts, and measures,
in the same run, the ceiling (the backbones alone on pre-made tensors in the fastest setting
this machine offers: precision, layout, torch.compile, allocator, peers side by side) and the
reference's images/s (stood in by 0.936 x a quarter of a plain fp32 ResNet-18's views/s, see
docs/reference.md, measured before and after in a child process with libc's allocator, as the
reference runs; the faster counts).
A full run of the reference setting takes several minutes on a 2-core CPU (the first
torch.compile of a backbone alone 1-2 minutes; later runs reuse the compile cache).
Numbers on a shared machine are noisy: bench when it is idle and repeat.
"""


def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``dogo bench`` to the CLI's sub-parsers."""
    b = subparsers.add_parser(
        "bench",
        help="training images/s of a config, against the machine's ceiling and the reference",
        description="Benchmark training throughput: images/s, the split of a step, peak memory, "
        "the ceiling of the backbones alone, and the reference's speed on this machine.",
        epilog=EPILOG_BENCH,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument("config", metavar="CONFIG.yaml", help="run config (dogo's schema or the reference's)")
    b.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.batch_size=128")
    b.add_argument("--steps", type=count(0), default=5, help="timed training steps (default 5; 1 or more)")
    b.add_argument("--warmup", type=count(0), default=2, help="untimed steps first (default 2)")
    b.add_argument("--split-steps", type=count(0), default=2, help="instrumented steps for the split (default 2)")
    b.add_argument("--ceiling-steps", type=count(1), default=3, help="timed steps per ceiling setting (default 3)")
    b.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    b.add_argument("--synthetic", action="store_true", help="random uint8 images of the dataset's shape, no files")
    b.add_argument("--no-ceiling", dest="ceiling", action="store_false", help="skip the ceiling")
    b.add_argument(
        "--no-compile", dest="ceiling_compile", action="store_false", help="leave torch.compile out of the ceiling"
    )
    b.add_argument(
        "--no-reference", dest="reference", action="store_false", help="skip the reference stand-in and its memory"
    )
    b.add_argument("--check", action="store_true", help="exit 1 when a target that applies fails")
    b.set_defaults(func=cmd_bench)
    return b


def cmd_bench(args: argparse.Namespace) -> int:
    from dogo.config import load_config

    config = load_config(args.config, args.overrides, warn=lambda m: print(f"warning: {m}", file=sys.stderr))
    from dogo.core import console

    log = console.info  # progress lines, quiet under --quiet
    from dogo.bench.run import run_bench
    from dogo.bench.table import format_report

    result = run_bench(
        config,
        steps=args.steps,
        warmup=args.warmup,
        split_steps=args.split_steps,
        synthetic=args.synthetic,
        ceiling=args.ceiling,
        ceiling_steps=args.ceiling_steps,
        ceiling_compile=args.ceiling_compile,
        reference=args.reference,
        memory_reference=args.reference,
        log=log,
    )
    if args.json:
        print(json.dumps(result, indent=2, default=_jsonable))
    else:
        print(format_report(result, f"{args.config} {' '.join(args.overrides)}".strip()))
    if args.check and not all(t["pass"] for t in result["targets"].values() if t["applies"]):
        return 1
    return 0


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)
