"""``dogo bench``: training throughput of a configured cohort, against the machine's ceiling and the reference.

Three measurements in one run (:func:`run_bench`), so that every ratio compares numbers taken
on the same machine under the same load:

1. **dogo** (:mod:`dogo.bench.steps`): real training steps of the configured cohort, the
   trainer's own :func:`dogo.training.step.training_step` on a cohort built by :func:`dogo.training.step.set_up`,
   after warm-up: images/s per step (an image = all its views through every peer: two, or a
   multi-crop method's global and local crops), median, min and
   max; then a few steps timed part by part through the step's own part timer.
2. **The ceiling** (:mod:`dogo.bench.ceiling`): the cohort's backbones alone on pre-made
   tensors in the fastest setting this machine offers, every view of every peer counted.
3. **The reference** (:mod:`dogo.bench.reference`): the authors' code's images/s and peak
   memory, stood in on this machine (docs/reference.md says how and why).

:mod:`dogo.bench.table` prints the result; :mod:`dogo.bench.cli` is the command.
"""

from dogo.bench.ceiling import (
    ceiling_settings,
    measure_backbone,
    measure_ceiling,
    measure_side_by_side,
    target_forwards,
)
from dogo.bench.cli import add_bench_parser, cmd_bench
from dogo.bench.reference import REFERENCE_RATIO, reference_memory, reference_stand_in, stand_in_result
from dogo.bench.run import run_bench
from dogo.bench.steps import bench_images, bench_setup, split_step, time_training
from dogo.bench.table import format_report

__all__ = [
    "REFERENCE_RATIO",
    "add_bench_parser",
    "bench_images",
    "bench_setup",
    "ceiling_settings",
    "cmd_bench",
    "format_report",
    "measure_backbone",
    "measure_ceiling",
    "measure_side_by_side",
    "reference_memory",
    "reference_stand_in",
    "run_bench",
    "split_step",
    "stand_in_result",
    "target_forwards",
    "time_training",
]
