"""The image store: a split decoded once into memory-mapped ``.npy`` files that every process shares.

Format (a folder; standard files any tool reads, e.g. ``numpy.load(path, mmap_mode="r")``)::

    STORE/images.npy   uint8 N x C x H x W (C-order), written through numpy.lib.format.open_memmap
    STORE/labels.npy   int64 N (absent for an unlabeled split)
    STORE/store.json   {"format": "dogo-store", "version": 1, "dataset", "split", "options",
                        "digest", "count", "shape", "classes", "source", "labelled", "skipped",
                        "mean", "std"}

``mean`` and ``std`` are the per-channel statistics of the images (:mod:`dogo.data.stats`), computed
once here so that a run normalising with its data's statistics never reads the split for them.

``digest`` is a SHA-256 of what the store was made from: the dataset name, split and reader
options, and the path, size and modification time of every file of the source (so a changed,
added or removed source file makes the store stale without reading the images again).

Reading (:func:`open_store`): an :class:`~dogo.data.base.ImageDataset` whose ``images`` is a
tensor over the memory map (``torch.from_numpy``, copy-on-write so it is never written back).
Indexing a batch gathers its rows from the page cache, which all processes on a machine share:
a store costs each process only the batch it gathers, not a copy of the split. The sampler's
indices are the same as in memory, so training on a store gives bit-identical results.

Writing (:func:`prepare_store`) is atomic and resumable: everything goes into ``STORE.partial/``
(``images.npy`` filled in place through a memory map, its space reserved up front by
:func:`dogo.guards.outputs.allocate`, so that a full disk is the one line of every output, at
once, not a SIGBUS halfway; the work folder stands in for the temporary file of other outputs),
decoding records its progress after every chunk in
``progress.json``, and only a complete store is renamed to ``STORE``. A killed prepare,
run again, continues from its last chunk when the source is unchanged.

A store is checked when opened: its format version, that it holds the dataset, split and
options asked for, that its source is unchanged (the digest) and that its files are whole.
Anything else is refused with one line saying how to rebuild it (``dogo prepare ... --force``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dogo.core.errors import DataError, DogoError
from dogo.data import decode
from dogo.data.base import ImageDataset
from dogo.data.stats import channel_stats
from dogo.guards.locks import holding
from dogo.guards.outputs import allocate, check_target, write_output
from dogo.guards.ownership import NotOwned, check_removable, mark, marker, remove_owned

FORMAT = "dogo-store"
VERSION = 1
PARTIAL = ".partial"
#: Images copied per chunk when a reader hands over a split already in memory.
COPY_CHUNK = 4096


def _options_key(options: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps({k: v for k, v in sorted(options.items()) if v is not None}, default=str))


def identity(name: str, split: str, options: dict[str, Any], *, class_sorted: bool = False) -> dict[str, Any]:
    """What a store holds: dataset name, split and reader options (as stored in store.json).

    A ``limit`` on a class-sorted reader takes a class-balanced subset (it once took the first N), so
    the rule is part of what the store holds: a store made under the old rule no longer matches.
    """
    ident = {"dataset": name, "split": split, "options": _options_key(options)}
    if class_sorted and options.get("limit") is not None:
        ident["subset"] = "class-balanced, seed 0"
    return ident


def source_digest(ident: dict[str, Any], location: Path | None, exclude: tuple[Path, ...] = ()) -> str:
    """SHA-256 of the identity and of every source file's relative path, size and mtime (ns)."""
    h = hashlib.sha256(json.dumps({**ident, "version": VERSION}, sort_keys=True).encode())
    if location is None:
        return h.hexdigest()
    excluded = {os.path.realpath(p) for p in exclude}
    if location.is_file():
        st = location.stat()
        h.update(f"{location.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()
    for dirpath, dirnames, filenames in os.walk(location):
        dirnames[:] = sorted(d for d in dirnames if os.path.realpath(os.path.join(dirpath, d)) not in excluded)
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            h.update(f"{os.path.relpath(path, location)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def partial_path(store: Path) -> Path:
    return store.with_name(store.name + PARTIAL)


# ------------------------------------------------------------------------------------------ reading


def read_meta(store: Path) -> dict[str, Any]:
    """``store.json`` of a store, checked to be a dogo store of this format version."""
    meta_path = store / "store.json"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise DataError(f"{store}: not a dogo store (no store.json); prepare one with `dogo prepare`") from None
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{meta_path}: unreadable ({type(exc).__name__}); rebuild it with `dogo prepare ... --out {store} --force`"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{store}: not a dogo store (store.json has no format {FORMAT!r})")
    if meta.get("version") != VERSION:
        raise DataError(
            f"{store}: store format version {meta.get('version')}, this dogo reads version {VERSION}; "
            f"rebuild it with `dogo prepare {meta.get('dataset', 'DATASET')} --out {store} --force`"
        )
    return meta


def _rebuild_hint(meta_or_ident: dict[str, Any], store: Path) -> str:
    return f"`dogo prepare {meta_or_ident.get('dataset')} --split {meta_or_ident.get('split')} --out {store} --force`"


def check_meta(store: Path, meta: dict[str, Any], ident: dict[str, Any] | None, digest: str | None) -> None:
    """Refuse a store of another dataset, split or options, or whose source has changed."""
    if ident is not None:
        held = {k: meta.get(k) for k in ("dataset", "split", "options")}
        if held != ident:
            raise DataError(
                f"{store}: holds {held['dataset']}/{held['split']} (options {json.dumps(held['options'])}), "
                f"not {ident['dataset']}/{ident['split']} (options {json.dumps(ident['options'])}); "
                f"choose another store or rebuild it with {_rebuild_hint(ident, store)}"
            )
    if digest is not None and meta.get("digest") != digest:
        raise DataError(
            f"{store}: its source {meta.get('source')} has changed since it was prepared "
            f"(digest differs); rebuild it with {_rebuild_hint(meta, store)}"
        )


def _header(handle) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` of the ``.npy`` open in ``handle``, left at the start of the data."""
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(handle)
    return np.lib.format.read_array_header_2_0(handle)


def _npy(path: Path, shape: tuple[int, ...], dtype: np.dtype, store: Path, meta: dict[str, Any]) -> np.ndarray:
    """A store's ``.npy`` memory-mapped (copy-on-write), checked to be whole and of the recorded shape."""
    hint = _rebuild_hint(meta, store)
    try:
        with open(path, "rb") as handle:
            header = _header(handle)  # (shape, fortran, dtype)
            offset = handle.tell()
        size = path.stat().st_size
    except FileNotFoundError:
        raise DataError(f"{path}: missing from the store; rebuild it with {hint}") from None
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{path}: not a readable .npy file ({' '.join(str(exc).split())}); rebuild it with {hint}"
        ) from None
    found_shape, fortran, found_dtype = header
    if tuple(found_shape) != tuple(shape) or fortran or np.dtype(found_dtype) != dtype:
        raise DataError(
            f"{path}: holds {found_dtype} {tuple(found_shape)}, store.json says {dtype} {tuple(shape)}; "
            f"rebuild it with {hint}"
        )
    expected = offset + int(np.prod(shape)) * dtype.itemsize
    if size < expected:
        raise DataError(f"{path}: truncated ({size} of {expected} bytes); rebuild it with {hint}")
    return np.load(path, mmap_mode="c")


def open_store(
    store: str | os.PathLike[str], ident: dict[str, Any] | None = None, digest: str | None = None
) -> ImageDataset:
    """A store as an ImageDataset over its memory map, after checking it (see the module doc)."""
    store = Path(store)
    if not store.is_dir():
        if partial_path(store).is_dir():
            raise DataError(f"{store}: its preparation did not finish; run `dogo prepare` again to continue it")
        raise DataError(f"{store}: no such store; prepare one with `dogo prepare`")
    meta = read_meta(store)
    check_meta(store, meta, ident, digest)
    try:
        count, shape = int(meta["count"]), tuple(int(s) for s in meta["shape"])
        classes = [str(c) for c in meta.get("classes", [])]
    except (KeyError, TypeError, ValueError):
        raise DataError(
            f"{store / 'store.json'}: count, shape or classes missing or not numbers; rebuild it with "
            f"{_rebuild_hint(meta, store)}"
        ) from None
    if count < 1 or len(shape) != 3 or min(shape) < 1:
        raise DataError(
            f"{store / 'store.json'}: {count} images of shape {shape}, not N >= 1 images C x H x W; "
            f"rebuild it with {_rebuild_hint(meta, store)}"
        )
    images = _npy(store / "images.npy", (count, *shape), np.dtype(np.uint8), store, meta)
    labels = None
    if meta.get("labelled"):
        labels = torch.from_numpy(np.array(_npy(store / "labels.npy", (count,), np.dtype(np.int64), store, meta)))
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or (classes and high >= len(classes)):
            raise DataError(
                f"{store / 'labels.npy'}: labels run from {low} to {high}, store.json lists "
                f"{len(classes)} classes (0 to {len(classes) - 1}); rebuild it with "
                f"{_rebuild_hint(meta, store)}"
            )
    stats = (
        (tuple(meta["mean"]), tuple(meta["std"])) if "mean" in meta and "std" in meta else None
    )  # older stores: none
    return ImageDataset(
        name=str(meta["dataset"]),
        images=torch.from_numpy(images),
        labels=labels,
        classes=classes,
        source=str(store),
        stats=stats,
    )


# ------------------------------------------------------------------------------------------ writing


class _Output:
    """Where decoding (or copying) writes: ``PARTIAL/images.npy`` and its progress record."""

    def __init__(self, folder: Path, digest: str) -> None:
        self.folder, self.digest = folder, digest
        self.array: np.memmap | None = None
        self.done, self.bad = 0, []
        progress = self._read_progress()
        if progress is not None and progress.get("digest") == digest:
            self.done = int(progress.get("done", 0))
            self.bad = [(int(i), str(r)) for i, r in progress.get("bad", [])]
            self._shape = tuple(progress.get("shape", ()))
        else:
            self._shape = ()

    def _read_progress(self) -> dict[str, Any] | None:
        from dogo.guards.verified import gap, read_json

        path = self.folder / "progress.json"
        if not path.exists():
            return None
        data, problem = read_json(path, _progress_problem)
        if problem:
            gap(path, problem, "decoding the store from its first image again")
        return data

    def allocate(self, count: int, shape: tuple[int, ...]) -> np.memmap:
        full = (count, *shape)
        path = self.folder / "images.npy"
        if self.done and self._shape == full and path.is_file():
            self.array = np.lib.format.open_memmap(path, mode="r+")
            if self.array.shape == full:
                return self.array
        self.done, self.bad = 0, []
        self.array = None
        path.unlink(missing_ok=True)
        self.array = _reserve(path, full)
        self._shape = full
        return self.array

    def progress(self, done: int, bad: list[tuple[int, str]]) -> None:
        assert self.array is not None
        self.array.flush()
        self.done, self.bad = done, list(bad)
        write_output(
            self.folder / "progress.json",
            json.dumps({"digest": self.digest, "done": done, "bad": bad, "shape": list(self._shape)}),
            own=True,
        )


def _progress_problem(data: Any) -> str | None:
    """What is wrong with a progress record's content, or None."""
    ints = lambda v: isinstance(v, list) and all(isinstance(x, int) and x >= 0 for x in v)  # noqa: E731
    if not isinstance(data, dict) or not isinstance(data.get("digest"), str):
        return "not a progress record"
    if not isinstance(data.get("done"), int) or data["done"] < 0 or not ints(data.get("shape", [])):
        return "its count of decoded images or its shape is not a number"
    if not all(isinstance(b, list) and len(b) == 2 and isinstance(b[0], int) for b in data.get("bad", [])):
        return "its list of bad files is damaged"
    return None


def _reserve(path: Path, shape: tuple[int, ...]) -> np.memmap:
    """A new uint8 ``.npy`` of ``shape`` with all its blocks allocated: a full disk is one line here
    (:func:`dogo.guards.outputs.allocate`), not a SIGBUS halfway through decoding."""

    def make(where: Path) -> np.memmap:
        return np.lib.format.open_memmap(where, mode="w+", dtype=np.uint8, shape=shape)

    return allocate(path, make, wanted=int(np.prod(shape)))


def _shrink(path: Path, count: int) -> None:
    """Keep the first ``count`` rows of a C-order ``.npy`` (bad files skipped): rewrite its shape, truncate it."""
    with open(path, "r+b") as handle:
        start = 8 + (2 if np.lib.format.read_magic(handle) == (1, 0) else 4)
        handle.seek(0)
        shape, _, dtype = _header(handle)
        offset = handle.tell()
        text = repr(
            {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (count, *shape[1:])}
        )
        header = text.ljust(offset - start - 1).encode("latin1") + b"\n"
        assert len(header) == offset - start
        handle.seek(start)
        handle.write(header)
        handle.truncate(offset + count * int(np.prod(shape[1:])) * dtype.itemsize)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fill(out: _Output, read: Callable[[], ImageDataset]) -> ImageDataset:
    """``read()`` with its images in ``out``'s memory map: decoded there directly, or copied over."""
    with decode.output(out):
        data = read()
    images, count = data.images, len(data)
    direct = (
        out.array is not None
        and images.is_contiguous()
        and count <= out.array.shape[0]
        and images.data_ptr() == out.array.ctypes.data
        and tuple(images.shape[1:]) == out.array.shape[1:]
    )
    if not direct:  # a reader that read into memory (or subset after decoding): copy it over
        array = (
            out.array
            if out.array is not None and out.array.shape == tuple(images.shape)
            else (out.allocate(count, tuple(images.shape[1:])))
        )
        source = images.numpy()
        for start in range(0, count, COPY_CHUNK):
            array[start : start + COPY_CHUNK] = source[start : start + COPY_CHUNK]
        out.array = array
    return data


def _seal(
    work: Path, out: _Output, data: ImageDataset, ident: dict[str, Any], digest: str
) -> tuple[int, tuple[int, ...]]:
    """Finish the store being written in ``work``: images cut to ``data``'s count, labels, ``store.json``,
    all on disk (fsynced); returns the image count and the image array's shape."""
    count = len(data)
    assert out.array is not None  # the images were written into it
    array_shape = out.array.shape
    out.array.flush()
    mean, std = channel_stats(torch.from_numpy(out.array[:count]))  # once, here: every run of the store reads them
    del out.array, data.images
    if array_shape[0] != count:
        _shrink(work / "images.npy", count)
    if data.labels is not None:
        labels = data.labels.numpy().astype(np.int64)
        write_output(work / "labels.npy", lambda handle: np.save(handle, labels), own=True)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        **ident,
        "digest": digest,
        "count": count,
        "shape": list(array_shape[1:]),
        "classes": list(data.classes),
        "source": data.source,
        "labelled": data.labels is not None,
        "skipped": len(out.bad),
        "mean": list(mean),
        "std": list(std),
    }
    write_output(work / "store.json", json.dumps(meta, indent=1) + "\n", own=True)
    _fsync(work / "images.npy")
    (work / "progress.json").unlink(missing_ok=True)
    return count, array_shape


def _swap_in(work: Path, store: Path) -> None:
    """Put the finished ``work`` folder at ``store``, replacing an old store there (only a store dogo made)."""
    old = store.with_name(store.name + ".old")
    remove_owned(old, why="a store replaced earlier")
    if store.exists():
        os.replace(store, old)
    os.replace(work, store)
    remove_owned(old, why="the store it was replaced by")


def _discard(work: Path) -> None:
    """Remove an unfinished store's work folder (if its marker could not even be written, only when empty)."""
    try:
        remove_owned(work, why="an unfinished store")
    except NotOwned:
        with contextlib.suppress(OSError):
            work.rmdir()


def _replaceable(store: Path) -> None:
    """``--force`` replaces only a store dogo made: marked, or readable as a store of an older dogo (adopted)."""
    if (marker(store) or {}).get("kind") not in (None, "store"):
        check_target(store, folder="store")  # another kind of dogo folder: refused, naming it
    if marker(store) is None:
        try:
            with open(store / "store.json") as handle:
                legacy = json.load(handle).get("format") == FORMAT
        except (OSError, ValueError, AttributeError):
            legacy = False
        if not legacy:
            check_removable(store, why="--force rebuilds only a store dogo made")
        mark(store, "store", adopted=True)


def prepare_store(
    store: str | os.PathLike[str],
    read: Callable[[], ImageDataset],
    ident: dict[str, Any],
    digest: str,
    *,
    force: bool = False,
    log: Callable[[str], None] = lambda m: None,
) -> Path:
    """Write the split ``read()`` returns into ``store`` (atomic, resumable); returns ``store``.

    ``read`` is called with decoding directed into the store's memory map (folder and list
    readers write there directly, chunk by chunk; other readers hand over the split in memory
    and it is copied). An existing, matching, complete store is kept as it is; a stale or
    foreign one is refused unless ``force``, which rebuilds it (a store dogo made; never another
    folder). One process writes a store at a time: the ``.partial`` work folder is locked
    (:mod:`dogo.guards.locks`), and a store only exists once a complete one was renamed into place.
    """
    store = Path(store)
    check_target(store, folder="store")  # never over the dataset it is made from, or a dogo folder's own files
    if _up_to_date(store, ident, digest, force, log):
        return store
    if store.is_dir():
        _replaceable(store)
        check_removable(store.with_name(store.name + ".old"), why="the name an old store is moved to")
    elif store.exists():
        raise DataError(f"{store}: exists and is not a store folder; choose another --out")
    work = partial_path(store)
    with holding(work, create=True):
        if _up_to_date(store, ident, digest, force, log):  # another process finished it meanwhile
            return store
        if marker(work) is None and any(work.iterdir()):
            check_removable(work, why="a store's unfinished work folder")  # not one dogo made: never written into
        mark(work, "store")
        out = _Output(work, digest)
        if out.done:
            log(f"{store}: continuing an unfinished preparation at image {out.done}")
        try:
            data = _fill(out, read)
            count, array_shape = _seal(work, out, data, ident, digest)
        except DogoError:  # bad source files or no space: the source must change first, nothing to resume
            _discard(work)
            raise
        except BaseException:  # killed or interrupted: keep what was decoded for the next run, if anything
            if not (work / "progress.json").exists():
                _discard(work)
            raise
        _swap_in(work, store)
    log(
        f"{store}: {count} images {'x'.join(map(str, array_shape[1:]))} "
        f"({count * int(np.prod(array_shape[1:])) / 2**20:.0f} MiB)"
    )
    return store


def _up_to_date(store: Path, ident: dict[str, Any], digest: str, force: bool, log: Callable[[str], None]) -> bool:
    """Whether ``store`` is a complete store of ``ident`` and ``digest``; a stale one raises unless ``force``."""
    if not store.is_dir():
        return False
    try:
        check_meta(store, read_meta(store), ident, digest)
        open_store(store, ident, digest)
    except DataError:
        if not force:
            raise
        return False
    log(f"{store}: up to date")
    return True
