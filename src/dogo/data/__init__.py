"""Datasets: one reader per on-disk format, a ``DATASETS`` registry, and :func:`load_dataset`.

Every reader returns an :class:`ImageDataset` with the whole split in memory as uint8
``N x C x H x W`` so that augmentation runs batched. Registered names (lookup ignores case and
punctuation, so the reference's ``CIFAR10Imbalanced``, ``TinyImageNet``, ``STL10`` and
``ImageNet`` work too):

=====================  ========================  ==========================================
name                   format (module)           splits
=====================  ========================  ==========================================
digits                 scikit-learn (digits)     train, test, all
fashion-mnist, mnist   IDX [.gz] (idx)           train, test
cifar10, cifar100      python pickles (cifar)    train, test
cifar10-imbalanced     cifar10 + long tail       train (long-tailed), test (balanced)
stl10                  binary (stl10)            unlabeled, train, test, train+unlabeled
imagefolder, imagenet  PIL folders (folder)      train, val, test / train, val
filelist, tiny-imagenet, quickdraw, sketch, clipart   'path label' lists (filelist)
=====================  ========================  ==========================================

Options every dataset takes (typed per reader in :mod:`dogo.data.options`): ``limit`` (keep N
images: a class-balanced subset drawn with a fixed seed on readers whose files come grouped by
class, folders and lists (:mod:`dogo.data.subsample`); the first N on the others, whose files are
already shuffled), ``long_tail`` (``True`` or a dict with any of ``n_max``, ``n_min``, ``gamma``:
subsample with the reference's CIFAR-10-Imbalanced rule; for ``cifar10-imbalanced`` it only
re-parametrises the long-tailed train split, its test split stays balanced) and ``bad_files``
(``refuse`` or ``skip``: what the folder and list readers do with image files they cannot decode,
all listed in one report; :mod:`dogo.data.decode`). Folder and list readers also take
``image_size``; ``filelist`` takes ``list_file``. Unknown options are a ConfigError naming the
nearest valid one; options set to ``None`` count as not given.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from dogo.core.errors import ConfigError, DataError
from dogo.data import cifar, decode, digits, filelist, folder, idx, stl10  # noqa: F401  (registration)
from dogo.data import download as _download
from dogo.data.base import (
    DATASETS,
    DatasetSpec,
    ImageDataset,
    how_to_get,
    locate,
    missing_error,
    search_dirs,
)
from dogo.data.longtail import long_tail_counts, subsample_long_tailed
from dogo.data.options import check_options
from dogo.data.subsample import balanced_indices

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "ImageDataset",
    "dataset_options",
    "dataset_status",
    "get_spec",
    "load_dataset",
    "long_tail_counts",
    "resolve",
    "subsample_long_tailed",
]


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def get_spec(name: str) -> DatasetSpec:
    """The registered spec for ``name``, ignoring case and punctuation ("CIFAR10Imbalanced").

    Unknown names raise ConfigError listing the known ones.
    """
    if name in DATASETS:
        return DATASETS.get(name)
    for known in DATASETS:
        if _key(known) == _key(str(name)):
            return DATASETS.get(known)
    return DATASETS.get(str(name))  # raises ConfigError naming the known datasets


def resolve(dataset: str | DatasetSpec) -> DatasetSpec:
    """``dataset``'s spec: a name is looked up (:func:`get_spec`), a spec is handed through as it is.

    One load resolves its dataset once, at the top, and hands the spec to every level below
    (:func:`load_dataset`, :func:`dogo.data.source.load_split`, the store's paths), which all take
    a name or a spec.
    """
    return dataset if isinstance(dataset, DatasetSpec) else get_spec(dataset)


def dataset_options(name: str, options: Any, *, if_known: bool = False) -> dict[str, Any]:
    """``options`` of dataset ``name`` checked against its reader's model; the ones given (not None).

    ConfigError for an unknown option (naming the nearest valid one), a bad value, or an unknown
    dataset (unless ``if_known``: then nothing is checked, and loading names the problem). The
    config calls this when it is read, :func:`load_dataset` again.
    """
    try:
        spec = get_spec(name)
    except ConfigError:
        if if_known:
            return dict(options or {})
        raise
    return check_options(spec.name, spec.options, options)


def _limited(spec: DatasetSpec, ds: ImageDataset, limit: int | None) -> ImageDataset:
    """``ds`` cut to ``limit`` images: class-balanced for class-sorted readers, else the first N."""
    if limit is None or len(ds) <= limit:
        return ds
    if spec.class_sorted and ds.labels is not None:
        return ds.subset(balanced_indices(ds.labels.numpy(), limit))
    return ds.subset(slice(0, limit))


def _long_tail_params(spec: DatasetSpec, split: str, value: Any) -> dict[str, Any] | None:
    params = (
        None
        if value is None or value is False
        else {}
        if value is True
        else {key: item for key, item in value.items() if item is not None}
    )
    if spec.long_tail_splits:  # e.g. cifar10-imbalanced: long-tailed train, balanced test
        return (params or {}) if split in spec.long_tail_splits else None
    return params


def _download_dir(spec: DatasetSpec, root: Path | None) -> Path:
    if root is not None:
        return root
    env = os.environ.get("DOGO_DATA")
    if env:
        sub = spec.env_dirs[0] if spec.env_dirs else spec.name
        return Path(env).expanduser() / sub
    raise DataError(f"{spec.name}: download: true needs root or $DOGO_DATA to download into")


def _locate(spec: DatasetSpec, root: Path | None, download: bool) -> Path | None:
    if spec.find is None:
        return None
    if spec.needs_root and root is None:
        raise ConfigError(f"{spec.name}: needs root ({spec.how_to_get})")
    location = locate(spec, root)
    if location is None and download:
        if spec.download_key is None:
            raise DataError(f"{spec.name}: has no public download; {spec.how_to_get}")
        target = _download_dir(spec, root)
        _download.download(spec.download_key, target)
        location = spec.find(target)
    if location is None:
        raise missing_error(spec, root)
    from dogo.guards.inputs import reading

    reading(location)  # no output of this command may replace it
    return location


def load_dataset(
    name: str | DatasetSpec,
    root: str | os.PathLike[str] | None = None,
    split: str = "train",
    download: bool = False,
    **options: Any,
) -> ImageDataset:
    """Read one split of dataset ``name`` into memory.

    Looks in ``root``, then ``$DOGO_DATA/<name>``, then known system folders; with
    ``download=True`` a dataset with a public URL is fetched into ``root`` (or
    ``$DOGO_DATA/<name>``) and verified. ``options``: ``limit``, ``long_tail`` and the
    dataset's own (``image_size``, ``list_file``). ``name`` may be the spec already resolved
    (:func:`resolve`), which is then not looked up again.

    Raises ConfigError for an unknown name, split or option, DataError for missing or damaged
    data (one line naming where it looked or the bad file, and how to fix it).
    """
    spec = resolve(name)
    if split not in spec.splits:
        raise ConfigError(f"{spec.name}: unknown split {split!r}; known: {', '.join(spec.splits)}")
    options = check_options(spec.name, spec.options, options)
    limit = options.pop("limit", None)
    long_tail = _long_tail_params(spec, split, options.pop("long_tail", None))
    root_path = None if root is None else Path(root).expanduser()
    location = _locate(spec, root_path, download)
    with decode.policy(options.pop("bad_files", None)):
        ds = spec.read(location, split, limit=None if long_tail is not None else limit, **options)
    ds.name = spec.name
    if long_tail is not None:
        ds = subsample_long_tailed(ds, **long_tail)
    return _limited(spec, ds, limit)


def dataset_status(root: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """One dict per registered dataset, for ``dogo datasets``.

    Keys: ``name``, ``description``, ``splits``, ``looks_in`` (list of folders),
    ``found`` (bool), ``found_at`` (where found, or None), ``how_to_get``, ``downloadable``.
    """
    root_path = None if root is None else Path(root).expanduser()
    rows = []
    for name in DATASETS:
        spec = DATASETS.get(name)
        if spec.find is None:
            looks_in, found_at = [], spec.how_to_get
        elif spec.needs_root and root_path is None:
            looks_in, found_at = ["root (must be given)"], None
        else:
            looks_in = [shown for shown, _ in search_dirs(spec, root_path)]
            location = locate(spec, root_path)
            found_at = None if location is None else str(location)
        rows.append(
            {
                "name": spec.name,
                "description": spec.description,
                "splits": list(spec.splits),
                "looks_in": looks_in,
                "found": found_at is not None,
                "found_at": found_at,
                "how_to_get": how_to_get(spec),
                "downloadable": spec.download_key is not None,
            }
        )
    return rows
