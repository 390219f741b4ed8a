"""Noisy labels: the linear probe trained on corrupted train labels, scored on clean test labels.

Noise at rate r changes exactly ``round(r * n)`` labels, picked uniformly at random (seeded):

- ``symmetric``: each picked label becomes a uniformly random *other* class (the "symmetry
  flipping" of Han et al., Co-teaching, NeurIPS 2018: off-diagonal r / (C-1), here as a fixed
  count rather than a coin per label). So r = 1 makes every label wrong and a probe that learns
  it scores at or below chance; r = (C-1)/C leaves no signal.
- ``asymmetric``: the picked labels, among the images of classes the flip map moves, become
  ``flip_map[c]``. Default for CIFAR-10's class names (Patrini et al.): truck -> automobile,
  bird -> airplane, deer -> horse, cat <-> dog (n = images of those five classes); for any other
  class list c -> (c + 1) mod C.

The probe's epoch is chosen by ``select``: ``clean`` (default) picks the epoch with the best
accuracy on the held-out validation part scored with its *clean* labels (a small clean
validation set, as in the noisy-label literature); ``noisy`` scores that part with the noisy
labels, as if the clean labels were unknown (at 80 % noise this picks a near-chance epoch);
``last`` uses no validation and keeps the last epoch. The probe trains on the same images in
every mode. ``finetune: true`` also fine-tunes the whole network on the noisy set.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from dogo.core.errors import ConfigError
from dogo.evaluate.base import (
    CommaList,
    Rate,
    add_draws_row,
    derive_seed,
)
from dogo.evaluate.finetune import FinetuneSettings
from dogo.evaluate.inputs import ProtocolInput, protocol
from dogo.evaluate.probe import ProbeSettings, holdout_split

__all__ = [
    "CIFAR10_FLIPS",
    "NoisySettings",
    "asymmetric_noise",
    "flip_map_for",
    "run",
    "symmetric_noise",
]

#: Patrini et al.'s CIFAR-10 asymmetric flips, by class name.
CIFAR10_FLIPS = {
    "truck": "automobile",
    "bird": "airplane",
    "deer": "horse",
    "cat": "dog",
    "dog": "cat",
}


class NoisySettings(ProbeSettings, FinetuneSettings):
    """Settings of the ``noisy`` protocol: noise type, rates, draws, and the probe's settings."""

    noise: Literal["symmetric", "asymmetric"] = Field(default="symmetric", description="noise model")
    rates: CommaList[Rate] = Field(
        default=[0.2, 0.4, 0.6, 0.8], description="shares of the train labels changed, e.g. 0.2,0.5"
    )
    flip_map: dict[int | str, int | str] | None = Field(
        default=None,
        description="asymmetric flips {from: to} by class index or name; default: CIFAR-10's "
        "by name, else c -> c+1 mod C",
    )
    draws: int = Field(default=1, ge=1, le=1000, description="seeded noise draws per rate")
    select: Literal["clean", "noisy", "last"] = Field(
        default="clean",
        description="how the probe's epoch is chosen: best on the held-out part with its clean labels, "
        "with its noisy labels (the clean ones unknown), or the last epoch",
    )


def symmetric_noise(labels: torch.Tensor, rate: float, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """A copy of ``labels`` with ``round(rate * n)`` of them moved to a random other class."""
    noisy = labels.clone()
    n_flip = round(rate * len(labels))
    if num_classes < 2 or n_flip == 0:
        return noisy
    picked = torch.randperm(len(labels), generator=generator)[:n_flip]
    offset = torch.randint(1, num_classes, (n_flip,), generator=generator)
    noisy[picked] = (labels[picked] + offset) % num_classes
    return noisy


def asymmetric_noise(
    labels: torch.Tensor, rate: float, flip_map: dict[int, int], generator: torch.Generator
) -> torch.Tensor:
    """A copy of ``labels`` with ``round(rate * n)`` of the n images of mapped classes flipped."""
    noisy = labels.clone()
    moved = {a: b for a, b in flip_map.items() if a != b}
    if not moved:
        return noisy
    target = torch.arange(1 + max(max(moved), max(moved.values()), int(labels.max())))
    for a, b in moved.items():
        target[a] = b
    eligible = torch.isin(labels, torch.tensor(sorted(moved))).nonzero().flatten()
    n_flip = round(rate * len(eligible))
    picked = eligible[torch.randperm(len(eligible), generator=generator)[:n_flip]]
    noisy[picked] = target[labels[picked]]
    return noisy


def flip_map_for(
    classes: list[str], num_classes: int, given: dict[int | str, int | str] | None = None
) -> dict[int, int]:
    """The asymmetric flip map as class indices (see the module docstring for the defaults)."""

    def index(c: int | str) -> int:
        if isinstance(c, str) and c in classes:
            return classes.index(c)
        try:
            i = int(c)
        except ValueError:
            raise ConfigError(f"noisy flip_map: unknown class {c!r}; classes: {classes}") from None
        if not 0 <= i < num_classes:
            raise ConfigError(f"noisy flip_map: class {i} is not in 0..{num_classes - 1}")
        return i

    if given is not None:
        return {index(a): index(b) for a, b in given.items()}
    if all(name in classes for pair in CIFAR10_FLIPS.items() for name in pair):
        return {index(a): index(b) for a, b in CIFAR10_FLIPS.items()}
    return {c: (c + 1) % num_classes for c in range(num_classes)}


@protocol("noisy", NoisySettings)
def run(data: ProtocolInput, settings: NoisySettings) -> dict:
    """Probe (and optionally fine-tune) on noisy train labels at each rate; clean test labels."""
    _, train_y, _, test_y = data.features(settings)
    classes = data.classes
    flips = flip_map_for(data.train.classes, classes, settings.flip_map)
    rows: list[dict[str, Any]] = []
    summary: dict[str, float] = {}
    short = {"symmetric": "sym", "asymmetric": "asym"}[settings.noise]
    for rate in settings.rates:
        draws = []
        for draw in range(settings.draws):
            seed = derive_seed(settings.seed, "noisy", settings.noise, rate, draw)
            g = torch.Generator().manual_seed(seed)
            if settings.noise == "symmetric":
                noisy = symmetric_noise(train_y, rate, classes, g)
            else:
                noisy = asymmetric_noise(train_y, rate, flips, g)
            tr, va = holdout_split(len(noisy), settings.val_fraction, seed)
            validation = {"last": {}, "noisy": {"val_idx": va}, "clean": {"val_idx": va, "val_labels": train_y[va]}}
            numbers = data.probe(
                settings, seed, noisy, tr, finetune_idx=torch.arange(len(noisy)), **validation[settings.select]
            )
            numbers["actual_noise"] = float((noisy != train_y).double().mean())
            draws.append(numbers)
        add_draws_row(
            rows,
            summary,
            f"noisy {short} {100 * rate:g}%",
            draws,
            settings.finetune,
            keys=("test_top1", "finetune_top1", "actual_noise"),
            rate=rate,
        )
    return data.result(
        "noisy",
        settings,
        summary=summary,
        variant=settings.noise,
        num_classes=classes,
        flip_map={str(a): b for a, b in flips.items()} if settings.noise == "asymmetric" else None,
        num_train_total=len(train_y),
        num_test=len(test_y),
        results=rows,
    )
