"""dogo.runs.checkpoint: atomic hashed saves, the kept previous file, and loading without running code."""

from __future__ import annotations

import errno
import hashlib
import io
import os
from pathlib import Path

import pytest
import torch

from dogo.core.errors import CheckpointError
from dogo.runs import checkpoint
from dogo.runs.checkpoint import (
    FORMAT,
    checkpoint_id,
    load_checkpoint,
    previous_path,
    remove_stale_temporaries,
    save_checkpoint,
)


def state(value: float = 1.0) -> dict:
    return {
        "step": 3,
        "config": {"name": "x", "lr": 0.1},
        "peers": [{"w": torch.full((4, 3), value)}],
        "rng": {"python": [3, list(range(5)), None]},
        "scaler": None,
    }


def message(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


def test_round_trip_is_exact(tmp_path):
    path = tmp_path / "last.pt"
    digest = save_checkpoint(path, state(2.5))
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["peers"][0]["w"], torch.full((4, 3), 2.5))
    assert loaded["config"] == {"name": "x", "lr": 0.1} and loaded["scaler"] is None
    assert checkpoint_id(path) == digest[:16]
    assert not [p for p in tmp_path.iterdir() if p.name != "last.pt"]  # no temp file left


def test_keep_previous_keeps_the_replaced_file(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, state(1.0), keep_previous=True)
    assert not previous_path(path).exists()
    save_checkpoint(path, state(2.0), keep_previous=True)
    assert previous_path(path) == tmp_path / "last.prev.pt"
    assert torch.equal(load_checkpoint(previous_path(path))["peers"][0]["w"], torch.full((4, 3), 1.0))
    assert torch.equal(load_checkpoint(path)["peers"][0]["w"], torch.full((4, 3), 2.0))


def test_truncated_file_is_detected(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, state())
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert "truncated or damaged" in message(error) and str(path) in message(error)


def test_altered_payload_fails_the_hash(tmp_path):
    path = tmp_path / "last.pt"
    buffer = io.BytesIO()
    torch.save(state(), buffer)
    payload = bytearray(buffer.getvalue())
    digest = hashlib.sha256(payload).hexdigest()
    payload[len(payload) // 2] ^= 0xFF  # what a flipped bit on disk looks like after unzipping
    torch.save({"format": FORMAT, "sha256": digest, "payload": torch.frombuffer(payload, dtype=torch.uint8)}, path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert "hash mismatch" in message(error)


class Boom:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickled_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "model": Boom(str(marker))}, path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    text = message(error)
    assert "refused" in text and "weights_only" in text and "would unpickle getattr" in text
    assert not marker.exists()


def test_pickled_code_inside_a_valid_hash_is_refused(tmp_path):
    marker = tmp_path / "code-ran"
    buffer = io.BytesIO()
    torch.save({"step": 1, "x": Boom(str(marker))}, buffer)
    payload = buffer.getvalue()
    path = tmp_path / "last.pt"
    torch.save(
        {
            "format": FORMAT,
            "sha256": hashlib.sha256(payload).hexdigest(),
            "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8),
        },
        path,
    )
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert "refused" in message(error)
    assert not marker.exists()


def test_foreign_state_dict_is_not_a_dogo_checkpoint(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert "not a dogo checkpoint" in message(error)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04" + b"\x00" * 40])
def test_garbage_is_damaged(tmp_path, content):
    path = tmp_path / "last.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert "truncated or damaged" in message(error)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path / "nope.pt")
    assert "no such checkpoint" in message(error)


def fail_writes(monkeypatch, code: int = errno.ENOSPC, after: int = 0) -> None:
    """``os.write`` to a checkpoint temp file raises OSError(code) after ``after`` bytes."""
    real = os.write
    written = {"n": 0}

    def write(fd, data):
        if checkpoint.TEMP_MARK in os.readlink(f"/proc/self/fd/{fd}"):
            if written["n"] >= after:
                raise OSError(code, os.strerror(code))
            data = bytes(data)[: after - written["n"]]
            written["n"] += len(data)
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)


@pytest.mark.parametrize("after", [0, 1000])
def test_full_disk_keeps_the_old_checkpoint(tmp_path, monkeypatch, after):
    path = tmp_path / "last.pt"
    save_checkpoint(path, state(1.0), keep_previous=True)
    before = path.read_bytes()
    fail_writes(monkeypatch, after=after)
    with pytest.raises(CheckpointError) as error:
        save_checkpoint(path, state(2.0), keep_previous=True)
    text = message(error)
    assert "No space left on device" in text and "previous checkpoint is kept" in text
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # temp removed, nothing rotated


def test_failed_rename_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, state(1.0))
    real = os.replace

    def replace(src, dst):
        if Path(dst).name == "last.pt":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(CheckpointError) as error:
        save_checkpoint(path, state(2.0))
    assert "Read-only file system" in message(error)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["peers"][0]["w"], torch.full((4, 3), 1.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_unwritable_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CheckpointError) as error:
        save_checkpoint(blocker / "last.pt", state())
    assert "cannot write the checkpoint" in message(error)


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    dead = tmp_path / ".last.pt.tmp-999999999"
    alive = tmp_path / f".last.pt.tmp-{os.getppid()}"
    dead.write_bytes(b"half")
    alive.write_bytes(b"being written")
    (tmp_path / "last.pt").write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path) == [dead]
    assert alive.exists() and (tmp_path / "last.pt").exists()
