"""Runs that don't fill the disk: how many checkpoints a run keeps, the feature cache's cap, ``dogo clean``.

- ``logging.keep_last: K`` keeps the newest K ``epoch-N.pt`` (None: all of them).
- ``checkpoints/last.prev.pt`` (the fallback while a run is being written) is removed once the
  run has finished cleanly, unless ``logging.keep_previous: true``.
- ``eval.cache_max_mb`` caps ``RUN_DIR/cache/features``: after each evaluation, the least
  recently used files go until the folder fits.
- ``dogo clean RUN_DIR [--cache] [--checkpoints]`` removes the feature cache and every
  checkpoint but ``last.pt`` (which evaluation, export and resume need).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from dogo.runs.checkpoint import previous_path
from dogo.runs.layout import RunDir

EPOCH = re.compile(r"epoch-(\d+)\.pt")


def epoch_checkpoints(folder: str | Path) -> list[Path]:
    """``epoch-N.pt`` files of ``folder``, oldest (smallest N) first."""
    folder = Path(folder)
    found = [(int(m.group(1)), p) for p in folder.glob("epoch-*.pt") if (m := EPOCH.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def prune_epoch_checkpoints(folder: str | Path, keep_last: int | None) -> list[Path]:
    """Remove all but the newest ``keep_last`` ``epoch-N.pt``; returns what was removed."""
    if keep_last is None:
        return []
    epochs = epoch_checkpoints(folder)
    doomed = epochs[:max(0, len(epochs) - keep_last)]
    for path in doomed:
        path.unlink(missing_ok=True)
    return doomed


def drop_previous(folder: str | Path) -> None:
    """Remove ``last.prev.pt`` (a run that ended cleanly needs no fallback)."""
    previous_path(Path(folder) / "last.pt").unlink(missing_ok=True)


def folder_bytes(folder: str | Path) -> int:
    folder = Path(folder)
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def cap_cache(folder: str | Path, max_mb: float | None) -> list[Path]:
    """Delete the least recently used files of ``folder`` until it holds at most ``max_mb`` MB."""
    folder = Path(folder)
    if max_mb is None or not folder.is_dir():
        return []
    files = sorted((p for p in folder.rglob("*.pt") if p.is_file()), key=lambda p: p.stat().st_mtime)
    total = sum(p.stat().st_size for p in files)
    limit = max_mb * 1e6
    removed = []
    for path in files:
        if total <= limit:
            break
        total -= path.stat().st_size
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def clean_run(run_dir: str | Path, *, cache: bool = True, checkpoints: bool = True) -> tuple[int, list[Path]]:
    """Remove a run's feature cache and/or its checkpoints but ``last.pt``; returns (bytes freed, paths)."""
    run_dir = Path(run_dir)
    targets: list[Path] = []
    if cache and RunDir(run_dir).cache.exists():
        targets.append(RunDir(run_dir).cache)
    if checkpoints:
        folder = RunDir(run_dir).checkpoints
        targets += epoch_checkpoints(folder)
        targets += [p for p in (previous_path(RunDir(run_dir).last_checkpoint),) if p.exists()]
    freed = 0
    for target in targets:
        if target.is_dir():
            freed += folder_bytes(target)
            shutil.rmtree(target)
        else:
            freed += target.stat().st_size
            target.unlink()
    return freed, targets
