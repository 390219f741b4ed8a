"""Figures of training curves (losses, online kNN, collapse signal and learning rate), and the
colours and names every figure shares: one colour per peer of each run (the peers of a run also
differ by line style), markers on every line so that a run of one logged point still shows."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from dogo.report.runs import KNN_KEYS, PEER_KEY, RunRecord, group_name, peers_of


def figure(ncols: int = 1):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols, 4.0), squeeze=False)
    return plt, fig, list(axes[0])


def save(plt, fig, path: Path, title: str) -> Path:
    fig.suptitle(title)
    fig.tight_layout()
    from dogo.guards.outputs import write_output

    try:  # no version stamp in the metadata: the same bytes on every rebuild
        write_output(path, lambda handle: fig.savefig(handle, format="png", dpi=110, metadata={"Software": None}))
    finally:
        plt.close(fig)
    return path


# One colour per peer of each run (``<run dir>#<peer>``) in every figure, set by write_report; a group's
# series of a peer (``group:<group name> <peer label>``) take the colour of that peer of its first run.
COLOURS: dict[str, str] = {}
#: At most this many markers on a line: every point of a short run, a sample of a long one.
MARKERS_PER_LINE = 30
STYLES = ("-", "--", ":", "-.")


NAMES: dict[str, str] = {}


def run_name(run: RunRecord) -> str:
    """The run's name in legends, with its directory when another run has the same name."""
    return NAMES.get(str(run.path), run.name)


def assign_colours(runs: list[RunRecord], groups: list[list[RunRecord]]) -> None:
    COLOURS.clear()
    NAMES.clear()
    names = [r.name for r in runs]
    for run in runs:
        NAMES[str(run.path)] = run.name if names.count(run.name) == 1 else f"{run.name} ({run.path.name})"
    lines = [(run, peer) for run in runs for peer in peers_of(run)]
    for i, (run, peer) in enumerate(lines):
        COLOURS[f"{run.path}#{peer}"] = f"C{i % 10}"
    for group in groups:
        first = group[0]
        for peer in peers_of(first):
            COLOURS.setdefault(f"group:{group_name(group)} {first.peer_label(peer)}", COLOURS[f"{first.path}#{peer}"])


def line_style(run: RunRecord, peer: int) -> dict[str, Any]:
    return {"color": COLOURS.get(f"{run.path}#{peer}"), "linestyle": STYLES[peer % len(STYLES)]}


def markers(count: int) -> dict[str, Any]:
    """Marker settings for a line of ``count`` points: each of a short line's, evenly spaced on a long one."""
    return {"marker": "o", "markersize": 3, "markevery": max(1, count // MARKERS_PER_LINE)}


def loss_plot(runs: list[RunRecord], path: Path) -> Path | None:
    curves: dict[str, dict[str, tuple[list, list, dict[str, Any]]]] = defaultdict(dict)  # term -> label -> xy, style
    for run in runs:
        for i, row in enumerate(run.metrics):
            x = row.get("step", i)
            for key, value in row.items():
                m = PEER_KEY.match(key)
                if not m or not m.group(2).startswith("loss/") or not isinstance(value, (int, float)):
                    continue
                term = m.group(2)[len("loss/") :]
                label = f"{run_name(run)} {run.peer_label(int(m.group(1)))}"
                xs, ys, _ = curves[term].setdefault(label, ([], [], line_style(run, int(m.group(1)))))
                xs.append(x)
                ys.append(value)
    # No KL panel (or line) for runs without distillation (older single-model runs logged kl 0.0).
    curves["kl"] = {label: xy for label, xy in curves.get("kl", {}).items() if any(y != 0 for y in xy[1])}
    curves = {term: lines for term, lines in curves.items() if lines}
    if not curves:
        return None
    plt, fig, axes = figure(len(curves))
    for ax, (term, lines) in zip(axes, sorted(curves.items()), strict=True):
        for label, (xs, ys, style) in lines.items():
            ax.plot(xs, ys, label=label, linewidth=1, **markers(len(xs)), **style)
        ax.set(title=f"loss: {term}", xlabel="step", ylabel=f"{term} loss")
        if term == "kl" and all(y > 0 for _, ys, _ in lines.values() for y in ys):
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    return save(plt, fig, path, "Training losses per peer and term")


def knn_plot(runs: list[RunRecord], path: Path) -> Path | None:
    lines = {}
    for run in runs:
        for peer in peers_of(run):
            points = [
                (row.get("epoch", i + 1), row[f"peer/{peer}/{suffix}"])
                for i, row in enumerate(run.metrics)
                for suffix in KNN_KEYS
                if f"peer/{peer}/{suffix}" in row
            ]
            if points:
                lines[f"{run_name(run)} {run.peer_label(peer)}"] = (points, line_style(run, peer))
    if not lines:
        return None
    plt, fig, axes = figure()
    for label, (points, style) in lines.items():
        axes[0].plot(*zip(*points, strict=True), marker="o", markersize=3, label=label, **style)
    axes[0].set(xlabel="epoch", ylabel="weighted kNN top-1 accuracy (%)")
    axes[0].legend(fontsize=7)
    return save(plt, fig, path, "kNN accuracy during pretraining")


def signals_plot(runs: list[RunRecord], path: Path) -> Path | None:
    """The collapse signal (std of the normalised embeddings; towards 0 = collapse) and the learning rate."""
    panels: dict[str, dict[str, tuple[list, list, dict]]] = {"collapse_std": {}, "lr": {}}
    for run in runs:
        for i, row in enumerate(run.metrics):
            for key, value in row.items():
                m = PEER_KEY.match(key)
                if m and m.group(2) in panels and isinstance(value, (int, float)):
                    peer = int(m.group(1))
                    xs, ys, _ = panels[m.group(2)].setdefault(
                        f"{run_name(run)} {run.peer_label(peer)}", ([], [], line_style(run, peer))
                    )
                    xs.append(row.get("step", i))
                    ys.append(value)
    panels = {k: v for k, v in panels.items() if v}
    if not panels:
        return None
    plt, fig, axes = figure(len(panels))
    titles = {"collapse_std": "collapse signal: embedding std", "lr": "learning rate"}
    for ax, (key, lines) in zip(axes, panels.items(), strict=True):
        for label, (xs, ys, style) in lines.items():
            ax.plot(xs, ys, label=label, linewidth=1, **markers(len(xs)), **style)
        ax.set(title=titles[key], xlabel="step", ylabel=key)
        ax.legend(fontsize=7)
    return save(plt, fig, path, "Collapse signal and learning rate per peer")
