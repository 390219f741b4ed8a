"""One writer at a time (class 3): the lock of every folder a command writes.

The folder lock (:mod:`dogo.guards.flock`: an exclusive ``flock`` on the folder itself, dropped by
the kernel when its process ends, however it ends, so never stale) is the lock of every folder dogo
writes:

==========================  ==============================================================
``pretrain``, ``quickstart``  the run directory (from before its first file is written)
``evaluate``                  the run's ``cache/`` (its feature cache; results are whole files)
``clean``                     the run directory and its ``cache/``
``prepare``, ``dataset.store``  the store's ``.partial`` work folder while it is written
``study``                     the study directory, and its ``--publish`` folder
``report``                    the folder the report is written to
``export``, ``embed``         the folder of ``--out``
==========================  ==============================================================

:func:`holding` takes it for the length of a ``with`` block (:func:`hold` for the rest of the
command, as training holds its run directory): two processes started on the same folder at the same moment, exactly one
proceeds and the other is refused in one line naming the holder (its pid and command line). A
folder they had to create is removed again at the end if it is still empty, so a command refused
later leaves nothing behind. What a loser could have started is never read as
finished work: stores become a store only by one rename of a complete folder, and a study's
record says "trained" only after its training process exited cleanly.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from dogo.guards.flock import _HELD, FolderInUse, _key, acquire, holder, in_use
from dogo.guards.flock import release_all as _release_locks

__all__ = ["FolderInUse", "hold", "holder", "holding", "in_use", "release_all"]

_CREATED: list[Path] = []  # folders hold() created, removed at release when still empty


def hold(folder: str | os.PathLike, *, create: bool = False) -> Path:
    """Hold ``folder``'s lock for the rest of the command (idempotent in a process); returns it.

    ``create``: make the folder (and its parents) first when missing; it is removed again at
    :func:`release_all` if still empty. Raises :class:`FolderInUse` naming the holder.
    """
    folder = Path(folder)
    if create and not folder.is_dir():
        _CREATED.extend(_make(folder))  # the deepest first
    acquire(folder)  # raises in_use(folder)
    return folder


def release_all() -> None:
    """Give up every folder this process holds, and remove the ones :func:`hold` made that stayed empty."""
    _release_locks()
    while _CREATED:
        folder = _CREATED.pop(0)
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty


def _make(folder: Path) -> list[Path]:
    made = [p for p in (folder, *folder.parents) if not os.path.lexists(p)]
    folder.mkdir(parents=True, exist_ok=True)
    return made


@contextlib.contextmanager
def holding(folder: str | os.PathLike, *, create: bool = False) -> Iterator[Path]:
    """Hold ``folder``'s lock for the ``with`` block (a lock this process holds already stays held).

    ``create``: make the folder first when missing; it is removed again at the end if still empty.
    Raises :class:`FolderInUse` naming the holder.
    """
    folder = Path(folder)
    made = _make(folder) if create and not folder.is_dir() else []
    try:
        key = _key(folder)
        fresh = key not in _HELD
        acquire(folder)  # raises in_use(folder)
        try:
            yield folder
        finally:
            fd = _HELD.pop(key, None) if fresh else None
            if fd is not None:
                os.close(fd)  # drops the lock, even if the folder was renamed meanwhile (a store)
    finally:
        for path in made:
            with contextlib.suppress(OSError):
                path.rmdir()  # only when empty
