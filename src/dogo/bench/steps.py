"""Measuring dogo's own training steps: the data they index, their images/s and the split of a step.

The steps are :func:`dogo.training.step.training_step`, the trainer's own, on a cohort built by
:func:`dogo.training.step.set_up`, with the trainer's data order (:class:`dogo.training.step.Sampler`) over the
bench's images. The split times the same function through its optional part timer
(:class:`dogo.training.step.PartTimes`), with peers one after another.
"""

from __future__ import annotations

import statistics
from typing import Any

import torch

from dogo.bench.machine import Log, clock, quiet, summary
from dogo.config import RunConfig
from dogo.core.errors import DogoError
from dogo.training.gather import BatchGatherer
from dogo.training.peer_threads import PeerRunner
from dogo.training.step import PartTimes, Sampler, Setup, StepSettings, set_up, training_step

#: Native shapes (C, H, W) of the datasets, for ``--synthetic`` (others: 3 x image_size x image_size).
SYNTHETIC_SHAPES = {
    "fashion-mnist": (1, 28, 28),
    "mnist": (1, 28, 28),
    "digits": (1, 8, 8),
    "cifar10": (3, 32, 32),
    "cifar100": (3, 32, 32),
    "cifar10-lt": (3, 32, 32),
    "cifar10-imbalanced": (3, 32, 32),
    "stl10": (3, 96, 96),
    "tiny-imagenet": (3, 64, 64),
}


def bench_images(config: RunConfig, synthetic: bool, count: int) -> tuple[torch.Tensor, str]:
    """The uint8 ``N x C x H x W`` images the steps index into, and where they came from.

    ``synthetic``: ``max(count, 2 * batch)`` random images of the dataset's native shape
    (:data:`SYNTHETIC_SHAPES`), else the configured dataset's training split, in memory as
    the trainer holds it.
    """
    d = config.dataset
    if synthetic:
        shape = SYNTHETIC_SHAPES.get(d.name, (3, d.image_size, d.image_size))
        generator = torch.Generator().manual_seed(config.seed)
        images = torch.randint(
            0, 256, (max(count, 2 * config.train.batch_size), *shape), generator=generator, dtype=torch.uint8
        )
        return images, f"synthetic uint8 {'x'.join(map(str, shape))}"
    from dogo.data.source import load_split

    try:
        data = load_split(d, d.split)
    except DogoError as exc:
        raise DogoError(f"{exc} ; or bench on random images of the same shape with --synthetic") from None
    if config.train.batch_size > len(data.images):
        raise DogoError(
            f"train.batch_size={config.train.batch_size} is larger than {d.name}/{d.split} "
            f"({len(data.images)} images); lower it"
        )
    where = f"from the store {data.source}" if _is_store(data) else "in memory"
    return data.images, f"{d.name}/{d.split} ({len(data.images)} images {where})"


def _is_store(data) -> bool:
    from pathlib import Path

    return (Path(data.source) / "store.json").is_file()


def bench_setup(config: RunConfig, images: torch.Tensor, settings: StepSettings | None = None) -> tuple[Setup, Sampler]:
    """The trainer's set-up of the cohort, and the trainer's sampler over ``images``; ``settings``: those
    resolved already (:func:`dogo.training.step.step_settings`, as :func:`dogo.bench.run.run_bench` does before
    it loads the data), else resolved here."""
    sampler = Sampler(len(images), config.train.batch_size, config.seed, shared_views=config.distill.views == "shared")
    return set_up(config, sampler.steps_per_epoch, settings), sampler


def time_training(
    setup: Setup, sampler: Sampler, images: torch.Tensor, steps: int, warmup: int, log: Log = quiet
) -> dict[str, Any]:
    """Seconds per real training step (the trainer's loop body) after ``warmup`` untimed steps."""
    device, batch = setup.settings.device, sampler.batch_size
    seconds, finite, waits = [], True, []
    runner = PeerRunner(len(setup.cohort), setup.settings.concurrent_peers)
    gatherer = BatchGatherer(images, sampler, 0, warmup + steps, device)  # as the trainer gathers
    try:
        for step in range(warmup + steps):
            start = clock(device)
            waited = gatherer.wait_s
            chunk = gatherer.get(step)
            waits.append(gatherer.wait_s - waited)
            result, _ = training_step(
                setup, chunk, sampler.view_seeds(step, len(setup.cohort)), step, nonfinite="skip", runner=runner
            )
            elapsed = clock(device) - start
            finite = finite and result.finite
            if step >= warmup:
                seconds.append(elapsed)
            log(
                f"  step {step + 1}/{warmup + steps}{' (warm-up)' if step < warmup else ''}: {elapsed:.2f} s, "
                f"{batch / elapsed:.1f} images/s"
            )
    finally:
        gatherer.close()
        runner.close()
    timed_waits = waits[warmup:]
    return {
        "step_s": seconds,
        "images_per_s": summary([batch / s for s in seconds]),
        "finite": finite,
        "data_wait_s": timed_waits,
        "data_wait_fraction": sum(timed_waits) / max(sum(seconds), 1e-12),
    }


def split_step(setup: Setup, sampler: Sampler, images: torch.Tensor, step: int) -> dict[str, float]:
    """Seconds of each part of one training step, timed by the step's own part timer.

    ``data`` (gathering the batch's rows from memory or the store, here in the step; the timed
    steps gather it ahead in a thread and report what was left to wait as ``data_wait_s``);
    ``augmentation``; ``peer/<i>/forward`` (encoder, head and SSL loss; the head and SSL loss
    alone also as ``peer/<i>/heads_and_ssl``, a part of it); ``distillation`` (every KL term,
    the weighted totals and the losses as floats); ``peer/<i>/backward``; ``optimiser``
    (zero_grad and step); ``other`` (learning rates and everything between
    the timed parts); ``total``. Peers run one after another here, even where the timed steps
    run them side by side: the split says where the time goes, not how it overlaps.
    """
    device = setup.settings.device
    times = PartTimes(device)
    hooks = _time_objectives(setup, times)
    try:
        start = clock(device)
        with times("data"):
            chunk = images[sampler.indices(step)]
        training_step(setup, chunk, sampler.view_seeds(step, len(setup.cohort)), step, nonfinite="skip", times=times)
        total = clock(device) - start
    finally:
        for hook in hooks:
            hook.remove()
    parts = dict(times.seconds)
    counted = sum(v for k, v in parts.items() if not k.endswith("heads_and_ssl"))
    parts["other"] = max(total - counted, 0.0)
    parts["total"] = total
    return parts


def _time_objectives(setup: Setup, times: PartTimes) -> list:
    """Forward hooks on each (never compiled) objective that add its time as ``peer/<i>/heads_and_ssl``."""
    hooks = []
    for i, peer in enumerate(setup.cohort.peers):
        timer: dict[str, Any] = {}

        def pre(module, args, timer=timer, i=i):
            timer["context"] = times(f"peer/{i}/heads_and_ssl")
            timer["context"].__enter__()

        def post(module, args, output, timer=timer):
            timer.pop("context").__exit__(None, None, None)

        hooks += [peer.objective.register_forward_pre_hook(pre), peer.objective.register_forward_hook(post)]
    return hooks


def mean_split(splits: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.mean(s.get(k, 0.0) for s in splits) for k in splits[0]} if splits else {}
