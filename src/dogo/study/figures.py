"""A study's figures: one line per arm (mean over seeds) with a shaded +- std band, against label
noise, label fraction, corruption severity and training epoch; one colour per arm in every figure.

A study whose arms run on different seed lists (a main comparison on the study's seeds, ablations
on fewer) gets two panels side by side: the main comparison, and the ablations with the baseline
arm drawn again for reference. Fourteen lines in one axes read as a tangle; two panels of four and
eleven can be read."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from dogo.study.results import ArmResults

__all__ = ["arm_colours", "panels", "study_figures"]


def arm_colours(arms: list[ArmResults]) -> dict[str, Any]:
    import matplotlib

    # colormaps[...] is typed Colormap; tab20 is a ListedColormap, whose colors is a list of RGB tuples
    palette = matplotlib.colormaps["tab20"].colors  # type: ignore[attr-defined]  # see the line above
    return {arm.name: palette[(2 * i) % 20 if i < 10 else (2 * i + 1) % 20] for i, arm in enumerate(arms)}


def panels(arms: list[ArmResults], study_seeds: list[int], baseline: str | None) -> list[tuple[str, list[ArmResults]]]:
    """The arms on the study's seeds ("main comparison") and the rest ("ablations", after the
    baseline arm); one untitled panel of every arm when they all share one seed list."""
    main = [a for a in arms if a.planned == study_seeds]
    rest = [a for a in arms if a.planned != study_seeds]
    if not main or not rest:
        return [("", arms)]
    return [("main comparison", main), ("ablations", [a for a in main if a.name == baseline] + rest)]


def _draw_panel(ax, arms, colours, points) -> bool:
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
            ax.plot(
                xs, means, marker="o", markersize=width + 1.5, linewidth=width, color=colours[arm.name], label=label
            )
            ax.fill_between(
                xs,
                [m - s for m, s in zip(means, stds, strict=True)],
                [m + s for m, s in zip(means, stds, strict=True)],
                color=colours[arm.name],
                alpha=0.15,
                linewidth=0,
            )
        drawn = True
    return drawn


def _curve_figure(
    groups, colours, points, path: Path, *, xlabel: str, title: str, xticks=None, percent_x: bool = False
) -> Path | None:
    """One line per arm (mean over seeds) with a shaded +- std band, from ``points(results) -> {x: y}``;
    one panel per group of arms, sharing the y axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(groups), figsize=(6.4 * len(groups), 4.2), sharey=True, squeeze=False)
    drawn = [_draw_panel(ax, arms, colours, points) for ax, (_, arms) in zip(axes[0], groups, strict=True)]
    if not any(drawn):
        plt.close(fig)
        return None
    for ax, (name, _) in zip(axes[0], groups, strict=True):
        if xticks is not None:
            ax.set_xticks(xticks)
        else:  # epochs and percentages: whole numbers, never "1.25"
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if percent_x:
            ax.set_xscale("log")
            ax.set_xticks(xticks or [])
            ax.set_xticklabels([f"{x:g} %" for x in xticks or []])
            ax.minorticks_off()
        ax.set(xlabel=xlabel, title=f"{title}: {name}" if name else title)
        ax.grid(alpha=0.3)
        handles, _ = ax.get_legend_handles_labels()
        if handles:
            ax.legend(fontsize=7, ncol=2 if len(handles) > 5 else 1)
    axes[0][0].set_ylabel("test top-1 accuracy (%)")
    fig.tight_layout()
    from dogo.guards.outputs import write_output

    try:  # no version stamp in the metadata: the same bytes on every rebuild
        write_output(path, lambda handle: fig.savefig(handle, format="png", dpi=110, metadata={"Software": None}))
    finally:
        plt.close(fig)
    return path


def _result(arm: ArmResults, seed: int, protocol: str) -> dict[str, Any]:
    return next((r for r in arm.results.get(seed, []) if r.get("protocol") == protocol), {})


def _noisy(arm, seed):
    result = _result(arm, seed, "noisy")
    return {
        100 * row["rate"]: row["test_top1_mean"]
        for row in result.get("results", [])
        if row.get("test_top1_mean") is not None
    }


def _fewshot(arm, seed):
    result = _result(arm, seed, "fewshot")
    return {
        100 * row["fraction"]: row["test_top1_mean"]
        for row in result.get("results", [])
        if row.get("fraction") and row.get("test_top1_mean") is not None
    }


def _shift(arm, seed):
    result = _result(arm, seed, "shift")
    if not result.get("severity_mean_top1"):
        return {}
    return {0: result["clean_top1"], **{int(k): v for k, v in result["severity_mean_top1"].items()}}


def _knn(arm, seed):
    return dict(arm.knn_curves.get(seed, []))


def study_figures(
    arms: list[ArmResults], folder: Path, groups: list[tuple[str, list[ArmResults]]] | None = None
) -> list[tuple[str, Path]]:
    """Each figure of ``arms`` into ``folder``, one panel per group (default: one of every arm)."""
    folder.mkdir(parents=True, exist_ok=True)
    colours = arm_colours(arms)
    groups = groups or [("", arms)]
    fractions = sorted({x for a in arms for s in a.seeds for x in _fewshot(a, s)})
    made = [
        (
            "Accuracy against label noise (symmetric)",
            _curve_figure(
                groups,
                colours,
                _noisy,
                folder / "noisy.png",
                xlabel="labels changed (%)",
                title="Linear probe on noisy labels",
            ),
        ),
        (
            "Accuracy against the fraction of labels",
            _curve_figure(
                groups,
                colours,
                _fewshot,
                folder / "fewshot.png",
                xlabel="labelled training images",
                title="Few labels",
                xticks=fractions,
                percent_x=True,
            ),
        ),
        (
            "Accuracy against corruption severity (mean over corruptions; 0 = clean)",
            _curve_figure(
                groups,
                colours,
                _shift,
                folder / "shift.png",
                xlabel="severity",
                title="Corruptions",
                xticks=sorted({x for a in arms for s in a.seeds for x in _shift(a, s)}),
            ),
        ),
        (
            "Online kNN accuracy over training",
            _curve_figure(
                groups, colours, _knn, folder / "knn.png", xlabel="epoch", title="kNN monitor during training"
            ),
        ),
    ]
    return [(caption, path) for caption, path in made if path is not None]
