"""MNIST and Fashion-MNIST: the IDX format, gzipped or not.

An IDX file is a big-endian header followed by raw data::

    0x00 0x00 <type> <ndim>      magic; type 0x08 = unsigned byte, ndim 3 for images, 1 for labels
    <dim 0> ... <dim ndim-1>     uint32 each
    <data>                       prod(dims) bytes, row-major

So image files start with magic 0x00000803 (N x 28 x 28) and label files with 0x00000801 (N).
A split is ``<prefix>-images-idx3-ubyte[.gz]`` plus ``<prefix>-labels-idx1-ubyte[.gz]`` with
prefix ``train`` (60,000 images) or ``t10k`` (10,000). A damaged file (wrong magic, wrong
number of dimensions, truncated, image/label counts that differ) raises DataError naming it.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from functools import partial
from pathlib import Path

import numpy as np
import torch

from dogo.core.errors import DataError
from dogo.data.base import DATASETS, DatasetSpec, ImageDataset, labels_tensor, one_line
from dogo.guards.messages import REPLACE_FILE

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
DIGIT_CLASSES = [str(i) for i in range(10)]
PREFIX = {"train": "train", "test": "t10k"}
SUBFOLDERS = ("", "raw", "FashionMNIST/raw", "MNIST/raw")  # plain, and torchvision's layouts


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """The uint8 array stored in IDX file ``path`` (``.gz`` decompressed), of ``ndim`` dims."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                data = handle.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}: cannot read ({one_line(error)})") from None
    want = 0x0800 + ndim
    if len(data) < 4:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes); {REPLACE_FILE}")
    (magic,) = struct.unpack(">I", data[:4])
    if magic != want:
        raise DataError(
            f"{path}: not an IDX file with {ndim} dimension(s) of unsigned bytes "
            f"(magic 0x{magic:08x}, expected 0x{want:08x})"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes); {REPLACE_FILE}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    size, got = math.prod(dims), len(data) - header
    if got != size:
        problem = "truncated" if got < size else "has trailing bytes"
        raise DataError(f"{path}: {problem}: {got} data bytes, the header {'x'.join(map(str, dims))} needs {size}")
    return np.frombuffer(data, np.uint8, count=size, offset=header).reshape(dims).copy()


def _idx_file(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{folder}: no {stem}[.gz]; give the folder that holds it as dataset.root")


def find_idx(folder: Path) -> Path | None:
    """The folder holding the IDX files (``folder`` or a torchvision-style ``raw`` below it)."""
    for sub in SUBFOLDERS:
        candidate = folder / sub if sub else folder
        for prefix in PREFIX.values():
            stem = f"{prefix}-images-idx3-ubyte"
            if (candidate / stem).is_file() or (candidate / f"{stem}.gz").is_file():
                return candidate
    return None


def read_idx_split(location: Path, split: str, limit: int | None = None, *, classes: list[str]) -> ImageDataset:
    """Images ``N x 1 x 28 x 28`` and labels of one split from the IDX files in ``location``."""
    prefix = PREFIX[split]
    images_path = _idx_file(location, f"{prefix}-images-idx3-ubyte")
    labels_path = _idx_file(location, f"{prefix}-labels-idx1-ubyte")
    images = read_idx(images_path, 3)
    labels = read_idx(labels_path, 1)
    if len(images) != len(labels):
        raise DataError(
            f"{labels_path}: {len(labels)} labels, but {images_path} has {len(images)} images; {REPLACE_FILE}"
        )
    return ImageDataset(
        name="",
        images=torch.from_numpy(images).unsqueeze(1),
        labels=labels_tensor(labels, len(classes), str(labels_path)),
        classes=list(classes),
        source=str(images_path),
    )


DATASETS.register("fashion-mnist")(
    DatasetSpec(
        name="fashion-mnist",
        description="Zalando's Fashion-MNIST: 28x28 greyscale clothing, 10 classes, 60k/10k (IDX)",
        splits=("train", "test"),
        read=partial(read_idx_split, classes=FASHION_CLASSES),
        find=find_idx,
        wanted="train-images-idx3-ubyte[.gz]",
        how_to_get="install the Debian package dataset-fashion-mnist",
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        download_key="fashion-mnist",
    )
)

DATASETS.register("mnist")(
    DatasetSpec(
        name="mnist",
        description="MNIST handwritten digits: 28x28 greyscale, 10 classes, 60k/10k (IDX)",
        splits=("train", "test"),
        read=partial(read_idx_split, classes=DIGIT_CLASSES),
        find=find_idx,
        wanted="train-images-idx3-ubyte[.gz]",
        how_to_get="put the four IDX files from https://yann.lecun.com/exdb/mnist/ in root",
        download_key="mnist",
    )
)
