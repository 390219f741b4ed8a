"""Runs that don't fill the disk: how many checkpoints a run keeps, the feature cache's cap, ``dogo clean``.

- ``logging.keep_last: K`` keeps the newest K ``epoch-N.pt`` (None: all of them).
- ``checkpoints/last.prev.pt`` (the fallback while a run is being written) is removed once the
  run has finished cleanly, unless ``logging.keep_previous: true``.
- ``eval.cache_max_mb`` caps ``RUN_DIR/cache/features``: after each evaluation, the least
  recently used files go until the folder fits.
- ``dogo clean RUN_DIR [--cache] [--checkpoints]`` removes the feature cache and every
  checkpoint but ``last.pt`` (which evaluation, export and resume need).

Every removal goes through :func:`dogo.guards.ownership.remove_owned`: only what dogo made (a
folder with its marker, or one of its own files), never through a symbolic link.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path

from dogo.guards.messages import what_is
from dogo.guards.ownership import check_removable, owner_of, remove_owned
from dogo.runs.checkpoint import previous_path
from dogo.runs.layout import RunDir

EPOCH = re.compile(r"epoch-(\d+)\.pt")


def epoch_checkpoints(folder: str | Path) -> list[Path]:
    """``epoch-N.pt`` files of ``folder``, oldest (smallest N) first."""
    folder = Path(folder)
    found = [(int(m.group(1)), p) for p in folder.glob("epoch-*.pt") if (m := EPOCH.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def prune_epoch_checkpoints(
    folder: str | Path, keep_last: int | None, warn: Callable[[str], None] | None = None
) -> list[Path]:
    """Remove all but the newest ``keep_last`` ``epoch-N.pt``; returns what was removed.

    An ``epoch-N.pt`` that is a symbolic link (a checkpoint moved to another disk and linked back, say) is
    neither counted nor followed nor removed: ``warn`` names it (default: a :class:`UserWarning`), and the
    others are pruned as usual.
    """
    if keep_last is None:
        return []
    epochs = epoch_checkpoints(folder)
    for link in (p for p in epochs if p.is_symlink()):
        message = (
            f"{link}: left as it is (logging.keep_last): {what_is(link)}; dogo never follows or removes a link "
            "among its checkpoints, and keeps the newest files besides it (remove the link yourself if it is "
            "not needed)"
        )
        if warn is None:
            warnings.warn(message, stacklevel=2)
        else:
            warn(message)
    epochs = [p for p in epochs if not p.is_symlink()]
    doomed = epochs[: max(0, len(epochs) - keep_last)]
    for path in doomed:
        remove_owned(path, why="logging.keep_last")
    return doomed


def drop_previous(folder: str | Path) -> None:
    """Remove ``last.prev.pt`` (a run that ended cleanly needs no fallback)."""
    remove_owned(previous_path(Path(folder) / "last.pt"), why="the run finished cleanly")


def folder_bytes(folder: str | Path) -> int:
    folder = Path(folder)
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def _cache_files(folder: Path) -> list[Path]:
    """The ``.pt`` files under ``folder`` (regular files, reached without following a link)."""
    found = []
    for root, _, names in os.walk(folder):  # never into a linked folder
        found += [Path(root) / n for n in names if n.endswith(".pt") and not (Path(root) / n).is_symlink()]
    return [p for p in found if p.is_file()]


def cap_cache(folder: str | Path, max_mb: float | None) -> list[Path]:
    """Delete the least recently used files of ``folder`` until it holds at most ``max_mb`` MB.

    Only a cache dogo made (its marker) is capped; another folder is left as it is, with a warning.
    """
    folder = Path(folder)
    if max_mb is None or not folder.is_dir():
        return []
    if owner_of(folder, marked_only=True) is None:
        warnings.warn(
            f"{folder}: not capped (eval.cache_max_mb): dogo did not make this folder (no marker), so it "
            "removes nothing in it",
            stacklevel=2,
        )
        return []
    files = sorted(_cache_files(folder), key=lambda p: p.stat().st_mtime)
    total = sum(p.stat().st_size for p in files)
    limit = max_mb * 1e6
    removed = []
    for path in files:
        if total <= limit:
            break
        total -= path.stat().st_size
        remove_owned(path, why="eval.cache_max_mb")
        removed.append(path)
    return removed


def clean_run(run_dir: str | Path, *, cache: bool = True, checkpoints: bool = True) -> tuple[int, list[Path]]:
    """Remove a run's feature cache and/or its checkpoints but ``last.pt``; returns (bytes freed, paths).

    Holds the run directory and its cache (a run being trained or evaluated is refused, naming the
    process) and removes only what dogo made: everything is checked before anything is removed.
    """
    from dogo.guards.locks import holding

    run_dir = Path(run_dir)
    layout = RunDir(run_dir)
    with holding(run_dir):
        targets: list[Path] = []
        if cache and os.path.lexists(layout.cache):
            targets.append(layout.cache)
        if checkpoints:
            targets += epoch_checkpoints(layout.checkpoints)
            targets += [p for p in (previous_path(layout.last_checkpoint),) if os.path.lexists(p)]
        for target in targets:
            check_removable(target, why="dogo clean")
        if cache and layout.cache.is_dir() and not layout.cache.is_symlink():
            with holding(layout.cache):  # not while an evaluation uses it
                freed = sum(remove_owned(t, why="dogo clean") for t in targets)
        else:
            freed = sum(remove_owned(t, why="dogo clean") for t in targets)
    return freed, targets
