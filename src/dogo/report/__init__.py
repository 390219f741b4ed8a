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
  severity, one panel per corruption and their mean; a corruption that left the images unchanged
  at their size, such as a blur at 8 px, says "no effect at N px" instead of drawing a flat line,
  and report.md says so under the figure).

Readers are tolerant: missing files, unreadable lines and unknown keys are skipped.

Parts: :mod:`~dogo.report.runs` (reading and grouping runs), :mod:`~dogo.report.figures` (training
curves, colours), :mod:`~dogo.report.eval_figures` (evaluation results); this module writes report.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from dogo.report.eval_figures import eval_plot, fewshot_points, no_effect, no_effect_text, noisy_points, shift_plot
from dogo.report.figures import assign_colours, knn_plot, loss_plot, signals_plot
from dogo.report.runs import (
    RunRecord,
    cell,
    group_name,
    group_runs,
    last_knn,
    peers_of,
    read_run,
    run_summaries,
)

__all__ = ["RunRecord", "read_run", "write_report"]

PROTOCOL_ORDER = ("linear", "knn", "fewshot", "noisy", "transfer", "shift")  # table columns


def markdown_table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def accuracy_table(runs: list[RunRecord], groups: list[list[RunRecord]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per (group, peer), the last online kNN, then every result's summary."""
    order = {name: i for i, name in enumerate(PROTOCOL_ORDER)}
    columns = list(
        dict.fromkeys(
            key
            for result in sorted(
                (r for run in runs for r in run.results), key=lambda r: order.get(r.get("protocol", ""), len(order))
            )
            for key in result.get("summary") or {}
        )
    )
    has_knn = any(last_knn(run, p) is not None for run in runs for p in peers_of(run))
    header = ["run", "peer"] + (["online kNN (last)"] if has_knn else []) + columns
    rows = []
    for group in groups:
        for peer in sorted({p for run in group for p in peers_of(run)}):
            cells = [group_name(group), group[0].peer_label(peer)]
            if has_knn:
                cells.append(cell([last_knn(run, peer) for run in group]))
            summaries = [run_summaries(run, peer) for run in group]
            cells += [cell([s.get(col) for s in summaries]) for col in columns]
            rows.append(cells)
    return header, rows


def draw_plots(runs: list[RunRecord], groups: list[list[RunRecord]], out_dir: Path) -> list[tuple[str, Path | None]]:
    """Every figure as (title, path), the path None where there was nothing to draw."""
    return [
        ("Training losses", loss_plot(runs, out_dir / "loss.png")),
        ("Online kNN accuracy", knn_plot(runs, out_dir / "knn.png")),
        ("Collapse signal and learning rate", signals_plot(runs, out_dir / "signals.png")),
        (
            "Label noise",
            eval_plot(
                groups,
                "noisy",
                noisy_points,
                out_dir / "noisy.png",
                xlabel="label noise rate (%)",
                title="Accuracy vs label noise",
            ),
        ),
        (
            "Limited labels",
            eval_plot(
                groups,
                "fewshot",
                fewshot_points,
                out_dir / "fewshot.png",
                xlabel="labelled fraction of the train set (%)",
                title="Accuracy vs fraction of labels",
                logx=True,
            ),
        ),
        ("Distribution shift", shift_plot(groups, out_dir / "shift.png")),
    ]


def missing_lines(gaps: list[tuple[str, str]]) -> list[str]:
    """The section that lists what the report had to leave out (nothing when it left out nothing)."""
    if not gaps:
        return []
    return [
        "## Missing or unreadable",
        "",
        "Left out of the tables and figures above:",
        "",
        *(f"- `{path}`: {problem}" for path, problem in dict.fromkeys(gaps)),
        "",
    ]


def shift_notes(results: Iterable[dict]) -> list[str]:
    """One line per corruption that left the images unchanged at their size (e.g. a blur at 8 px),
    over the shift results among ``results``."""
    return [
        f"- {name}: {no_effect_text(sizes)}: the corrupted images equal the clean ones, so its accuracy "
        "is the clean accuracy."
        for name, sizes in no_effect(results).items()
    ]


def epochs_logged(metrics: list[dict]) -> int:
    """Epochs a run finished: the last epoch row's ``epoch`` (epoch rows count from 1 in files old and new;
    step rows, which have ``images_per_s``, counted from 0 before and from 1 now, and are left out)."""
    return max((int(m.get("epoch", 0)) for m in metrics if "images_per_s" not in m), default=0)


def write_report(run_dirs: list[Path], out_dir: Path) -> Path:
    """Write ``out_dir/report.md`` and the plots for ``run_dirs``; return the report's path.

    The folder is held while it is written (:mod:`dogo.guards.locks`): one report into it at a time."""
    from dogo.guards.locks import holding

    with holding(Path(out_dir), create=True):
        return _write_report(run_dirs, Path(out_dir))


def _write_report(run_dirs: list[Path], out_dir: Path) -> Path:
    from dogo.guards.verified import collecting_gaps

    with collecting_gaps() as gaps:
        runs = [read_run(d) for d in run_dirs]
    groups = group_runs(runs)
    assign_colours(runs, groups)
    header, rows = accuracy_table(runs, groups)

    lines = ["# dogo report", "", "## Runs", ""]
    lines += markdown_table(
        ["run", "seed", "directory", "epochs logged", "results"],
        [[r.name, str(r.seed), str(r.path), str(epochs_logged(r.metrics)), str(len(r.results))] for r in runs],
    )
    lines += [
        "",
        "## Accuracy (%)",
        "",
        "Mean ± sample std over seeds where runs differ only in their seed. Columns: online "
        "kNN at the last logged epoch, then each evaluation protocol's headline numbers.",
        "",
    ]
    lines += markdown_table(header, rows)
    lines += ["", "## Plots", ""]
    for title, path in draw_plots(runs, groups, out_dir):
        if path is not None:
            lines += [f"### {title}", "", f"![{title}]({path.name})", ""]
            notes = shift_notes(r for run in runs for r in run.results) if path.name == "shift.png" else []
            lines += [*notes, ""] if notes else []
    lines += missing_lines(gaps)
    report = out_dir / "report.md"
    from dogo.guards.outputs import write_output

    return write_output(report, "\n".join(lines) + "\n")
