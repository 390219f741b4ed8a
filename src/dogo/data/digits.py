"""scikit-learn's bundled digits: 1,797 greyscale 8x8 images of digits, no files to fetch.

Pixel values 0..16 are scaled to uint8 0..255 (``round(v * 255 / 16)``). Splits come from one
fixed shuffle (``numpy.random.default_rng(0).permutation``): ``train`` is its first 80 %
(1,437 images), ``test`` the remaining 360, and ``all`` every image in the original order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dogo.data.base import DATASETS, DatasetSpec, ImageDataset

SEED = 0
TRAIN_FRACTION = 0.8


def read_digits(location: Path | None, split: str, limit: int | None = None) -> ImageDataset:
    """One split of the digits as ``N x 1 x 8 x 8`` uint8 images and labels 0..9."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    n = len(labels)
    if split == "all":
        index = np.arange(n)
    else:
        order = np.random.default_rng(SEED).permutation(n)
        cut = int(TRAIN_FRACTION * n)
        index = order[:cut] if split == "train" else order[cut:]
    return ImageDataset(
        name="digits",
        images=torch.from_numpy(np.ascontiguousarray(pixels[index])),
        labels=torch.from_numpy(labels[index]),
        classes=[str(i) for i in range(10)],
        source="sklearn.datasets.load_digits",
    )


DATASETS.register("digits")(
    DatasetSpec(
        name="digits",
        description="scikit-learn digits: 8x8 greyscale, 10 classes, 1437/360 (bundled, for tests)",
        splits=("train", "test", "all"),
        read=read_digits,
        find=None,
        how_to_get="bundled with scikit-learn",
    )
)
