"""``report.md`` and plots for one or more run directories.

Reads each run's ``config.yaml``, ``metrics.jsonl`` and ``eval/*.json`` (see
:mod:`dogo.evaluate.results`) and writes, into ``out_dir``:

- ``report.md``: the runs, then one table row per (run group, peer) and one column per result
  (the ``summary`` entries of the evaluation results, plus the last online kNN accuracy);
  runs whose configs differ only in ``seed`` (and keys that never change training: name,
  device, logging, ...) form one group, shown as mean +- sample std over its seeds.
- PNG plots, each titled, with labelled axes and a legend naming run and peer, and skipped
  when there is nothing to draw: ``loss.png`` (every loss term of every peer per step),
  ``knn.png`` (online kNN top-1 per epoch), ``noisy.png`` (accuracy vs label-noise rate),
  ``fewshot.png`` (accuracy vs fraction of labels), ``shift.png`` (accuracy vs corruption
  severity, one panel per corruption and their mean).

Readers are tolerant: missing files, unreadable lines and unknown keys are skipped. Metrics keyed
by peer label (``peer/student/loss``) and by index (older runs: ``peer/0/loss``) read alike.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import warnings
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dogo.layout import RunDir
from dogo.config import RUNTIME_KEYS, flatten, peer_labels, under
from dogo.evaluate.results import load_results
from dogo.metric_keys import by_index

__all__ = ["RunRecord", "read_run", "write_report"]

# Runs whose configs differ only in these form one group, shown as mean +- std over its seeds.
GROUPED_OVER = ("seed", *RUNTIME_KEYS)
PEER_KEY = re.compile(r"^peer[/_]?(\d+)/(.+)$")
KNN_KEYS = ("knn_top1", "knn/top1")
PROTOCOL_ORDER = ("linear", "knn", "fewshot", "noisy", "transfer", "shift")  # table columns


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
        for line in layout.metrics.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                metrics.append(by_index(row, labels))  # peers by index, whether the file keys them by label or not
    peer_names = {k: f"{label}: {_architecture(model)}" for k, (label, model) in enumerate(zip(labels, models))}
    return RunRecord(
        path=run_dir,
        name=str(config.get("name") or run_dir.name),
        config=config,
        metrics=metrics,
        results=load_results(run_dir),
        peer_names=peer_names,
    )


def _architecture(model: dict[str, Any]) -> str:
    """``resnet18 x0.25 simclr``: a peer's backbone, width and objective, for labels in tables and figures."""
    width = model.get("width", 1.0)
    return " ".join(str(part) for part in (model.get("backbone", "resnet18"),
                                           "" if width in (1, 1.0, None) else f"x{width:g}",
                                           model.get("objective", "simclr")) if part)


def _training_key(config: dict[str, Any]) -> str:
    kept = {k: v for k, v in flatten(config).items() if not under(k, GROUPED_OVER)}
    return json.dumps(kept, sort_keys=True, default=str)


def _group(runs: list[RunRecord]) -> list[list[RunRecord]]:
    """Runs that differ only in their seed; two runs with the same seed are not two seeds (the
    second starts a group of its own)."""
    groups: dict[str, list[list[RunRecord]]] = {}
    for run in runs:
        candidates = groups.setdefault(_training_key(run.config), [])
        home = next((g for g in candidates if all(r.seed != run.seed for r in g)), None)
        if home is None:
            candidates.append([run])
        else:
            home.append(run)
    return [group for candidates in groups.values() for group in candidates]


def _group_name(group: list[RunRecord]) -> str:
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


def _cell(values: list[float]) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} (n={len(values)})"


def _peers(run: RunRecord) -> list[int]:
    found = set(run.peer_names)
    for row in run.metrics:
        for key in row:
            m = PEER_KEY.match(key)
            if m:
                found.add(int(m.group(1)))
    found.update(int(r["peer"]) for r in run.results if isinstance(r.get("peer"), int))
    return sorted(found) or [0]


def _last_knn(run: RunRecord, peer: int) -> float | None:
    value = None
    for row in run.metrics:
        for suffix in KNN_KEYS:
            if f"peer/{peer}/{suffix}" in row:
                value = row[f"peer/{peer}/{suffix}"]
    return value


def _summaries(run: RunRecord, peer: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for result in run.results:
        if result.get("peer") == peer:
            out.update(result.get("summary") or {})
    return out


# ----------------------------------------------------------------------------- plots


def _figure(ncols: int = 1):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols, 4.0), squeeze=False)
    return plt, fig, list(axes[0])


def _save(plt, fig, path: Path, title: str) -> Path:
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# One colour per run (by directory) in every figure, set by write_report; group series take the
# colour of their first run. Peers of a run differ by line style.
_COLOURS: dict[str, str] = {}
_STYLES = ("-", "--", ":", "-.")


_NAMES: dict[str, str] = {}


def _run_name(run: RunRecord) -> str:
    """The run's name in legends, with its directory when another run has the same name."""
    return _NAMES.get(str(run.path), run.name)


def _assign_colours(runs: list[RunRecord], groups: list[list[RunRecord]]) -> None:
    _COLOURS.clear()
    _NAMES.clear()
    names = [r.name for r in runs]
    for run in runs:
        _NAMES[str(run.path)] = run.name if names.count(run.name) == 1 else f"{run.name} ({run.path.name})"
    for i, run in enumerate(runs):
        _COLOURS[str(run.path)] = f"C{i % 10}"
    for group in groups:
        _COLOURS.setdefault("group:" + _group_name(group), _COLOURS[str(group[0].path)])


def _style(run: RunRecord, peer: int) -> dict[str, Any]:
    return {"color": _COLOURS.get(str(run.path)), "linestyle": _STYLES[peer % len(_STYLES)]}


def _loss_plot(runs: list[RunRecord], path: Path) -> Path | None:
    curves: dict[str, dict[str, tuple[list, list]]] = defaultdict(dict)  # term -> label -> xy
    for run in runs:
        for i, row in enumerate(run.metrics):
            x = row.get("step", i)
            for key, value in row.items():
                m = PEER_KEY.match(key)
                if not m or not m.group(2).startswith("loss/") or not isinstance(value, (int, float)):
                    continue
                term = m.group(2)[len("loss/"):]
                label = f"{_run_name(run)} {run.peer_label(int(m.group(1)))}"
                xs, ys, _ = curves[term].setdefault(label, ([], [], _style(run, int(m.group(1)))))
                xs.append(x)
                ys.append(value)
    # No KL panel (or line) for runs without distillation (older single-model runs logged kl 0.0).
    curves["kl"] = {label: xy for label, xy in curves.get("kl", {}).items() if any(y != 0 for y in xy[1])}
    curves = {term: lines for term, lines in curves.items() if lines}
    if not curves:
        return None
    plt, fig, axes = _figure(len(curves))
    for ax, (term, lines) in zip(axes, sorted(curves.items())):
        for label, (xs, ys, style) in lines.items():
            ax.plot(xs, ys, label=label, linewidth=1, **style)
        ax.set(title=f"loss: {term}", xlabel="step", ylabel=f"{term} loss")
        if term == "kl" and all(y > 0 for _, ys, _ in lines.values() for y in ys):
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    return _save(plt, fig, path, "Training losses per peer and term")


def _knn_plot(runs: list[RunRecord], path: Path) -> Path | None:
    lines = {}
    for run in runs:
        for peer in _peers(run):
            points = [
                (row.get("epoch", i + 1), row[f"peer/{peer}/{suffix}"])
                for i, row in enumerate(run.metrics)
                for suffix in KNN_KEYS
                if f"peer/{peer}/{suffix}" in row
            ]
            if points:
                lines[f"{_run_name(run)} {run.peer_label(peer)}"] = (points, _style(run, peer))
    if not lines:
        return None
    plt, fig, axes = _figure()
    for label, (points, style) in lines.items():
        axes[0].plot(*zip(*points), marker="o", markersize=3, label=label, **style)
    axes[0].set(xlabel="epoch", ylabel="weighted kNN top-1 accuracy (%)")
    axes[0].legend(fontsize=7)
    return _save(plt, fig, path, "kNN accuracy during pretraining")


def _signals_plot(runs: list[RunRecord], path: Path) -> Path | None:
    """The collapse signal (std of the normalised embeddings; towards 0 = collapse) and the learning rate."""
    panels: dict[str, dict[str, tuple[list, list, dict]]] = {"collapse_std": {}, "lr": {}}
    for run in runs:
        for i, row in enumerate(run.metrics):
            for key, value in row.items():
                m = PEER_KEY.match(key)
                if m and m.group(2) in panels and isinstance(value, (int, float)):
                    peer = int(m.group(1))
                    xs, ys, _ = panels[m.group(2)].setdefault(f"{_run_name(run)} {run.peer_label(peer)}",
                                                               ([], [], _style(run, peer)))
                    xs.append(row.get("step", i))
                    ys.append(value)
    panels = {k: v for k, v in panels.items() if v}
    if not panels:
        return None
    plt, fig, axes = _figure(len(panels))
    titles = {"collapse_std": "collapse signal: embedding std", "lr": "learning rate"}
    for ax, (key, lines) in zip(axes, panels.items()):
        for label, (xs, ys, style) in lines.items():
            ax.plot(xs, ys, label=label, linewidth=1, **style)
        ax.set(title=titles[key], xlabel="step", ylabel=key)
        ax.legend(fontsize=7)
    return _save(plt, fig, path, "Collapse signal and learning rate per peer")


def _series(groups, protocol: str, points) -> dict[str, dict[float, list[float]]]:
    """label -> x -> values over the group's runs, from ``points(result) -> [(key, x, y)]``."""
    out: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for group in groups:
        gname = _group_name(group)
        for run in group:
            for result in run.results:
                if result.get("protocol") != protocol:
                    continue
                peer = int(result.get("peer", 0))
                for key, x, y in points(result):
                    label = f"{gname} {run.peer_label(peer)}{key}"
                    out[label][x].append(y)
    return out


def _series_colour(label: str) -> str | None:
    groups = [k for k in _COLOURS if k.startswith("group:") and label.startswith(k[len("group:"):])]
    return _COLOURS[max(groups, key=len)] if groups else None


def _draw_series(ax, series: dict[str, dict[float, list[float]]]) -> None:
    for label, by_x in sorted(series.items()):
        xs = sorted(by_x)
        means = [statistics.mean(by_x[x]) for x in xs]
        errs = [statistics.stdev(by_x[x]) if len(by_x[x]) > 1 else 0.0 for x in xs]
        ax.errorbar(xs, means, yerr=errs, marker="o", markersize=3, capsize=3, label=label,
                    color=_series_colour(label))
    ax.legend(fontsize=7)


def _noisy_points(result):
    kind = result.get("variant") or (result.get("settings") or {}).get("noise", "")
    for row in result.get("results", []):
        if row.get("test_top1_mean") is not None:
            yield f" {kind}", 100 * row["rate"], row["test_top1_mean"]


def _fewshot_points(result):
    total = result.get("num_train_total") or 0
    for row in result.get("results", []):
        if row.get("test_top1_mean") is None:
            continue
        fraction = row.get("fraction")
        if fraction is None and total:
            fraction = row.get("num_labelled", 0) / total
        if fraction:
            yield "", 100 * fraction, row["test_top1_mean"]


def _eval_plot(groups, protocol, points, path, *, xlabel, title, logx=False) -> Path | None:
    series = _series(groups, protocol, points)
    if not series:
        return None
    plt, fig, axes = _figure()
    _draw_series(axes[0], series)
    axes[0].set(xlabel=xlabel, ylabel="test top-1 accuracy (%)")
    if logx:
        from matplotlib.ticker import FuncFormatter

        axes[0].set_xscale("log")
        axes[0].xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}%"))  # fractions as %
        axes[0].xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))  # no crowded minor labels
    return _save(plt, fig, path, title)


def _shift_plot(groups, path: Path) -> Path | None:
    def curve(result, table):  # severity 0 is the clean accuracy
        if table:
            yield "", 0, result["clean_top1"]
            for severity, acc in table.items():
                yield "", int(severity), acc

    shift_results = [r for g in groups for run in g for r in run.results if r.get("protocol") == "shift"]
    corruptions = list(dict.fromkeys(c for r in shift_results for c in r.get("corruption_top1") or {}))
    panels = {"mean over corruptions": _series(
        groups, "shift", lambda r: curve(r, r.get("severity_mean_top1")))}
    for name in corruptions:
        panels[name] = _series(
            groups, "shift", lambda r, name=name: curve(r, (r.get("corruption_top1") or {}).get(name)))
    if not panels["mean over corruptions"]:
        return None
    plt, fig, axes = _figure(len(panels))
    for ax, (name, series) in zip(axes, panels.items()):
        _draw_series(ax, series)
        ax.set(title=name, xlabel="severity (0 = clean)", ylabel="test top-1 accuracy (%)")
        ax.set_xticks(range(6))
    return _save(plt, fig, path, "Accuracy under corruptions (CIFAR-10-C style)")


# ----------------------------------------------------------------------------- report.md


def _markdown_table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def write_report(run_dirs: list[Path], out_dir: Path) -> Path:
    """Write ``out_dir/report.md`` and the plots for ``run_dirs``; return the report's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = [read_run(d) for d in run_dirs]
    groups = _group(runs)
    _assign_colours(runs, groups)

    order = {name: i for i, name in enumerate(PROTOCOL_ORDER)}
    columns = list(dict.fromkeys(
        key
        for result in sorted((r for run in runs for r in run.results),
                             key=lambda r: order.get(r.get("protocol"), len(order)))
        for key in result.get("summary") or {}
    ))
    has_knn = any(_last_knn(run, p) is not None for run in runs for p in _peers(run))
    header = ["run", "peer"] + (["online kNN (last)"] if has_knn else []) + columns
    rows = []
    for group in groups:
        for peer in sorted({p for run in group for p in _peers(run)}):
            cells = [_group_name(group), group[0].peer_label(peer)]
            if has_knn:
                cells.append(_cell([_last_knn(run, peer) for run in group]))
            summaries = [_summaries(run, peer) for run in group]
            cells += [_cell([s.get(col) for s in summaries]) for col in columns]
            rows.append(cells)

    plots = [
        ("Training losses", _loss_plot(runs, out_dir / "loss.png")),
        ("Online kNN accuracy", _knn_plot(runs, out_dir / "knn.png")),
        ("Collapse signal and learning rate", _signals_plot(runs, out_dir / "signals.png")),
        ("Label noise", _eval_plot(groups, "noisy", _noisy_points, out_dir / "noisy.png",
                                   xlabel="label noise rate (%)", title="Accuracy vs label noise")),
        ("Limited labels", _eval_plot(groups, "fewshot", _fewshot_points, out_dir / "fewshot.png",
                                      xlabel="labelled fraction of the train set (%)",
                                      title="Accuracy vs fraction of labels", logx=True)),
        ("Distribution shift", _shift_plot(groups, out_dir / "shift.png")),
    ]

    lines = ["# dogo report", "", "## Runs", ""]
    lines += _markdown_table(
        ["run", "seed", "directory", "epochs logged", "results"],
        [[r.name, str(r.seed), str(r.path), str(max((m.get("epoch", 0) for m in r.metrics), default=0)),
          str(len(r.results))] for r in runs],
    )
    lines += ["", "## Accuracy (%)", ""]
    lines += [
        (
            "Mean ± sample std over seeds where runs differ only in their seed. Columns: online "
            "kNN at the last logged epoch, then each evaluation protocol's headline numbers."
        ),
        "",
    ]
    lines += _markdown_table(header, rows)
    lines += ["", "## Plots", ""]
    for title, path in plots:
        if path is not None:
            lines += [f"### {title}", "", f"![{title}]({path.name})", ""]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report
