"""Figures of evaluation results against a setting: label noise, fraction of labels, corruption severity."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from dogo.report import figures
from dogo.report.figures import COLOURS
from dogo.report.runs import group_name


def collect_series(groups, protocol: str, points) -> dict[str, dict[float, list[float]]]:
    """label -> x -> values over the group's runs, from ``points(result) -> [(key, x, y)]``."""
    out: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for group in groups:
        gname = group_name(group)
        for run in group:
            for result in run.results:
                if result.get("protocol") != protocol:
                    continue
                peer = int(result.get("peer", 0))
                for key, x, y in points(result):
                    label = f"{gname} {run.peer_label(peer)}{key}"
                    out[label][x].append(y)
    return out


def series_colour(label: str) -> str | None:
    groups = [k for k in COLOURS if k.startswith("group:") and label.startswith(k[len("group:") :])]
    return COLOURS[max(groups, key=len)] if groups else None


def draw_series(ax, series: dict[str, dict[float, list[float]]]) -> None:
    for label, by_x in sorted(series.items()):
        xs = sorted(by_x)
        means = [statistics.mean(by_x[x]) for x in xs]
        errs = [statistics.stdev(by_x[x]) if len(by_x[x]) > 1 else 0.0 for x in xs]
        ax.errorbar(xs, means, yerr=errs, marker="o", markersize=3, capsize=3, label=label, color=series_colour(label))
    ax.legend(fontsize=7)


def noisy_points(result):
    kind = result.get("variant") or (result.get("settings") or {}).get("noise", "")
    for row in result.get("results", []):
        if row.get("test_top1_mean") is not None:
            yield f" {kind}", 100 * row["rate"], row["test_top1_mean"]


def fewshot_points(result):
    total = result.get("num_train_total") or 0
    for row in result.get("results", []):
        if row.get("test_top1_mean") is None:
            continue
        fraction = row.get("fraction")
        if fraction is None and total:
            fraction = row.get("num_labelled", 0) / total
        if fraction:
            yield "", 100 * fraction, row["test_top1_mean"]


def eval_plot(groups, protocol, points, path, *, xlabel, title, logx=False) -> Path | None:
    series = collect_series(groups, protocol, points)
    if not series:
        return None
    plt, fig, axes = figures.figure()
    draw_series(axes[0], series)
    axes[0].set(xlabel=xlabel, ylabel="test top-1 accuracy (%)")
    if logx:
        from matplotlib.ticker import FuncFormatter

        axes[0].set_xscale("log")
        axes[0].xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}%"))  # fractions as %
        axes[0].xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))  # no crowded minor labels
    return figures.save(plt, fig, path, title)


def no_effect(results) -> dict[str, dict[int, list[int]]]:
    """corruption -> image side in px -> severities that left the images unchanged (the shift
    protocol's ``no_effect``, e.g. a blur at 8 px), over every shift result among ``results``."""
    found: dict[str, dict[int, set[int]]] = defaultdict(lambda: defaultdict(set))
    for result in results:
        if result.get("protocol") == "shift":
            for name, severities in (result.get("no_effect") or {}).items():
                found[name][int(result.get("image_px") or 0)].update(int(s) for s in severities)
    return {name: {px: sorted(s) for px, s in sizes.items()} for name, sizes in found.items()}


def no_effect_text(sizes: dict[int, list[int]], all_severities: bool = False) -> str:
    """``no effect at 8 px`` (with the severities unless it is all of them)."""
    parts = []
    for px, severities in sorted(sizes.items()):
        at = f" at {px} px" if px else ""
        which = "" if all_severities else f" (severity {', '.join(map(str, severities))})"
        parts.append(f"no effect{at}{which}")
    return "; ".join(parts)


def _shift_curve(result, table, skip=()):  # severity 0 is the clean accuracy
    points = [(int(severity), acc) for severity, acc in (table or {}).items() if int(severity) not in skip]
    if points:
        yield "", 0, result["clean_top1"]
        for severity, acc in points:
            yield "", severity, acc


def _corruption_series(groups, name: str):
    """A corruption's accuracy against severity, without the severities at which it did nothing."""

    def points(result):
        skip = {int(s) for s in (result.get("no_effect") or {}).get(name, ())}
        return _shift_curve(result, (result.get("corruption_top1") or {}).get(name), skip)

    return collect_series(groups, "shift", points)


def shift_plot(groups, path: Path) -> Path | None:
    """Mean over corruptions, then one panel per corruption; a corruption that did nothing at the
    images' size says so in its panel instead of drawing a flat line."""
    shift_results = [r for g in groups for run in g for r in run.results if r.get("protocol") == "shift"]
    corruptions = list(dict.fromkeys(c for r in shift_results for c in r.get("corruption_top1") or {}))
    panels = {
        "mean over corruptions": collect_series(groups, "shift", lambda r: _shift_curve(r, r.get("severity_mean_top1")))
    }
    for name in corruptions:
        panels[name] = _corruption_series(groups, name)
    if not panels["mean over corruptions"]:
        return None
    flagged = no_effect(shift_results)
    plt, fig, axes = figures.figure(len(panels))
    for ax, (name, series) in zip(axes, panels.items(), strict=True):
        title = name
        if series:
            draw_series(ax, series)
            if name in flagged:
                title = f"{name}\n{no_effect_text(flagged[name])}"
        else:
            ax.text(
                0.5,
                0.5,
                no_effect_text(flagged.get(name, {}), all_severities=True) or "no results",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
        ax.set(title=title, xlabel="severity (0 = clean)", ylabel="test top-1 accuracy (%)")
        ax.set_xticks(range(6))
    return figures.save(plt, fig, path, "Accuracy under corruptions (CIFAR-10-C style)")
