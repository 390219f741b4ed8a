"""ImageFolder: ``root/<split>/<class>/<image files>`` decoded with PIL (ImageNet's layout).

Classes are the sorted sub-folder names (label = position), files are taken in sorted order
(recursively, hidden files skipped). Without a ``<split>`` folder, ``root/<class>/...`` is
read for the ``train`` split only, so that a missing ``val``/``test`` folder is an error rather
than a silent copy of the training data.

Only regular files are read (a FIFO or device file is refused by name). Every image is
converted to 8-bit RGB (16-bit greyscale scaled, not clipped; float images refused), its
shorter side resized to ``image_size`` (default 64) and the centre ``image_size x image_size``
cropped, giving uint8 ``N x 3 x S x S``; the memory this needs is checked first. Decoding runs
in a thread pool with a progress bar; files PIL cannot decode are listed in one report at the
end (refused, or skipped with option ``bad_files: skip``; :mod:`dogo.data.decode`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from dogo.core.errors import ConfigError, DataError
from dogo.core.memory import check_fits
from dogo.data.base import DATASETS, DatasetSpec, ImageDataset, one_line
from dogo.data.decode import decode_files
from dogo.data.options import ImageFileOptions
from dogo.data.subsample import balanced_indices

DEFAULT_IMAGE_SIZE = 64
SPLIT_FOLDERS = ("train", "val", "test")


def check_image_size(image_size: object) -> int:
    """``image_size`` as a positive int, else ConfigError."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ConfigError(f"image_size must be a positive integer, got {image_size!r}")
    return image_size


def check_regular(path: Path) -> None:
    """DataError unless ``path`` is a regular file (or a link to one).

    Opening a FIFO named ``x.png`` blocks until something writes to it, and a device file
    reads forever: only regular files are read.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror})") from None
    if not stat.S_ISREG(mode):
        kind = (
            "a FIFO"
            if stat.S_ISFIFO(mode)
            else "a socket"
            if stat.S_ISSOCK(mode)
            else "a device file"
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "not a file"
        )
        raise DataError(f"{path}: not a regular file ({kind}); remove it from the image folder")


#: 16-bit and 32-bit integer modes, read as numbers and scaled to 8 bits (convert("RGB") clips them).
_WIDE_MODES = {"I;16": 16, "I;16L": 16, "I;16B": 16, "I;16N": 16, "I": 16}


def to_rgb8(image: Image.Image, path: Path) -> Image.Image:
    """``image`` as 8-bit RGB, every mode PIL offers decoded by its meaning, else DataError naming it.

    PIL's ``convert("RGB")`` clips 16-bit greyscale to white; those are scaled to 8 bits here.
    A 32-bit integer image whose values fit 16 bits (PIL's reading of a 16-bit PNG) is scaled
    the same way; floats and wider integers have no fixed range and are refused.
    """
    mode = image.mode
    if mode in _WIDE_MODES:
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise DataError(f"{path}: {mode} image with values outside 0..65535; save it as 8 or 16 bits per channel")
        grey = np.round(values.astype(np.float64) / 257.0).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "F":
        raise DataError(f"{path}: 32-bit float image (mode F) has no fixed range; save it as 8 or 16 bits")
    try:
        return image.convert("RGB")
    except ValueError as error:  # modes PIL cannot convert to RGB (e.g. LAB, HSV in some versions)
        raise DataError(f"{path}: image mode {mode} cannot be converted to RGB ({one_line(error)})") from None


def decode_image(path: Path, image_size: int) -> np.ndarray:
    """One file as a ``3 x S x S`` uint8 array: RGB, shorter side resized to S, centre crop."""
    check_regular(path)
    try:
        with Image.open(path) as opened:
            opened.load()
            image = to_rgb8(opened, path)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise DataError(f"{path}: not a readable image ({one_line(error)})") from None
    width, height = image.size
    if (width, height) != (image_size, image_size):
        scale = image_size / min(width, height)
        size = (max(image_size, round(width * scale)), max(image_size, round(height * scale)))
        check_fits(size[0] * size[1] * 3 * 2, f"{path} resized to image_size {image_size}", "lower image_size")
        image = image.resize(size, Image.Resampling.BILINEAR)
        left = (size[0] - image_size) // 2
        top = (size[1] - image_size) // 2
        image = image.crop((left, top, left + image_size, top + image_size))
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)


def decode_images(paths: Sequence[Path], image_size: int) -> tuple[torch.Tensor, list[int]]:
    """All ``paths`` decoded (in order) into one uint8 ``N x 3 x S x S`` tensor, and the indices kept.

    The memory the tensor needs is checked against what the machine has before it is allocated,
    and every path must be a regular file (a FIFO would block a worker forever). A thread pool
    with a progress bar; unreadable files are reported together at the end
    (:func:`dogo.data.decode.decode_files`).
    """
    check_fits(
        len(paths) * 3 * image_size * image_size,
        f"{len(paths)} images at image_size {image_size}",
        "lower image_size or pass the option limit",
    )
    for path in paths:
        check_regular(path)
    return decode_files(paths, partial(decode_image, image_size=image_size), (3, image_size, image_size))


def _files(folder: Path) -> list[Path]:
    found: list[Path] = []
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
    raise DataError(f"{root}: no {split}/ folder; give the folder that holds it as dataset.root, or another split")


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
        found = _files(base / name)
        paths += found
        labels += [label] * len(found)
    if limit is not None:  # a seeded class-balanced subset, not the first class (dogo.data.subsample)
        keep = balanced_indices(np.asarray(labels), limit)
        paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
    if not paths:
        raise DataError(f"{base}: the class folders hold no image files; put the images in one folder per class")
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


DATASETS.register("imagefolder")(
    DatasetSpec(
        name="imagefolder",
        description="any root/<split>/<class>/<images> folder, decoded with PIL to image_size",
        splits=SPLIT_FOLDERS,
        read=read_image_folder,
        find=_is_dir,
        wanted="folder",
        how_to_get="set dataset.root (e.g. dataset.root=photos) to a folder of <split>/<class>/<image files>",
        options=ImageFileOptions,
        class_sorted=True,
        needs_root=True,
    )
)

DATASETS.register("imagenet")(
    DatasetSpec(
        name="imagenet",
        description="ImageNet (ILSVRC-2012) as an ImageFolder train/<wnid>/*.JPEG, val/<wnid>/*.JPEG",
        splits=("train", "val"),
        read=read_image_folder,
        find=_find_imagenet,
        wanted="train/ or val/ class folders",
        how_to_get="download ILSVRC-2012 from https://image-net.org (registration needed) and "
        "arrange it as train/<wnid>/*.JPEG and val/<wnid>/*.JPEG",
        options=ImageFileOptions,
        class_sorted=True,
    )
)
