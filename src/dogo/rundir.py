"""The run directory: its layout, creating it safely, and loading what a run trained.

``RUN_DIR/config.yaml`` (resolved config), ``metrics.jsonl``, ``tb/`` (TensorBoard),
``checkpoints/last.pt`` and ``checkpoints/epoch-N.pt``, ``eval/<protocol>-peer<K>.json``.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import yaml

from dogo.checkpoint import load_checkpoint
from dogo.cohort import Peer, unique_labels
from dogo.config import RunConfig, build_config
from dogo.errors import CheckpointError, DogoError


def default_run_dir(config: RunConfig, root: str | Path = "runs") -> Path:
    """``runs/<config-name>-<YYYYmmdd-HHMMSS>`` (numbered if that exists already)."""
    base = Path(root) / f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, n = base, 1
    while candidate.exists():
        candidate, n = base.with_name(f"{base.name}-{n}"), n + 1
    return candidate


def prepare_run_dir(config: RunConfig, run_dir: str | Path) -> Path:
    """Create a new run directory (refusing an existing non-empty one) and write config.yaml."""
    run_dir = Path(run_dir)
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise DogoError(f"{run_dir}: already exists; pass --resume {run_dir} to continue that run or choose another --out")
    try:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config.dump(), sort_keys=False))
    except OSError as exc:
        raise DogoError(f"{run_dir}: cannot create the run directory ({exc.strerror}); choose another --out") from None
    return run_dir


def checkpoint_path(run_dir: str | Path, checkpoint: str = "last") -> Path:
    """``last`` | ``epoch-N`` | a path -> the checkpoint file."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise DogoError(f"{run_dir}: not a dogo run directory (no config.yaml)")
    candidate = Path(checkpoint)
    if candidate.suffix == ".pt" and candidate.exists():
        return candidate
    path = run_dir / "checkpoints" / f"{checkpoint}.pt"
    if not path.exists():
        found = sorted(p.stem for p in (run_dir / "checkpoints").glob("*.pt"))
        raise CheckpointError(f"{path}: no such checkpoint; found: {', '.join(found) or 'none (run not trained yet)'}")
    return path


def load_trained_peers(run_dir: str | Path, checkpoint: str = "last") -> tuple[RunConfig, list[Peer], Path]:
    """The run's config and its peers with the checkpoint's weights (on the CPU, eval mode)."""
    path = checkpoint_path(run_dir, checkpoint)
    state = load_checkpoint(path)
    config = build_config(state["config"], str(path))
    labels = unique_labels([p.label(i) for i, p in enumerate(config.train.models)])
    peers = []
    for cfg, label, weights in zip(config.train.models, labels, state["peers"]):
        peer = Peer.from_config(cfg, config.dataset.image_size, label)
        peer.load_state_dict(weights)
        peers.append(peer.eval())
    return config, peers, path
