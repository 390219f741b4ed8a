"""The dataset type every reader returns, the ``DATASETS`` registry, and where readers look.

A reader module registers one :class:`DatasetSpec` per dataset (one registry line). The spec
says which splits and options (a pydantic model) the dataset has, how to recognise it inside a folder
(``find``), how to read a split from there (``read``), and how to get it when it is missing.

Readers look in ``root``, then ``$DOGO_DATA/<name>``, then known system locations such as
``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dogo.core.errors import DataError
from dogo.core.registry import Registry
from dogo.data.options import DatasetOptions
from dogo.guards.messages import REPLACE_FILE


@dataclass
class ImageDataset:
    """A whole split: uint8 images ``N x C x H x W`` (C in {1, 3}) and int64 labels.

    ``images`` is in memory, or a tensor over an image store's memory map (:mod:`dogo.data.store`).
    """

    name: str  # registry name, e.g. "fashion-mnist"
    images: torch.Tensor  # uint8, N x C x H x W, C in {1, 3}, native resolution
    labels: torch.Tensor | None  # int64, N (None for unlabeled splits)
    classes: list[str]  # class names ([] when unlabeled)
    source: str  # where it was read from (path), for messages and reports
    # (mean, std) per RGB channel of exactly these images when known (an image store records them); not
    # carried by subset()
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: Any) -> ImageDataset:
        """The images (and labels) at ``index`` (a slice, index tensor or array), same metadata."""
        if isinstance(index, np.ndarray):
            index = torch.from_numpy(index)
        return ImageDataset(
            name=self.name,
            images=self.images[index],
            labels=None if self.labels is None else self.labels[index],
            classes=list(self.classes),
            source=self.source,
        )


Reader = Callable[..., ImageDataset]
"""``read(location, split, limit=None, **options) -> ImageDataset``; ``limit`` is a hint."""


@dataclass(frozen=True)
class DatasetSpec:
    """One entry of :data:`DATASETS`: what a dataset is and how to find, read and get it."""

    name: str
    description: str
    splits: tuple[str, ...]
    read: Reader
    # The dataset inside one candidate folder (a folder or a tarball), or None. ``find=None``
    # means the dataset needs no files (e.g. scikit-learn's bundled digits).
    find: Callable[[Path], Path | None] | None
    wanted: str = ""  # what ``find`` looks for, for messages: "train-images-idx3-ubyte[.gz]"
    how_to_get: str = ""  # "install the Debian package dataset-fashion-mnist"
    options: type[DatasetOptions] = DatasetOptions  # the options it takes (:mod:`dogo.data.options`)
    # Files come grouped by class (folders, lists): ``limit`` takes a seeded class-balanced subset.
    class_sorted: bool = False
    system_dirs: tuple[str, ...] = ()
    env_dirs: tuple[str, ...] | None = None  # sub-folders of $DOGO_DATA; None: (name,)
    download_key: str | None = None  # key into download.RESOURCES, None: no public URL
    long_tail_splits: tuple[str, ...] = ()  # splits always subsampled long-tailed
    needs_root: bool = False  # generic formats (imagefolder, filelist) only read ``root``


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def search_dirs(spec: DatasetSpec, root: Path | None) -> list[tuple[str, Path | None]]:
    """The folders ``spec`` is looked for in, in order, as ``(shown name, path or None)``.

    ``$DOGO_DATA`` entries are ``None`` (shown as ``$DOGO_DATA/<name>``) when it is unset.
    """
    dirs: list[tuple[str, Path | None]] = []
    if root is not None:
        dirs.append((str(root), root))
    if spec.needs_root:
        return dirs
    env = os.environ.get("DOGO_DATA")
    for sub in spec.env_dirs if spec.env_dirs is not None else (spec.name,):
        if env:
            path = Path(env).expanduser() / sub
            dirs.append((str(path), path))
        else:
            dirs.append((f"$DOGO_DATA/{sub}", None))
    dirs.extend((d, Path(d)) for d in spec.system_dirs)
    return dirs


def locate(spec: DatasetSpec, root: Path | None) -> Path | None:
    """The first place where ``spec.find`` recognises the dataset, or None."""
    assert spec.find is not None
    for _, path in search_dirs(spec, root):
        if path is not None and path.exists():
            found = spec.find(path)
            if found is not None:
                return found
    return None


def missing_error(spec: DatasetSpec, root: Path | None) -> DataError:
    """The one-line error for a dataset found nowhere: where it looked and how to get it."""
    where = ", ".join(shown for shown, _ in search_dirs(spec, root)) or "(no root given)"
    return DataError(f"{spec.name}: no {spec.wanted} in {where}; {how_to_get(spec)}")


def how_to_get(spec: DatasetSpec) -> str:
    """How a user gets ``spec``'s files, ending with the download hint where one exists."""
    if spec.download_key is not None:
        return f"{spec.how_to_get} or pass download: true" if spec.how_to_get else ("pass download: true")
    return spec.how_to_get


def first_file(folder: Path, names: Sequence[str]) -> Path | None:
    """The first of ``names`` that is a file in ``folder``, or None."""
    for name in names:
        path = folder / name
        if path.is_file():
            return path
    return None


def labels_tensor(values: Any, num_classes: int, source: str) -> torch.Tensor:
    """Labels as int64, checked to lie in ``0 .. num_classes - 1`` (else DataError)."""
    labels = np.asarray(values)
    if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        raise DataError(f"{source}: labels must be a list of integers, got {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"{source}: label {int(labels.min() if labels.min() < 0 else labels.max())} "
            f"is outside 0..{num_classes - 1}; {REPLACE_FILE}"
        )
    return torch.from_numpy(labels)


def one_line(error: BaseException) -> str:
    """An exception as ``Type: message`` on one line, for wrapping into a DataError."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
