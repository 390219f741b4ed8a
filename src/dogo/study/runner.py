"""Running a study: each planned run trained and evaluated in child processes, resumably (see :mod:`dogo.study`)."""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from dogo.core.errors import ConfigError, DogoError
from dogo.guards.locks import holding
from dogo.guards.messages import what_is
from dogo.guards.outputs import failed
from dogo.guards.ownership import MARKER, kind_of, mark, marker, remove_owned
from dogo.runs.layout import RunDir
from dogo.study.plan import BUDGET_KEYS, StudyConfig, StudyRun, is_study_dir, load_study, plan_runs
from dogo.study.publish import publish, restore
from dogo.study.records import (
    evaluate_args,
    evaluation_name,
    finished,
    hms,
    machine,
    now,
    read_record,
    settings_key,
    source_commit,
    write_json,
    write_text,
)

__all__ = ["Runner", "check_arms", "finished", "run_study"]


class Runner:
    """Runs the planned runs: trains and evaluates each in child processes, records everything."""

    def __init__(
        self,
        study: StudyConfig,
        out: Path,
        runs: list[StudyRun],
        *,
        jobs: int = 1,
        publish_to: Path | None = None,
        say: Callable[[str], None] = print,
    ) -> None:
        self.study, self.out, self.runs, self.jobs = study, out, runs, jobs
        self.publish_to = publish_to
        self.say = say
        self.threads = max(1, (os.cpu_count() or 1) // jobs)
        self.children: set[subprocess.Popen] = set()
        self.lock = threading.Lock()
        self.stopping = False
        self.started = time.monotonic()
        self.done = sum(self._finished(run) for run in runs)

    def _finished(self, run: StudyRun) -> bool:
        return finished(self.study, self._record(run))

    def _record(self, run: StudyRun) -> dict[str, Any]:
        """The run's record, checked against what it claims (:mod:`dogo.guards.verified`): a run whose
        folder is gone is not trained, an evaluation whose result file is gone was not done."""
        from dogo.evaluate.results import load_results
        from dogo.guards.verified import gap

        record = read_record(run.record_path)
        if record.get("trained") and not run.run_dir.is_dir():
            gap(run.record_path, f"says the run was trained, but {run.run_dir} is missing", "training it again")
            return {key: record[key] for key in ("arm", "seed", "attempts") if key in record}
        done = record.get("evaluations") or {}
        if done:
            have = {(r.get("protocol"), r.get("checkpoint_name", "last")) for r in load_results(run.run_dir, None)}
            for name in list(done):
                protocol, _, budget = name.partition("@")
                if (protocol, f"step-{budget}" if budget else "last") not in have:
                    gap(
                        run.record_path,
                        f"says {name} was evaluated, but {run.run_dir / 'eval'} has no such result",
                        "evaluating it again",
                    )
                    del done[name]
        return record

    def _key(self, protocol: str) -> str:
        return settings_key(protocol, self.study.evaluate.protocols[protocol])

    def run_all(self) -> int:
        todo = [run for run in self.runs if not self._finished(run)]
        self._check_trackers(todo)
        self.say(
            f"study {self.study.name}: {len(self.runs)} runs, {self.done} done, {len(todo)} to go "
            f"({self.jobs} at a time) in {self.out}"
        )
        failures = 0
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            for ok in pool.map(self._one, todo):
                failures += not ok
        return failures

    def _check_trackers(self, runs: list[StudyRun]) -> None:
        """Each tracker the runs to train log to (``logging.mlflow``), reached once before any run starts: with
        ``on_error: stop`` one that fails or does not answer stops the study in one line before any training
        (each run would stop on it), with ``continue`` one warning (each run then goes on without it)."""
        from dogo.config import build_config
        from dogo.training import mlflow_log

        seen = set()
        for run in runs:
            if (run.config.get("logging") or {}).get("mlflow") is None:  # ({} is MLflow with its defaults)
                continue
            settings = build_config(run.config, str(run.record_path.with_suffix(".yaml"))).logging.mlflow
            key = json.dumps(settings.model_dump(), sort_keys=True) if settings is not None else ""
            if settings is not None and key not in seen:
                seen.add(key)
                mlflow_log.check(settings)

    def _one(self, run: StudyRun) -> bool:
        if self.stopping:
            return True
        start = time.monotonic()
        record = self._record(run)
        record.setdefault("arm", run.arm)
        record.setdefault("seed", run.seed)
        ok = True
        if self.study.budgets:
            self._measure_flops(run)
        if not record.get("trained") or record.get("trained_to", math.inf) < self._largest(run):
            ok = self._train(run, record)
        if ok and not self.stopping:
            ok = self._evaluate(run, record)
        with self.lock:
            if ok and not self.stopping:
                self.done += 1
                self.say(
                    f"[{self.done}/{len(self.runs)}] {run.label} done in {hms(time.monotonic() - start)}{self._eta()}"
                )
                if self.publish_to is not None:
                    publish(self.out, self.publish_to)
        return ok

    def _eta(self) -> str:
        """From every finished run's recorded time, this process's or an earlier one's: the median
        run of the same arm, or of all arms for an arm with none finished yet."""
        by_arm: dict[str, list[float]] = {}
        remaining = []
        for run in self.runs:
            record = read_record(run.record_path)  # the times it records (what it claims is checked before a run)
            if finished(self.study, record):
                total = record.get("train_seconds", 0.0) + sum((record.get("eval_seconds") or {}).values())
                by_arm.setdefault(run.arm, []).append(total)
            else:
                remaining.append(run)
        overall = [t for times in by_arm.values() for t in times]
        if not remaining or not overall:
            return ""
        seconds = sum(statistics.median(by_arm.get(r.arm) or overall) for r in remaining) / self.jobs
        return f"; about {hms(seconds)} to go for the other {len(remaining)} (median run of each arm so far)"

    def _largest(self, run: StudyRun) -> int:
        return max(self.study.arm_budgets(run.arm)) if self.study.budgets else 0

    def _measure_flops(self, run: StudyRun) -> None:
        """Floating-point operations of one training step of the run's arm, measured once per arm
        (:func:`dogo.bench.flops.step_flops`) into ``arms/<arm>.flops.json``."""
        path = self.out / "arms" / f"{run.arm}.flops.json"
        if read_record(path).get("flops_per_step"):
            return
        import torch

        from dogo.bench.flops import step_flops
        from dogo.config import build_config

        threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            flops = step_flops(build_config(run.config, str(run.record_path.with_suffix(".yaml"))))
        finally:
            torch.set_num_threads(threads)
        write_json(path, {"flops_per_step": flops, "measured": now(), "commit": source_commit()})
        self.say(f"{run.arm}: {flops / 1e9:.1f} GFLOP a training step")

    def _train(self, run: StudyRun, record: dict[str, Any]) -> bool:
        checkpoints = list(RunDir(run.run_dir).checkpoints.glob("*.pt")) if run.run_dir.is_dir() else []
        why = "a study run that stopped before its first checkpoint"
        if record.get("trained") and not checkpoints:
            # restored from published results (no checkpoints), or its checkpoints removed: nothing to go on from,
            # so the run trains again from step 0 and every budget is evaluated on its new weights
            self.say(f"{run.label}: no checkpoint to go on from {record.get('trained_to')} steps; training it again")
            for key in (
                "trained",
                "trained_to",
                "train_seconds",
                "attempts",
                "evaluations",
                "eval_seconds",
                "eval_commits",
            ):
                record.pop(key, None)
            why = "a finished study run with no checkpoint to go on from, trained again"
        if os.path.lexists(run.run_dir) and not checkpoints:  # nothing to resume
            remove_owned(run.run_dir, why=why)
        config_file = run.record_path.with_suffix(".yaml")
        write_text(config_file, yaml.safe_dump(run.config, sort_keys=False))
        if record.get("trained"):  # trained to a smaller largest budget: go on to the new one
            self._check_kept(run, record)
            train = run.config["train"]
            command = [
                "pretrain",
                "--resume",
                str(run.run_dir),
                f"train.epochs={train['epochs']}",
                f"train.max_steps={train['max_steps']}",
                f"train.keep_at={json.dumps(train['keep_at'])}",
            ]
            verb = f"extending to {train['max_steps']} steps"
        elif checkpoints:
            command = ["pretrain", "--resume", str(run.run_dir)]
            verb = "resuming"
        else:
            command = ["pretrain", str(config_file), "--out", str(run.run_dir)]
            verb = "training"
        command.append(f"train.num_threads={self.threads}")
        command.append("logging.progress=false")
        self.say(f"{verb} {run.label} ({self._position(run)})")
        attempt: dict[str, Any] = {
            "started": now(),
            "commit": source_commit(),
            "command": shlex.join(["dogo", *command]),
        }
        started = time.monotonic()
        code = self._child(command, run.log_path)
        attempt.update(seconds=round(time.monotonic() - started, 2), exit=code)
        record.setdefault("attempts", []).append(attempt)
        record["machine"] = machine()
        if code == 0 and not self.stopping:
            record["trained"] = True
            record["train_seconds"] = round(sum(a["seconds"] for a in record["attempts"]), 2)
            if self.study.budgets:
                record["trained_to"] = self._largest(run)
        write_json(run.record_path, record)
        if code != 0 and not self.stopping:
            self.say(f"{run.label}: training failed (exit {code}); see {run.log_path}")
            return False
        return code == 0

    def _check_kept(self, run: StudyRun, record: dict[str, Any]) -> None:
        """A budget added below the steps a run was trained to can only come from training it again."""
        from dogo.runs.kept import kept_steps

        kept = kept_steps(run.run_dir) if run.run_dir.is_dir() else {}
        missing = [b for b in self.study.arm_budgets(run.arm) if b <= record.get("trained_to", 0) and b not in kept]
        if missing:
            raise ConfigError(
                f"{run.label}: budget {missing[0]} was added below the {record.get('trained_to')} steps "
                f"the run was trained to, and its weights were not kept; pass --rerun {run.arm} to "
                f"train the arm again, or add budgets above {record.get('trained_to')} only"
            )

    def _evaluate(self, run: StudyRun, record: dict[str, Any]) -> bool:
        done = record.setdefault("evaluations", {})
        peer = "0" if self.study.evaluate.peers == "first" else "all"
        for protocol, budget in self.study.evaluations(run.arm):
            name = evaluation_name(protocol, budget)
            if done.get(name) == self._key(protocol) or self.stopping:
                continue
            at = [] if budget is None else ["--at", str(budget)]
            self.say(f"evaluating {run.label}: {protocol}" + ("" if budget is None else f" at step {budget}"))
            started = time.monotonic()
            settings = self.study.evaluate.protocols[protocol]
            code = self._child(
                ["evaluate", str(run.run_dir), *at, *evaluate_args(protocol, settings, peer)], run.log_path
            )
            if code != 0:
                if not self.stopping:
                    self.say(f"{run.label}: {name} failed (exit {code}); see {run.log_path}")
                return False
            done[name] = self._key(protocol)
            record.setdefault("eval_seconds", {})[name] = round(time.monotonic() - started, 2)
            record.setdefault("eval_commits", {})[name] = source_commit()
            write_json(run.record_path, record)
        return True

    def _position(self, run: StudyRun) -> str:
        return f"run {self.runs.index(run) + 1} of {len(self.runs)}, {self.done} done"

    def _child(self, args: list[str], log_path: Path) -> int:
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads), PYTHONUNBUFFERED="1")
        header = f"\n# {now()} {shlex.join(['dogo', *args])}\n"
        try:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log = open(log_path, "a")  # noqa: SIM115 - closed below, after the child that writes it
            try:
                log.write(header)
                log.flush()
            except OSError:
                log.close()
                raise
        except OSError as exc:  # the child's log: the one line of every output that cannot be written
            raise failed(log_path, len(header.encode()), exc, kept=True) from None
        with log:
            process = subprocess.Popen(
                [sys.executable, "-m", "dogo", *args],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env=env,
                preexec_fn=_die_with_parent,
            )
            with self.lock:
                self.children.add(process)
            try:
                return process.wait()
            finally:
                with self.lock:
                    self.children.discard(process)

    def stop(self, signum: int) -> None:
        """Ask every child to stop (a training child saves a checkpoint first)."""
        self.stopping = True
        with self.lock:
            for child in self.children:
                child.send_signal(signal.SIGTERM)


def _die_with_parent() -> None:
    """A child is ended when the study process dies, even by SIGKILL (Linux), never left training alone."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def check_arms(
    out: Path, arm_configs: dict[str, dict[str, Any]], rerun: Sequence[str], ignore: tuple[str, ...] = ()
) -> None:
    """Refuse an arm whose settings differ from the ones its runs were trained with, unless rerun.

    ``ignore``: dotted keys that may differ (in a study with budgets, the ones derived from them:
    a larger budget trains the runs on, it does not edit the arm)."""
    unknown = [name for name in rerun if name not in arm_configs]
    if unknown:
        raise ConfigError(f"--rerun {unknown[0]}: no such arm; arms: {', '.join(arm_configs)}")
    for name, config in arm_configs.items():
        saved_path = out / "arms" / f"{name}.yaml"
        if not saved_path.exists() or name in rerun:  # a rerun arm is trained again whatever it was
            continue
        from dogo.config import flatten

        try:
            loaded = yaml.safe_load(saved_path.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            loaded = f"not readable YAML ({type(exc).__name__})"
        if not isinstance(loaded, dict):
            from dogo.guards.verified import Damaged

            what = loaded if isinstance(loaded, str) else f"a YAML {type(loaded).__name__}, not an arm's settings"
            raise Damaged(
                f"{saved_path}: {what}; the study compares each arm with it to refuse edited arms: restore "
                f"it, or pass --rerun {name} to train that arm again"
            )
        saved = _current_schema(loaded, saved_path)
        old, new = flatten(_method_defaults(_without_seed(saved))), flatten(_method_defaults(_without_seed(config)))
        changed = sorted(k for k in {**old, **new} if old.get(k) != new.get(k) and k not in ignore)
        if not changed:
            continue
        if name not in rerun:
            raise ConfigError(
                f"arm {name!r} changed since its runs were trained ({', '.join(changed[:4])}); "
                f"undo the edit, or pass --rerun {name} to train that arm again"
            )


def _method_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with each peer's ``n_proj`` and ``temperature`` as the peer trains with them.

    Unset (``None``) means the method's own default, and a method without the setting ignores it;
    arms saved before method defaults moved into each method recorded the value (SimCLR's 0.5 on
    every peer), so both sides are compared by what the objective is built with.
    """
    from dogo.objectives import OBJECTIVES

    models = config.get("train", {}).get("models")
    if not isinstance(models, list):
        return config
    config = {**config, "train": {**config["train"], "models": [dict(m) for m in models]}}
    for model in config["train"]["models"]:
        try:
            fields = OBJECTIVES.get(str(model.get("objective"))).Options.model_fields
        except DogoError:
            continue
        for key in ("n_proj", "temperature"):
            if key not in fields:
                model[key] = None
            elif model.get(key) is None:
                model[key] = fields[key].default
    return config


def _current_schema(saved: dict[str, Any], path: Path) -> dict[str, Any]:
    """An arm's saved settings read by today's schema: a setting added to dogo since the arm's runs
    were trained takes its default on both sides, so that it does not count as an edit of the arm."""
    from dogo.config import recorded_config

    try:
        return recorded_config(saved, str(path)).dump()
    except DogoError:
        return saved  # a setting dogo no longer knows: it differs, and check_arms names it


def _without_seed(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in ("seed", "name")}


def run_study(
    study_path: str | Path,
    out: str | Path | None = None,
    *,
    jobs: int = 1,
    only: Sequence[str] = (),
    rerun: Sequence[str] = (),
    publish_to: str | Path | None = None,
    say: Callable[[str], None] = print,
) -> tuple[Path, int]:
    """Run (or continue) the study; returns its directory and the number of runs that failed."""
    study_path = Path(study_path)
    study, arm_configs = load_study(study_path)
    out = Path(out) if out else Path("runs") / f"study-{study.name}"
    for name in only:
        if name not in arm_configs:
            raise ConfigError(f"--only {name}: no such arm; arms: {', '.join(arm_configs)}")
    check_study_folder(out)
    if publish_to:
        check_publish_folder(Path(publish_to), out)
    # one study process per study directory, and one writer of a --publish folder (a study made on two
    # machines publishes into one folder; each is told if the other is writing it)
    with holding(out, create=True), holding(publish_to, create=True) if publish_to else contextlib.nullcontext():
        return _run_study(study, arm_configs, study_path, out, jobs, only, rerun, publish_to, say)


def check_study_folder(out: Path) -> None:
    """``--out`` is new, empty, or a study folder dogo made: marked (even by a start that failed), laid out as
    an older dogo's study, or a folder of a study's published results (continued where it was published);
    anything else is refused in one line saying what it is."""
    if not out.exists():
        return
    kind = kind_of(out)
    if kind in ("study", "published") or (kind is None and out.is_dir() and not any(out.iterdir())):
        return
    what = (
        f"a dogo {kind} folder"
        if kind
        else f"a folder of other files (no study.yaml and arms/, no {MARKER} marker of a study)"
        if out.is_dir()
        else what_is(out)
    )
    raise DogoError(f"{out}: exists and is not a study directory: it is {what}; choose another --out")


def check_publish_folder(dest: Path, out: Path) -> None:
    """``--publish DIR`` writes only into a folder of published results (or a new or empty one)."""
    if not dest.is_dir() or dest.resolve() == out.resolve() or not any(dest.iterdir()):
        return
    if marker(dest) is None and not is_study_dir(dest):
        raise DogoError(
            f"{dest}: --publish writes a study's results into a folder of its own, and this one holds "
            "other files (no study.yaml, arms/ or dogo marker); choose a new or empty folder"
        )


def _run_study(
    study: StudyConfig,
    arm_configs: dict[str, dict[str, Any]],
    study_path: Path,
    out: Path,
    jobs: int,
    only: Sequence[str],
    rerun: Sequence[str],
    publish_to: str | Path | None,
    say: Callable[[str], None],
) -> tuple[Path, int]:
    if publish_to and Path(publish_to).is_dir() and Path(publish_to).resolve() != out.resolve():
        # restore writes into the study folder: marked first, so that a start refused after it (an edited
        # arm) leaves a folder the next start takes on as a study, not one it refuses as someone else's
        mark(out, "study", adopted=is_study_dir(out))
        restored = restore(Path(publish_to), out, lambda record: finished(study, record))
        if restored:
            say(f"restored {restored} finished run(s) from {publish_to} (results only, no checkpoints)")
    check_arms(out, arm_configs, list(rerun), BUDGET_KEYS if study.budgets else ())
    out.mkdir(parents=True, exist_ok=True)
    mark(out, "study", adopted=is_study_dir(out))  # what dogo made: --rerun removes arms only inside it
    for name in rerun:
        if os.path.lexists(out / name):
            say(f"--rerun {name}: removing its earlier runs under {out / name}")
            remove_owned(out / name, why=f"--rerun {name}")
    write_text(out / "study.yaml", study_path.read_text())
    for name, config in arm_configs.items():
        write_text(out / "arms" / f"{name}.yaml", yaml.safe_dump(_without_seed(config), sort_keys=False))
    runs = plan_runs(study, arm_configs, out)
    if only:
        runs = [run for run in runs if run.arm in only]
    runner = Runner(study, out, runs, jobs=jobs, publish_to=Path(publish_to) if publish_to else None, say=say)
    previous = {sig: signal.signal(sig, lambda s, f: runner.stop(s)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        failures = runner.run_all()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if runner.stopping:
        raise KeyboardInterrupt
    if publish_to:
        publish(out, Path(publish_to))
    return out, failures
