"""STL-10: the binary format of ``stl10_binary.tar.gz``.

``stl10_binary/`` holds ``unlabeled_X.bin`` (100,000 images), ``train_X.bin`` (5,000),
``test_X.bin`` (8,000), ``train_y.bin`` / ``test_y.bin`` (one byte per image, labels 1..10) and
``class_names.txt``. An ``_X.bin`` file is raw uint8 images of 3 x 96 x 96 = 27,648 bytes each,
every channel stored **column-major** (Matlab order): read as ``N x 3 x 96 x 96`` the last two
axes are (column, row), so they are transposed to give ``N x 3 x H x W``.

Splits: ``unlabeled`` (the reference pretrains on it), ``train``, ``test`` and
``train+unlabeled`` (the 105,000 images, unlabeled). Only the images a ``limit`` asks for are
read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dogo.core.errors import DataError
from dogo.data.base import DATASETS, DatasetSpec, ImageDataset, labels_tensor
from dogo.guards.messages import REPLACE_FILE

IMAGE_BYTES = 3 * 96 * 96
DEFAULT_CLASSES = [
    "airplane",
    "bird",
    "car",
    "cat",
    "deer",
    "dog",
    "horse",
    "monkey",
    "ship",
    "truck",
]
MARKERS = ("train_X.bin", "unlabeled_X.bin", "test_X.bin")
CHUNK = 2048


def find_stl10(folder: Path) -> Path | None:
    """The extracted ``stl10_binary`` folder (``folder/stl10_binary`` or ``folder``), or None."""
    for candidate in (folder / "stl10_binary", folder):
        if any((candidate / marker).is_file() for marker in MARKERS):
            return candidate
    return None


def read_stl_images(path: Path, limit: int | None = None) -> torch.Tensor:
    """The first ``limit`` (or all) images of an ``_X.bin`` file as ``N x 3 x 96 x 96`` uint8."""
    if not path.is_file():
        raise DataError(f"{path}: missing; {REPLACE_FILE}")
    size = path.stat().st_size
    if size % IMAGE_BYTES or size == 0:
        raise DataError(
            f"{path}: {size} bytes is not a positive multiple of {IMAGE_BYTES} (one 3x96x96 image); {REPLACE_FILE}"
        )
    count = size // IMAGE_BYTES if limit is None else min(size // IMAGE_BYTES, limit)
    raw = np.memmap(path, dtype=np.uint8, mode="r", shape=(count, 3, 96, 96))
    out = np.empty((count, 3, 96, 96), dtype=np.uint8)
    for start in range(0, count, CHUNK):  # column-major -> row-major, a chunk at a time
        out[start : start + CHUNK] = raw[start : start + CHUNK].transpose(0, 1, 3, 2)
    del raw
    return torch.from_numpy(out)


def read_stl_labels(path: Path, count: int, num_classes: int) -> torch.Tensor:
    """Labels 1..10 of a ``_y.bin`` file as int64 0..9; ``count`` images expected."""
    if not path.is_file():
        raise DataError(f"{path}: missing; {REPLACE_FILE}")
    raw = np.fromfile(path, dtype=np.uint8).astype(np.int64)
    if len(raw) != count:
        raise DataError(f"{path}: {len(raw)} labels, but the images file has {count} images; {REPLACE_FILE}")
    return labels_tensor(raw - 1, num_classes, str(path))


def _class_names(location: Path) -> list[str]:
    path = location / "class_names.txt"
    if not path.is_file():
        return list(DEFAULT_CLASSES)
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise DataError(f"{path}: no class names; {REPLACE_FILE}")
    return names


def read_stl10(location: Path, split: str, limit: int | None = None) -> ImageDataset:
    """One split of the binary STL-10; ``train+unlabeled`` is the train images, then unlabeled."""
    if split in ("unlabeled", "train+unlabeled"):
        parts = ["train", "unlabeled"] if split == "train+unlabeled" else ["unlabeled"]
        chunks: list[torch.Tensor] = []
        for part in parts:
            left = None if limit is None else limit - sum(len(x) for x in chunks)
            if left is not None and left <= 0:
                break
            chunks.append(read_stl_images(location / f"{part}_X.bin", left))
        return ImageDataset("", torch.cat(chunks) if len(chunks) > 1 else chunks[0], None, [], str(location))
    classes = _class_names(location)
    images_path = location / f"{split}_X.bin"
    images = read_stl_images(images_path)
    labels = read_stl_labels(location / f"{split}_y.bin", len(images), len(classes))
    return ImageDataset("", images, labels, classes, str(location))


DATASETS.register("stl10")(
    DatasetSpec(
        name="stl10",
        description="STL-10: 96x96 colour, 10 classes, 5k train / 8k test + 100k unlabeled (binary)",
        splits=("unlabeled", "train", "test", "train+unlabeled"),
        read=read_stl10,
        find=find_stl10,
        wanted="stl10_binary/",
        how_to_get="extract stl10_binary.tar.gz (https://cs.stanford.edu/~acoates/stl10/) in root",
        download_key="stl10",
    )
)
