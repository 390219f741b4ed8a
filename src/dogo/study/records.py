"""A study run's record (``<arm>/seed-<S>.json``) and what it notes: dogo's commit, the machine, times."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import dogo
from dogo.guards.outputs import write_output

__all__ = [
    "evaluate_args",
    "evaluation_name",
    "finished",
    "hms",
    "machine",
    "now",
    "read_record",
    "settings_key",
    "source_commit",
    "write_json",
    "write_text",
]


#: The fields a record (or an arm's flops record) may hold, and their JSON types.
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "arm": str,
    "seed": int,
    "trained": bool,
    "trained_to": int,
    "train_seconds": (int, float),
    "attempts": list,
    "evaluations": dict,
    "eval_seconds": dict,
    "eval_commits": dict,
    "machine": dict,
    "flops_per_step": (int, float),
    "measured": str,
    "commit": str,
}


def _record_problem(record: Any) -> str | None:
    if not isinstance(record, dict):
        return f"holds a JSON {type(record).__name__}, not a record"
    for key, kind in _FIELDS.items():
        if key in record and (not isinstance(record[key], kind) or (kind is int and isinstance(record[key], bool))):
            return f"its {key!r} is {record[key]!r}, not a {getattr(kind, '__name__', 'number')}"
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in record.get("evaluations", {}).items()):
        return "its evaluations are not names and settings keys"
    return None


def read_record(path: Path) -> dict[str, Any]:
    """A study record, checked to be whole (:mod:`dogo.guards.verified`); ``{}`` when missing, and when
    damaged with a warning: the study then redoes what the record would have said was done."""
    from dogo.guards.verified import gap, read_json

    if not path.exists():
        return {}
    record, problem = read_json(path, _record_problem)
    if problem:
        gap(path, f"damaged record ({problem})", "counting its run as not done: the study redoes it")
        return {}
    return record


def finished(study, record: dict[str, Any]) -> bool:
    """Whether a run's record says it was trained (to the largest budget) and evaluated with every
    protocol of ``study`` (a :class:`~dogo.study.plan.StudyConfig`) at its current settings, at
    every budget that protocol runs at."""
    done = record.get("evaluations", {})
    arm = record.get("arm", "")
    trained = bool(record.get("trained")) and (
        not study.budgets or record.get("trained_to", 0) >= max(study.arm_budgets(arm))
    )
    return trained and all(
        done.get(evaluation_name(protocol, budget)) == settings_key(protocol, study.evaluate.protocols[protocol])
        for protocol, budget in study.evaluations(arm)
    )


def evaluation_name(protocol: str, budget: int | None) -> str:
    """A record's key for ``protocol`` at ``budget`` (steps): ``knn``, or ``knn@400`` in a study with budgets."""
    return protocol if budget is None else f"{protocol}@{budget}"


def evaluate_args(protocol: str, settings: dict[str, Any], peer: str) -> list[str]:
    """The arguments after ``dogo evaluate RUN_DIR`` that run ``protocol`` with the study's settings."""
    return ["--protocol", protocol, "--peer", peer, *(f"{k}={json.dumps(v)}" for k, v in settings.items())]


def write_json(path: Path, data: Any) -> None:
    write_output(path, json.dumps(data, indent=2) + "\n", own=True, parents=True)


def source_commit() -> str:
    """dogo's git commit (``+dirty`` with uncommitted changes), or its version outside a checkout."""
    package = Path(dogo.__file__).resolve().parent  # a change anywhere in the package makes it dirty
    try:
        head = subprocess.run(
            ["git", "-C", str(package), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(package), "status", "--porcelain", "--untracked-files=no", "."],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return f"dogo {dogo.__version__} (not a git checkout)"


def machine() -> dict[str, Any]:
    import torch

    from dogo.bench.machine import cpu_name

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "dogo": dogo.__version__,
        "platform": platform.platform(),
    }


def settings_key(protocol: str, settings: dict[str, Any]) -> str:
    text = json.dumps({"protocol": protocol, "settings": settings}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def hms(seconds: float) -> str:
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def write_text(path: Path, text: str) -> None:
    if path.exists() and path.read_text() == text:
        return
    write_output(path, text, own=True, parents=True)
