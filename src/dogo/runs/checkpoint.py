"""Checkpoints: atomic, self-verifying, and loadable without executing code.

Format. A checkpoint file is ``torch.save({"format", "sha256", "payload"})`` where ``payload``
is the serialised state (itself a ``torch.save`` of plain containers and tensors) as a uint8
tensor and ``sha256`` its hash: a truncated or altered file is detected on load.

Atomicity. :func:`save_checkpoint` writes to a temporary name beside the target, fsyncs it,
renames it over the target and fsyncs the folder, so a kill at any moment leaves either the
old or the new file, never half of one. With ``keep_previous=True`` the file being replaced is
first kept as ``<name>.prev.pt`` (a hard link, so the target itself never disappears), which
gives resume a previous good checkpoint to fall back on when the newest one is damaged. A write
that fails (full disk, read-only folder) removes its temporary file, leaves the old checkpoint
untouched and raises a one-line :class:`~dogo.core.errors.CheckpointError`.

Safe loading. Both layers are read with ``torch.load(weights_only=True)``: state dicts, numbers,
strings, lists, dicts and tensors only, never pickled code. A file from elsewhere that needs
more (a pickled class, numpy arrays) is refused with a message naming the global it asked for.

What a training checkpoint holds is :meth:`dogo.training.trainer.Trainer.state`'s dict: the resolved config,
every peer's weights and optimiser state, step and epoch, the Python, numpy and torch RNG
states, the metrics bookkeeping, ``scaler: None`` (bf16 autocast needs no GradScaler) and no
scheduler state (learning rates are precomputed per step, so the step is the schedule's whole
state). The data order of an epoch and the augmentation draws of a step come from generators
seeded by ``(seed, epoch[, step, peer, rank])`` (:func:`dogo.core.runtime.step_seed`), so a resumed
run redraws them identically without storing generator states.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path
from typing import Any, cast

import torch

from dogo.core.errors import CheckpointError
from dogo.guards.outputs import TEMP_MARK

FORMAT = "dogo-checkpoint-v1"


def previous_path(path: str | Path) -> Path:
    """``checkpoints/last.pt`` -> ``checkpoints/last.prev.pt`` (the kept predecessor)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def _write_all(fd: int, data: bytes) -> None:
    from dogo.guards.outputs import write_all

    write_all(fd, data)


def _keep_previous(path: Path) -> None:
    """Make ``<name>.prev.pt`` the current ``path`` (a hard link; a copy by rename if links fail)."""
    if not path.exists():
        return
    prev = previous_path(path)
    link = path.with_name(f".{prev.name}{TEMP_MARK}{os.getpid()}")
    link.unlink(missing_ok=True)
    try:
        os.link(path, link)
    except OSError:
        # No hard links here (some network or FAT file systems): rotate by rename instead. A
        # kill before the final rename then leaves only the .prev file, which resume finds.
        os.replace(path, prev)
        return
    os.replace(link, prev)


def atomic_write_bytes(path: str | Path, data: bytes, *, keep_previous: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync and rename (:mod:`dogo.guards.outputs`).

    ``keep_previous`` keeps the replaced file as ``<name>.prev<suffix>``. On any OSError the
    temporary file is removed, ``path`` is left as it was and a CheckpointError is raised.
    """
    from dogo.guards.outputs import OutputError, write_output

    path = Path(path)
    try:
        write_output(path, data, own=True, before_replace=_keep_previous if keep_previous else None, writer=_write_all)
    except OutputError as exc:
        kept = " (the previous checkpoint is kept)" if path.exists() else ""
        raise CheckpointError(
            f"{path}: cannot write the checkpoint ({exc.reason}; {len(data) / 1e6:.1f} MB wanted){kept}; free disk "
            "space or choose another --out"
        ) from None


def _writer_alive(pid_text: str) -> bool:
    if not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete temporary files left in ``folder`` by saves that were killed; returns them."""
    removed: list[Path] = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for candidate in folder.iterdir():
        if candidate.name.startswith(".") and TEMP_MARK in candidate.name and candidate.is_file():
            if _writer_alive(candidate.name.rpartition(TEMP_MARK)[2]):
                continue  # another process of this run is saving right now
            try:
                candidate.unlink()
                removed.append(candidate)
            except OSError:
                pass
    return removed


def save_checkpoint(path: str | Path, state: dict[str, Any], *, keep_previous: bool = False) -> str:
    """Serialise ``state`` atomically to ``path``; returns the payload's sha256.

    ``state`` must hold only what ``weights_only`` loading accepts (tensors, numbers, strings,
    None, lists, tuples and dicts of them). ``keep_previous`` keeps the replaced file as
    ``<name>.prev.pt``.
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    digest = hashlib.sha256(payload).hexdigest()
    outer = io.BytesIO()
    torch.save(
        {"format": FORMAT, "sha256": digest, "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8)}, outer
    )
    atomic_write_bytes(Path(path), outer.getvalue(), keep_previous=keep_previous)
    return digest


_GLOBAL = re.compile(r"unsupported (?:global: )?GLOBAL ([\w.]+)", re.IGNORECASE)  # torch's two wordings


def _load_error(path: Path, exc: Exception) -> CheckpointError:
    match = _GLOBAL.search(str(exc))
    if match:
        return CheckpointError(
            f"{path}: refused: loading it would unpickle {match.group(1)}, which can run code; dogo loads "
            "checkpoints with weights_only=True (tensors, numbers, strings and containers only) — this file "
            "is not a dogo checkpoint; re-save it as a plain state_dict of tensors if you trust its source"
        )
    return CheckpointError(f"{path}: cannot load checkpoint: truncated or damaged (not a readable PyTorch file)")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and verify a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Raises CheckpointError (one line, naming the file) when it is missing, truncated, damaged
    (hash mismatch), not a dogo checkpoint, or would need code execution to load.
    """
    from dogo.guards.inputs import reading

    path = Path(path)
    reading(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path}: no such checkpoint; give an existing one (--checkpoint last, epoch-N, step-N or a .pt path)"
        )
    try:
        outer = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({exc.strerror or exc})") from None
    except Exception as exc:
        raise _load_error(path, exc) from None
    if not isinstance(outer, dict) or outer.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a dogo checkpoint (no {FORMAT!r} marker; it may be a plain state_dict from "
            "elsewhere — dogo resumes and evaluates only checkpoints it wrote)"
        )
    payload_tensor = outer.get("payload")
    if not isinstance(payload_tensor, torch.Tensor) or payload_tensor.dtype != torch.uint8:
        raise CheckpointError(f"{path}: checkpoint is damaged (no payload); use another with --checkpoint")
    payload = payload_tensor.numpy().tobytes()
    if hashlib.sha256(payload).hexdigest() != outer.get("sha256"):
        raise CheckpointError(
            f"{path}: checkpoint is damaged (content hash mismatch); resume falls back to an older "
            "checkpoint, or use another with --checkpoint"
        )
    try:
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as exc:
        raise _load_error(path, exc) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: checkpoint holds {type(state).__name__}, expected a dict")
    return state


def checkpoint_id(path: str | Path, full: bool = False) -> str:
    """A short identifier of a checkpoint's content (its payload hash), for feature caches.

    ``full``: the whole sha256 of the payload (for export sidecars) instead of its first 16 digits.
    """
    path = Path(path)
    try:
        outer = torch.load(path, map_location="cpu", weights_only=True)
        return str(outer["sha256"]) if full else str(outer["sha256"])[:16]
    except Exception:
        raise CheckpointError(
            f"{path}: cannot read checkpoint (damaged, or not one); use another with --checkpoint"
        ) from None


# --------------------------------------------------------------------------- random number generators


def rng_state() -> dict[str, Any]:
    """The torch, numpy and Python (and CUDA) generator states, as tensors and plain lists (weights_only-safe)."""
    import random

    import numpy as np

    # the global RandomState is an MT19937: get_state() (legacy=True) gives its 5-tuple, never the dict
    legacy_state = cast("tuple[str, np.ndarray, int, int, float]", np.random.get_state())
    name, keys, pos, has_gauss, gauss = legacy_state
    version, internal, python_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "gauss": gauss,
        },
        "python": [version, list(internal), python_gauss],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    s = state["numpy"]
    np.random.set_state((s["name"], s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"], s["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
