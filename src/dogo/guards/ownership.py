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
``--rerun`` and the removal of a run that failed before its first checkpoint all use it. The folders
above such a run that its ``--out`` made go with it only while empty (:func:`missing_folders`, noted
before they are made, and :func:`remove_empty`): a folder that was there before is never removed.

Folders made by a dogo older than the markers are recognised by their layout (:func:`kind_of`)
so that their own files are still protected from being written over (class 1); they become
removable once dogo adopts them, which resuming a run or continuing a study does (:func:`mark`
with ``adopted=True``).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
from pathlib import Path

from dogo.core.errors import DogoError
from dogo.guards.markers import KINDS, MARKER, is_own_path, kind_of, made_by, marker, owner_of, set_command
from dogo.guards.messages import what_is
from dogo.guards.outputs import write_output

__all__ = [
    "MARKER",
    "NotOwned",
    "check_removable",
    "is_own_path",
    "kind_of",
    "made_by",
    "mark",
    "marker",
    "missing_folders",
    "owner_of",
    "remove_empty",
    "remove_owned",
    "set_command",
]


class NotOwned(DogoError):
    """A path dogo was asked to remove but did not make (or reaches through a symbolic link)."""


def mark(folder: str | os.PathLike, kind: str, *, adopted: bool = False) -> Path:
    """Write ``folder``'s marker (once: an existing marker is kept); returns its path."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind of folder {kind!r}")
    folder = Path(folder)
    path = folder / MARKER
    if marker(folder) is not None or folder.is_symlink():  # a linked folder is someone's: never marked through
        return path
    note = {
        "kind": kind,
        "made_by": ("adopted by " if adopted else "") + made_by(),
        "pid": os.getpid(),
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    import dogo

    note["dogo"] = dogo.__version__
    write_output(path, json.dumps(note, indent=1) + "\n", own=True)
    return path


def _bytes_of(path: Path) -> int:
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size if path.is_file() and not path.is_symlink() else 0
    total = 0
    for root, _, files in os.walk(path):  # os.walk does not follow links to folders
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def check_removable(path: str | os.PathLike, *, why: str = "") -> None:
    """Raise :class:`NotOwned` (naming ``path``, what it is and why it is left) unless dogo may remove it."""
    path = Path(path)
    if not os.path.lexists(path):
        return
    doing = f" ({why})" if why else ""
    if path.is_symlink():
        raise NotOwned(
            f"{path}: left as it is{doing}: {what_is(path)}; dogo never follows a link out of its own "
            "folders (remove the link yourself if it is not needed)"
        )
    if owner_of(path, marked_only=True) is None:
        legacy = owner_of(path)  # by its layout
        why_not = (
            f"it is in {legacy[0]}, a dogo {legacy[1]} folder without the {MARKER} marker dogo writes in "
            "the folders it makes (made by an older dogo?)"
            if legacy
            else f"dogo did not make it (no {MARKER} marker in it or in a dogo folder it belongs to)"
        )
        raise NotOwned(
            f"{path}: left as it is{doing}: {what_is(path)}; {why_not}; remove it yourself if it is not needed"
        )


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


def missing_folders(path: str | os.PathLike) -> list[Path]:
    """``path`` and each folder above it that does not exist yet, the deepest first: what making ``path``
    (``mkdir(parents=True)``) creates, and all :func:`remove_empty` may take away again."""
    path = Path(path)
    return [p for p in (path, *path.parents) if not os.path.lexists(p)]


def remove_empty(folders: list[Path]) -> list[Path]:
    """Remove each of ``folders`` (from :func:`missing_folders`, the deepest first) that is an empty folder, and
    stop at the first that is not: a folder dogo made and left empty goes, one that holds anything stays, and
    so does every folder above it. Returns those removed."""
    removed = []
    for folder in folders:
        if not os.path.lexists(folder):
            continue  # removed already (with the run it was made for)
        try:
            folder.rmdir()  # only when empty; never follows a link (rmdir of a link fails)
        except OSError:
            break
        removed.append(folder)
    return removed
