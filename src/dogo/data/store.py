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
(space reserved up front with ``posix_fallocate``, so a full disk fails at once with a message,
not with SIGBUS halfway), decoding records its progress after every chunk in
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
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from dogo.data import decode
from dogo.data.base import ImageDataset
from dogo.core.errors import DataError
from dogo.core.fileio import atomic_path
from dogo.data.stats import channel_stats

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
        raise DataError(f"{meta_path}: unreadable ({type(exc).__name__}); rebuild it with "
                        f"`dogo prepare ... --out {store} --force`") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{store}: not a dogo store (store.json has no format {FORMAT!r})")
    if meta.get("version") != VERSION:
        raise DataError(f"{store}: store format version {meta.get('version')}, this dogo reads version {VERSION}; "
                        f"rebuild it with `dogo prepare {meta.get('dataset', 'DATASET')} --out {store} --force`")
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
                f"choose another store or rebuild it with {_rebuild_hint(ident, store)}")
    if digest is not None and meta.get("digest") != digest:
        raise DataError(f"{store}: its source {meta.get('source')} has changed since it was prepared "
                        f"(digest differs); rebuild it with {_rebuild_hint(meta, store)}")


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
        raise DataError(f"{path}: not a readable .npy file ({' '.join(str(exc).split())}); "
                        f"rebuild it with {hint}") from None
    found_shape, fortran, found_dtype = header
    if tuple(found_shape) != tuple(shape) or fortran or np.dtype(found_dtype) != dtype:
        raise DataError(f"{path}: holds {found_dtype} {tuple(found_shape)}, store.json says {dtype} {tuple(shape)}; "
                        f"rebuild it with {hint}")
    expected = offset + int(np.prod(shape)) * dtype.itemsize
    if size < expected:
        raise DataError(f"{path}: truncated ({size} of {expected} bytes); rebuild it with {hint}")
    return np.load(path, mmap_mode="c")


def open_store(store: str | os.PathLike[str], ident: dict[str, Any] | None = None,
               digest: str | None = None) -> ImageDataset:
    """A store as an ImageDataset over its memory map, after checking it (see the module doc)."""
    store = Path(store)
    if not store.is_dir():
        if partial_path(store).is_dir():
            raise DataError(f"{store}: its preparation did not finish; run `dogo prepare` again to continue it")
        raise DataError(f"{store}: no such store; prepare one with `dogo prepare`")
    meta = read_meta(store)
    check_meta(store, meta, ident, digest)
    count, shape = int(meta["count"]), tuple(int(s) for s in meta["shape"])
    images = _npy(store / "images.npy", (count, *shape), np.dtype(np.uint8), store, meta)
    labels = None
    if meta.get("labelled"):
        labels = torch.from_numpy(np.array(_npy(store / "labels.npy", (count,), np.dtype(np.int64), store, meta)))
    stats = (tuple(meta["mean"]), tuple(meta["std"])) if "mean" in meta and "std" in meta else None  # older stores: none
    return ImageDataset(name=str(meta["dataset"]), images=torch.from_numpy(images), labels=labels,
                        classes=[str(c) for c in meta.get("classes", [])], source=str(store), stats=stats)


# ------------------------------------------------------------------------------------------ writing


class _Output:
    """Where decoding (or copying) writes: ``PARTIAL/images.npy`` and its progress record."""

    def __init__(self, folder: Path, digest: str) -> None:
        self.folder, self.digest = folder, digest
        self.array: np.ndarray | None = None
        self.done, self.bad = 0, []
        progress = self._read_progress()
        if progress is not None and progress.get("digest") == digest:
            self.done = int(progress.get("done", 0))
            self.bad = [(int(i), str(r)) for i, r in progress.get("bad", [])]
            self._shape = tuple(progress.get("shape", ()))
        else:
            self._shape = ()

    def _read_progress(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.folder / "progress.json").read_text())
        except (OSError, ValueError):
            return None

    def allocate(self, count: int, shape: tuple[int, ...]) -> np.ndarray:
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
        with atomic_path(self.folder / "progress.json") as tmp:
            tmp.write_text(json.dumps({"digest": self.digest, "done": done, "bad": bad, "shape": list(self._shape)}))


def _no_space(path: Path, needed: int) -> DataError:
    free = shutil.disk_usage(path.parent).free if path.parent.exists() else 0
    return DataError(f"{path.parent}: not enough disk space for the store ({needed / 2**30:.2f} GiB needed, "
                     f"{free / 2**30:.2f} GiB free); free some space or prepare it elsewhere with --out")


def _reserve(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A new uint8 ``.npy`` of ``shape`` with all its blocks allocated (a full disk fails here, with a message)."""
    needed = int(np.prod(shape))
    try:
        array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
        if needed and hasattr(os, "posix_fallocate"):
            fd = os.open(path, os.O_RDWR)
            try:
                os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
            finally:
                os.close(fd)
    except OSError as exc:
        path.unlink(missing_ok=True)
        if exc.errno in (28, 122):  # ENOSPC, EDQUOT
            raise _no_space(path, needed) from None
        raise DataError(f"{path}: cannot write the store ({exc.strerror or exc})") from None
    return array


def _shrink(path: Path, count: int) -> None:
    """Keep the first ``count`` rows of a C-order ``.npy`` (bad files skipped): rewrite its shape, truncate it."""
    with open(path, "r+b") as handle:
        start = 8 + (2 if np.lib.format.read_magic(handle) == (1, 0) else 4)
        handle.seek(0)
        shape, _, dtype = _header(handle)
        offset = handle.tell()
        text = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                     "shape": (count, *shape[1:])})
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
    direct = (out.array is not None and images.is_contiguous() and count <= out.array.shape[0]
              and images.data_ptr() == out.array.ctypes.data and tuple(images.shape[1:]) == out.array.shape[1:])
    if not direct:  # a reader that read into memory (or subset after decoding): copy it over
        array = out.array if out.array is not None and out.array.shape == tuple(images.shape) else (
            out.allocate(count, tuple(images.shape[1:])))
        source = images.numpy()
        for start in range(0, count, COPY_CHUNK):
            array[start:start + COPY_CHUNK] = source[start:start + COPY_CHUNK]
        out.array = array
    return data


def _seal(work: Path, out: _Output, data: ImageDataset, ident: dict[str, Any],
          digest: str) -> tuple[int, tuple[int, ...]]:
    """Finish the store being written in ``work``: images cut to ``data``'s count, labels, ``store.json``,
    all on disk (fsynced); returns the image count and the image array's shape."""
    count = len(data)
    array_shape = out.array.shape
    out.array.flush()
    mean, std = channel_stats(torch.from_numpy(out.array[:count]))  # once, here: every run of the store reads them
    del out.array, data.images
    if array_shape[0] != count:
        _shrink(work / "images.npy", count)
    if data.labels is not None:
        labels = data.labels.numpy().astype(np.int64)
        np.save(work / "labels.npy", labels)
        _fsync(work / "labels.npy")
    meta = {"format": FORMAT, "version": VERSION, **ident, "digest": digest, "count": count,
            "shape": list(array_shape[1:]), "classes": list(data.classes), "source": data.source,
            "labelled": data.labels is not None, "skipped": len(out.bad), "mean": list(mean), "std": list(std)}
    (work / "store.json").write_text(json.dumps(meta, indent=1) + "\n")
    _fsync(work / "store.json")
    _fsync(work / "images.npy")
    (work / "progress.json").unlink(missing_ok=True)
    return count, array_shape


def _swap_in(work: Path, store: Path) -> None:
    """Put the finished ``work`` folder at ``store``, replacing an old store there."""
    old = store.with_name(store.name + ".old")
    if store.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(store, old)
    os.replace(work, store)
    shutil.rmtree(old, ignore_errors=True)


def prepare_store(store: str | os.PathLike[str], read: Callable[[], ImageDataset], ident: dict[str, Any],
                  digest: str, *, force: bool = False, log: Callable[[str], None] = lambda m: None) -> Path:
    """Write the split ``read()`` returns into ``store`` (atomic, resumable); returns ``store``.

    ``read`` is called with decoding directed into the store's memory map (folder and list
    readers write there directly, chunk by chunk; other readers hand over the split in memory
    and it is copied). An existing, matching, complete store is kept as it is; a stale or
    foreign one is refused unless ``force``, which rebuilds it.
    """
    store = Path(store)
    if store.is_dir():
        try:
            check_meta(store, read_meta(store), ident, digest)
            open_store(store, ident, digest)
            log(f"{store}: up to date")
            return store
        except DataError:
            if not force:
                raise
    elif store.exists():
        raise DataError(f"{store}: exists and is not a store folder; choose another --out")
    work = partial_path(store)
    made = [p for p in [work, *work.parents] if not p.exists()]  # folders this prepare creates
    work.mkdir(parents=True, exist_ok=True)
    out = _Output(work, digest)
    if out.done:
        log(f"{store}: continuing an unfinished preparation at image {out.done}")
    try:
        data = _fill(out, read)
    except DataError:  # bad source files or no space: the source must change first, nothing to resume
        shutil.rmtree(work, ignore_errors=True)
        for folder in made[1:]:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty
        raise
    except BaseException:  # killed or interrupted: keep what was decoded for the next run, if anything
        if not (work / "progress.json").exists():
            shutil.rmtree(work, ignore_errors=True)
        raise
    count, array_shape = _seal(work, out, data, ident, digest)
    _swap_in(work, store)
    log(f"{store}: {count} images {'x'.join(map(str, array_shape[1:]))} "
        f"({count * int(np.prod(array_shape[1:])) / 2**20:.0f} MiB)")
    return store
