"""The report of a study (``dogo report STUDY_DIR``): per-arm means, paired differences, figures.

Reads only small files: the study's ``study.yaml``, each run's record (``<arm>/seed-<S>.json``)
and its run directory's ``config.yaml``, ``metrics.jsonl`` and ``eval/*.json``. A study
directory and a folder made by ``dogo study --publish`` read the same, so a committed copy of
the results rebuilds the page without training.

For every arm and every headline number of the evaluated peer (``summary`` of each result, and
the last online kNN of training): mean +- sample std over seeds. For every arm against the
study's ``compare_to`` arm: the paired difference over the seeds both have, its mean and 95 %
confidence interval from the t distribution with n - 1 degrees of freedom. One colour per arm
in every figure.
"""

from __future__ import annotations

import math
import shlex
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dogo.errors import DogoError
from dogo.report import read_run, shift_notes
from dogo.study.plan import StudyConfig
from dogo.study.records import evaluate_args, finished, read_record

__all__ = ["ArmResults", "load_study_results", "paired_difference", "write_study_report"]

KNN_MONITOR = "kNN monitor (training)"


@dataclass
class ArmResults:
    """One arm: its seeds' headline numbers, training curves and records."""

    name: str
    description: str
    planned: list[int]
    numbers: dict[int, dict[str, float]] = field(default_factory=dict)     # seed -> metric -> value
    results: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # seed -> result dicts (peer 0)
    knn_curves: dict[int, list[tuple[int, float]]] = field(default_factory=dict)
    speeds: dict[int, float] = field(default_factory=dict)  # seed -> median training images/s of its logged steps
    records: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def seeds(self) -> list[int]:
        return sorted(self.numbers)

    def finished(self, study: StudyConfig) -> list[int]:
        """The seeds whose run is trained and evaluated with every protocol of ``study``."""
        return [s for s in self.seeds if finished(study, self.records[s])]


def load_study_results(study_dir: str | Path) -> tuple[StudyConfig, list[ArmResults]]:
    study_dir = Path(study_dir)
    try:
        study = StudyConfig.model_validate(yaml.safe_load((study_dir / "study.yaml").read_text()))
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise DogoError(f"{study_dir / 'study.yaml'}: not a readable study file ({exc})") from None
    arms = []
    for arm in study.arms:
        results = ArmResults(arm.name, arm.description, arm.seeds or study.seeds)
        for seed in results.planned:
            record = read_record(study_dir / arm.name / f"seed-{seed}.json")
            run_dir = study_dir / arm.name / f"seed-{seed}"
            if not record.get("trained") or not run_dir.is_dir():
                continue
            run = read_run(run_dir)
            peer0 = [r for r in run.results if r.get("peer") == 0]
            numbers = {key: float(value) for r in peer0 for key, value in (r.get("summary") or {}).items()}
            curve = [(int(row["epoch"]), float(row["peer/0/knn_top1"])) for row in run.metrics
                     if "peer/0/knn_top1" in row and "epoch" in row]
            if curve:
                numbers[KNN_MONITOR] = curve[-1][1]
            results.numbers[seed], results.results[seed] = numbers, peer0
            results.knn_curves[seed], results.records[seed] = curve, record
            speeds = [float(row["images_per_s"]) for row in run.metrics if "images_per_s" in row]
            if len(speeds) >= 2:  # one logged step (an untrained arm's forward pass) says nothing of training
                results.speeds[seed] = statistics.median(speeds)
        arms.append(results)
    return study, arms


def paired_difference(values: dict[int, float], baseline: dict[int, float]) -> dict[str, Any] | None:
    """Mean of ``values[s] - baseline[s]`` over shared seeds, with its 95 % t confidence interval."""
    seeds = sorted(set(values) & set(baseline))
    if not seeds:
        return None
    diffs = [values[s] - baseline[s] for s in seeds]
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return {"mean": mean, "low": math.nan, "high": math.nan, "n": 1, "seeds": seeds}
    from scipy.stats import t

    half = t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": len(diffs), "seeds": seeds}


# --------------------------------------------------------------------------- tables


def _metrics(arms: list[ArmResults]) -> list[str]:
    order = ("linear", "knn", KNN_MONITOR, "fewshot", "noisy", "shift", "transfer")
    found = list(dict.fromkeys(key for arm in arms for numbers in arm.numbers.values() for key in numbers))
    return sorted(found, key=lambda k: (next((i for i, p in enumerate(order) if k.startswith(p)), len(order)),
                                        found.index(k)))


def _mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.fmean(values):.1f} ± {statistics.stdev(values):.1f}"


def _diff_cell(diff: dict[str, Any] | None) -> str:
    if diff is None:
        return "–"
    if diff["n"] < 2:
        return f"{diff['mean']:+.1f} (n=1)"
    mark = "**" if diff["low"] > 0 or diff["high"] < 0 else ""
    return f"{mark}{diff['mean']:+.1f}{mark} [{diff['low']:+.1f}, {diff['high']:+.1f}]"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows), ""]


def _by_metric(arm: ArmResults, metric: str) -> dict[int, float]:
    return {s: n[metric] for s, n in arm.numbers.items() if metric in n}


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def _minutes(seconds: list[float]) -> str:
    """Median wall time in minutes, with the range when runs differ (a shared machine slows some)."""
    if not seconds:
        return "–"
    low, mid, high = min(seconds) / 60, statistics.median(seconds) / 60, max(seconds) / 60
    return f"{mid:.1f}" if f"{low:.1f}" == f"{high:.1f}" else f"{mid:.1f} ({low:.1f}–{high:.1f})"


def _seeds_done(arm: ArmResults, study: StudyConfig) -> str:
    done = len(arm.finished(study))
    partly = len(arm.seeds) - done
    return f"{done} of {len(arm.planned)}" + (f" (+{partly} partly evaluated)" if partly else "")


def _arms_table(arms: list[ArmResults], study: StudyConfig) -> list[str]:
    rows = []
    for arm in arms:
        train = [r.get("train_seconds", 0.0) for r in arm.records.values()]
        evals = [sum((r.get("eval_seconds") or {}).values()) for r in arm.records.values()]
        speed = f"{max(arm.speeds.values()):.0f}" if arm.speeds else "–"
        rows.append([f"`{arm.name}`", arm.description, _seeds_done(arm, study), _minutes(train), _minutes(evals),
                     speed])
    return ["Wall time per run in minutes: the median over the arm's runs, (fastest–slowest); other work on "
            "the machine slows some runs. Training images/s: the median logged step of the arm's fastest run, "
            "the one least slowed (a cohort step trains every peer on the batch).", "",
            *_table(["arm", "what", "seeds done", "training min/run", "evaluation min/run", "training images/s"],
                    rows)]


def _summary_lines(study: StudyConfig, arms: list[ArmResults], metrics: list[str]) -> list[str]:
    """Plain statements of which paired differences exclude zero (never dropped for disagreeing)."""
    base = next((a for a in arms if a.name == study.compare_to), None)
    if base is None:
        return []
    lines = []
    for arm in arms:
        if arm is base or not arm.numbers:
            continue
        better, worse, unclear, n = [], [], 0, 0
        for metric in metrics:
            diff = paired_difference(_by_metric(arm, metric), _by_metric(base, metric))
            if diff is None or diff["n"] < 2:
                continue
            n = max(n, diff["n"])
            if diff["low"] > 0:
                better.append(f"{metric} ({diff['mean']:+.1f})")
            elif diff["high"] < 0:
                worse.append(f"{metric} ({diff['mean']:+.1f})")
            else:
                unclear += 1
        if not n:
            lines.append(f"- `{arm.name}`: fewer than 2 seeds paired with `{base.name}` so far; no interval yet.")
            continue
        text = f"- `{arm.name}` vs `{base.name}` (n = {n} seeds): "
        parts = []
        if better:
            parts.append("higher on " + ", ".join(better))
        if worse:
            parts.append("lower on " + ", ".join(worse))
        parts.append(f"no difference the interval can resolve on {unclear} other number(s)")
        lines.append(text + "; ".join(parts) + ".")
    return lines


def _protocol_lines(study: StudyConfig) -> list[str]:
    """Each protocol with the settings the study gives it, and what each of those settings means."""
    from dogo.evaluate import PROTOCOL_SETTINGS

    lines = []
    for protocol, settings in study.evaluate.protocols.items():
        lines.append(f"- `{protocol}`:" + ("" if settings else " defaults"))
        fields = getattr(PROTOCOL_SETTINGS.get(protocol), "model_fields", {})
        for key, value in settings.items():
            meaning = getattr(fields.get(key), "description", None)
            lines.append(f"  - `{key}={value}`" + (f": {meaning}" if meaning else ""))
    return lines


def _commands(study: StudyConfig, arms: list[ArmResults], study_dir: Path, out: Path) -> list[str]:
    """The exact commands behind the page: the study, the page, and one run's training and evaluation."""
    lines = ["## Commands", "", "Every command is resumable: rerun it after a stop and it finishes what is missing.", "",
             f"- The whole study (trains and evaluates only what is missing, then publishes the results): "
             f"`dogo study {study_dir / 'study.yaml'} --out runs/study-{study.name} --publish {study_dir}`",
             f"- This page, from the published results, without training: `dogo report {study_dir} --out {out}`"]
    example = next(((arm, seed, record) for arm in arms for seed, record in sorted(arm.records.items())
                    if record.get("attempts")), None)
    if example is not None:
        arm, seed, record = example
        train = shlex.split(record["attempts"][-1]["command"])
        run_dir = train[train.index("--out") + 1] if "--out" in train[:-1] else "RUN_DIR"
        peer = "0" if study.evaluate.peers == "first" else "all"
        lines += [f"- One run as the study ran it (`{arm.name}`, seed {seed}): `{shlex.join(train)}`, then each protocol:",
                  *(f"  - `{shlex.join(['dogo', 'evaluate', run_dir, *evaluate_args(p, s, peer)])}`"
                    for p, s in study.evaluate.protocols.items())]
    return [*lines, ""]


# --------------------------------------------------------------------------- figures


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


def _figures(arms: list[ArmResults], folder: Path) -> list[tuple[str, Path]]:
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


# --------------------------------------------------------------------------- the page


def write_study_report(study_dir: str | Path, out: str | Path) -> Path:
    """Write the study's page (``out``, markdown) and its figures beside it (``<stem>-figures/``)."""
    study_dir, out = Path(study_dir), Path(out)
    study, arms = load_study_results(study_dir)
    metrics = _metrics(arms)
    out.parent.mkdir(parents=True, exist_ok=True)
    figures = _figures(arms, out.parent / f"{out.stem}-figures")
    records = [r for arm in arms for r in arm.records.values()]
    commits = sorted({a.get("commit", "?") for r in records for a in r.get("attempts", [])})
    machines = sorted({f"{r['machine']['cpu']}, {r['machine']['cores']} cores, torch {r['machine']['torch']}"
                       for r in records if r.get("machine")})
    train_total = sum(r.get("train_seconds", 0.0) for r in records)
    eval_total = sum(sum((r.get("eval_seconds") or {}).values()) for r in records)
    versions = sorted({r["machine"]["dogo"] for r in records if (r.get("machine") or {}).get("dogo")})
    done = sum(len(a.finished(study)) for a in arms)
    partly = sum(len(a.seeds) for a in arms) - done
    planned = sum(len(a.planned) for a in arms)
    lines = [f"# Study: {study.name}", "", study.description, "",
             f"Runs done: **{done} of {planned}**" + (f" (and {partly} partly evaluated)" if partly else "")
             + f". Wall time so far: training {_hours(train_total)}, evaluation {_hours(eval_total)}.", "",
             f"Machine: {'; '.join(machines) or 'not recorded'}.  ",
             f"dogo version(s): {', '.join(versions) or 'not recorded'}; "
             f"commit(s): {', '.join(f'`{c}`' for c in commits) or 'not recorded'}.", ""]
    if study.conclusion:
        lines += ["## Conclusion", "", study.conclusion.strip(), ""]
    summary = _summary_lines(study, arms, metrics)
    if summary:
        lines += ["## What the paired differences say", "",
                  "Generated from the numbers below: a difference counts when its 95 % interval excludes 0.", "",
                  *summary, ""]
    lines += ["## Arms", "", *_arms_table(arms, study)]
    lines += ["## Accuracy per arm", "",
              "Evaluated peer: the first (the student). Test top-1 accuracy (%), mean ± sample std over seeds.", ""]
    lines += _table(["metric", *(f"`{a.name}`" for a in arms)],
                    [[m, *(_mean_std(list(_by_metric(a, m).values())) for a in arms)] for m in metrics])
    base = next((a for a in arms if a.name == study.compare_to), None)
    if base is not None:
        others = [a for a in arms if a is not base]
        lines += [f"## Paired differences against `{base.name}`", "",
                  "Mean over the seeds both arms have of (arm − baseline), in points, with its 95 % confidence "
                  "interval (t distribution, n − 1 degrees of freedom); bold where the interval excludes 0. "
                  "n per arm: " + ", ".join(
                      f"`{a.name}` {len(set(a.seeds) & set(base.seeds))}" for a in others) + ".", ""]
        lines += _table(["metric", *(f"`{a.name}`" for a in others)],
                        [[m, *(_diff_cell(paired_difference(_by_metric(a, m), _by_metric(base, m))) for a in others)]
                         for m in metrics])
    if figures:
        lines += ["## Figures", "", "One colour per arm in every figure; the band is ± one std over seeds.", ""]
        for caption, path in figures:
            lines += [f"**{caption}**", "", f"![{caption}]({path.relative_to(out.parent).as_posix()})", ""]
    lines += ["## Protocols", "", "Settings given by the study (the rest are each protocol's defaults, "
              "see `dogo evaluate --help`):", "", *_protocol_lines(study)]
    notes = shift_notes(r for arm in arms for results in arm.results.values() for r in results)
    lines += ["", *notes, ""] if notes else [""]
    lines += _commands(study, arms, study_dir, out)
    out.write_text("\n".join(lines))
    return out
