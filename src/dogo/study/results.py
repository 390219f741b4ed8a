"""A study's results as the report reads them: per arm and seed, the evaluated peer's headline
numbers, its kNN monitor curve, its training speed and the run's record; and the paired
difference of two arms over the seeds both have.

Reads only small files: the study's ``study.yaml``, each run's record (``<arm>/seed-<S>.json``)
and its run directory's ``config.yaml``, ``metrics.jsonl`` and ``eval/*.json``. A study
directory and a folder made by ``dogo study --publish`` read the same, so a committed copy of
the results rebuilds the page without training.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dogo.core.errors import DogoError
from dogo.evaluate.results import load_results
from dogo.report import read_run
from dogo.study.plan import StudyConfig
from dogo.study.records import finished, read_record

__all__ = ["KNN_MONITOR", "ArmResults", "load_study_results", "paired_difference"]

KNN_MONITOR = "kNN monitor (training)"


@dataclass
class ArmResults:
    """One arm: its seeds' headline numbers, training curves and records."""

    name: str
    description: str
    planned: list[int]
    numbers: dict[int, dict[str, float]] = field(default_factory=dict)  # seed -> metric -> value
    results: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # seed -> result dicts (peer 0)
    knn_curves: dict[int, list[tuple[int, float]]] = field(default_factory=dict)
    speeds: dict[int, float] = field(default_factory=dict)  # seed -> median training images/s of its logged steps
    records: dict[int, dict[str, Any]] = field(default_factory=dict)
    budgets: dict[int, dict[int, dict[str, float]]] = field(default_factory=dict)  # seed -> step -> metric -> value
    flops_per_step: int | None = None  # a training step's floating-point operations (studies with budgets)

    def at_budget(self, metric: str, step: int) -> dict[int, float]:
        """Each seed's ``metric`` at ``step`` (studies with budgets)."""
        return {s: steps[step][metric] for s, steps in self.budgets.items() if metric in steps.get(step, {})}

    @property
    def seeds(self) -> list[int]:
        return sorted(self.numbers)

    def finished(self, study: StudyConfig) -> list[int]:
        """The seeds whose run is trained and evaluated with every protocol of ``study``."""
        return [s for s in self.seeds if finished(study, self.records[s])]


def load_study_results(study_dir: str | Path) -> tuple[StudyConfig, list[ArmResults]]:
    study_dir = Path(study_dir)
    try:
        study = StudyConfig.model_validate(yaml.safe_load((study_dir / "study.yaml").read_text()))
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise DogoError(f"{study_dir / 'study.yaml'}: not a readable study file ({exc})") from None
    arms = []
    for arm in study.arms:
        results = ArmResults(arm.name, arm.description, arm.seeds or study.seeds)
        for seed in results.planned:
            record = read_record(study_dir / arm.name / f"seed-{seed}.json")
            run_dir = study_dir / arm.name / f"seed-{seed}"
            if not record.get("trained") or not run_dir.is_dir():
                continue
            run = read_run(run_dir)
            peer0 = [r for r in run.results if r.get("peer") == 0]
            if study.budgets:  # the headline numbers are the largest budget's
                kept = [r for r in load_results(run_dir, checkpoint=None) if r.get("peer") == 0]
                for r in kept:
                    step = _kept_step(r.get("checkpoint_name"))
                    if step in study.arm_budgets(arm.name):
                        results.budgets.setdefault(seed, {}).setdefault(step, {}).update(_summary(r))
                peer0 = [r for r in kept if _kept_step(r.get("checkpoint_name")) == max(study.budgets)]
            numbers = {key: value for r in peer0 for key, value in _summary(r).items()}
            curve = [
                (int(row["epoch"]), float(row["peer/0/knn_top1"]))
                for row in run.metrics
                if "peer/0/knn_top1" in row and "epoch" in row
            ]
            if curve:
                numbers[KNN_MONITOR] = curve[-1][1]
            results.numbers[seed], results.results[seed] = numbers, peer0
            results.knn_curves[seed], results.records[seed] = curve, record
            speeds = [float(row["images_per_s"]) for row in run.metrics if "images_per_s" in row]
            if len(speeds) >= 2:  # one logged step (an untrained arm's forward pass) says nothing of training
                results.speeds[seed] = statistics.median(speeds)
        flops = read_record(study_dir / "arms" / f"{arm.name}.flops.json").get("flops_per_step")
        results.flops_per_step = int(flops) if flops else None
        arms.append(results)
    return study, arms


def _summary(result: dict[str, Any]) -> dict[str, float]:
    return {key: float(value) for key, value in (result.get("summary") or {}).items()}


def _kept_step(name: Any) -> int | None:
    """``step-400`` (the weights kept at step 400) -> 400; other checkpoint names -> None."""
    match = re.fullmatch(r"step-(\d+)", str(name))
    return int(match.group(1)) if match else None


def paired_difference(values: dict[int, float], baseline: dict[int, float]) -> dict[str, Any] | None:
    """Mean of ``values[s] - baseline[s]`` over shared seeds, with its 95 % t confidence interval."""
    seeds = sorted(set(values) & set(baseline))
    if not seeds:
        return None
    diffs = [values[s] - baseline[s] for s in seeds]
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return {"mean": mean, "low": math.nan, "high": math.nan, "n": 1, "seeds": seeds}
    from scipy.stats import t

    half = t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": len(diffs), "seeds": seeds}
