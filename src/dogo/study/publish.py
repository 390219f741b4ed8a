"""Copying a study's small result files elsewhere, so that its report can be rebuilt without training,
and back again, so that a study continued on a fresh machine does not retrain what was published."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

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

    Every file is checked before it is copied back (:mod:`dogo.guards.verified`): a damaged record, result or
    run config leaves its run where it was published, with a warning naming the file, and the study trains and
    evaluates the run again (a restored run has no checkpoint to evaluate again); damaged arm settings or FLOPs
    are not copied back either, and the study writes or measures them again.
    """
    for path in sorted(published.glob("arms/*.yaml")):
        if not (study_dir / path.relative_to(published)).exists() and _yaml_mapping(path, "not restored"):
            _copy(path, study_dir / path.relative_to(published))
    for path in sorted(published.glob("arms/*.flops.json")):
        if not (study_dir / path.relative_to(published)).exists() and read_record(path):  # damaged: a warning
            _copy(path, study_dir / path.relative_to(published))
    count = 0
    for record_path in sorted(published.glob("*/seed-*.json")):
        local_record = study_dir / record_path.relative_to(published)
        if local_record.exists() or local_record.with_suffix("").exists() or not finished(read_record(record_path)):
            continue
        run = record_path.with_suffix("")
        if not _whole(run):
            continue
        for pattern in _RUN_FILES:
            for path in sorted(run.glob(pattern)):
                _copy(path, local_record.with_suffix("") / path.relative_to(run))
        _copy(record_path, local_record)  # last: the record marks the run done only once its files are back
        count += 1
    return count


def _yaml_mapping(path: Path, instead: str) -> bool:
    """Whether ``path`` reads as a YAML mapping (an arm's settings, a run's config); else a warning naming it."""
    from dogo.guards.verified import gap

    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        gap(path, f"not readable YAML ({type(exc).__name__})", instead)
        return False
    if not isinstance(loaded, dict):
        gap(path, f"a YAML {type(loaded).__name__}, not a mapping of settings", instead)
        return False
    return True


def _whole(run: Path) -> bool:
    """Whether a published run's config and results are what dogo wrote (else a warning naming the first that
    is not): only such a run is restored."""
    from dogo.evaluate.results import result_problem
    from dogo.guards.verified import gap, read_json

    instead = f"not restoring {run.name} of {run.parent.name}: the study trains and evaluates it again"
    if not _yaml_mapping(run / "config.yaml", instead):
        return False
    for path in sorted(run.glob("eval/*.json")):
        _, problem = read_json(path, result_problem)
        if problem:
            gap(path, f"damaged result ({problem})", instead)
            return False
    return True


def _copy(source: Path, target: Path) -> None:
    if target.exists() and target.read_bytes() == source.read_bytes():
        return
    write_output(target, source.read_bytes(), own=True, parents=True)
