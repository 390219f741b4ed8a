"""The table every run ends with: per peer its final loss (and KL), best kNN, then the run's speed,
wall time and where its checkpoint is. Read back from ``metrics.jsonl``, so a resumed run's
table covers the whole run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dogo.core.console import duration
from dogo.core.metric_keys import by_index

__all__ = ["mean_images_per_s", "read_rows", "summary_lines"]


def read_rows(metrics: Path, labels: list[str]) -> list[dict[str, Any]]:
    """The complete rows of a ``metrics.jsonl``, peers keyed by index (``peer/0/loss``) whatever the file used."""
    rows: list[dict[str, Any]] = []
    try:
        lines = metrics.read_text().splitlines()
    except OSError:
        return rows
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(by_index(row, labels))
    return rows


def mean_images_per_s(rows: list[dict[str, Any]]) -> float | None:
    """The run's training speed: the mean over its metrics rows, the first (warm-up) left out when there are more."""
    rates = [row["images_per_s"] for row in rows if "images_per_s" in row]
    rates = rates[1:] or rates
    return sum(rates) / len(rates) if rates else None


def summary_lines(
    rows: list[dict[str, Any]],
    labels: list[str],
    *,
    steps: int,
    epochs: int,
    seconds: float,
    checkpoint: Path,
    resumed_at: int = 0,
) -> list[str]:
    """The end-of-run table (one line per peer) and the run's line: steps, wall time, images/s, checkpoint."""
    cohort = len(labels) > 1
    width = max(8, *map(len, labels))
    header = f"{'peer':<{width}}  {'final loss':>10}" + (f"  {'final kl':>9}" if cohort else "") + f"  {'best kNN':>18}"
    lines = [header]
    for i, label in enumerate(labels):
        loss = _last(rows, f"peer/{i}/loss")
        line = f"{label:<{width}}  {_number(loss):>10}"
        if cohort:
            line += f"  {_number(_last(rows, f'peer/{i}/loss/kl')):>9}"
        knn = [(row[f"peer/{i}/knn_top1"], row.get("epoch")) for row in rows if f"peer/{i}/knn_top1" in row]
        best = max(knn, key=lambda pair: pair[0], default=None)
        lines.append(line + f"  {(f'{best[0]:.1f}% (epoch {best[1]})' if best else 'not measured'):>18}")
    speed = mean_images_per_s(rows)
    session = f" (this session from step {resumed_at})" if resumed_at else ""
    lines.append(
        f"{steps} steps ({epochs} epoch{'s' if epochs != 1 else ''}) in {duration(seconds)}{session}"
        + (f", {speed:.0f} images/s" if speed is not None else "")
        + f"; checkpoint: {checkpoint}"
    )
    return lines


def _last(rows: list[dict[str, Any]], key: str) -> float | None:
    return next((row[key] for row in reversed(rows) if key in row), None)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
