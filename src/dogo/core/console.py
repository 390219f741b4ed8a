"""What dogo says on stderr: how much (``--quiet`` / ``--verbose``) and in which form (bar or lines).

On a terminal, training shows a progress bar (tqdm). When stderr is not a terminal (a batch job,
``2> log``, ``dogo study``'s per-run logs), carriage-return frames would fill the log, so there
is no bar: one line per epoch instead (each peer's losses, the online kNN, images/s, ETA), and
one line per evaluated peer and protocol. Verbosity: ``quiet`` keeps warnings and errors only,
``normal`` adds progress lines, ``verbose`` adds a line per metrics row.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

QUIET, NORMAL, VERBOSE = 0, 1, 2
_level = NORMAL


def set_verbosity(level: int) -> None:
    global _level
    _level = level


def verbosity() -> int:
    return _level


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def use_bar() -> bool:
    """A carriage-return progress bar: only on a terminal and not ``--quiet`` (``DOGO_PROGRESS=lines`` forces lines)."""
    if os.environ.get("DOGO_PROGRESS") == "lines":
        return False
    return _level >= NORMAL and stderr_is_terminal()


def info(message: str) -> None:
    """A progress message (not under ``--quiet``)."""
    if _level >= NORMAL:
        print(message, file=sys.stderr, flush=True)


def detail(message: str) -> None:
    """A message for ``--verbose`` only."""
    if _level >= VERBOSE:
        print(message, file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    """``75`` -> ``1m15s``; ``4000`` -> ``1h06m``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class EpochLines:
    """One line per epoch for logs that are not a terminal: each peer's mean loss and KL over the
    epoch's steps, its kNN when measured, images/s, the data wait and the ETA."""

    def __init__(
        self,
        labels: list[str],
        epochs: int,
        total_steps: int,
        start_step: int,
        say: Callable[[str], None],
        *,
        single_model: bool,
    ) -> None:
        self.labels = labels
        self.epochs = epochs
        self.total_steps = total_steps
        self.start_step = start_step
        self.say = say
        self.single_model = single_model
        self.started = time.perf_counter()

    def epoch_row(
        self, row: dict[str, Any], means: dict[str, dict[str, float]], images_per_s: float | None = None
    ) -> None:
        """``row``: the epoch's metrics row (peers keyed by label); ``means``: label -> {loss, kl} over its steps."""
        step = int(row["step"])
        parts = [f"epoch {row['epoch']}/{self.epochs}", f"step {step}/{self.total_steps}"]
        for label in self.labels:
            peer = means.get(label, {})
            if "loss" not in peer:
                continue
            text = f"{label} loss {peer['loss']:.3f}"
            if not self.single_model and "kl" in peer:
                text += f" (kl {peer['kl']:.3f})"
            if f"peer/{label}/knn_top1" in row:
                text += f" knn {row[f'peer/{label}/knn_top1']:.1f}%"
            parts.append(text)
        if images_per_s is not None:
            parts.append(f"{images_per_s:.0f} img/s")
        if "data_wait_share" in row:
            parts.append(f"data wait {100 * row['data_wait_share']:.1f}%")
        done = step - self.start_step
        if done > 0 and step < self.total_steps:
            eta = (time.perf_counter() - self.started) / done * (self.total_steps - step)
            parts.append(f"ETA {duration(eta)}")
        self.say("  ".join(parts))
