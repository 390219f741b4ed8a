"""Decoding many image files at once: a thread pool, a progress bar, one report of the bad files.

:func:`decode_files` is what the folder and list readers call. It decodes every path with the
reader's own one-file decoder in a thread pool (PIL releases the GIL while decoding), in
order, shows a progress bar (images/s and ETA) for long jobs, and collects every file that
fails instead of stopping at the first. At the end the bad files are either refused together
in one :class:`~dogo.core.errors.DataError` naming them (``bad_files: refuse``, the default) or
skipped with a count on stderr (``bad_files: skip``; the reader then drops their labels too).

The policy comes from the dataset option ``bad_files`` through :func:`policy` (set by
:func:`dogo.data.load_dataset`), so that readers need no extra argument.

Where the decoded images go: an in-memory array, or, while :mod:`dogo.data.store` prepares a
store, an :class:`Output` (the store's memory map). The output says which images are already
there (a resumed prepare) and is told after every chunk how far decoding got, so that a
killed prepare continues where it stopped.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from dogo.core.errors import ConfigError, DataError

BAD_FILES = ("refuse", "skip")
#: Images per chunk: the unit of progress (and of a resumed prepare's bookkeeping).
CHUNK = 1024
#: Jobs this long (files) show a progress bar; shorter ones finish before it says anything useful.
BAR_FROM = 2000
#: Bad files named in the one-line report; the rest are counted.
NAMED = 5

_policy: contextvars.ContextVar[str] = contextvars.ContextVar("dogo_bad_files", default="refuse")
_output: contextvars.ContextVar[Output | None] = contextvars.ContextVar("dogo_decode_output", default=None)


class Output(Protocol):
    """Where decoded images go instead of memory (a store being prepared)."""

    def allocate(self, count: int, shape: tuple[int, ...]) -> np.ndarray:
        """The ``count x shape`` uint8 array to fill (rows before :attr:`done` are filled already)."""

    done: int  # images already decoded (a resumed prepare)
    bad: list[tuple[int, str]]  # (index, reason) of the bad files among them

    def progress(self, done: int, bad: list[tuple[int, str]]) -> None:
        """Images ``0 .. done-1`` are in the array (flushed by the output): record it."""


def check_policy(value: object) -> str:
    if value not in BAD_FILES:
        raise ConfigError(f"option bad_files must be one of {', '.join(BAD_FILES)}, got {value!r}")
    return str(value)


@contextlib.contextmanager
def policy(bad_files: str | None) -> Iterator[None]:
    """Decode with ``bad_files`` (``refuse`` or ``skip``) inside the block (None: keep the current one)."""
    token = _policy.set(check_policy(bad_files)) if bad_files is not None else None
    try:
        yield
    finally:
        if token is not None:
            _policy.reset(token)


@contextlib.contextmanager
def output(target: Output) -> Iterator[None]:
    """Decode into ``target`` instead of memory inside the block (used by the store)."""
    token = _output.set(target)
    try:
        yield
    finally:
        _output.reset(token)


def _workers() -> int:
    return max(1, min(16, 2 * (os.cpu_count() or 1)))


def _safe(decode_one: Callable[[Path], np.ndarray], path: Path) -> np.ndarray | str:
    """The decoded image, or the reason it could not be decoded (any error: one file never stops the rest)."""
    try:
        return decode_one(path)
    except DataError as error:
        return str(error)
    except Exception as error:
        return f"{path}: not a readable image ({type(error).__name__}: {' '.join(str(error).split())})"


def _bar(total: int, initial: int):
    from tqdm import tqdm

    from dogo.core import console

    show = total >= BAR_FROM and console.verbosity() >= console.NORMAL
    return tqdm(
        total=total,
        initial=initial,
        unit="img",
        desc="decoding",
        dynamic_ncols=True,
        file=sys.stderr,
        disable=not (show and console.use_bar()),
        mininterval=0.5,
    )


def decode_files(
    paths: Sequence[Path], decode_one: Callable[[Path], np.ndarray], shape: tuple[int, ...]
) -> tuple[torch.Tensor, list[int]]:
    """Every path decoded by ``decode_one`` (in order) into one uint8 ``N x shape`` tensor.

    Returns ``(images, kept)``: ``kept`` are the indices into ``paths`` of the rows of
    ``images`` (all of them unless bad files were skipped). Bad files are reported together
    at the end: refused in one DataError, or skipped with a count on stderr.
    """
    target = _output.get()
    start, bad = (target.done, list(target.bad)) if target is not None else (0, [])
    out = target.allocate(len(paths), shape) if target is not None else np.empty((len(paths), *shape), np.uint8)
    bar = _bar(len(paths), start)
    log_lines = bar.disable and len(paths) >= BAR_FROM  # a long job without a bar: a line every 30 s
    began, last_line = time.monotonic(), time.monotonic()
    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        try:
            for chunk_start in range(start, len(paths), CHUNK):
                chunk = paths[chunk_start : chunk_start + CHUNK]
                for i, result in enumerate(pool.map(lambda p: _safe(decode_one, p), chunk), start=chunk_start):
                    if isinstance(result, str):
                        bad.append((i, result))
                    else:
                        out[i] = result
                bar.update(len(chunk))
                done = chunk_start + len(chunk)
                if target is not None:
                    target.progress(done, bad)
                if log_lines and time.monotonic() - last_line > 30:
                    last_line = time.monotonic()
                    rate = (done - start) / max(last_line - began, 1e-9)
                    print(
                        f"decoding: {done}/{len(paths)} images, {rate:.0f} images/s, "
                        f"ETA {(len(paths) - done) / max(rate, 1e-9):.0f} s",
                        file=sys.stderr,
                        flush=True,
                    )
        finally:
            bar.close()
    if bad:
        _report(bad, len(paths))
    bad_rows = {i for i, _ in bad}
    kept = [i for i in range(len(paths)) if i not in bad_rows]
    if bad_rows:  # move the good rows up over the skipped ones (in place: the output may be a memory map)
        for row, i in enumerate(kept):
            if row != i:
                out[row] = out[i]
    return torch.from_numpy(out[: len(kept)] if bad_rows else out), kept


def _report(bad: list[tuple[int, str]], total: int) -> None:
    bad = sorted(bad)
    named = "; ".join(reason for _, reason in bad[:NAMED])
    more = f"; and {len(bad) - NAMED} more" if len(bad) > NAMED else ""
    if _policy.get() == "refuse":
        raise DataError(
            f"{len(bad)} of {total} image files cannot be read: {named}{more} "
            f"(fix or remove them, or set the dataset option bad_files: skip)"
        )
    print(
        f"warning: skipped {len(bad)} of {total} image files that cannot be read: {named}{more}",
        file=sys.stderr,
        flush=True,
    )
