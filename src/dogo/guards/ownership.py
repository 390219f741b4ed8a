"""Deleting only what dogo made (class 2): a marker written when dogo creates a folder, and one remover.

Every folder dogo creates for its own use (a run directory, an image store, a feature cache, a
study directory, a folder of published study results) gets a marker file, ``.dogo``, written
when the folder is made: JSON naming the kind of folder and what made it (the command, its
process, the time, the dogo version). Removal goes through :func:`remove_owned` only, which
acts on a path when

- it is a marked folder, or lies inside one (reached without passing a symbolic link) and is one
  of that folder's own files by its kind (a run's ``checkpoints/``, ``cache/``..., every file of
  a store or a cache);
- it is not itself a symbolic link: a link is never followed, and never removed in place of what
  it points to.

Anything else is left where it is and the refusal names the path and why: ``runs/x/cache: left
as it is: a symbolic link to /home/me/scratch; dogo never follows a link out of its own
folders``. ``dogo clean``, ``dogo prepare --force``, the feature cache's cap, a study's
``--rerun`` and the removal of a run that failed before its first checkpoint all use it.

Folders made by a dogo older than the markers are recognised by their layout (:func:`kind_of`)
so that their own files are still protected from being written over (class 1); they become
removable once dogo adopts them, which resuming a run or continuing a study does (:func:`mark`
with ``adopted=True``).
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from pathlib import Path
from typing import Any

from dogo.core.errors import DogoError
from dogo.guards.messages import what_is

__all__ = ["MARKER", "NotOwned", "check_removable", "is_own_path", "kind_of", "made_by", "mark", "marker", "owner_of",
           "remove_owned", "set_command"]

MARKER = ".dogo"
KINDS = ("run", "store", "cache", "study", "published")

_command = "dogo (Python API)"


class NotOwned(DogoError):
    """A path dogo was asked to remove but did not make (or reaches through a symbolic link)."""


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


def mark(folder: str | os.PathLike, kind: str, *, adopted: bool = False) -> Path:
    """Write ``folder``'s marker (once: an existing marker is kept); returns its path."""
    from dogo.guards.outputs import write_output

    if kind not in KINDS:
        raise ValueError(f"unknown kind of folder {kind!r}")
    folder = Path(folder)
    path = folder / MARKER
    if marker(folder) is not None or folder.is_symlink():  # a linked folder is someone's: never marked through
        return path
    note = {"kind": kind, "made_by": ("adopted by " if adopted else "") + made_by(), "pid": os.getpid(),
            "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    import dogo

    note["dogo"] = dogo.__version__
    write_output(path, json.dumps(note, indent=1) + "\n", own=True)
    return path


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


def _bytes_of(path: Path) -> int:
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size if path.is_file() and not path.is_symlink() else 0
    total = 0
    for root, _, files in os.walk(path):  # os.walk does not follow links to folders
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def check_removable(path: str | os.PathLike, *, why: str = "") -> None:
    """Raise :class:`NotOwned` (naming ``path``, what it is and why it is left) unless dogo may remove it."""
    path = Path(path)
    if not os.path.lexists(path):
        return
    doing = f" ({why})" if why else ""
    if path.is_symlink():
        raise NotOwned(f"{path}: left as it is{doing}: {what_is(path)}; dogo never follows a link out of its own "
                       "folders (remove the link yourself if it is not needed)")
    if owner_of(path, marked_only=True) is None:
        legacy = owner_of(path)  # by its layout
        why_not = (f"it is in {legacy[0]}, a dogo {legacy[1]} folder without the {MARKER} marker dogo writes in "
                   "the folders it makes (made by an older dogo?)" if legacy else
                   f"dogo did not make it (no {MARKER} marker in it or in a dogo folder it belongs to)")
        raise NotOwned(f"{path}: left as it is{doing}: {what_is(path)}; {why_not}; remove it yourself if it is "
                       "not needed")


def remove_owned(path: str | os.PathLike, *, why: str = "") -> int:
    """Remove ``path`` when dogo made it (see the module doc); returns the bytes freed (0 if absent).

    Raises :class:`NotOwned` naming the path, what it is and why it was left.
    """
    path = Path(path)
    if not os.path.lexists(path):
        return 0
    check_removable(path, why=why)
    freed = _bytes_of(path)
    if path.is_dir():
        shutil.rmtree(path)  # removes links inside, never what they point to
    else:
        path.unlink()
    return freed


