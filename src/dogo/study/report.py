"""The report of a study (``dogo report STUDY_DIR``): the page of per-arm means, paired
differences, figures, protocols and commands.

For every arm and every headline number of the evaluated peer (``summary`` of each result, and
the last online kNN of training): mean +- sample std over seeds. For every arm against the
study's ``compare_to`` arm: the paired difference over the seeds both have, its mean and 95 %
confidence interval from the t distribution with n - 1 degrees of freedom (see
:mod:`dogo.study.results`; the figures: :mod:`dogo.study.figures`).
"""

from __future__ import annotations

import shlex
import statistics
from pathlib import Path

from dogo.report import shift_notes
from dogo.study.budgets import budget_figures, budget_lines
from dogo.study.figures import arm_colours, panels, study_figures
from dogo.study.plan import StudyConfig
from dogo.study.records import evaluate_args
from dogo.study.results import KNN_MONITOR, ArmResults, load_study_results, paired_difference
from dogo.study.tables import diff_cell, mean_std, table

__all__ = ["ArmResults", "load_study_results", "paired_difference", "write_study_report"]


# --------------------------------------------------------------------------- tables


def _metrics(arms: list[ArmResults]) -> list[str]:
    order = ("linear", "knn", KNN_MONITOR, "fewshot", "noisy", "shift", "transfer")
    found = list(dict.fromkeys(key for arm in arms for numbers in arm.numbers.values() for key in numbers))
    return sorted(
        found, key=lambda k: (next((i for i, p in enumerate(order) if k.startswith(p)), len(order)), found.index(k))
    )


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
        rows.append(
            [f"`{arm.name}`", arm.description, _seeds_done(arm, study), _minutes(train), _minutes(evals), speed]
        )
    return [
        "Wall time per run in minutes: the median over the arm's runs, (fastest–slowest); other work on "
        "the machine slows some runs. Training images/s: the median logged step of the arm's fastest run, "
        "the one least slowed (a cohort step trains every peer on the batch).",
        "",
        *table(["arm", "what", "seeds done", "training min/run", "evaluation min/run", "training images/s"], rows),
    ]


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
        if unclear and (better or worse):
            parts.append(
                "no difference the interval can resolve on the other " + ("one" if unclear == 1 else str(unclear))
            )
        elif unclear:
            parts.append(
                "no difference the interval can resolve on "
                + ("the one number" if unclear == 1 else f"any of the {unclear} numbers")
            )
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
    example = next(
        ((arm, seed, record) for arm in arms for seed, record in sorted(arm.records.items()) if record.get("attempts")),
        None,
    )
    train = shlex.split(example[2]["attempts"][0]["command"]) if example is not None else []
    run_dir = train[train.index("--out") + 1] if "--out" in train[:-1] else "RUN_DIR"
    # The folder the study ran in, as its runs recorded it (<study>/<arm>/seed-<S>), not a guess from its name.
    ran_in = str(Path(run_dir).parent.parent) if run_dir != "RUN_DIR" else f"runs/study-{study.name}"
    lines = [
        "## Commands",
        "",
        "Every command is resumable: rerun it after a stop and it finishes what is missing.",
        "",
        f"- The whole study (trains and evaluates only what is missing, then publishes the results): "
        f"`dogo study {study_dir / 'study.yaml'} --out {ran_in} --publish {study_dir}`",
        f"- This page, from the published results, without training: `dogo report {study_dir} --out {out}`",
    ]
    if example is not None:
        arm, seed, _ = example
        peer = "0" if study.evaluate.peers == "first" else "all"
        at = lambda budget: [] if budget is None else ["--at", str(budget)]  # noqa: E731  (budget: int, or "B")
        protocols = study.evaluate.protocols
        budgets_of: dict[str, list[int | None]] = {}
        for protocol, budget in study.evaluations(arm.name):
            budgets_of.setdefault(protocol, []).append(budget)
        evaluations = []
        for protocol, budgets in budgets_of.items():
            several = len(budgets) > 1  # one line a protocol: `--at B` and the budgets it ran at
            command = ["dogo", "evaluate", run_dir, *at("B" if several else budgets[0])]
            line = f"  - `{shlex.join([*command, *evaluate_args(protocol, protocols[protocol], peer)])}`"
            evaluations.append(line + (f" for B = {', '.join(map(str, budgets))}" if several else ""))
        lines += [
            f"- One run as the study ran it (`{arm.name}`, seed {seed}): `{shlex.join(train)}`, then each protocol"
            + (" at its budgets:" if study.budgets else ":"),
            *evaluations,
        ]
    return [*lines, ""]


# --------------------------------------------------------------------------- the page


def write_study_report(study_dir: str | Path, out: str | Path) -> Path:
    """Write the study's page (``out``, markdown) and its figures beside it (``<stem>-figures/``)."""
    from dogo.guards.locks import holding
    from dogo.guards.outputs import check_target

    study_dir, out = Path(study_dir), Path(out)
    check_target(out)  # before the work: never over the study's own files
    with holding(out.parent, create=True):  # one report into this folder at a time
        return _write_study_report(study_dir, out)


def _missing(study: StudyConfig, arms: list[ArmResults], gaps: list[tuple[str, str]]) -> list[str]:
    """What the page leaves out, run by run, and the files it could not read: never a silent gap."""
    from dogo.report import missing_lines
    from dogo.study.records import evaluation_name, settings_key

    lines = []
    for arm in arms:
        for seed in arm.planned:
            record = arm.records.get(seed)
            if record is None:
                lines.append(f"- `{arm.name}` seed {seed}: not trained (or its run folder is missing)")
                continue
            done = record.get("evaluations", {})
            todo = [
                evaluation_name(p, b)
                for p, b in study.evaluations(arm.name)
                if done.get(evaluation_name(p, b)) != settings_key(p, study.evaluate.protocols[p])
            ]
            if todo:
                lines.append(
                    f"- `{arm.name}` seed {seed}: not evaluated with {', '.join(todo)} at the study's settings"
                )
    found = missing_lines(gaps)
    if not lines:
        return found
    head = ["## Missing or unreadable", "", "Left out of the tables and figures above:", ""]
    return head + lines + (found[4:] if found else [""])


def _write_study_report(study_dir: Path, out: Path) -> Path:
    from dogo.guards.verified import collecting_gaps

    with collecting_gaps() as gaps:
        study, arms = load_study_results(study_dir)
    metrics = _metrics(arms)
    groups = panels(arms, study.seeds, study.compare_to)
    figures = study_figures(arms, out.parent / f"{out.stem}-figures", groups)
    records = [r for arm in arms for r in arm.records.values()]
    commits = sorted({a.get("commit", "?") for r in records for a in r.get("attempts", [])})
    machines = sorted(
        {
            f"{r['machine']['cpu']}, {r['machine']['cores']} cores, torch {r['machine']['torch']}"
            for r in records
            if r.get("machine")
        }
    )
    train_total = sum(r.get("train_seconds", 0.0) for r in records)
    eval_total = sum(sum((r.get("eval_seconds") or {}).values()) for r in records)
    versions = sorted({r["machine"]["dogo"] for r in records if (r.get("machine") or {}).get("dogo")})
    done = sum(len(a.finished(study)) for a in arms)
    partly = sum(len(a.seeds) for a in arms) - done
    planned = sum(len(a.planned) for a in arms)
    lines = [
        f"# Study: {study.name}",
        "",
        study.description,
        "",
        f"Runs done: **{done} of {planned}**"
        + (f" (and {partly} partly evaluated)" if partly else "")
        + f". Wall time{' so far' if done < planned else ''}: training {_hours(train_total)}, "
        f"evaluation {_hours(eval_total)}.",
        "",
        f"Machine: {'; '.join(machines) or 'not recorded'}.  ",
        f"dogo version(s): {', '.join(versions) or 'not recorded'}; "
        f"commit(s): {', '.join(f'`{c}`' for c in commits) or 'not recorded'}.",
        "",
    ]
    if study.conclusion:
        lines += ["## Conclusion", "", study.conclusion.strip(), ""]
    summary = _summary_lines(study, arms, metrics)
    if summary:
        lines += [
            "## What the paired differences say",
            "",
            "Generated from the numbers below: a difference counts when its 95 % interval excludes 0.",
            "",
            *summary,
            "",
        ]
    lines += ["## Arms", "", *_arms_table(arms, study)]
    at = f" At the study's largest budget, {max(study.budgets)} steps." if study.budgets else ""
    lines += [
        "## Accuracy per arm",
        "",
        f"Evaluated peer: the first (the student). Test top-1 accuracy (%), mean ± sample std over seeds.{at}",
        "",
    ]
    lines += table(
        ["metric", *(f"`{a.name}`" for a in arms)],
        [[m, *(mean_std(list(_by_metric(a, m).values())) for a in arms)] for m in metrics],
    )
    base = next((a for a in arms if a.name == study.compare_to), None)
    if base is not None:
        others = [a for a in arms if a is not base]
        lines += [
            f"## Paired differences against `{base.name}`",
            "",
            "Mean over the seeds both arms have of (arm − baseline), in points, with its 95 % confidence "
            "interval (t distribution, n − 1 degrees of freedom); bold where the interval excludes 0. "
            "n per arm: " + ", ".join(f"`{a.name}` {len(set(a.seeds) & set(base.seeds))}" for a in others) + ".",
            "",
        ]
        lines += table(
            ["metric", *(f"`{a.name}`" for a in others)],
            [
                [m, *(diff_cell(paired_difference(_by_metric(a, m), _by_metric(base, m))) for a in others)]
                for m in metrics
            ],
        )
    if study.budgets:
        lines += budget_lines(study, arms)
        figures = budget_figures(study, arms, arm_colours(arms), out.parent / f"{out.stem}-figures") + figures
    if figures:
        split = ""
        if len(groups) == 2:  # the main comparison left, the ablations right
            (main, main_arms), (ablations, ablation_arms) = groups
            both = [a.name for a in ablation_arms if a in main_arms]  # the baseline, when panels() repeats it
            split = (
                f" Left: the {main} (the study's seeds); right: the {ablations}"
                + "".join(f", with `{name}` drawn again" for name in both)
                + "."
            )
        lines += ["## Figures", "", f"One colour per arm in every figure; the band is ± one std over seeds.{split}", ""]
        for caption, path in figures:
            lines += [f"**{caption}**", "", f"![{caption}]({path.relative_to(out.parent).as_posix()})", ""]
    lines += [
        "## Protocols",
        "",
        "Settings given by the study (the rest are each protocol's defaults, see `dogo evaluate --help`):",
        "",
        *_protocol_lines(study),
    ]
    notes = shift_notes(r for arm in arms for results in arm.results.values() for r in results)
    lines += ["", *notes, ""] if notes else [""]
    lines += _missing(study, arms, gaps)
    lines += _commands(study, arms, study_dir, out)
    from dogo.guards.outputs import write_output

    return write_output(out, "\n".join(lines))
