"""What the report reads from a run directory (metrics keyed by peer label or, in older runs, by index, read
alike), and how runs group into seeds of one configuration."""

from __future__ import annotations

import json
import math
import re
import statistics
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dogo.config import RUNTIME_KEYS, flatten, peer_labels, under
from dogo.core.metric_keys import by_index
from dogo.evaluate.results import load_results
from dogo.runs.layout import RunDir

# Runs whose configs differ only in these form one group, shown as mean +- std over its seeds.
GROUPED_OVER = ("seed", *RUNTIME_KEYS)
PEER_KEY = re.compile(r"^peer[/_]?(\d+)/(.+)$")
KNN_KEYS = ("knn_top1", "knn/top1")


@dataclass
class RunRecord:
    """Everything the report reads from one run directory."""

    path: Path
    name: str
    config: dict[str, Any]
    metrics: list[dict[str, Any]]  # metrics.jsonl rows, peers keyed by index (peer/0/loss)
    results: list[dict[str, Any]]
    peer_names: dict[int, str] = field(default_factory=dict)

    @property
    def seed(self) -> Any:
        return self.config.get("seed")

    def peer_label(self, peer: int) -> str:
        name = self.peer_names.get(peer)
        return f"peer{peer} ({name})" if name else f"peer{peer}"


def read_run(run_dir: str | Path) -> RunRecord:
    """A :class:`RunRecord` of ``run_dir`` (missing parts are empty)."""
    run_dir = Path(run_dir)
    config: dict[str, Any] = {}
    layout = RunDir(run_dir)
    if layout.config.is_file():
        try:
            loaded = yaml.safe_load(layout.config.read_text())
            config = loaded if isinstance(loaded, dict) else {}
        except (OSError, yaml.YAMLError) as err:
            warnings.warn(f"{run_dir}/config.yaml unreadable: {err}", stacklevel=2)
    models = (config.get("train") or {}).get("models") or config.get("peers") or []
    models = [m for m in models if isinstance(m, dict)] if isinstance(models, list) else []
    labels = peer_labels(models)
    metrics = []
    if layout.metrics.is_file():
        bad = 0
        for line in layout.metrics.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(row, dict):
                metrics.append(by_index(row, labels))  # peers by index, whether the file keys them by label or not
            else:
                bad += 1
        if bad:
            from dogo.guards.verified import gap

            gap(layout.metrics, f"{bad} unreadable line(s)", "the report leaves them out")
    peer_names = {
        k: f"{label}: {architecture(model)}" for k, (label, model) in enumerate(zip(labels, models, strict=True))
    }
    return RunRecord(
        path=run_dir,
        name=str(config.get("name") or run_dir.name),
        config=config,
        metrics=metrics,
        results=load_results(run_dir),
        peer_names=peer_names,
    )


def architecture(model: dict[str, Any]) -> str:
    """``resnet18 x0.25 simclr``: a peer's backbone, width and objective, for labels in tables and figures."""
    width = model.get("width", 1.0)
    return " ".join(
        str(part)
        for part in (
            model.get("backbone", "resnet18"),
            "" if width in (1, 1.0, None) else f"x{width:g}",
            model.get("objective", "simclr"),
        )
        if part
    )


def training_key(config: dict[str, Any]) -> str:
    kept = {k: v for k, v in flatten(config).items() if not under(k, GROUPED_OVER)}
    return json.dumps(kept, sort_keys=True, default=str)


def group_runs(runs: list[RunRecord]) -> list[list[RunRecord]]:
    """Runs that differ only in their seed; two runs with the same seed are not two seeds (the
    second starts a group of its own)."""
    groups: dict[str, list[list[RunRecord]]] = {}
    for run in runs:
        candidates = groups.setdefault(training_key(run.config), [])
        home = next((g for g in candidates if all(r.seed != run.seed for r in g)), None)
        if home is None:
            candidates.append([run])
        else:
            home.append(run)
    return [group for candidates in groups.values() for group in candidates]


def group_name(group: list[RunRecord]) -> str:
    if len(group) == 1:
        return group[0].name
    names = [r.name for r in group]
    prefix = names[0]
    for name in names[1:]:
        while not name.startswith(prefix):
            prefix = prefix[:-1]
    prefix = re.sub(r"[-_ ]*(seed|s)?[-_ ]*$", "", prefix) or names[0]
    seeds = ", ".join(str(r.seed) for r in group)
    return f"{prefix} (seeds {seeds})"


def cell(values: Sequence[float | None]) -> str:
    present = [v for v in values if v is not None and not math.isnan(v)]
    if not present:
        return "–"
    if len(present) == 1:
        return f"{present[0]:.2f}"
    return f"{statistics.mean(present):.2f} ± {statistics.stdev(present):.2f} (n={len(present)})"


def peers_of(run: RunRecord) -> list[int]:
    found = set(run.peer_names)
    for row in run.metrics:
        for key in row:
            m = PEER_KEY.match(key)
            if m:
                found.add(int(m.group(1)))
    found.update(int(r["peer"]) for r in run.results if isinstance(r.get("peer"), int))
    return sorted(found) or [0]


def last_knn(run: RunRecord, peer: int) -> float | None:
    value = None
    for row in run.metrics:
        for suffix in KNN_KEYS:
            if f"peer/{peer}/{suffix}" in row:
                value = row[f"peer/{peer}/{suffix}"]
    return value


def run_summaries(run: RunRecord, peer: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for result in run.results:
        if result.get("peer") == peer:
            out.update(result.get("summary") or {})
    return out
