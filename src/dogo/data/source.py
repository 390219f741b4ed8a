"""Where a run's images come from: decoded into memory, or a prepared image store.

:func:`load_split` is how training, evaluation and the bench read a split of the configured
dataset. ``dataset.store`` decides:

- ``off``: decode into memory (as every reader does).
- ``on``: read from the store, preparing it on first use (``dogo prepare`` ahead of time does
  the same).
- ``auto`` (default): the store when one has been prepared; else memory, unless the split is a
  folder or list of image files whose decoded size would reach :data:`STORE_FROM_BYTES`, in which
  case it is prepared first.

Stores live in ``dataset.store_dir`` (default ``$DOGO_DATA/stores``, else
``~/.cache/dogo/stores``), one folder per (dataset, split, options). Under torchrun the main
process prepares a missing store while the others wait; all then map the same files.

Both paths give the same images in the same order, so a run is bit-identical either way.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dogo.core import dist
from dogo.data import _locate, load_dataset, resolve
from dogo.data.base import DatasetSpec, ImageDataset
from dogo.data.store import identity, open_store, partial_path, prepare_store, source_digest

#: ``store: auto`` prepares a store for a folder or list split of at least this many decoded bytes.
#: Below it, memory is cheaper: no second copy on disk, no prepare pass, and one process's copy
#: (Fashion-MNIST 47 MB, CIFAR 150 MB, a 50k-image 64 px folder 614 MB) is small beside the
#: ~1.5 GB a ResNet-18 step holds. Gathering a batch costs the same from memory and from a
#: cached store (README "Performance"), so the threshold is about memory, not speed.
STORE_FROM_BYTES = 1 << 30


def stores_dir(configured: str | None = None) -> Path:
    if configured:
        return Path(configured).expanduser()
    env = os.environ.get("DOGO_DATA")
    return Path(env).expanduser() / "stores" if env else Path.home() / ".cache" / "dogo" / "stores"


def store_path(name: str | DatasetSpec, split: str, options: dict[str, Any], directory: str | None = None) -> Path:
    """The default store folder of a split: ``<stores>/<name>-<split>[-<hash of the options>]``."""
    spec = resolve(name)
    ident = identity(spec.name, split, options, class_sorted=spec.class_sorted)
    slug = re.sub(r"[^a-z0-9]+", "-", f"{spec.name}-{split}".lower()).strip("-")
    if ident["options"]:
        slug += "-" + hashlib.sha256(json.dumps(ident["options"], sort_keys=True).encode()).hexdigest()[:10]
    return stores_dir(directory) / slug


def _source(
    name: str | DatasetSpec, root: str | None, split: str, download: bool, options: dict[str, Any], store: Path
) -> tuple[dict[str, Any], str, Path | None]:
    spec = resolve(name)
    location = _locate(spec, None if root is None else Path(root).expanduser(), download)
    ident = identity(spec.name, split, options, class_sorted=spec.class_sorted)
    return ident, source_digest(ident, location, exclude=(store, partial_path(store))), location


def prepare(
    name: str,
    root: str | None = None,
    split: str = "train",
    download: bool = False,
    options: dict[str, Any] | None = None,
    out: str | os.PathLike[str] | None = None,
    store_dir: str | None = None,
    force: bool = False,
    log: Callable[[str], None] = lambda m: None,
) -> Path:
    """``dogo prepare``: decode one split into a store (resuming an unfinished one); returns its folder."""
    options = dict(options or {})
    spec = resolve(name)
    store = Path(out).expanduser() if out else store_path(spec, split, options, store_dir)
    ident, digest, _ = _source(spec, root, split, download, options, store)
    return prepare_store(
        store,
        lambda: load_dataset(spec, root=root, split=split, download=download, **options),
        ident,
        digest,
        force=force,
        log=log,
    )


def _estimated_bytes(name: str | DatasetSpec, location: Path | None, options: dict[str, Any]) -> int:
    """Decoded size of a folder or list dataset, from the number of files under its folder (0 for others)."""
    spec = resolve(name)
    if "image_size" not in spec.options.model_fields or location is None or not location.is_dir():
        return 0
    from dogo.data.folder import DEFAULT_IMAGE_SIZE

    size = int(options.get("image_size") or DEFAULT_IMAGE_SIZE)
    files = sum(len(f) for _, _, f in os.walk(location))
    return files * 3 * size * size


def reader_options(dataset, spec: DatasetSpec | None = None) -> dict[str, Any]:
    """The reader options of ``dataset`` (a :class:`~dogo.config.DatasetConfig`), the ones set.

    A reader that decodes image files (folders, file lists) decodes them at ``dataset.image_size``
    unless ``options.image_size`` says otherwise: one size for the images, their store and the
    views, so that a store prepared at that size (``dogo prepare --image-size``) is the one found.
    ``spec`` is the dataset's resolved spec when the caller has it (else it is looked up).
    """
    options = {k: v for k, v in dataset.options.items() if v is not None}
    if "image_size" in (spec or resolve(dataset.name)).options.model_fields:
        options.setdefault("image_size", dataset.image_size)
    return options


def load_split(
    dataset, split: str, log: Callable[[str], None] = lambda m: None, spec: DatasetSpec | None = None
) -> ImageDataset:
    """One split of ``dataset`` (a :class:`~dogo.config.DatasetConfig`), from memory or its store.

    The dataset's name is resolved once here (or not at all when its ``spec`` is given, e.g. by
    a caller that loads several splits) and the spec handed to every level below.
    """
    d = dataset
    spec = spec or resolve(d.name)
    options = reader_options(d, spec)
    if d.store == "off":
        return load_dataset(spec, root=d.root, split=split, download=d.download, **options)
    store = store_path(spec, split, options, d.store_dir)
    wanted = d.store == "on" or store.is_dir() or partial_path(store).is_dir()
    # a folder or list of files (a reader with image_size): may be too big for memory
    if not wanted and "image_size" in spec.options.model_fields:
        location = _locate(spec, None if d.root is None else Path(d.root).expanduser(), d.download)
        wanted = _estimated_bytes(spec, location, options) >= STORE_FROM_BYTES
    if not wanted:
        return load_dataset(spec, root=d.root, split=split, download=d.download, **options)
    ident, digest, _ = _source(spec, d.root, split, d.download, options, store)
    if not store.is_dir():
        dist.on_main_process(
            lambda: prepare_store(
                store,
                lambda: load_dataset(spec, root=d.root, split=split, download=d.download, **options),
                ident,
                digest,
                log=log,
            )
        )
    return open_store(store, ident, digest)
