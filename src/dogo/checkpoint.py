"""Checkpoints: atomic, self-verifying, and loadable without executing code.

A checkpoint file is ``torch.save({"format", "sha256", "payload"})`` where ``payload`` is the
serialised state as a uint8 tensor and ``sha256`` its hash: a truncated or altered file is
detected on load. Files are written to a temporary name, fsync'ed and renamed, so a kill at any
moment leaves either the old or the new file, never half of one. Everything is loaded with
``torch.load(weights_only=True)``: state dicts, numbers, strings and tensors only, no pickle code.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import torch

from dogo.errors import CheckpointError

FORMAT = "dogo-checkpoint-v1"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync and rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"{path}: cannot write ({exc.strerror or exc}); free disk space or choose another --out") from None
    _fsync_dir(path.parent)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> str:
    """Serialise ``state`` atomically to ``path``; returns the payload's sha256."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    digest = hashlib.sha256(payload).hexdigest()
    outer = io.BytesIO()
    torch.save({"format": FORMAT, "sha256": digest, "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8)}, outer)
    atomic_write_bytes(Path(path), outer.getvalue())
    return digest


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and verify a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        outer = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a damaged or foreign file
        reason = "it needs code execution to load (not a dogo checkpoint; refused)" if "weights_only" in str(exc) else "truncated or damaged"
        raise CheckpointError(f"{path}: cannot load checkpoint: {reason}") from None
    if not isinstance(outer, dict) or outer.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a dogo checkpoint (expected format {FORMAT})")
    payload = outer["payload"].numpy().tobytes()
    if hashlib.sha256(payload).hexdigest() != outer.get("sha256"):
        raise CheckpointError(f"{path}: checkpoint is damaged (content hash mismatch)")
    return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)


def checkpoint_id(path: str | Path) -> str:
    """A short identifier of a checkpoint's content (its payload hash), for feature caches."""
    path = Path(path)
    try:
        outer = torch.load(path, map_location="cpu", weights_only=True)
        return str(outer["sha256"])[:16]
    except Exception:  # noqa: BLE001
        raise CheckpointError(f"{path}: cannot read checkpoint") from None
