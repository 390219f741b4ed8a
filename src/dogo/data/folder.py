"""ImageFolder: ``root/<split>/<class>/<image files>`` decoded with PIL (ImageNet's layout).

Classes are the sorted sub-folder names (label = position), files are taken in sorted order
(recursively, hidden files skipped). Without a ``<split>`` folder, ``root/<class>/...`` is
read for the ``train`` split only, so that a missing ``val``/``test`` folder is an error rather
than a silent copy of the training data.

Every image is converted to RGB, its shorter side resized to ``image_size`` (default 64) and the
centre ``image_size x image_size`` cropped, giving uint8 ``N x 3 x S x S``. Decoding runs in a
thread pool with a progress bar; files PIL cannot decode are listed in one report at the end
(refused, or skipped with option ``bad_files: skip``; :mod:`dogo.data.decode`).
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from dogo.data.base import DATASETS, DatasetSpec, ImageDataset, one_line
from dogo.data.decode import decode_files
from dogo.errors import ConfigError, DataError

DEFAULT_IMAGE_SIZE = 64
SPLIT_FOLDERS = ("train", "val", "test")


def check_image_size(image_size: object) -> int:
    """``image_size`` as a positive int, else ConfigError."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ConfigError(f"image_size must be a positive integer, got {image_size!r}")
    return image_size


def decode_image(path: Path, image_size: int) -> np.ndarray:
    """One file as a ``3 x S x S`` uint8 array: RGB, shorter side resized to S, centre crop."""
    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise DataError(f"{path}: not a readable image ({one_line(error)})") from None
    width, height = image.size
    if (width, height) != (image_size, image_size):
        scale = image_size / min(width, height)
        size = (max(image_size, round(width * scale)), max(image_size, round(height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR)
        left = (size[0] - image_size) // 2
        top = (size[1] - image_size) // 2
        image = image.crop((left, top, left + image_size, top + image_size))
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)


def decode_images(paths: Sequence[Path], image_size: int) -> tuple[torch.Tensor, list[int]]:
    """All ``paths`` decoded (in order) into one uint8 ``N x 3 x S x S`` tensor, and the indices kept.

    A thread pool with a progress bar; unreadable files are reported together at the end
    (:func:`dogo.data.decode.decode_files`).
    """
    return decode_files(paths, partial(decode_image, image_size=image_size), (3, image_size, image_size))


def _files(folder: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith("."))
    return found


def split_folder(root: Path, split: str) -> Path:
    """``root/split``, or ``root`` itself for ``train`` when there are no split folders."""
    if (root / split).is_dir():
        return root / split
    if split == "train" and not any((root / s).is_dir() for s in SPLIT_FOLDERS):
        return root
    raise DataError(f"{root}: no {split}/ folder")


def read_image_folder(
    location: Path, split: str, limit: int | None = None, image_size: int = DEFAULT_IMAGE_SIZE
) -> ImageDataset:
    """Read ``location/<split>/<class>/*`` (or ``location/<class>/*``) as one split."""
    image_size = check_image_size(image_size)
    base = split_folder(location, split)
    classes = sorted(d.name for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"{base}: no class folders (expected {base}/<class>/<image files>)")
    paths, labels = [], []
    for label, name in enumerate(classes):
        for path in _files(base / name):
            paths.append(path)
            labels.append(label)
            if limit is not None and len(paths) >= limit:
                break
        if limit is not None and len(paths) >= limit:
            break
    if not paths:
        raise DataError(f"{base}: the class folders hold no image files")
    images, kept = decode_images(paths, image_size)
    return ImageDataset(
        name="",
        images=images,
        labels=torch.tensor([labels[i] for i in kept], dtype=torch.int64),
        classes=classes,
        source=str(base),
    )


def _is_dir(folder: Path) -> Path | None:
    return folder if folder.is_dir() else None


def _find_imagenet(folder: Path) -> Path | None:
    return folder if any((folder / s).is_dir() for s in ("train", "val")) else None


DATASETS.register("imagefolder")(DatasetSpec(
    name="imagefolder",
    description="any root/<split>/<class>/<images> folder, decoded with PIL to image_size",
    splits=SPLIT_FOLDERS,
    read=read_image_folder,
    find=_is_dir,
    wanted="folder",
    how_to_get="pass root: a folder of <split>/<class>/<image files>",
    options=("image_size",),
    needs_root=True,
))

DATASETS.register("imagenet")(DatasetSpec(
    name="imagenet",
    description="ImageNet (ILSVRC-2012) as an ImageFolder train/<wnid>/*.JPEG, val/<wnid>/*.JPEG",
    splits=("train", "val"),
    read=read_image_folder,
    find=_find_imagenet,
    wanted="train/ or val/ class folders",
    how_to_get="download ILSVRC-2012 from https://image-net.org (registration needed) and "
    "arrange it as train/<wnid>/*.JPEG and val/<wnid>/*.JPEG",
    options=("image_size",),
))
