"""The layout of a run directory, in one place: every file name a run holds.

::

    RUN_DIR/.dogo                  the marker saying dogo made the folder (:mod:`dogo.guards.ownership`)
    RUN_DIR/config.yaml            the resolved config (accepted resume overrides are written back)
    RUN_DIR/metrics.jsonl          one JSON object per logged step and per epoch
    RUN_DIR/resume-log.jsonl       one line per resume: when, from which checkpoint and step, what changed
    RUN_DIR/tb/                    TensorBoard events
    RUN_DIR/checkpoints/last.pt    the newest checkpoint (last.prev.pt: the one before it)
    RUN_DIR/checkpoints/epoch-N.pt kept every ``logging.save_every`` epochs
    RUN_DIR/checkpoints/step-N.pt  every peer's weights at step N (``train.keep_at``), no optimiser state
    RUN_DIR/kept.json              the steps kept so far, each with its file and sha256
    RUN_DIR/eval/                  evaluation results (:mod:`dogo.evaluate.results` names them)
    RUN_DIR/cache/features/        cached features of the frozen encoders
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RunDir", "step_name"]


def step_name(step: int) -> str:
    """The checkpoint name of the weights kept at ``step`` (``--at N`` is ``--checkpoint step-N``)."""
    return f"step-{int(step)}"


@dataclass(frozen=True)
class RunDir:
    """A run directory's paths; ``RunDir(path)`` never touches the disk."""

    path: Path

    def __init__(self, path: str | os.PathLike | RunDir) -> None:
        object.__setattr__(self, "path", Path(path.path if isinstance(path, RunDir) else path))

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def resume_log(self) -> Path:
        return self.path / "resume-log.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tb"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.pt"

    def checkpoint(self, name: str) -> Path:
        """``last``, ``epoch-N`` -> ``checkpoints/<name>.pt``."""
        return self.checkpoints / f"{name}.pt"

    def epoch_checkpoint(self, epoch: int) -> Path:
        return self.checkpoint(f"epoch-{epoch}")

    def step_checkpoint(self, step: int) -> Path:
        """The weights kept at ``step`` (``train.keep_at``): ``checkpoints/step-N.pt``."""
        return self.checkpoint(step_name(step))

    @property
    def kept(self) -> Path:
        return self.path / "kept.json"

    @property
    def eval(self) -> Path:
        return self.path / "eval"

    @property
    def cache(self) -> Path:
        return self.path / "cache"

    @property
    def feature_cache(self) -> Path:
        return self.cache / "features"

    def is_run(self) -> bool:
        """A dogo run directory: a folder with ``config.yaml``."""
        return self.config.is_file()

    #: What a run holds before its first checkpoint (a run that never reached one may be removed).
    EARLY_FILES = ("config.yaml", "metrics.jsonl", "resume-log.jsonl", ".dogo")
    EARLY_FOLDERS = ("checkpoints", "tb")
