"""What dogo made (class 2): the ``.dogo`` marker of a folder and the own files of each kind of folder.

Reading only: :func:`marker` reads a folder's marker, :func:`kind_of` says what kind of dogo folder
a folder is (by its marker, else by the layout of an older dogo's folders) and :func:`owner_of`
finds the dogo folder a path is one of the own files of. :mod:`dogo.guards.ownership` writes the
markers and removes what they cover; :mod:`dogo.guards.outputs` refuses to write over what they
cover.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["KINDS", "MARKER", "is_own_path", "kind_of", "made_by", "marker", "owner_of", "set_command"]

MARKER = ".dogo"
KINDS = ("run", "store", "cache", "study", "published", "download")  # download: a folder extracted from an archive

_command = "dogo (Python API)"


def set_command(argv: list[str]) -> None:
    """Record the command line this process runs (the CLI calls it), for markers and lock notes."""
    global _command
    _command = " ".join(["dogo", *argv])[:300]


def made_by() -> str:
    return _command


def marker(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The marker of ``folder`` (a real folder, not a link), or None when it has none or it is unreadable."""
    folder = Path(folder)
    path = folder / MARKER
    try:
        if folder.is_symlink() or path.is_symlink() or not path.is_file():
            return None
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("kind") in KINDS and data.get("made_by") else None


def kind_of(folder: str | os.PathLike) -> str | None:
    """The kind of a dogo folder: its marker's, else what its layout says (folders of older dogo versions)."""
    folder = Path(folder)
    found = marker(folder)
    if found is not None:
        return str(found["kind"])
    try:
        if (folder / "config.yaml").is_file() and (folder / "checkpoints").is_dir():
            return "run"
        if (folder / "store.json").is_file():
            return "store"
        if (folder / "study.yaml").is_file() and (folder / "arms").is_dir():
            return "study"
    except OSError:
        return None
    return None


_RUN_FILES = {"config.yaml", "metrics.jsonl", "resume-log.jsonl", "kept.json", MARKER}
_RUN_FOLDERS = {"checkpoints", "tb", "eval", "cache"}


def is_own_path(kind: str, relative: Path, is_dir: bool = False) -> bool:
    """Whether ``relative`` (inside a folder of ``kind``; ``is_dir``: a folder) is one of that folder's own files.

    A run's own files are its layout's (:class:`dogo.runs.layout.RunDir`); a store's and a cache's are
    all of them; a study's are everything but its ``report/`` and loose top-level files.
    """
    parts = relative.parts
    if not parts:
        return True
    if kind == "run":
        return parts[0] in _RUN_FOLDERS if len(parts) > 1 else parts[0] in _RUN_FILES | _RUN_FOLDERS
    if kind in ("study", "published"):
        if parts[0] == "report":
            return False
        return len(parts) > 1 or is_dir or parts[0] in ("study.yaml", MARKER)
    return True


def owner_of(path: str | os.PathLike, *, marked_only: bool = False) -> tuple[Path, str] | None:
    """The nearest folder above ``path`` (or ``path`` itself) that is dogo's and of which ``path`` is an own
    file, with its kind; None when there is none. ``marked_only``: only folders with a marker (not
    recognised by layout), reached from ``path`` without passing a symbolic link."""
    path = Path(os.path.abspath(path))
    for folder in [path, *path.parents]:
        if marked_only and folder != path and folder.is_symlink():
            return None
        kind = (marker(folder) or {}).get("kind") if marked_only else kind_of(folder)
        if kind is not None and is_own_path(kind, path.relative_to(folder), path.is_dir() and not path.is_symlink()):
            return folder, kind
    return None
