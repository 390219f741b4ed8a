"""Copying a study's small result files elsewhere, so that its report can be rebuilt without training,
and back again, so that a study continued on a fresh machine does not retrain what was published."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from dogo.guards.outputs import write_output
from dogo.study.records import read_record

__all__ = ["PUBLISHED", "publish", "restore"]


#: What a study's report reads: small text files, never checkpoints or caches.
PUBLISHED = (
    "study.yaml",
    "arms/*.yaml",
    "arms/*.flops.json",  # a step's FLOPs per arm: the page's compute axis and matched compute
    "*/seed-*.json",
    "*/seed-*/config.yaml",
    "*/seed-*/metrics.jsonl",
    "*/seed-*/eval/*.json",
)

#: The files of one run (relative to its ``<arm>/seed-<S>`` folder) besides its record.
_RUN_FILES = ("config.yaml", "metrics.jsonl", "eval/*.json")


def publish(study_dir: Path, dest: Path) -> Path:
    """Copy the files the report reads (configs, records, metrics, results) to ``dest``."""
    from dogo.guards.ownership import mark

    dest.mkdir(parents=True, exist_ok=True)
    mark(dest, "published", adopted=(dest / "study.yaml").is_file())
    for pattern in PUBLISHED:
        for path in sorted(study_dir.glob(pattern)):
            _copy(path, dest / path.relative_to(study_dir))
    return dest


def restore(published: Path, study_dir: Path, finished: Callable[[dict[str, Any]], bool]) -> int:
    """Copy back each published run that is ``finished`` and that ``study_dir`` lacks; returns how many.

    A restored run has its record, config, metrics and results but no checkpoint: it counts as done, and
    its numbers enter the report, but it cannot be evaluated with a protocol added later. The arms'
    settings come back too (never over local ones), so an edited arm is still refused, and so do their
    measured FLOPs a step.
    """
    for path in sorted([*published.glob("arms/*.yaml"), *published.glob("arms/*.flops.json")]):
        if not (study_dir / path.relative_to(published)).exists():
            _copy(path, study_dir / path.relative_to(published))
    count = 0
    for record_path in sorted(published.glob("*/seed-*.json")):
        local_record = study_dir / record_path.relative_to(published)
        if local_record.exists() or local_record.with_suffix("").exists() or not finished(read_record(record_path)):
            continue
        run = record_path.with_suffix("")
        for pattern in _RUN_FILES:
            for path in sorted(run.glob(pattern)):
                _copy(path, local_record.with_suffix("") / path.relative_to(run))
        _copy(record_path, local_record)  # last: the record marks the run done only once its files are back
        count += 1
    return count


def _copy(source: Path, target: Path) -> None:
    if target.exists() and target.read_bytes() == source.read_bytes():
        return
    write_output(target, source.read_bytes(), own=True, parents=True)
