"""Training compute in a unit that does not depend on the machine: floating-point operations per step.

:func:`step_flops` runs one training step of a config (the trainer's own
:func:`~dogo.training.step.training_step`: views, every peer's forward and backward, the KL terms) under
PyTorch's :class:`torch.utils.flop_counter.FlopCounterMode`, which counts the operations of
every matrix product and convolution (2 per multiply-add) as they run. Elementwise work
(normalisation, activations, the optimiser's update) is not counted: it is a small share of a
convolutional network's step and the convention of published FLOP counts. A frozen peer's
forward pass counts; its missing backward does not. The count is the same on every machine and
at every precision, so a study's compute axis is comparable across the machines it ran on.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from dogo.config import RunConfig

__all__ = ["step_flops"]


def step_flops(config: RunConfig, images: torch.Tensor | None = None) -> int:
    """Floating-point operations of one training step of ``config`` (on ``images``, uint8 ``N x C x H x W``;
    default: the configured training split)."""
    from dogo.bench.steps import bench_images, bench_setup

    if images is None:
        images, _ = bench_images(config, synthetic=False, count=config.train.batch_size)
    setup, sampler = bench_setup(config, images)
    from dogo.training.step import training_step

    batch = images[sampler.indices(0)].to(setup.settings.device)
    seeds = sampler.view_seeds(0, len(setup.cohort))
    with FlopCounterMode(display=False) as counter:
        training_step(setup, batch, seeds, 0)
    return int(counter.get_total_flops())
