"""Per-channel statistics of a split's images: what the views and the evaluation transform normalise with.

Computed once: when an image store is prepared (kept in its ``store.json``), else when a run first
reads the split (and recorded in the run's ``config.yaml``, ``dataset.normalization``).
"""

from __future__ import annotations

from typing import cast

import torch

from dogo.data.base import ImageDataset

#: Images per chunk: bounded memory over a store's memory map of any size.
CHUNK = 4096
#: Decimals kept: the statistics are written into config.yaml and read back bit for bit.
DECIMALS = 4

Stats = tuple[tuple[float, float, float], tuple[float, float, float]]


def channel_stats(images: torch.Tensor) -> Stats:
    """``(mean, std)`` per RGB channel of uint8 ``N x C x H x W`` images, in [0, 1] units.

    Over every pixel of every image (float64 sums, chunk by chunk); a grey split (C = 1) gives
    its one value for all three channels, as its images are repeated to RGB before normalising.
    """
    channels = int(images.shape[1])
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, len(images), CHUNK):
        chunk = torch.as_tensor(images[start : start + CHUNK]).to(torch.float64) / 255.0
        total += chunk.sum(dim=(0, 2, 3))
        squares += chunk.square().sum(dim=(0, 2, 3))
    count = max(1, len(images) * int(images.shape[2]) * int(images.shape[3]))
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt().clamp_min(1e-3)  # a blank split: no division by 0
    if channels == 1:
        mean, std = mean.repeat(3), std.repeat(3)
    return (
        # three channels (grey repeated above), which a tuple built from a tensor cannot show the type checker
        tuple(round(float(v), DECIMALS) for v in mean),  # type: ignore[return-value]  # see the line above
        tuple(round(float(v), DECIMALS) for v in std),
    )


def dataset_stats(data: ImageDataset) -> Stats:
    """The statistics of ``data``'s images: those its image store recorded when prepared, else computed."""
    if data.stats is not None:
        return cast("Stats", data.stats)  # a store records channel_stats' three values per statistic
    return channel_stats(data.images)
