"""File lists: text files of ``path label`` lines naming images relative to the data folder.

The reference reads Tiny-ImageNet through ``train_kv_list.txt`` / ``val_kv_list.txt`` and the
DomainNet subsets through ``<name>_train.txt`` / ``<name>_test.txt`` (345 classes), e.g.::

    quickdraw/aircraft_carrier/quickdraw_000001.png 0

The path is everything before the last whitespace (so it may contain spaces); blank lines and
``#`` comments are skipped. Images are decoded like an ImageFolder (RGB, resized and centre
cropped to ``image_size``, default 64). A missing image or a non-integer label raises DataError
naming the list file and the line number.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

from dogo.core.errors import ConfigError, DataError
from dogo.data.base import DATASETS, DatasetSpec, ImageDataset, labels_tensor
from dogo.data.folder import DEFAULT_IMAGE_SIZE, check_image_size, check_regular, decode_images
from dogo.data.options import FileListOptions, ImageFileOptions
from dogo.data.subsample import balanced_indices

#: Labels are class indices; a larger one is a damaged line (and would make a list of that many names).
MAX_CLASSES = 1_000_000


def inside(root: Path, name: str, what: str) -> Path:
    """``root / name`` when ``name`` is a relative path that stays inside ``root``, else DataError.

    Judged on the name itself (no ``..`` component, not absolute), so a data folder made of
    symbolic links into a shared store still reads; a list naming ``../outside.png`` does not.
    """
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or PureWindowsPath(name).drive or ".." in pure.parts or "\x00" in name:
        raise DataError(f"{what} {name!r} leaves {root}; a list names files inside its data folder only")
    return root / name


def _list_lines(list_path: Path) -> list[tuple[int, str, int]]:
    """``(line number, image name, label)`` of every entry of a list file."""
    if not list_path.is_file():
        raise DataError(f"{list_path}: no such file list; check dataset.root and the option list_file")
    entries = []
    try:
        lines = list_path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as error:
        raise DataError(
            f"{list_path}: not a text file list (byte {error.start} is not UTF-8); save it as UTF-8 text"
        ) from None
    for lineno, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.rsplit(maxsplit=1)
        if len(parts) != 2:
            raise DataError(f"{list_path}:{lineno}: expected 'path label', got {text!r}")
        name, label = parts
        try:
            value = int(label)
        except ValueError:
            raise DataError(
                f"{list_path}:{lineno}: label {label!r} is not an integer; correct that line of the list"
            ) from None
        if value < 0:
            raise DataError(f"{list_path}:{lineno}: label {value} is negative; correct that line of the list")
        if value >= MAX_CLASSES:
            raise DataError(
                f"{list_path}:{lineno}: label {value} is too large (at most {MAX_CLASSES - 1}); "
                "correct that line of the list"
            )
        entries.append((lineno, name, value))
    if not entries:
        raise DataError(f"{list_path}: lists no images")
    return entries


def parse_file_list(list_path: Path, base: Path, limit: int | None = None) -> tuple[list[Path], list[int]]:
    """``(image paths, labels)`` of a list file; paths are resolved against ``base``.

    With ``limit``, a seeded class-balanced subset of the entries (lists usually come grouped by
    class; :mod:`dogo.data.subsample`); only the files kept are checked.
    """
    entries = _list_lines(list_path)
    if limit is not None:
        entries = [entries[i] for i in balanced_indices(np.asarray([e[2] for e in entries]), limit)]
    paths = []
    for lineno, name, _ in entries:
        path = inside(base, name, f"{list_path}:{lineno}: image")
        if not os.path.exists(path):
            raise DataError(f"{list_path}:{lineno}: no image file {path}")
        check_regular(path)
        paths.append(path)
    return paths, [label for _, _, label in entries]


def read_listed(
    list_path: Path,
    base: Path,
    limit: int | None,
    image_size: int,
    num_classes: int | None,
) -> ImageDataset:
    """Decode the images a list names; classes are ``"0" .. "K-1"``."""
    image_size = check_image_size(image_size)
    paths, labels = parse_file_list(list_path, base, limit)
    count = num_classes if num_classes is not None else max(labels) + 1
    images, kept = decode_images(paths, image_size)
    return ImageDataset(
        name="",
        images=images,
        labels=labels_tensor([labels[i] for i in kept], count, str(list_path)),
        classes=[str(i) for i in range(count)],
        source=str(list_path),
    )


def read_known_lists(
    location: Path,
    split: str,
    limit: int | None = None,
    image_size: int = DEFAULT_IMAGE_SIZE,
    *,
    lists: dict[str, str],
    num_classes: int,
) -> ImageDataset:
    """A dataset with fixed list-file names per split, paths relative to ``location``."""
    return read_listed(location / lists[split], location, limit, image_size, num_classes)


def read_generic_list(
    location: Path,
    split: str,
    limit: int | None = None,
    image_size: int = DEFAULT_IMAGE_SIZE,
    list_file: str | None = None,
) -> ImageDataset:
    """``filelist``: option ``list_file`` (may contain ``{split}``), relative to root."""
    if not list_file:
        raise ConfigError("filelist: needs the option list_file (e.g. '{split}_list.txt')")
    try:
        name = str(list_file).format(split=split)
    except (KeyError, IndexError, ValueError, AttributeError) as error:
        raise ConfigError(f"filelist: list_file {list_file!r}: only {{split}} may be filled in ({error!r})") from None
    list_path = inside(location, name, "filelist: list_file")
    return read_listed(list_path, location, limit, image_size, None)


def _finder(names: tuple[str, ...]):
    def find(folder: Path) -> Path | None:
        return folder if any((folder / n).is_file() for n in names) else None

    return find


def _is_dir(folder: Path) -> Path | None:
    return folder if folder.is_dir() else None


DATASETS.register("filelist")(
    DatasetSpec(
        name="filelist",
        description="any 'path label' list file (option list_file, may contain {split}) under root",
        splits=("train", "val", "test"),
        read=read_generic_list,
        find=_is_dir,
        wanted="folder",
        how_to_get="pass root and the option list_file",
        options=FileListOptions,
        class_sorted=True,
        needs_root=True,
    )
)

_TINY = {"train": "train_kv_list.txt", "val": "val_kv_list.txt", "test": "val_kv_list.txt"}
DATASETS.register("tiny-imagenet")(
    DatasetSpec(
        name="tiny-imagenet",
        description="Tiny-ImageNet: 64x64 colour, 200 classes, 100k/10k ('test' = the val list)",
        splits=("train", "val", "test"),
        read=partial(read_known_lists, lists=_TINY, num_classes=200),
        find=_finder(tuple(_TINY.values())),
        wanted="train_kv_list.txt",
        how_to_get="unpack http://cs231n.stanford.edu/tiny-imagenet-200.zip in root and write "
        "train_kv_list.txt / val_kv_list.txt ('path label' per line)",
        options=ImageFileOptions,
        class_sorted=True,
    )
)


def _register_domainnet(name: str) -> None:
    lists = {"train": f"{name}_train.txt", "test": f"{name}_test.txt"}
    DATASETS.register(name)(
        DatasetSpec(
            name=name,
            description=f"DomainNet {name}: 345 classes, read through {name}_train/test.txt",
            splits=("train", "test"),
            read=partial(read_known_lists, lists=lists, num_classes=345),
            find=_finder(tuple(lists.values())),
            wanted=f"{name}_train.txt",
            how_to_get="unpack the DomainNet subset (https://ai.bu.edu/M3SDA/) with its "
            f"{name}_train.txt / {name}_test.txt lists in root",
            options=ImageFileOptions,
            class_sorted=True,
            env_dirs=(name, "domainnet"),
        )
    )


for _name in ("quickdraw", "sketch", "clipart"):
    _register_domainnet(_name)
