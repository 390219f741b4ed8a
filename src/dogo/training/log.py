"""Where a run's numbers go while it trains: ``metrics.jsonl``, TensorBoard, MLflow (optional), the console.

One row per ``logging.log_every`` steps (the mean of those steps' losses, learning rates and
images/s; by default a cadence that follows the run's length, :func:`log_every`) and one per
epoch (the online kNN, and ``data_wait_s``: how long this process's steps of the epoch waited for
their batch, with ``data_wait_share``, its part of those steps' time), each with its wall-clock
time and every peer's numbers under its label (``peer/student/loss``; see :mod:`dogo.core.metric_keys`).
``epoch`` counts from 1 in every row: a step row's is the epoch the step belongs to, an epoch
row's the epoch it ends (files written before counted step rows from 0).

On a terminal a progress bar shows the run (each peer's loss, KL and last kNN); elsewhere (a
batch job's log) one line per epoch with each peer's mean loss and KL over the epoch's steps and
the kNN when measured; with ``--verbose`` also a line per metrics row. Only the main process
writes; on the others every call is a no-op. The steps not yet averaged into a row (``window``)
and the length of ``metrics.jsonl`` (:meth:`tell`) go into checkpoints, so that a resumed run
writes exactly the rows an uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dogo.config import RunConfig
from dogo.core import dist
from dogo.core.metric_keys import by_label
from dogo.guards.outputs import Appender
from dogo.runs.layout import RunDir

__all__ = ["TIMING_KEYS", "TrainingLog", "log_every"]

# The fields of a row that measure time, not training: they differ between two runs of one seed.
TIMING_KEYS = ("images_per_s", "time", "data_wait_s", "data_wait_share")
#: The default cadence aims at about this many rows per run, and logs at least every this many steps.
ROWS_PER_RUN, MAX_LOG_EVERY = 200, 50


def log_every(config: RunConfig, total_steps: int) -> int:
    """Steps between metrics rows: ``logging.log_every``, else by the run's length (every step of a
    run of up to 200 steps, then about 200 rows, at most every 50 steps)."""
    if config.logging.log_every is not None:
        return config.logging.log_every
    return max(1, min(MAX_LOG_EVERY, -(-total_steps // ROWS_PER_RUN)))


class TrainingLog:
    def __init__(
        self,
        config: RunConfig,
        layout: RunDir,
        labels: list[str],
        total_steps: int,
        step: int,
        window: list[dict[str, float]],
        say: Callable[[str], None],
    ) -> None:
        from tqdm import tqdm

        from dogo.core import console

        self.config, self.labels, self.single_model, self.window = config, labels, len(labels) == 1, window
        self.every = log_every(config, total_steps)
        main = dist.is_main_process()
        self.mlflow = None
        if main and config.logging.mlflow is not None:  # first: a one-line error before anything is opened
            from dogo.training import mlflow_log

            self.mlflow = mlflow_log.start(config, layout, resumed=step > 0)
        self.file = Appender(layout.metrics) if main else None  # a full disk: one line naming the file
        self.writer = _Events(layout.tensorboard, step) if main and config.logging.tensorboard else None
        show = config.logging.progress and main
        self.bar = tqdm(
            total=total_steps,
            initial=step,
            unit="step",
            dynamic_ncols=True,
            disable=not (show and console.use_bar()),
            desc="pretrain",
        )
        # Not a terminal (a batch job's log): a line per epoch instead of carriage-return frames.
        self.lines = (
            console.EpochLines(labels, config.train.epochs, total_steps, step, say, single_model=self.single_model)
            if show and self.bar.disable and console.verbosity() >= console.NORMAL
            else None
        )
        self._start, self._images = time.perf_counter(), 0
        self._data_wait_s, self._steps_s = 0.0, 0.0  # this epoch's, for its row
        self._epoch_losses: dict[str, list[float]] = {}  # this epoch's steps: loss and KL per peer (its line)
        self._epoch_images = 0
        self._knn: dict[str, float] = {}  # each peer's last kNN, for the bar
        self.show_rows = show and console.verbosity() >= console.VERBOSE  # --verbose: a line per metrics row
        self.say = say

    def after_step(
        self,
        step: int,
        epoch: int,
        losses: dict[str, float],
        rates: list[float],
        skipped: str | None,
        last: bool,
        *,
        data_wait_s: float = 0.0,
        step_s: float = 0.0,
    ) -> None:
        """Add a step (``step`` counts it); every ``log_every`` steps, and at the last, write their mean.

        ``step_s`` is the step's time from asking for its batch to the end of its update, of which
        it spent ``data_wait_s`` waiting for the batch.
        """
        self._data_wait_s += data_wait_s
        self._steps_s += step_s
        self.window.append({**losses, **{f"peer/{i}/lr": lr for i, lr in enumerate(rates)}})
        for i in range(len(self.labels)):
            for key in (f"peer/{i}/loss", f"peer/{i}/loss/kl"):
                if key in losses:
                    self._epoch_losses.setdefault(key, []).append(float(losses[key]))
        self._images += self.config.train.batch_size
        self._epoch_images += self.config.train.batch_size
        self.bar.update(1)
        if step % self.every and not last:
            return
        elapsed = time.perf_counter() - self._start
        row: dict[str, Any] = {
            "step": step,
            "epoch": epoch + 1,
            **_mean(self.window),
            "images_per_s": self._images / max(elapsed, 1e-9),
        }
        if skipped:
            row["skipped"] = skipped
        named = self.write(row)
        if self.show_rows:
            self._tell(
                f"step {named['step']}: "
                + ", ".join(
                    f"{k} {v:.4g}" for k, v in named.items() if k not in ("step", "epoch") and isinstance(v, float)
                )
            )
        self._postfix(row)
        self.window.clear()
        self._start, self._images = time.perf_counter(), 0

    def _tell(self, line: str) -> None:
        """A line on stderr that leaves the progress bar whole."""
        if self.bar.disable:
            self.say(line)
        else:
            self.bar.write(line, file=sys.stderr)

    def _postfix(self, row: dict[str, Any]) -> None:
        """The bar's tail: each peer's loss, KL (a cohort) and last kNN, then images/s."""
        if self.bar.disable:
            return
        shown = {}
        for i, label in enumerate(self.labels):
            text = f"{row[f'peer/{i}/loss']:.3f}" if f"peer/{i}/loss" in row else "-"
            if not self.single_model and f"peer/{i}/loss/kl" in row:
                text += f" kl {row[f'peer/{i}/loss/kl']:.3f}"
            if label in self._knn:
                text += f" knn {self._knn[label]:.1f}%"
            shown[label] = text
        shown["img/s"] = f"{row['images_per_s']:.0f}"
        self.bar.set_postfix(shown, refresh=False)

    def end_epoch(self, row: dict[str, Any]) -> dict[str, Any]:
        """Write the epoch's row (keyed by peer index); returns it as written (keyed by peer label)."""
        row["data_wait_s"] = round(self._data_wait_s, 4)
        row["data_wait_share"] = round(self._data_wait_s / self._steps_s, 5) if self._steps_s > 0 else 0.0
        means = {
            label: {
                term: float(np.mean(self._epoch_losses[key]))
                for term, key in (("loss", f"peer/{i}/loss"), ("kl", f"peer/{i}/loss/kl"))
                if self._epoch_losses.get(key)
            }
            for i, label in enumerate(self.labels)
        }
        images_per_s = self._epoch_images / self._steps_s if self._steps_s > 0 else None
        self._data_wait_s, self._steps_s, self._epoch_images = 0.0, 0.0, 0
        self._epoch_losses.clear()
        named = self.write(row)
        self._knn.update(
            {label: named[f"peer/{label}/knn_top1"] for label in self.labels if f"peer/{label}/knn_top1" in named}
        )
        if self.lines is not None:
            self.lines.epoch_row(named, means, images_per_s)
        return named

    def write(self, row: dict[str, Any]) -> dict[str, Any]:
        """Write ``row`` (peers keyed by index) to every sink; returns the row as written (keyed by label)."""
        if self.single_model:  # a single model has no distillation term: no `kl: 0.0` columns
            row = {k: v for k, v in row.items() if not k.endswith("/loss/kl")}
        row = {**by_label(row, self.labels), "time": round(time.time(), 3)}  # wall clock (Unix seconds) of every line
        if self.file is None:
            return row
        self.file.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for key, value in row.items():
                if key not in ("step", "epoch", "time") and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, row["step"])
        if self.mlflow is not None:
            self.mlflow.log(row)
        return row

    def tell(self) -> int:
        """The length of ``metrics.jsonl`` so far (0 on other ranks)."""
        return self.file.tell() if self.file is not None else 0

    def close(self, finished: bool = True) -> None:
        """Close every sink; ``finished``: the run reached its last step (MLflow marks the run so)."""
        self.bar.close()
        if self.file is not None:
            self.file.close()
        if self.writer is not None:
            self.writer.close()
        if self.mlflow is not None:
            self.mlflow.close(finished)


class _Events:
    """TensorBoard's event file under ``tb/``, written by torch's ``SummaryWriter`` (a thread of TensorBoard's
    own, with its own file: outside :mod:`dogo.guards.outputs`). A failure to write it (a full disk, a quota)
    is one warning naming the folder, and the run goes on without TensorBoard: every number is in
    ``metrics.jsonl`` too, and the next file that must be written (a metrics line, a checkpoint) says in one
    line what is wrong if the disk stays full."""

    def __init__(self, folder: Path, step: int) -> None:
        self.folder, self.writer = folder, None
        _quiet_writer_thread()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = self._call(lambda: SummaryWriter(str(folder), purge_step=step or None))

    def _call(self, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except OSError as exc:
            writer, self.writer = self.writer, None
            print(
                f"warning: {self.folder}: cannot write TensorBoard's events ({exc.strerror or exc}); going on "
                "without TensorBoard (metrics.jsonl holds the same numbers)",
                file=sys.stderr,
            )
            if writer is not None:
                with contextlib.suppress(Exception):
                    writer.close()
            return None

    def add_scalar(self, key: str, value: float, step: int) -> None:
        if self.writer is not None:
            writer = self.writer
            self._call(lambda: writer.add_scalar(key, value, step))

    def close(self) -> None:
        if self.writer is not None:
            writer = self.writer
            self._call(writer.close)
            self.writer = None


def _quiet_writer_thread() -> None:
    """TensorBoard's writer thread lets a failed write escape (Python prints it with a traceback) and raises it
    again in the thread that writes next, where :class:`_Events` says it in one warning: the first is not shown."""
    if getattr(threading.excepthook, "dogo", False):
        return
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if type(args.thread).__name__ == "_AsyncWriterThread" and isinstance(args.exc_value, OSError):
            return
        previous(args)

    hook.dogo = True  # type: ignore[attr-defined]
    threading.excepthook = hook


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: float(np.mean([r[key] for r in rows if key in r])) for key in rows[0]}
