"""The budget axis of a study's page: where along pretraining an arm helps, read against compute.

For a study with ``budgets`` (steps), every arm x seed trained once to its largest budget with its
weights kept at each (step N of that run is an N-step run, bit for bit, see :mod:`dogo.runs.kept`). This
module turns the per-budget results (:attr:`ArmResults.budgets`) into:

- accuracy at every budget, per arm (mean +- sample std over seeds), as tables and as figures against
  steps and against training compute (floating-point operations of a step, measured once per arm,
  times the steps: a unit that does not depend on the machine);
- the paired difference against the baseline arm at each budget, with its 95 % t interval;
- matched compute: at each budget of an arm, the baseline's accuracy at the arm's compute, read off
  the baseline's own curve of the same seed by linear interpolation in log compute between its two
  nearest measured budgets (never extrapolated), and the paired difference with the arm.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dogo.study.plan import StudyConfig
from dogo.study.results import ArmResults, paired_difference
from dogo.study.tables import diff_cell, mean_std, table

__all__ = ["budget_figures", "budget_lines", "budget_metrics", "growth", "interpolate_log", "matched_compute"]


def budget_metrics(study: StudyConfig, arms: list[ArmResults]) -> list[str]:
    """The numbers measured at more than one budget (those of ``evaluate.every_budget``), in order found."""
    seen: dict[str, set[int]] = {}
    for arm in arms:
        for steps in arm.budgets.values():
            for step, numbers in steps.items():
                for metric in numbers:
                    seen.setdefault(metric, set()).add(step)
    return [metric for metric, steps in seen.items() if len(steps) > 1]


def interpolate_log(points: Sequence[tuple[float, float]], x: float) -> float | None:
    """``y`` at ``x`` on the line through ``points`` ((x, y), x > 0) taken linearly in ``log x``;
    None outside the measured range (no extrapolation)."""
    points = sorted(p for p in points if p[0] > 0)
    if not points or x < points[0][0] or x > points[-1][0]:
        return None
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x0 <= x <= x1:
            if x1 == x0:
                return y0
            share = (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return y0 + share * (y1 - y0)
    return points[0][1]  # a single measured point equal to x


def matched_compute(arm: ArmResults, base: ArmResults, metric: str, step: int) -> dict[str, Any] | None:
    """``arm`` at ``step`` against ``base`` at the same training compute, paired by seed.

    Returns the paired difference (:func:`paired_difference`) plus ``base_steps`` (the baseline's steps
    at that compute) and ``base_mean`` (its interpolated accuracy, mean over the paired seeds); None when
    a step's FLOPs are unknown, at step 0, or when the compute lies beyond the baseline's measured curve.
    """
    if not arm.flops_per_step or not base.flops_per_step or step <= 0:
        return None
    compute = arm.flops_per_step * step
    read: dict[int, float] = {}
    for seed, steps in base.budgets.items():
        curve = [(base.flops_per_step * s, numbers[metric]) for s, numbers in steps.items() if metric in numbers]
        value = interpolate_log(curve, compute)
        if value is not None:
            read[seed] = value
    diff = paired_difference(arm.at_budget(metric, step), read)
    if diff is None:
        return None
    return {
        **diff,
        "base_steps": compute / base.flops_per_step,
        "base_mean": statistics.fmean(read[s] for s in diff["seeds"]),
    }


def growth(arm: ArmResults, metric: str) -> dict[str, Any] | None:
    """How far ``arm``'s pretraining went on ``metric``: its gain at its largest budget over step 0, and
    what the last two doublings of steps added, each a mean over the seeds measured at both ends.

    Returns ``largest``, ``gain`` (largest - step 0, None without step 0) and ``last``/``before`` (the
    gains of largest/2 -> largest and largest/4 -> largest/2, None where a budget is missing); None when
    the arm has no positive budget.
    """
    measured = sorted({s for steps in arm.budgets.values() for s, numbers in steps.items() if metric in numbers})
    if not measured or measured[-1] <= 0:
        return None
    largest = measured[-1]

    def gained(low: int, high: int) -> float | None:
        a, b = arm.at_budget(metric, low), arm.at_budget(metric, high)
        seeds = sorted(set(a) & set(b))
        return statistics.fmean(b[s] - a[s] for s in seeds) if seeds else None

    return {
        "largest": largest,
        "gain": gained(0, largest),
        "last": gained(largest // 2, largest) if largest % 2 == 0 else None,
        "before": gained(largest // 4, largest // 2) if largest % 4 == 0 else None,
    }


def _growth_lines(base: ArmResults, metrics: list[str]) -> list[str]:
    rows = []
    for metric in metrics:
        g = growth(base, metric)
        if g is None:
            continue
        top = g["largest"]
        share = (
            f"{g['last'] / g['before']:.2f}"
            if g["last"] is not None and g["before"] is not None and g["before"] > 0
            else "–"
        )
        rows.append(
            [
                metric,
                f"{top}",
                "–" if g["gain"] is None else f"{g['gain']:+.2f}",
                "–" if g["before"] is None else f"{g['before']:+.2f}",
                "–" if g["last"] is None else f"{g['last']:+.2f}",
                share,
            ]
        )
    if not rows:
        return []
    return [
        f"How far pretraining went: `{base.name}`'s gain at its largest budget over its own step 0 (the "
        "untrained initialisation), and what each of its last two doublings of steps added (points, mean over "
        "the seeds measured at both ends). A last doubling that adds less than half of the one before "
        "(ratio below 0.5) is a curve that has begun to flatten; no ratio where the doubling before lost points.",
        "",
        *table(
            ["metric", "largest budget", "gain over step 0", "doubling before last", "last doubling", "ratio"],
            rows,
        ),
    ]


# --------------------------------------------------------------------------- the page's lines


def _steps(arms: list[ArmResults]) -> list[int]:
    return sorted({step for arm in arms for steps in arm.budgets.values() for step in steps})


def budget_lines(study: StudyConfig, arms: list[ArmResults]) -> list[str]:
    """The page's budget section: compute per step, accuracy, gains and matched compute at every budget."""
    metrics = budget_metrics(study, arms)
    base = next((a for a in arms if a.name == study.compare_to), None)
    steps = _steps(arms)
    lines = [
        "## Along the budget",
        "",
        f"Each arm x seed trained once to its largest budget ({', '.join(map(str, study.budgets or []))} steps"
        + "".join(
            f"; `{a.name}` also {', '.join(map(str, a_more))}"
            for a, a_more in ((a, next(x.more_budgets for x in study.arms if x.name == a.name)) for a in arms)
            if a_more
        )
        + "), with every peer's weights kept at each budget (`train.keep_at`). With a constant learning "
        "rate, the weights at step N of that run are those of an N-step run, bit for bit (tested), so "
        "each column is a run of that length. Step 0 is the initialisation, never trained.",
        "",
    ]
    flops = [(a, a.flops_per_step) for a in arms if a.flops_per_step]
    if flops:
        base_flops = base.flops_per_step if base is not None and base.flops_per_step else None
        lines += [
            "Training compute is counted in floating-point operations (FLOPs of every matrix product and "
            "convolution of one training step, measured once per arm with `torch.utils.flop_counter`, "
            "times the steps): a unit that is the same on every machine.",
            "",
        ]
        lines += table(
            ["arm", "GFLOP a step", *(["× the baseline's"] if base_flops else [])],
            [[f"`{a.name}`", f"{f / 1e9:.1f}", *([f"{f / base_flops:.2f}"] if base_flops else [])] for a, f in flops],
        )
    if base is not None:
        lines += _growth_lines(base, metrics)
    for metric in metrics:
        lines += [f"### {metric}", "", "Test top-1 accuracy (%) at each budget, mean ± sample std over seeds.", ""]
        lines += table(
            ["arm", *(f"{s} steps" for s in steps)],
            [[f"`{a.name}`", *(mean_std(list(a.at_budget(metric, s).values())) for s in steps)] for a in arms],
        )
        if base is None:
            continue
        others = [a for a in arms if a is not base]
        lines += [
            f"Gain over `{base.name}` at the same number of steps: paired difference (points) with its 95 % "
            "interval; bold where it excludes 0.",
            "",
        ]
        lines += table(
            ["arm", *(f"{s} steps" for s in steps)],
            [
                [
                    f"`{a.name}`",
                    *(diff_cell(paired_difference(a.at_budget(metric, s), base.at_budget(metric, s))) for s in steps),
                ]
                for a in others
            ],
        )
        rows = []
        for arm in others:
            cells = []
            for step in steps:
                matched = matched_compute(arm, base, metric, step)
                cells.append(
                    "–"
                    if matched is None
                    else f"{diff_cell(matched)} (vs {matched['base_mean']:.1f} at ≈{matched['base_steps']:.0f} steps)"
                )
            rows.append([f"`{arm.name}`", *cells])
        if any(cell != "–" for row in rows for cell in row[1:]):
            lines += [
                f"Matched compute: each arm at N steps against `{base.name}` at the same training compute, "
                f"its accuracy read off its own curve (same seed) by interpolation in log compute between the "
                f"two nearest budgets it was measured at; interpolated, not measured. Paired difference "
                f"(points) with its 95 % interval, and `{base.name}`'s interpolated accuracy and steps. "
                f"– where that compute lies beyond `{base.name}`'s curve.",
                "",
            ]
            lines += table(["arm", *(f"{s} steps" for s in steps)], rows)
    return lines


# --------------------------------------------------------------------------- figures


def _axes_steps(ax, steps: list[int]) -> dict[int, float]:
    """Steps on a log axis, step 0 drawn half a doubling left of the first positive budget; returns x per step."""
    positive = [s for s in steps if s > 0]
    where = {s: float(s) for s in positive}
    if 0 in steps and positive:
        where[0] = positive[0] / 2
    ax.set_xscale("log", base=2)
    ax.set_xticks([where[s] for s in steps])
    ax.set_xticklabels([str(s) for s in steps])
    ax.minorticks_off()
    return where


def _band(ax, xs, values_by_x, colour, label, width=1.8) -> None:
    means = [statistics.fmean(values_by_x[x]) for x in xs]
    stds = [statistics.stdev(values_by_x[x]) if len(values_by_x[x]) > 1 else 0.0 for x in xs]
    ax.plot(xs, means, marker="o", markersize=4, linewidth=width, color=colour, label=label)
    ax.fill_between(
        xs,
        [m - s for m, s in zip(means, stds, strict=True)],
        [m + s for m, s in zip(means, stds, strict=True)],
        color=colour,
        alpha=0.15,
        linewidth=0,
    )


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    from dogo.guards.outputs import write_output

    fig.tight_layout()
    try:  # no version stamp: the same bytes every time
        write_output(path, lambda handle: fig.savefig(handle, format="png", dpi=110, metadata={"Software": None}))
    finally:
        plt.close(fig)
    return path


def budget_figures(
    study: StudyConfig, arms: list[ArmResults], colours: dict[str, Any], folder: Path
) -> list[tuple[str, Path]]:
    """Per budget metric: accuracy against steps and against compute (two panels), and the gain over the
    baseline against steps with its 95 % interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    base = next((a for a in arms if a.name == study.compare_to), None)
    steps = _steps(arms)
    made = []
    for metric in budget_metrics(study, arms):
        name = metric.replace(" ", "-").replace("%", "pct")
        fig, (by_steps, by_compute) = plt.subplots(1, 2, figsize=(12.8, 4.4), sharey=True)
        where = _axes_steps(by_steps, steps)
        for arm in arms:
            label = f"{arm.name} (n={len(arm.budgets)})"
            values = {s: list(arm.at_budget(metric, s).values()) for s in steps}
            xs = [s for s in steps if values[s]]
            if not xs:
                continue
            _band(by_steps, [where[s] for s in xs], {where[s]: values[s] for s in xs}, colours[arm.name], label)
            if arm.flops_per_step:
                trained = [s for s in xs if s > 0]
                if trained:
                    _band(
                        by_compute,
                        [arm.flops_per_step * s for s in trained],
                        {arm.flops_per_step * s: values[s] for s in trained},
                        colours[arm.name],
                        label,
                    )
        untrained = [v for a in arms for v in a.at_budget(metric, 0).values()]
        if untrained:
            by_compute.axhline(
                statistics.fmean(untrained), color="grey", linestyle=":", linewidth=1, label="step 0 (untrained)"
            )
        by_compute.set_xscale("log")
        by_steps.set(xlabel="training steps", ylabel=f"{metric}: test top-1 (%)", title=f"{metric} against steps")
        by_compute.set(xlabel="training compute (FLOPs)", title=f"{metric} against training compute")
        for ax in (by_steps, by_compute):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        path = _save(fig, folder / f"budget-{name}.png")
        made.append((f"{metric} against training steps and against training compute", path))
        if base is None:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        where = _axes_steps(ax, steps)
        ax.axhline(0, color="black", linewidth=0.8)
        for arm in arms:
            if arm is base:
                continue
            diffs = {
                s: diff
                for s in steps
                if (diff := paired_difference(arm.at_budget(metric, s), base.at_budget(metric, s))) is not None
            }
            xs = [s for s in steps if s in diffs]
            if not xs:
                continue
            means = [diffs[s]["mean"] for s in xs]
            ax.plot(
                [where[s] for s in xs],
                means,
                marker="o",
                markersize=4,
                color=colours[arm.name],
                label=f"{arm.name} − {base.name}",
            )
            banded = [s for s in xs if diffs[s]["n"] > 1]
            ax.fill_between(
                [where[s] for s in banded],
                [diffs[s]["low"] for s in banded],
                [diffs[s]["high"] for s in banded],
                color=colours[arm.name],
                alpha=0.15,
                linewidth=0,
            )
        ax.set(
            xlabel="training steps",
            ylabel="paired difference (points)",
            title=f"{metric}: gain over {base.name} (95 % interval)",
        )
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # no other arm measured yet: an empty frame, no legend
            ax.legend(fontsize=7)
        path = _save(fig, folder / f"gain-{name}.png")
        made.append((f"{metric}: gain over {base.name} at each budget, with its 95 % interval", path))
    return made
