"""Copying a study's small result files elsewhere, so that its report can be rebuilt without training."""

from __future__ import annotations

import shutil
from pathlib import Path

from dogo.fileio import atomic_path

__all__ = ["PUBLISHED", "publish"]


#: What a study's report reads: small text files, never checkpoints or caches.
PUBLISHED = ("study.yaml", "arms/*.yaml", "*/seed-*.json", "*/seed-*/config.yaml", "*/seed-*/metrics.jsonl",
             "*/seed-*/eval/*.json")


def publish(study_dir: Path, dest: Path) -> Path:
    """Copy the files the report reads (configs, records, metrics, results) to ``dest``."""
    for pattern in PUBLISHED:
        for path in sorted(study_dir.glob(pattern)):
            target = dest / path.relative_to(study_dir)
            if target.exists() and target.read_bytes() == path.read_bytes():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp:
                shutil.copyfile(path, tmp)
    return dest
