"""A study's figures: one line per arm (mean over seeds) with a shaded +- std band, against label
noise, label fraction, corruption severity and training epoch; one colour per arm in every figure."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from dogo.study.results import ArmResults

__all__ = ["study_figures"]


def _colours(arms: list[ArmResults]) -> dict[str, Any]:
    import matplotlib

    palette = matplotlib.colormaps["tab20"].colors
    return {arm.name: palette[(2 * i) % 20 if i < 10 else (2 * i + 1) % 20] for i, arm in enumerate(arms)}


def _curve_figure(arms, colours, points, path: Path, *, xlabel: str, title: str, xticks=None,
                  percent_x: bool = False) -> Path | None:
    """One line per arm (mean over seeds) with a shaded +- std band, from ``points(results) -> {x: y}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    drawn = False
    for order, arm in enumerate(arms):
        width = max(1.2, 4.0 * 0.7**order)  # earlier arms drawn wider: one that a later arm overlies still shows
        by_x: dict[float, list[float]] = {}
        for seed in arm.seeds:
            for x, y in points(arm, seed).items():
                by_x.setdefault(x, []).append(y)
        if not by_x:
            continue
        xs = sorted(by_x)
        means = [statistics.fmean(by_x[x]) for x in xs]
        stds = [statistics.stdev(by_x[x]) if len(by_x[x]) > 1 else 0.0 for x in xs]
        label = f"{arm.name} (n={len(arm.seeds)})"
        if len(xs) == 1:  # one point (an untrained arm's kNN): a level to compare the curves with
            ax.axhline(means[0], color=colours[arm.name], linestyle="--", linewidth=1, label=label)
            ax.axhspan(means[0] - stds[0], means[0] + stds[0], color=colours[arm.name], alpha=0.1, linewidth=0)
        else:
            ax.plot(xs, means, marker="o", markersize=width + 1.5, linewidth=width, color=colours[arm.name], label=label)
            ax.fill_between(xs, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                            color=colours[arm.name], alpha=0.15, linewidth=0)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    if xticks is not None:
        ax.set_xticks(xticks)
    if percent_x:
        ax.set_xscale("log")
        ax.set_xticks(xticks or [])
        ax.set_xticklabels([f"{x:g} %" for x in xticks or []])
        ax.minorticks_off()
    ax.set(xlabel=xlabel, ylabel="test top-1 accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _result(arm: ArmResults, seed: int, protocol: str) -> dict[str, Any]:
    return next((r for r in arm.results.get(seed, []) if r.get("protocol") == protocol), {})


def _noisy(arm, seed):
    result = _result(arm, seed, "noisy")
    return {100 * row["rate"]: row["test_top1_mean"] for row in result.get("results", [])
            if row.get("test_top1_mean") is not None}


def _fewshot(arm, seed):
    result = _result(arm, seed, "fewshot")
    return {100 * row["fraction"]: row["test_top1_mean"] for row in result.get("results", [])
            if row.get("fraction") and row.get("test_top1_mean") is not None}


def _shift(arm, seed):
    result = _result(arm, seed, "shift")
    if not result.get("severity_mean_top1"):
        return {}
    return {0: result["clean_top1"], **{int(k): v for k, v in result["severity_mean_top1"].items()}}


def _knn(arm, seed):
    return dict(arm.knn_curves.get(seed, []))


def study_figures(arms: list[ArmResults], folder: Path) -> list[tuple[str, Path]]:
    folder.mkdir(parents=True, exist_ok=True)
    colours = _colours(arms)
    fractions = sorted({x for a in arms for s in a.seeds for x in _fewshot(a, s)})
    made = [
        ("Accuracy against label noise (symmetric)", _curve_figure(
            arms, colours, _noisy, folder / "noisy.png", xlabel="labels changed (%)",
            title="Linear probe on noisy labels")),
        ("Accuracy against the fraction of labels", _curve_figure(
            arms, colours, _fewshot, folder / "fewshot.png", xlabel="labelled training images",
            title="Few labels", xticks=fractions, percent_x=True)),
        ("Accuracy against corruption severity (mean over corruptions; 0 = clean)", _curve_figure(
            arms, colours, _shift, folder / "shift.png", xlabel="severity", title="Corruptions",
            xticks=sorted({x for a in arms for s in a.seeds for x in _shift(a, s)}))),
        ("Online kNN accuracy over training", _curve_figure(
            arms, colours, _knn, folder / "knn.png", xlabel="epoch", title="kNN monitor during training")),
    ]
    return [(caption, path) for caption, path in made if path is not None]
