"""Weights kept at chosen steps of a run (``train.keep_at``): many training budgets from one run.

At each step N of ``train.keep_at`` (0: before the first step, the initialisation) the trainer
writes every peer's weights, and nothing else, to ``checkpoints/step-N.pt`` (a checkpoint in
:mod:`dogo.runs.checkpoint`'s format, with the run's config, so that ``dogo evaluate``, ``export``
and ``embed`` read it like any other: ``--at N`` is ``--checkpoint step-N``) and records it in
``RUN_DIR/kept.json``: ``{"steps": {"N": {"file": "checkpoints/step-N.pt", "sha256": ...}}}``.

When the learning-rate schedule and every objective's per-step schedule do not depend on the
run's length (a constant learning rate, as the reference's Adam; no cosine momentum over the
run), the state at step N of a long run is the state of an N-step run with the same seed: the
data order and the views are drawn from generators seeded by (seed, epoch, step), never by the
run's length. :func:`dogo.training.cohort.length_dependence` says when that does not hold.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dogo.core.errors import CheckpointError
from dogo.guards.outputs import write_output
from dogo.runs.checkpoint import save_checkpoint
from dogo.runs.layout import RunDir

__all__ = ["keep_weights", "kept_steps"]


def keep_weights(run_dir: str | Path, step: int, state: dict[str, Any]) -> Path:
    """Write the peers' weights of ``state`` (a trainer state) kept at ``step``; record it in kept.json."""
    layout = RunDir(run_dir)
    path = layout.step_checkpoint(step)
    small = {key: state[key] for key in ("config", "step", "epoch", "step_in_epoch", "peers", "labels")}
    sha256 = save_checkpoint(path, small)
    index = kept_steps(run_dir)
    index[int(step)] = {"file": str(path.relative_to(layout.path)), "sha256": sha256}
    write_output(
        layout.kept, json.dumps({"steps": {str(k): index[k] for k in sorted(index)}}, indent=2) + "\n", own=True
    )
    return path


def kept_steps(run_dir: str | Path) -> dict[int, dict[str, str]]:
    """The steps whose weights ``run_dir`` keeps (from kept.json), each with its file and sha256."""
    path = RunDir(run_dir).kept
    if not path.exists():
        return {}
    try:
        steps = json.loads(path.read_text())["steps"]
        index = {int(step): dict(entry) for step, entry in steps.items()}
        if any(
            step < 0 or not isinstance(e.get("file"), str) or not isinstance(e.get("sha256"), str)
            for step, e in index.items()
        ):
            raise ValueError("an entry without its step, file or sha256")
        return index
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise CheckpointError(
            f"{path}: not a readable index of kept weights; delete it and resume the run to write it again"
        ) from None
