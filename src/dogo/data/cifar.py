"""CIFAR-10, CIFAR-100 and CIFAR-10-Imbalanced: the "python version" pickles.

The tarball ``cifar-10-python.tar.gz`` unpacks to ``cifar-10-batches-py/`` with pickles
``data_batch_1`` .. ``data_batch_5`` (train, 10,000 each), ``test_batch`` and ``batches.meta``
(``label_names``). ``cifar-100-python.tar.gz`` unpacks to ``cifar-100-python/`` with ``train``,
``test`` and ``meta`` (``fine_label_names``); labels are ``fine_labels``. Every batch is a dict
(Python 2 ``str`` keys, read back as ``bytes``) whose ``data`` is an ``N x 3072`` uint8 array,
each row the 1024 red, then green, then blue values of a 32x32 image in row-major order.

Data are read from the extracted folder or straight from the tarball, always through
:func:`~dogo.data.safe_pickle.safe_load`. CIFAR-10-Imbalanced is CIFAR-10 whose train split is
subsampled long-tailed (:mod:`dogo.data.longtail`); its test split stays balanced.
"""

from __future__ import annotations

import gzip
import tarfile
import zlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dogo.core.errors import DataError
from dogo.data.base import DATASETS, DatasetSpec, ImageDataset, labels_tensor, one_line
from dogo.data.safe_pickle import safe_load
from dogo.guards.messages import REPLACE_FILE


@dataclass(frozen=True)
class CifarLayout:
    """File names of one CIFAR variant."""

    folder: str
    tarball: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    label_key: bytes
    names_key: bytes


CIFAR10 = CifarLayout(
    folder="cifar-10-batches-py",
    tarball="cifar-10-python.tar.gz",
    train=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test=("test_batch",),
    meta="batches.meta",
    label_key=b"labels",
    names_key=b"label_names",
)
CIFAR100 = CifarLayout(
    folder="cifar-100-python",
    tarball="cifar-100-python.tar.gz",
    train=("train",),
    test=("test",),
    meta="meta",
    label_key=b"fine_labels",
    names_key=b"fine_label_names",
)


def find_cifar(folder: Path, layout: CifarLayout) -> Path | None:
    """The extracted batch folder (``folder/<layout.folder>`` or ``folder``) or the tarball."""
    for candidate in (folder / layout.folder, folder):
        if (candidate / layout.meta).is_file():
            return candidate
    tarball = folder / layout.tarball
    return tarball if tarball.is_file() else None


def _load_members(location: Path, layout: CifarLayout, names: list[str]) -> dict[str, Any]:
    """Unpickle the named batch files from a folder or (in one pass) from the tarball."""
    if location.is_dir():
        loaded = {}
        for name in names:
            path = location / name
            if not path.is_file():
                raise DataError(f"{location}: missing {name}; {REPLACE_FILE}")
            with open(path, "rb") as handle:
                loaded[name] = safe_load(handle, str(path))
        return loaded
    wanted = {f"{layout.folder}/{name}": name for name in names}
    loaded = {}
    try:
        with tarfile.open(location, "r:*") as tar:
            for member in tar:  # the archive's own order; one decompression pass
                if member.name in wanted and member.isfile():
                    stream = tar.extractfile(member)
                    assert stream is not None
                    loaded[wanted[member.name]] = safe_load(stream, f"{location}:{member.name}")
                    if len(loaded) == len(wanted):
                        break
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise DataError(f"{location}: damaged tar archive ({one_line(error)}); {REPLACE_FILE}") from None
    missing = [member for member, name in wanted.items() if name not in loaded]
    if missing:
        raise DataError(f"{location}: no member {missing[0]}")
    return loaded


def _batch_arrays(batch: Any, layout: CifarLayout, source: str) -> tuple[np.ndarray, Any]:
    if not isinstance(batch, dict):
        raise DataError(f"{source}: expected a dict, found {type(batch).__name__}")
    data = batch.get(b"data")
    labels = batch.get(layout.label_key)
    if labels is None:
        raise DataError(f"{source}: no {layout.label_key.decode()!r} entry; {REPLACE_FILE}")
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", type(data).__name__)
        raise DataError(f"{source}: 'data' is {shape} {dtype}, expected N x 3072 uint8")
    if len(labels) != len(data):
        raise DataError(f"{source}: {len(labels)} labels for {len(data)} images; {REPLACE_FILE}")
    return data, labels


def read_cifar(location: Path, split: str, limit: int | None = None, *, layout: CifarLayout) -> ImageDataset:
    """One split as ``N x 3 x 32 x 32`` uint8 images with int64 labels and class names."""
    batches = list(layout.train if split == "train" else layout.test)
    loaded = _load_members(location, layout, [layout.meta, *batches])
    meta = loaded[layout.meta]
    names = meta.get(layout.names_key) if isinstance(meta, dict) else None
    if not isinstance(names, list) or not names:
        raise DataError(f"{location}: {layout.meta} has no {layout.names_key.decode()!r} list; {REPLACE_FILE}")
    classes = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]
    images, labels = [], []
    for name in batches:
        data, batch_labels = _batch_arrays(loaded[name], layout, f"{location}/{name}")
        images.append(data)
        labels.append(labels_tensor(batch_labels, len(classes), f"{location}/{name}"))
    pixels = np.concatenate(images).reshape(-1, 3, 32, 32)
    return ImageDataset(
        name="",
        images=torch.from_numpy(pixels),
        labels=torch.cat(labels),
        classes=classes,
        source=str(location),
    )


_TAR_HINT = "put {tarball} (from https://www.cs.toronto.edu/~kriz/cifar.html) in root"

DATASETS.register("cifar10")(
    DatasetSpec(
        name="cifar10",
        description="CIFAR-10: 32x32 colour, 10 classes, 50k/10k (python pickles)",
        splits=("train", "test"),
        read=partial(read_cifar, layout=CIFAR10),
        find=partial(find_cifar, layout=CIFAR10),
        wanted=f"{CIFAR10.folder}/ or {CIFAR10.tarball}",
        how_to_get=_TAR_HINT.format(tarball=CIFAR10.tarball),
        download_key="cifar10",
    )
)

DATASETS.register("cifar100")(
    DatasetSpec(
        name="cifar100",
        description="CIFAR-100: 32x32 colour, 100 fine classes, 50k/10k (python pickles)",
        splits=("train", "test"),
        read=partial(read_cifar, layout=CIFAR100),
        find=partial(find_cifar, layout=CIFAR100),
        wanted=f"{CIFAR100.folder}/ or {CIFAR100.tarball}",
        how_to_get=_TAR_HINT.format(tarball=CIFAR100.tarball),
        download_key="cifar100",
    )
)

DATASETS.register("cifar10-imbalanced")(
    DatasetSpec(
        name="cifar10-imbalanced",
        description="CIFAR-10 with a long-tailed train split (5000 .. 250 per class, 8,662 images) "
        "and the balanced test split",
        splits=("train", "test"),
        read=partial(read_cifar, layout=CIFAR10),
        find=partial(find_cifar, layout=CIFAR10),
        wanted=f"{CIFAR10.folder}/ or {CIFAR10.tarball}",
        how_to_get=_TAR_HINT.format(tarball=CIFAR10.tarball),
        env_dirs=("cifar10",),
        download_key="cifar10",
        long_tail_splits=("train",),
    )
)
