"""Frozen-encoder features, and an on-disk cache so that every protocol extracts them once.

Features are the flattened encoder output (the pooled representation, un-normalised, as in the
reference's linear evaluation) of ``dogo.views.eval_transform`` inputs: resize to the encoder's
image size, scale to [0, 1], normalise; greyscale is repeated to three channels there
(:func:`~dogo.training.monitor.extract_features`, which the trainer's online kNN monitor uses too).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

import dogo
from dogo.evaluate.base import labelled
from dogo.guards.outputs import OutputError, write_output
from dogo.training.monitor import Normalization, extract_features

if TYPE_CHECKING:
    from dogo.data import ImageDataset

__all__ = [
    "FeatureCache",
    "dataset_digest",
    "extract_features",
    "features_of",
    "train_test_features",
]


def dataset_digest(dataset: ImageDataset) -> str:
    """A hash of the images and labels, so that a subset or a corrupted copy gets its own key."""
    h = hashlib.blake2b(digest_size=16)
    images = dataset.images.detach().cpu().contiguous()
    h.update(repr((tuple(images.shape), str(images.dtype))).encode())
    h.update(images.numpy().data.cast("B"))
    if dataset.labels is not None:
        h.update(dataset.labels.detach().cpu().contiguous().numpy().data.cast("B"))
    return h.hexdigest()


def content_hash(features: torch.Tensor, labels: torch.Tensor | None) -> str:
    """SHA-256 of a cache entry's tensors (shape, dtype and bytes), stored with them and checked on load."""
    h = hashlib.sha256()
    for tensor in (features, labels):
        if tensor is None:
            h.update(b"none")
            continue
        tensor = tensor.detach().cpu().contiguous()
        h.update(repr((tuple(tensor.shape), str(tensor.dtype))).encode())
        h.update(tensor.numpy().data.cast("B"))
    return h.hexdigest()


def _problem(stored: dict[str, Any], features: Any, labels: Any, dataset: ImageDataset | None) -> str | None:
    """Why a loaded cache entry cannot be trusted, or None."""
    if not isinstance(features, torch.Tensor) or features.ndim != 2 or not features.is_floating_point():
        return "features are not a float matrix"
    if labels is not None and (not isinstance(labels, torch.Tensor) or labels.shape != (len(features),)):
        return "labels do not match the features"
    if stored.get("sha256") != content_hash(features, labels):
        return "content hash mismatch" if "sha256" in stored else "no content hash"
    if dataset is not None:
        if len(features) != len(dataset):
            return f"{len(features)} rows for {len(dataset)} images"
        if (labels is None) != (dataset.labels is None) or (
            labels is not None and dataset.labels is not None and not torch.equal(labels, dataset.labels)
        ):
            return "labels differ from the dataset's"
    return None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")[:40] or "x"


class FeatureCache:
    """Features on disk under ``directory``, one ``.pt`` file per (model, dataset, split, options).

    ``model_id`` identifies the weights (the checkpoint's hash, or any string that changes when
    they do) and the peer. The key also holds the dataset's name, the split, the image size,
    caller-given ``options``, the dogo version and a digest of the images and labels (so an
    imbalanced subset, another dataset of the same name or a corrupted test set never hits a
    wrong entry). Files are written atomically with a SHA-256 of their tensors and read with
    ``torch.load(weights_only=True)``; a damaged or mis-shaped file is reported and recomputed,
    and a cache that cannot be written (full disk) is skipped with a warning. ``hits`` and ``misses`` count lookups.
    """

    def __init__(self, directory: str | Path, model_id: str) -> None:
        if not model_id:
            raise ValueError("FeatureCache needs a non-empty model_id (e.g. the checkpoint hash)")
        self.directory = Path(directory)
        self.model_id = model_id
        self.hits = 0
        self.misses = 0

    def key(
        self,
        dataset: ImageDataset,
        split: str,
        image_size: int,
        options: Mapping[str, Any] | None = None,
        normalization: Normalization | None = None,
    ) -> str:
        fields = {
            "model": self.model_id,
            "dataset": dataset.name,
            "split": split,
            "image_size": image_size,
            "options": dict(options or {}),
            "content": dataset_digest(dataset),
            "dogo": dogo.__version__,
        }
        if normalization is not None:
            fields["normalization"] = [list(map(float, v)) for v in normalization]
        return json.dumps(fields, sort_keys=True)

    def path_for(self, key: str) -> Path:
        fields = json.loads(key)
        digest = hashlib.blake2b(key.encode(), digest_size=10).hexdigest()
        name = f"{_slug(fields['dataset'])}-{_slug(fields['split'])}-{fields['image_size']}px-{digest}.pt"
        return self.directory / name

    def load(self, key: str, dataset: ImageDataset | None = None) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """The stored entry of ``key`` after verifying it, else None (missing, foreign or damaged).

        Verified: the key, the content hash written with the features, that the features are
        a finite-shaped float matrix of one row per image of ``dataset`` and that the stored
        labels are the dataset's. A damaged entry would otherwise change an accuracy silently;
        it is reported and recomputed.
        """
        path = self.path_for(key)
        if not path.exists():
            return None
        problem: str | None
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(stored, dict):
                problem = f"holds a {type(stored).__name__}, not a feature cache entry"
            elif stored.get("key") != key:
                return None
            else:
                features, labels = stored["features"], stored.get("labels")
                problem = _problem(stored, features, labels, dataset)
        except (
            OSError,
            RuntimeError,
            ValueError,
            KeyError,
            AttributeError,
            EOFError,
            TypeError,
            pickle.UnpicklingError,
        ) as err:  # a damaged or foreign file: recompute it
            problem = " ".join(str(err).split())[:200] or type(err).__name__
        if problem:
            warnings.warn(
                f"feature cache file {path} is damaged or unreadable ({problem}); recomputing it", stacklevel=2
            )
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: the cache's cap (dogo.runs.disk.cap_cache) removes the oldest first
        return features, labels

    def save(self, key: str, features: torch.Tensor, labels: torch.Tensor | None) -> Path | None:
        """Store an entry with its content hash; None (and a warning) when the disk refuses.

        The cache only saves time: a full disk or a read-only folder must not fail the evaluation.
        """
        path = self.path_for(key)
        payload: dict[str, Any] = {"key": key, "features": features.contiguous()}
        if labels is not None:
            payload["labels"] = labels.contiguous()
        payload["sha256"] = content_hash(payload["features"], payload.get("labels"))
        from dogo.guards.ownership import mark

        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            mark(self.directory, "cache")  # what dogo made, so that its cap and `dogo clean` may remove it
            write_output(path, lambda handle: torch.save(payload, handle), own=True)
        except (OSError, OutputError) as err:
            reason = err.strerror if isinstance(err, OSError) else err.reason
            warnings.warn(f"cannot write feature cache {path} ({reason or err}); continuing without it", stacklevel=2)
            return None
        return path

    def get(
        self,
        encoder: nn.Module,
        dataset: ImageDataset,
        split: str,
        image_size: int,
        *,
        options: Mapping[str, Any] | None = None,
        batch_size: int = 512,
        device: str | torch.device = "cpu",
        normalization: Normalization | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Cached features of ``dataset`` if present, else :func:`extract_features` and store."""
        key = self.key(dataset, split, image_size, options, normalization)
        found = self.load(key, dataset)
        if found is not None:
            self.hits += 1
            return found
        self.misses += 1
        features, labels = extract_features(encoder, dataset, image_size, batch_size, device, normalization)
        self.save(key, features, labels)
        return features, labels


def features_of(
    encoder: nn.Module,
    dataset: ImageDataset,
    split: str,
    image_size: int,
    *,
    cache: FeatureCache | None,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
    options: Mapping[str, Any] | None = None,
    normalization: Normalization | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:meth:`FeatureCache.get` when there is a cache, else :func:`extract_features`."""
    if cache is None:
        return extract_features(encoder, dataset, image_size, batch_size, device, normalization)
    return cache.get(
        encoder,
        dataset,
        split,
        image_size,
        options=options,
        batch_size=batch_size,
        device=device,
        normalization=normalization,
    )


def train_test_features(
    encoder: nn.Module,
    train: ImageDataset,
    test: ImageDataset,
    image_size: int,
    cache: FeatureCache | None,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
    normalization: Normalization | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train features, train labels, test features, test labels); both splits must be labelled."""
    labelled(train, "train")
    labelled(test, "test")
    common: dict[str, Any] = {
        "cache": cache,
        "batch_size": batch_size,
        "device": device,
        "normalization": normalization,
    }
    train_x, train_y = features_of(encoder, train, "train", image_size, **common)
    test_x, test_y = features_of(encoder, test, "test", image_size, **common)
    assert train_y is not None and test_y is not None  # both splits are labelled (checked above)
    return train_x, train_y, test_x, test_y
