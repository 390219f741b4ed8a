"""Verified on read (class 4): what a file's content must satisfy, checked before it is used.

Hashes catch bytes damaged on disk; the checks here catch a file that is whole but not what it
must be: a checkpoint whose tensors do not fit the config's models or hold NaN, a store whose
labels lie outside its classes, a record or result that is not a whole record, an index that
names a file that is not there. Two outcomes, by whether dogo can redo the work:

- it cannot (a checkpoint, a store, a study's arm settings): :class:`Damaged`, one line naming
  the file, what is wrong and what would fix it;
- it can (a study's record, a result, a cache entry): :func:`gap` warns, naming the file and what
  is done instead (the study redoes the run's missing part; the cache recomputes), and a report
  that was written without it lists it under "Missing or unreadable" (:func:`collecting_gaps`):
  never a silent gap.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dogo.core.errors import DogoError

__all__ = ["Damaged", "check_weights", "collecting_gaps", "gap", "nonfinite_weights", "read_json", "weights_misfit"]


class Damaged(DogoError):
    """A file whose content is not what dogo wrote (and dogo cannot redo it)."""


_GAPS: list[list[tuple[str, str]]] = []


@contextlib.contextmanager
def collecting_gaps() -> Iterator[list[tuple[str, str]]]:
    """Collect the ``(path, problem)`` of every :func:`gap` met in the block (for a report to list)."""
    found: list[tuple[str, str]] = []
    _GAPS.append(found)
    try:
        yield found
    finally:
        _GAPS.remove(found)


def gap(path: str | os.PathLike, problem: str, instead: str) -> None:
    """A file that cannot be used and whose work dogo redoes or goes without: a warning, and an entry for reports."""
    warnings.warn(f"{path}: {problem}; {instead}", stacklevel=3)
    for found in _GAPS:
        found.append((str(path), problem))


def read_json(path: str | os.PathLike, check: Callable[[Any], str | None] | None = None) -> tuple[Any, str | None]:
    """``(content, None)`` of a JSON file whose content passes ``check`` (which returns a problem or None);
    ``(None, problem)`` when it is missing, unreadable, not JSON or fails the check."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None, "missing"
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"unreadable ({getattr(exc, 'strerror', None) or type(exc).__name__})"
    try:
        data = json.loads(text)
    except ValueError:
        return None, "not whole JSON (cut short or damaged)"
    problem = check(data) if check is not None else None
    return (None, problem) if problem else (data, None)


def _shape(tensor: Any) -> str:
    return "x".join(map(str, tuple(tensor.shape))) or "scalar"


def weights_misfit(model, state: Any) -> str | None:
    """What keeps ``state`` from loading into ``model`` (not a state dict, a tensor missing or unexpected, a
    value that is not a tensor, a tensor of another shape), or None when it fits."""
    import torch

    if not isinstance(state, dict):
        return f"holds {type(state).__name__}, not a state dict"
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        detail = (
            f"{len(missing)} tensor(s) missing, e.g. {missing[0]}"
            if missing
            else f"{len(unexpected)} unexpected tensor(s), e.g. {unexpected[0]}"
        )
        return f"does not fit the config's model ({detail})"
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            return f"{key} is a {type(value).__name__}, not a tensor"
        want = expected[key]
        if tuple(value.shape) != tuple(want.shape):
            return f"{key} is {_shape(value)} in the file, the config's model needs {_shape(want)}"
    return None


def nonfinite_weights(state: dict[str, Any]) -> str | None:
    """The first floating-point tensor of ``state`` holding NaN or inf, said as a problem; None when all are finite."""
    import torch

    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel():
            finite = torch.isfinite(value)
            if not bool(finite.all()):
                return f"{key} holds {int((~finite).sum())} non-finite value(s) (NaN or inf)"
    return None


def check_weights(model, state: dict[str, Any], where: str, fix: str) -> None:
    """Refuse ``state`` for ``model`` (one line, :class:`Damaged`) unless every tensor is there, of the
    model's shape, and finite; ``where`` names the file and the part (``last.pt: peer 0 (student)``).

    Every reader of weights goes through it: evaluate, export and embed (a run's peers or encoder),
    ``pretrain --resume`` (the checkpoint resumed from) and ``init_from`` (the peer started from).
    """
    problem = weights_misfit(model, state) or nonfinite_weights(state)
    if problem:
        raise Damaged(f"{where}: {problem}; {fix}")


def finite_number(value: Any) -> bool:
    """A JSON number (not a bool) that is finite, or NaN (a result that could not be computed)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and (math.isfinite(value) or value != value)
