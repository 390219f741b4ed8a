"""The cells and tables of a study's page, in one place for every section (:mod:`dogo.study.report`,
:mod:`dogo.study.budgets`)."""

from __future__ import annotations

import statistics
from typing import Any

__all__ = ["diff_cell", "mean_std", "table"]


def mean_std(values: list[float]) -> str:
    """``mean ± sample std`` of ``values`` (one value alone; ``–`` for none)."""
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.fmean(values):.1f} ± {statistics.stdev(values):.1f}"


def diff_cell(diff: dict[str, Any] | None) -> str:
    """A paired difference with its 95 % interval, bold where the interval excludes 0."""
    if diff is None:
        return "–"
    if diff["n"] < 2:
        return f"{diff['mean']:+.1f} (n=1)"
    mark = "**" if diff["low"] > 0 or diff["high"] < 0 else ""
    return f"{mark}{diff['mean']:+.1f}{mark} [{diff['low']:+.1f}, {diff['high']:+.1f}]"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table's lines, ending with a blank line."""
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]
