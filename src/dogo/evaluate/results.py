"""Result files: ``RUN_DIR/eval/<protocol>[-<variant>]-peer<K>[@<checkpoint>].json``, written atomically.

Results of the run's final weights (``--checkpoint last``) have no ``@<checkpoint>`` part; those of
an earlier checkpoint (``--checkpoint epoch-20``) carry its name in the file name and in
``checkpoint_name``, so they never overwrite each other, and :func:`load_results` (what reports
read) returns the final ones unless asked for another checkpoint.

Each file carries ``sha256``, a hash of its own content (the record without that field, as
canonical JSON): a result damaged on disk would otherwise land in reports as a wrong number.
:func:`load_results` skips a file whose hash does not match, saying so; files without the
field (written by hand, or by dogo before it had one) are read as they are.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from dogo.guards.outputs import write_output
from dogo.runs.layout import RunDir

__all__ = ["load_results", "result_path", "result_problem", "save_result"]


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def result_path(
    run_dir: str | Path, peer: int, protocol: str, variant: str | None = None, checkpoint: str | None = None
) -> Path:
    """Where :func:`save_result` writes: ``eval/<protocol>[-<variant>]-peer<K>[@<checkpoint>].json``."""
    stem = protocol if not variant else f"{protocol}-{_safe(variant)}"
    suffix = "" if checkpoint in (None, "last") else f"@{_safe(checkpoint)}"
    return RunDir(run_dir).eval / f"{stem}-peer{peer}{suffix}.json"


def save_result(
    run_dir: str | Path,
    peer: int,
    protocol: str,
    result: dict[str, Any],
    variant: str | None = None,
) -> Path:
    """Write ``result`` (plus its ``peer`` and ``protocol``) as JSON, atomically; return the path.

    ``variant`` (default: ``result["variant"]``, e.g. the transfer dataset or the noise type)
    keeps different variants of one protocol in different files.
    """
    if variant is None:
        variant = result.get("variant")
    record = {**result, "peer": peer, "protocol": protocol, "variant": variant}
    record.pop("sha256", None)
    record["sha256"] = record_hash(record)
    path = result_path(run_dir, peer, protocol, variant, result.get("checkpoint_name"))
    return write_output(
        path, json.dumps(record, indent=2, sort_keys=False, allow_nan=True) + "\n", own=True, parents=True
    )


def record_hash(record: dict[str, Any]) -> str:
    """SHA-256 of ``record`` without its ``sha256`` field, as canonical JSON."""
    body = {k: v for k, v in record.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, allow_nan=True).encode()).hexdigest()


def result_problem(record: Any) -> str | None:
    """Why a result file's content cannot be a result dogo wrote, or None (checked before use)."""
    from dogo.guards.verified import finite_number

    if not isinstance(record, dict):
        return f"holds a JSON {type(record).__name__}, not a result"
    if "sha256" in record and record["sha256"] != record_hash(record):
        return "content hash mismatch"
    if "protocol" not in record:
        return None  # not a result (another JSON file in eval/): left out, as before
    if not isinstance(record["protocol"], str) or not isinstance(record.get("peer", 0), int):
        return "its protocol or peer is not a name and a number"
    summary = record.get("summary", {})
    if not isinstance(summary, dict):
        return "its summary is not a mapping"
    for key, value in summary.items():
        if not finite_number(value) or (value == value and not 0 <= value <= 100):
            return f"summary {key} is {value!r}, not an accuracy in [0, 100]"
    return None


def load_results(run_dir: str | Path, checkpoint: str | None = "last") -> list[dict[str, Any]]:
    """The results under ``RUN_DIR/eval`` of ``checkpoint`` (``None``: all), sorted by file name;
    unreadable and damaged files are skipped with a warning. A result without ``checkpoint_name``
    is ``last``'s."""
    from dogo.guards.verified import gap, read_json

    results = []
    for path in sorted(RunDir(run_dir).eval.glob("*.json")):
        record, problem = read_json(path, result_problem)
        if problem:
            gap(path, f"skipping damaged or unreadable result: {problem}", "run `dogo evaluate` again to recompute it")
            continue
        if checkpoint is not None and isinstance(record, dict) and record.get("checkpoint_name", "last") != checkpoint:
            continue
        if isinstance(record, dict) and "protocol" in record:
            record.setdefault("path", str(path))
            results.append(record)
    return results
