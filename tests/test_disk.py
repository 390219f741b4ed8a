"""Runs that don't fill the disk: keep_last, last.prev.pt gone after a clean finish, the cache cap, dogo clean."""

from __future__ import annotations

import os
import time
from pathlib import Path

from dogo.cli import main
from dogo.guards.ownership import mark
from dogo.runs.disk import cap_cache

CONFIG = """
name: tiny
dataset: {name: digits, image_size: 8, options: {limit: 128}}
train:
  epochs: 4
  batch_size: 64
  precision: fp32
  models:
    - {objective: simclr, backbone: resnet18, width: 0.0625}
logging: {log_every: 1, save_every: 1, keep_last: 2, knn_every: 0, progress: false, tensorboard: false}
"""


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_keep_last_prev_removed_and_clean(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text(CONFIG)
    run = tmp_path / "run"
    assert main(["pretrain", str(tmp_path / "c.yaml"), "--out", str(run), "--quiet"]) == 0
    assert names(run / "checkpoints") == ["epoch-3.pt", "epoch-4.pt", "last.pt"]
    assert main(["evaluate", str(run), "--protocol", "knn", "k=5", "--quiet"]) == 0
    assert any((run / "cache" / "features").iterdir())
    capsys.readouterr()
    assert main(["clean", str(run), "--cache"]) == 0
    assert not (run / "cache").exists() and "freed" in capsys.readouterr().out
    assert main(["clean", str(run)]) == 0
    assert names(run / "checkpoints") == ["last.pt"]
    assert main(["evaluate", str(run), "--protocol", "knn", "k=5", "--quiet"]) == 0  # still evaluable
    assert main(["clean", str(tmp_path / "nothing")]) == 2


def test_cache_cap_removes_least_recently_used(tmp_path):
    mark(tmp_path, "cache")  # a cache dogo made (only those are capped)
    for i, name in enumerate(("old", "mid", "new")):
        path = tmp_path / f"{name}.pt"
        path.write_bytes(b"x" * 400_000)
        os.utime(path, (time.time() - 100 + i, time.time() - 100 + i))
    removed = cap_cache(tmp_path, 0.9)
    assert [p.name for p in removed] == ["old.pt"] and names(tmp_path) == [".dogo", "mid.pt", "new.pt"]
    assert cap_cache(tmp_path, None) == []
