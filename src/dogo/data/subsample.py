"""Class-aware subsets: the class-balanced ``limit`` of class-sorted readers, and ranks within a class.

Readers whose files come grouped by class (image folders, file lists) would give the first class
only if ``limit`` kept their first N files. :func:`balanced_indices` instead spreads the N images
over the classes as evenly as their sizes allow (each class gets ``N // K``, a class with fewer
images gives its spare share to the others, and the last few go to classes drawn by the seed),
and draws each class's images at random with the fixed seed
:data:`~dogo.data.options.LIMIT_SEED`. The kept images stay in file order.
"""

from __future__ import annotations

import numpy as np

from dogo.data.options import LIMIT_SEED


def rank_in_class(labels: np.ndarray) -> np.ndarray:
    """For every image, how many images of its class come before it in ``labels``' order."""
    labels = np.asarray(labels, dtype=np.int64)
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    starts = np.searchsorted(sorted_labels, sorted_labels)  # first position of each image's class
    rank = np.empty_like(labels)
    rank[order] = np.arange(labels.size) - starts
    return rank


def class_quotas(counts: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    """Images to keep per class: ``limit`` (at most ``counts.sum()``) spread as evenly as ``counts`` allow."""
    quota = np.zeros_like(counts)
    left = int(min(limit, counts.sum()))
    while left > 0:
        open_classes = np.flatnonzero(quota < counts)
        share = left // len(open_classes)
        if share == 0:  # fewer images left than classes: one more each for classes drawn by the seed
            quota[rng.choice(open_classes, size=left, replace=False)] += 1
            break
        added = np.minimum(counts[open_classes] - quota[open_classes], share)
        quota[open_classes] += added
        left -= int(added.sum())
    return quota


def balanced_indices(labels: np.ndarray, limit: int, seed: int = LIMIT_SEED) -> np.ndarray:
    """Sorted indices of a seeded class-balanced subset of ``limit`` images (all when there are fewer)."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size <= limit:
        return np.arange(labels.size)
    rng = np.random.default_rng(seed)
    quota = class_quotas(np.bincount(labels), limit, rng)
    order = rng.permutation(labels.size)  # a class keeps the images it meets first in this order
    shuffled = labels[order]
    return np.sort(order[rank_in_class(shuffled) < quota[shuffled]])
