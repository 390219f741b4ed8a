"""``dogo study``: every arm x seed of a study file as its own run, each evaluated, resumably.

A study file names a base config, the arms (a name plus overrides of the base, or a config file
of their own), the seeds and the evaluation protocols::

    name: fashion-mnist
    base: ../configs/fmnist-simclr.yaml      # a path (relative to the study file) or a mapping
    seeds: [0, 1, 2, 3, 4]                   # default seeds of every arm
    compare_to: student-alone                # the arm every other one is compared with
    arms:
      - name: student-alone
        overrides: {train.epochs: 3}
      - name: lambda-10
        seeds: [0, 1, 2]
        overrides: ["train.models.0.distill_weight=10"]
    evaluate:
      peers: first                           # first (the student) | all
      protocols: {linear: {epochs: 50}, knn: {}}

The study directory holds ``study.yaml`` (the file as given), ``arms/<arm>.yaml`` (each arm's
resolved config without its seed: what a later edit is compared with), and per run
``<arm>/seed-<S>/`` (an ordinary run directory), ``<arm>/seed-<S>.json`` (its record: trained or
not, wall time of every attempt, dogo's commit, the evaluations done) and ``<arm>/seed-<S>.log``
(what its processes printed).

Every run trains and is evaluated in processes of its own (``dogo pretrain`` and ``dogo
evaluate``), so a study that is killed loses only the step in flight: on the next start a
finished run or evaluation is never redone, a half-trained run resumes from its checkpoint, an
arm or seed added to the file runs alone, and an arm whose settings changed is refused, naming
it, unless ``--rerun ARM`` asks for it to be trained again. Runs go in the file's order, except
that consecutive arms with the same seeds run seed by seed (``a/0, b/0, a/1, b/1``), so the
first arms' comparison grows paired from the start.
"""

from __future__ import annotations

import ctypes
import datetime
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

import dogo
from dogo.config import apply_override, build_config, parse_override, read_yaml
from dogo.errors import ConfigError, DogoError
from dogo.fileio import atomic_path

__all__ = ["StudyConfig", "StudyRun", "load_study", "plan_runs", "run_study", "is_study_dir", "publish"]


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ArmConfig(_Schema):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="folder-safe arm name")
    description: str = Field("", description="one line for the report")
    config: str | None = Field(None, description="a config file of its own instead of the study's base")
    overrides: dict[str, Any] | list[str] = Field(default_factory=dict, description="dotted key: value, or key=value strings")
    seeds: list[int] | None = Field(None, description="this arm's seeds (default: the study's)")

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (not value or len(set(value)) != len(value) or min(value) < 0):
            raise ValueError("seeds must be a non-empty list of distinct non-negative integers")
        return value


class EvaluateConfig(_Schema):
    peers: str = Field("first", pattern=r"^(first|all)$", description="first: peer 0 (the student); all")
    protocols: dict[str, dict[str, Any]] = Field(default_factory=dict, description="protocol: its settings")


class StudyConfig(_Schema):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    description: str = ""
    base: str | dict[str, Any] = Field(description="the base config: a path relative to the study file, or a mapping")
    seeds: list[int] = Field([0], min_length=1)
    compare_to: str | None = Field(None, description="the arm every other arm is compared with (paired by seed)")
    arms: list[ArmConfig] = Field(min_length=1)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    conclusion: str = Field("", description="the study's conclusion in words, shown in the report")


@dataclass
class StudyRun:
    """One arm x seed: where it lives and the config it trains."""

    arm: str
    seed: int
    config: dict[str, Any]          # the resolved run config (dict, seed and name set)
    run_dir: Path
    record_path: Path
    log_path: Path

    @property
    def label(self) -> str:
        return f"{self.arm} seed {self.seed}"


def load_study(path: str | Path) -> tuple[StudyConfig, dict[str, dict[str, Any]]]:
    """The validated study and each arm's resolved config (a dict, seed left at the base's)."""
    path = Path(path)
    raw = read_yaml(path)
    try:
        study = StudyConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: {key}: {first['msg']}") from None
    names = [arm.name for arm in study.arms]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{path}: arm name {duplicates[0]!r} is used twice; arm names must be unique")
    if study.compare_to is not None and study.compare_to not in names:
        raise ConfigError(f"{path}: compare_to {study.compare_to!r} is not an arm; arms: {', '.join(names)}")
    from dogo.evaluate import parse_settings

    for protocol, settings in study.evaluate.protocols.items():
        parse_settings(protocol, settings)  # unknown protocols and keys are errors now, not hours later
    base = _base_dict(study.base, path)
    return study, {arm.name: _arm_config(arm, base, path) for arm in study.arms}


def _base_dict(base: str | dict[str, Any], study_path: Path) -> dict[str, Any]:
    if isinstance(base, dict):
        return build_config(dict(base), f"{study_path}: base").dump()
    from dogo.config import load_config

    return load_config(study_path.parent / base).dump()


def _arm_config(arm: ArmConfig, base: dict[str, Any], study_path: Path) -> dict[str, Any]:
    source = f"{study_path}: arm {arm.name}"
    if arm.config is not None:
        from dogo.config import load_config

        data = load_config(study_path.parent / arm.config).dump()
    else:
        data = json.loads(json.dumps(base))
    items = arm.overrides.items() if isinstance(arm.overrides, dict) else (
        (".".join(keys), value) for keys, value in map(parse_override, arm.overrides))
    for key, value in items:
        apply_override(data, key.split("."), value)
    return build_config(data, source).dump()


def plan_runs(study: StudyConfig, arm_configs: dict[str, dict[str, Any]], out: Path) -> list[StudyRun]:
    """Every arm x seed in the order they run (see the module docstring)."""
    blocks: list[list[ArmConfig]] = []
    for arm in study.arms:
        seeds = arm.seeds or study.seeds
        if blocks and (blocks[-1][0].seeds or study.seeds) == seeds:
            blocks[-1].append(arm)
        else:
            blocks.append([arm])
    runs = []
    for block in blocks:
        for seed in block[0].seeds or study.seeds:
            for arm in block:
                config = dict(arm_configs[arm.name], seed=seed, name=f"{study.name}-{arm.name}-seed{seed}")
                folder = out / arm.name
                runs.append(StudyRun(arm.name, seed, config, folder / f"seed-{seed}", folder / f"seed-{seed}.json",
                                     folder / f"seed-{seed}.log"))
    return runs


def is_study_dir(path: str | Path) -> bool:
    path = Path(path)
    return (path / "study.yaml").is_file() and (path / "arms").is_dir()


# --------------------------------------------------------------------------- records


def read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
        return record if isinstance(record, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def source_commit() -> str:
    """dogo's git commit (``+dirty`` with uncommitted changes), or its version outside a checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "src"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return f"dogo {dogo.__version__} (not a git checkout)"


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "dogo": dogo.__version__, "platform": platform.platform()}


def settings_key(protocol: str, settings: dict[str, Any]) -> str:
    text = json.dumps({"protocol": protocol, "settings": settings}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- running


class Runner:
    """Runs the planned runs: trains and evaluates each in child processes, records everything."""

    def __init__(self, study: StudyConfig, out: Path, runs: list[StudyRun], *, jobs: int = 1,
                 publish_to: Path | None = None, say: Callable[[str], None] = print) -> None:
        self.study, self.out, self.runs, self.jobs = study, out, runs, jobs
        self.publish_to = publish_to
        self.say = say
        self.threads = max(1, (os.cpu_count() or 1) // jobs)
        self.children: set[subprocess.Popen] = set()
        self.lock = threading.Lock()
        self.stopping = False
        self.durations: dict[str, list[float]] = {}
        self.started = time.monotonic()
        self.done = sum(self._finished(run) for run in runs)

    def _finished(self, run: StudyRun) -> bool:
        record = read_record(run.record_path)
        return bool(record.get("trained")) and all(
            record.get("evaluations", {}).get(p) == self._key(p) for p in self.study.evaluate.protocols)

    def _key(self, protocol: str) -> str:
        return settings_key(protocol, self.study.evaluate.protocols[protocol])

    def run_all(self) -> int:
        todo = [run for run in self.runs if not self._finished(run)]
        self.say(f"study {self.study.name}: {len(self.runs)} runs, {self.done} done, {len(todo)} to go "
                 f"({self.jobs} at a time) in {self.out}")
        failures = 0
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            for ok in pool.map(self._one, todo):
                failures += not ok
        return failures

    def _one(self, run: StudyRun) -> bool:
        if self.stopping:
            return True
        start = time.monotonic()
        record = read_record(run.record_path)
        record.setdefault("arm", run.arm)
        record.setdefault("seed", run.seed)
        ok = True
        if not record.get("trained"):
            ok = self._train(run, record)
        if ok and not self.stopping:
            ok = self._evaluate(run, record)
        with self.lock:
            if ok and not self.stopping:
                self.done += 1
                self.durations.setdefault(run.arm, []).append(time.monotonic() - start)
                self.say(f"[{self.done}/{len(self.runs)}] {run.label} done in {_hms(time.monotonic() - start)}"
                         f"{self._eta()}")
                if self.publish_to is not None:
                    publish(self.out, self.publish_to)
        return ok

    def _eta(self) -> str:
        if not self.durations:
            return ""
        overall = [d for ds in self.durations.values() for d in ds]
        remaining = [run for run in self.runs if not self._finished(run)]
        seconds = sum(_mean(self.durations.get(r.arm) or overall) for r in remaining) / self.jobs
        return f"; about {_hms(seconds)} to go for the other {len(remaining)}" if remaining else ""

    def _train(self, run: StudyRun, record: dict[str, Any]) -> bool:
        checkpoints = list((run.run_dir / "checkpoints").glob("*.pt")) if run.run_dir.is_dir() else []
        if run.run_dir.exists() and not checkpoints:
            shutil.rmtree(run.run_dir)  # stopped before its first checkpoint: nothing to resume
        config_file = run.record_path.with_suffix(".yaml")
        _write_text(config_file, yaml.safe_dump(run.config, sort_keys=False))
        if checkpoints:
            command = ["pretrain", "--resume", str(run.run_dir)]
            verb = "resuming"
        else:
            command = ["pretrain", str(config_file), "--out", str(run.run_dir)]
            verb = "training"
        command.append(f"train.num_threads={self.threads}")
        command.append("logging.progress=false")
        self.say(f"{verb} {run.label} ({self._position(run)})")
        attempt = {"started": _now(), "commit": source_commit(), "command": "dogo " + " ".join(command)}
        started = time.monotonic()
        code = self._child(command, run.log_path)
        attempt.update(seconds=round(time.monotonic() - started, 2), exit=code)
        record.setdefault("attempts", []).append(attempt)
        record["machine"] = machine()
        if code == 0 and not self.stopping:
            record["trained"] = True
            record["train_seconds"] = round(sum(a["seconds"] for a in record["attempts"]), 2)
        _write_json(run.record_path, record)
        if code != 0 and not self.stopping:
            self.say(f"{run.label}: training failed (exit {code}); see {run.log_path}")
            return False
        return code == 0

    def _evaluate(self, run: StudyRun, record: dict[str, Any]) -> bool:
        done = record.setdefault("evaluations", {})
        peer = "0" if self.study.evaluate.peers == "first" else "all"
        for protocol, settings in self.study.evaluate.protocols.items():
            if done.get(protocol) == self._key(protocol) or self.stopping:
                continue
            self.say(f"evaluating {run.label}: {protocol}")
            args = [f"{k}={json.dumps(v)}" for k, v in settings.items()]
            started = time.monotonic()
            code = self._child(["evaluate", str(run.run_dir), "--protocol", protocol, "--peer", peer, *args],
                               run.log_path)
            if code != 0:
                if not self.stopping:
                    self.say(f"{run.label}: {protocol} failed (exit {code}); see {run.log_path}")
                return False
            done[protocol] = self._key(protocol)
            record.setdefault("eval_seconds", {})[protocol] = round(time.monotonic() - started, 2)
            _write_json(run.record_path, record)
        return True

    def _position(self, run: StudyRun) -> str:
        return f"run {self.runs.index(run) + 1} of {len(self.runs)}, {self.done} done"

    def _child(self, args: list[str], log_path: Path) -> int:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads), PYTHONUNBUFFERED="1")
        with open(log_path, "a") as log:
            log.write(f"\n# {_now()} dogo {' '.join(args)}\n")
            log.flush()
            process = subprocess.Popen([sys.executable, "-m", "dogo", *args], stdout=log, stderr=log,
                                       stdin=subprocess.DEVNULL, env=env, preexec_fn=_die_with_parent)
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
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def check_arms(out: Path, arm_configs: dict[str, dict[str, Any]], rerun: list[str]) -> None:
    """Refuse an arm whose settings differ from the ones its runs were trained with, unless rerun."""
    unknown = [name for name in rerun if name not in arm_configs]
    if unknown:
        raise ConfigError(f"--rerun {unknown[0]}: no such arm; arms: {', '.join(arm_configs)}")
    for name, config in arm_configs.items():
        saved_path = out / "arms" / f"{name}.yaml"
        if not saved_path.exists():
            continue
        saved = yaml.safe_load(saved_path.read_text())
        if _without_seed(saved) == _without_seed(config):
            continue
        if name not in rerun:
            from dogo.rundir import _flatten

            old, new = _flatten(_without_seed(saved)), _flatten(_without_seed(config))
            changed = sorted(k for k in {**old, **new} if old.get(k) != new.get(k))
            raise ConfigError(f"arm {name!r} changed since its runs were trained ({', '.join(changed[:4])}); "
                              f"undo the edit, or pass --rerun {name} to train that arm again")


def _without_seed(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in ("seed", "name")}


def run_study(study_path: str | Path, out: str | Path | None = None, *, jobs: int = 1, only: list[str] = (),
              rerun: list[str] = (), publish_to: str | Path | None = None,
              say: Callable[[str], None] = print) -> tuple[Path, int]:
    """Run (or continue) the study; returns its directory and the number of runs that failed."""
    study_path = Path(study_path)
    study, arm_configs = load_study(study_path)
    out = Path(out) if out else Path("runs") / f"study-{study.name}"
    for name in only:
        if name not in arm_configs:
            raise ConfigError(f"--only {name}: no such arm; arms: {', '.join(arm_configs)}")
    if out.exists() and not is_study_dir(out) and any(out.iterdir()):
        raise DogoError(f"{out}: exists and is not a study directory; choose another --out")
    check_arms(out, arm_configs, list(rerun))
    for name in rerun:
        if (out / name).exists():
            say(f"--rerun {name}: removing its earlier runs under {out / name}")
            shutil.rmtree(out / name)
    out.mkdir(parents=True, exist_ok=True)
    _write_text(out / "study.yaml", study_path.read_text())
    for name, config in arm_configs.items():
        _write_text(out / "arms" / f"{name}.yaml", yaml.safe_dump(_without_seed(config), sort_keys=False))
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


# --------------------------------------------------------------------------- publishing

#: What a study's report reads: small text files, never checkpoints or caches.
PUBLISHED = ("study.yaml", "arms/*.yaml", "*/seed-*.json", "*/seed-*/config.yaml", "*/seed-*/metrics.jsonl",
             "*/seed-*/eval/*.json")


def publish(study_dir: Path, dest: Path) -> Path:
    """Copy the files the report reads (configs, records, metrics, results) to ``dest``."""
    for pattern in PUBLISHED:
        for path in sorted(study_dir.glob(pattern)):
            target = dest / path.relative_to(study_dir)
            if target.exists() and target.read_bytes() == path.read_bytes():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp:
                shutil.copyfile(path, tmp)
    return dest


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text() == text:
        return
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
