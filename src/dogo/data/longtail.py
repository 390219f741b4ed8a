"""Long-tailed subsampling: the reference's CIFAR-10-Imbalanced rule (docs/reference.md §4).

Class ``c = 1..K`` (label ``c - 1``) keeps ``round(a / (b + c**gamma))`` images, where ``a`` and
``b`` solve ``a / (b + 1) = n_max`` and ``a / (b + K**gamma) = n_min``::

    b = (n_min * K**gamma - n_max) / (n_max - n_min),    a = n_max * (b + 1)

For CIFAR-10 (K = 10, n_max = 5000, n_min = 250, gamma = 0.2) the classes keep
5000, 858, 557, 439, 375, 333, 304, 282, 264, 250 images (8,662 in all). Each class keeps its
*first* images in file order, and the kept images stay in file order.
"""

from __future__ import annotations

import math

import numpy as np

from dogo.core.errors import ConfigError, DataError
from dogo.data.base import ImageDataset
from dogo.data.subsample import rank_in_class


def long_tail_counts(num_classes: int, n_max: int = 5000, n_min: int = 250, gamma: float = 0.2) -> list[int]:
    """Images kept per class (label order) by the long-tail rule; ties round half up."""
    if num_classes < 1:
        raise ConfigError(f"long_tail: needs at least one class, got {num_classes}")
    if not 1 <= n_min <= n_max:
        raise ConfigError(f"long_tail: need 1 <= n_min <= n_max, got n_min={n_min} n_max={n_max}")
    if not gamma > 0:
        raise ConfigError(f"long_tail: gamma must be > 0, got {gamma}")
    if n_min == n_max or num_classes == 1:
        return [int(n_max)] * num_classes
    b = (n_min * num_classes**gamma - n_max) / (n_max - n_min)
    a = n_max * (b + 1)
    return [math.floor(a / (b + c**gamma) + 0.5) for c in range(1, num_classes + 1)]


def subsample_long_tailed(ds: ImageDataset, n_max: int = 5000, n_min: int = 250, gamma: float = 0.2) -> ImageDataset:
    """Keep the first ``long_tail_counts(...)[label]`` images of each class, in file order.

    The number of classes K is ``len(ds.classes)`` (or ``max(label) + 1`` without names); the
    ``n_min`` anchor sits at class ``c = K``. A class with fewer images keeps all of them.
    """
    if ds.labels is None:
        raise DataError(f"{ds.name}: long-tailed subsampling needs labels, but {ds.source} has none")
    labels = ds.labels.numpy()
    num_classes = len(ds.classes) or (int(labels.max()) + 1 if labels.size else 0)
    if num_classes == 0:
        return ds.subset(slice(0, 0))
    counts = np.asarray(long_tail_counts(num_classes, n_max, n_min, gamma), dtype=np.int64)
    keep = np.flatnonzero(rank_in_class(labels) < counts[labels])
    return ds.subset(keep)
