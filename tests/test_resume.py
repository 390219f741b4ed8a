"""Runs that survive: exact resume after a kill, fallbacks, config checks on resume, non-finite losses.

The end-to-end test runs ``python -m dogo pretrain`` as a subprocess, kills it with SIGKILL at
several moments (between steps, half-way through writing a checkpoint, between keeping the
previous checkpoint and the final rename), resumes each time with ``dogo pretrain --resume
RUN_DIR``, and checks that the final weights, optimiser states, RNG states, epoch checkpoints and
metrics are bit-identical to an uninterrupted run (CPU, fp32, one thread). The kills inside a
save come from a small wrapper script (below) that patches :mod:`dogo.runs.checkpoint` in the child
process only: dogo itself has no test hooks.

The other tests run in-process on a tiny IDX dataset written here (no scikit-learn import):
SIGTERM (a checkpoint, a message, exit status 143, then an exact resume), fallbacks from damaged
checkpoints, the config check on resume, and non-finite losses (stop or skip).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dogo.cli import main
from dogo.config import load_config
from dogo.runs.checkpoint import load_checkpoint
from dogo.training.log import TIMING_KEYS
from dogo.training.trainer import Trainer

STEPS_PER_EPOCH = 6  # 192 images / batch 32
EPOCHS = 3


# --------------------------------------------------------------------------------- fixtures


def write_idx_dataset(folder: Path, count: int = 192, seed: int = 0) -> Path:
    """A tiny Fashion-MNIST-format train split (IDX, uncompressed) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=count, dtype=np.uint8)
    (folder / "train-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, count, 28, 28) + images.tobytes())
    (folder / "train-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, count) + labels.tobytes())
    return folder


def config_dict(data: Path, **logging) -> dict:
    """Two tiny peers (SimCLR + SimSiam, cosine and SGD) so every kind of state is exercised."""
    return {
        "name": "robust",
        "seed": 3,
        "dataset": {"name": "fashion-mnist", "root": str(data), "image_size": 8, "eval_split": None},
        "train": {
            "epochs": EPOCHS,
            "batch_size": 32,
            "num_threads": 1,  # precision, layout, peers: the defaults
            "models": [
                {
                    "objective": "simclr",
                    "backbone": "resnet18",
                    "width": 0.0625,
                    "n_proj": 16,
                    "schedule": {"name": "cosine", "warmup_epochs": 1},
                },
                {
                    "objective": "simsiam",
                    "backbone": "resnet18",
                    "width": 0.0625,
                    "n_proj": 16,
                    "optimizer": {"name": "sgd", "lr": 0.05},
                },
            ],
        },
        # log_every does not divide save_every_steps: checkpoints fall inside a logging window.
        "logging": {
            "log_every": 2,
            "save_every": 1,
            "save_every_steps": 3,
            "knn_every": 0,
            "tensorboard": False,
            "progress": False,
            "keep_previous": True,
            **logging,
        },
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_idx_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def config_file(tmp_path_factory, data) -> Path:
    path = tmp_path_factory.mktemp("config") / "robust.yaml"
    path.write_text(yaml.safe_dump(config_dict(data)))
    return path


@pytest.fixture(autouse=True)
def _threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def metric_rows(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the timing fields."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


def assert_same_state(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    assert a["config"] == b["config"]
    for peer_a, peer_b in zip(a["peers"], b["peers"], strict=True):
        assert peer_a.keys() == peer_b.keys()
        for key in peer_a:
            assert torch.equal(peer_a[key], peer_b[key]), key
    for opt_a, opt_b in zip(a["optimizers"], b["optimizers"], strict=True):
        assert opt_a["param_groups"] == opt_b["param_groups"]
        for index, state in opt_a["state"].items():
            for key, value in state.items():
                other = opt_b["state"][index][key]
                assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other
    for key in ("torch", "numpy"):
        ta, tb = a["rng"][key], b["rng"][key]
        assert torch.equal(ta, tb) if isinstance(ta, torch.Tensor) else torch.equal(ta["keys"], tb["keys"])
    assert a["rng"]["python"] == b["rng"]["python"]


def run_in_process(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


# ------------------------------------------------------------------------ kill and resume

KILLER = """\
import os, signal, sys
import dogo.runs.checkpoint as checkpoint

mode, at = os.environ["DOGO_TEST_KILL_MODE"], int(os.environ["DOGO_TEST_KILL_AT"])
calls = 0
if mode == "mid-write":  # the temporary file is half written
    real_write = checkpoint._write_all
    def write(fd, data):
        global calls
        calls += ".last.pt.tmp-" in os.readlink(f"/proc/self/fd/{fd}")
        if calls == at:
            os.write(fd, data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        real_write(fd, data)
    checkpoint._write_all = write
elif mode == "before-rename":  # written and fsynced, last.prev.pt updated, not yet renamed
    real_replace = os.replace
    def replace(src, dst):
        global calls
        if os.path.basename(dst) == "last.pt":
            calls += 1
            if calls == at:
                os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst)
    checkpoint.os.replace = replace
from dogo.cli import main
sys.exit(main(sys.argv[1:]))
"""


def child_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    env.pop("DOGO_DATA", None)
    return env


def start(args: list[str], script: Path | None = None, **env: str) -> subprocess.Popen:
    command = [sys.executable, str(script)] if script else [sys.executable, "-m", "dogo"]
    return subprocess.Popen(
        [*command, "pretrain", *args],
        env={**child_env(), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def step_rows(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if '"images_per_s"' in line)  # step rows, not epoch rows


def wait_rows(proc: subprocess.Popen, run_dir: Path, rows: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while step_rows(run_dir) < rows:
        assert proc.poll() is None, f"finished before {rows} rows: {proc.communicate()[1]}"
        assert time.monotonic() < deadline, "timed out waiting for metrics"
        time.sleep(0.01)


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


@pytest.mark.slow
def test_killed_and_resumed_run_is_bit_identical(tmp_path, config_file):
    """SIGKILL between steps, half-way through a checkpoint write and just before its rename."""
    reference_dir, run_dir = tmp_path / "reference", tmp_path / "run"
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)

    # 1. SIGKILL at an arbitrary moment after the third metrics row (step >= 6).
    proc = start([str(config_file), "--out", str(run_dir)])
    wait_rows(proc, run_dir, 3)
    proc.kill()
    assert finish(proc)[0] == -signal.SIGKILL

    # 2. SIGKILL half-way through writing the second last.pt after resuming (the uninterrupted
    #    reference trains in this process meanwhile).
    proc = start(["--resume", str(run_dir)], killer, DOGO_TEST_KILL_MODE="mid-write", DOGO_TEST_KILL_AT="2")
    train(config_file, reference_dir)
    code, err = finish(proc)
    assert code == -signal.SIGKILL, err
    assert list((run_dir / "checkpoints").glob(".last.pt.tmp-*")), "the kill should leave a partial temp file"

    # 3. SIGKILL after the new checkpoint is written and last.prev.pt updated, before the rename.
    proc = start(["--resume", str(run_dir)], killer, DOGO_TEST_KILL_MODE="before-rename", DOGO_TEST_KILL_AT="2")
    code, err = finish(proc)
    assert code == -signal.SIGKILL, err
    assert len(list((run_dir / "checkpoints").glob(".last.pt.tmp-*"))) == 1, "only this kill's temp file is left"
    stopped_at = load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"]

    # 4. Resume to the end.
    proc = start(["--resume", str(run_dir)])
    code, err = finish(proc)
    assert code == 0, err
    assert f"resuming {run_dir} at step {stopped_at}" in err and "Traceback" not in err

    final, expected = (load_checkpoint(d / "checkpoints" / "last.pt") for d in (run_dir, reference_dir))
    assert final["step"] == STEPS_PER_EPOCH * EPOCHS
    assert_same_state(final, expected)
    for epoch in range(1, EPOCHS + 1):
        name = f"epoch-{epoch}.pt"
        assert_same_state(
            load_checkpoint(run_dir / "checkpoints" / name), load_checkpoint(reference_dir / "checkpoints" / name)
        )
    assert metric_rows(run_dir) == metric_rows(reference_dir)
    log = [json.loads(line) for line in (run_dir / "resume-log.jsonl").read_text().splitlines()]
    assert len(log) == 3 and all(entry["changes"] == {} for entry in log)
    assert not list((run_dir / "checkpoints").glob(".*"))


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path, config_file, finished, capsys, monkeypatch):
    """SIGTERM (here sent by the process to itself during step 5) -> checkpoint at step 5, exit 143."""
    from dogo.training import cohort

    real, calls = cohort.Peer.forward, {"n": 0}

    def forward(self, *views, autocast=None):
        calls["n"] += 1
        if calls["n"] == 2 * 5:  # the second peer of the fifth step
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, *views, autocast=autocast)

    monkeypatch.setattr(cohort.Peer, "forward", forward)
    run_dir = tmp_path / "run"
    handler = signal.getsignal(signal.SIGTERM)
    code, err = run_in_process(
        [
            "pretrain",
            str(config_file),
            "--out",
            str(run_dir),
            "train.max_steps=10",
            "logging.log_every=3",
            "logging.save_every_steps=2",
        ],
        capsys,
    )
    assert code == 128 + signal.SIGTERM
    assert "stopped by SIGTERM at step 5; resume with `dogo pretrain --resume" in err and "Traceback" not in err
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == 5
    assert signal.getsignal(signal.SIGTERM) is handler  # dogo's handler is uninstalled
    monkeypatch.undo()
    code, err = run_in_process(["pretrain", "--resume", str(run_dir)], capsys)
    assert code == 0, err
    assert_same_state(
        load_checkpoint(run_dir / "checkpoints" / "last.pt"), load_checkpoint(finished / "checkpoints" / "last.pt")
    )
    assert metric_rows(run_dir) == metric_rows(finished)


# ---------------------------------------------------------------------- in-process resumes


TARGET_NETWORK_PEERS = {
    # objectives whose state includes target networks (EMA) and, for MoCo, a queue of keys
    "byol": {
        "objective": "byol",
        "backbone": "resnet18",
        "width": 0.0625,
        "n_proj": 16,
        "objective_options": {"hidden": 32},
    },
    "moco": {
        "objective": "moco",
        "backbone": "resnet18",
        "width": 0.0625,
        "n_proj": 16,
        "objective_options": {"hidden": 32, "queue_size": 40, "base_momentum": 0.9},
    },
    # DINO on a ViT next to the SimCLR ResNet: a CNN + ViT cohort, the teacher, the centre (a buffer),
    # multi-crop views and the prototypes frozen for the first of the two epochs
    "dino-vit": {
        "objective": "dino",
        "backbone": "vit_tiny",
        "width": 0.0625,
        "n_proj": 16,
        "objective_options": {"hidden": 32, "bottleneck": 8, "local_crops": 2, "warmup_teacher_epochs": 2},
    },
}


@pytest.mark.slow
@pytest.mark.parametrize("objective", sorted(TARGET_NETWORK_PEERS))
def test_killed_run_with_target_networks_resumes_bit_identical(tmp_path, data, objective):
    """SIGKILL a cohort of a target-network objective + SimCLR, resume: the same weights (EMA
    targets, queues), optimiser states and metrics as an uninterrupted run."""
    config = config_dict(data)
    config["train"]["epochs"] = 2
    config["train"]["models"] = [TARGET_NETWORK_PEERS[objective], config["train"]["models"][0]]
    config_file = tmp_path / f"{objective}.yaml"
    config_file.write_text(yaml.safe_dump(config))
    reference_dir, run_dir = tmp_path / "reference", tmp_path / "run"
    proc = start([str(config_file), "--out", str(run_dir)])
    wait_rows(proc, run_dir, 2)
    proc.kill()
    assert finish(proc)[0] == -signal.SIGKILL
    stopped_at = load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"]
    assert 0 < stopped_at < 2 * STEPS_PER_EPOCH
    proc = start(["--resume", str(run_dir)])
    train(config_file, reference_dir)
    code, err = finish(proc)
    assert code == 0, err
    final, expected = (load_checkpoint(d / "checkpoints" / "last.pt") for d in (run_dir, reference_dir))
    assert any(".target_" in key for key in final["peers"][0])
    if objective == "moco":  # the queue is state: filled and wrapped around by now
        assert int(final["peers"][0]["objective.queue_ptr"]) == (2 * STEPS_PER_EPOCH * 32) % 40
    if objective == "dino-vit":  # the centre is state, and it has moved
        assert final["peers"][0]["objective.center"].abs().sum() > 0
    assert_same_state(final, expected)
    assert metric_rows(run_dir) == metric_rows(reference_dir)


def train(config_file: Path, out: Path, *overrides: str) -> Path:
    config = load_config(config_file, list(overrides))
    from dogo.runs.rundir import prepare_run_dir

    run_dir = prepare_run_dir(config, out)
    Trainer(config, run_dir, log=lambda m: None).fit()
    return run_dir


def test_checkpoint_holds_everything_resume_needs(tmp_path, config_file):
    run_dir = train(config_file, tmp_path / "run", "train.max_steps=4")
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert state["step"] == 4 and state["epoch"] == 0 and state["step_in_epoch"] == 4
    assert len(state["peers"]) == len(state["optimizers"]) == len(state["lr"]) == 2
    assert state["scaler"] is None
    assert set(state["rng"]) >= {"torch", "numpy", "python"}
    from dogo.data.source import load_split
    from dogo.data.stats import channel_stats

    expected = load_config(config_file, ["train.max_steps=4"]).dump()
    stats = channel_stats(load_split(load_config(config_file).dataset, "train").images)
    # dataset.normalization: data, resolved to the training split's statistics when the run started
    expected["dataset"]["normalization"] = {"mean": list(stats[0]), "std": list(stats[1])}
    assert state["config"] == expected
    assert state["metrics_bytes"] == (run_dir / "metrics.jsonl").stat().st_size
    assert state["metrics_window"] == []  # log_every 2 divides 4
    assert load_checkpoint(run_dir / "checkpoints" / "last.prev.pt")["step"] == 3


def copy_run(run_dir: Path, to: Path) -> Path:
    shutil.copytree(run_dir, to)
    # The config names no run directory, so the copy is a run of its own.
    return to


@pytest.fixture(scope="module")
def finished(tmp_path_factory, config_file) -> Path:
    """A run of 10 steps: checkpoints at 2, 4, 6 (+ epoch-1.pt), 8, 10; metrics rows at 3, 6, 9, 10."""
    return train(
        config_file,
        tmp_path_factory.mktemp("finished") / "run",
        "train.max_steps=10",
        "logging.log_every=3",
        "logging.save_every_steps=2",
    )


def test_resume_continues_inside_an_epoch_exactly(tmp_path, finished, capsys):
    run_dir = copy_run(finished, tmp_path / "run")
    checkpoints = run_dir / "checkpoints"
    os.replace(checkpoints / "last.prev.pt", checkpoints / "last.pt")  # as if killed after step 8
    assert load_checkpoint(checkpoints / "last.pt")["metrics_window"]  # steps 7 and 8 not yet logged
    code, err = run_in_process(["pretrain", "--resume", str(run_dir)], capsys)
    assert code == 0, err
    assert f"resuming {run_dir} at step 8" in err
    assert_same_state(load_checkpoint(checkpoints / "last.pt"), load_checkpoint(finished / "checkpoints" / "last.pt"))
    assert metric_rows(run_dir) == metric_rows(finished)
    entry = json.loads((run_dir / "resume-log.jsonl").read_text())
    assert entry["step"] == 8 and entry["overrides"] == [] and entry["changes"] == {}


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "flip":
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :])
    else:
        path.unlink()


@pytest.mark.parametrize("how", ["truncate", "flip", "missing"])
def test_damaged_last_checkpoint_falls_back_to_the_previous_one(tmp_path, finished, capsys, how):
    run_dir = copy_run(finished, tmp_path / "run")
    (run_dir / "checkpoints" / "epoch-2.pt").unlink()  # written at the end (step 10), like last.pt
    damage(run_dir / "checkpoints" / "last.pt", how)  # step 10; last.prev.pt holds step 8
    code, err = run_in_process(["pretrain", "--resume", str(run_dir)], capsys)
    assert code == 0, err
    assert err.startswith("warning: ") and "falling back to" in err and "last.prev.pt (step 8)" in err
    assert_same_state(
        load_checkpoint(run_dir / "checkpoints" / "last.pt"), load_checkpoint(finished / "checkpoints" / "last.pt")
    )
    assert metric_rows(run_dir) == metric_rows(finished)
    assert "fallback" in json.loads((run_dir / "resume-log.jsonl").read_text())


def test_falls_back_to_the_newest_epoch_checkpoint(tmp_path, finished, capsys):
    run_dir = copy_run(finished, tmp_path / "run")
    damage(run_dir / "checkpoints" / "last.pt", "truncate")
    damage(run_dir / "checkpoints" / "last.prev.pt", "flip")
    damage(run_dir / "checkpoints" / "epoch-2.pt", "missing")
    code, err = run_in_process(["pretrain", "--resume", str(run_dir)], capsys)
    assert code == 0, err
    assert "epoch-1.pt (step 6)" in err
    assert_same_state(
        load_checkpoint(run_dir / "checkpoints" / "last.pt"), load_checkpoint(finished / "checkpoints" / "last.pt")
    )


def test_no_usable_checkpoint_is_one_line_error(tmp_path, config_file, capsys):
    run_dir = train(config_file, tmp_path / "run", "train.max_steps=2", "logging.save_every_steps=1")
    for path in (run_dir / "checkpoints").glob("*.pt"):  # last, last.prev, epoch-1
        damage(path, "truncate")
    before = (run_dir / "metrics.jsonl").read_bytes()
    code, err = run_in_process(["pretrain", "--resume", str(run_dir)], capsys)
    assert code == 2 and err.count("\n") == 1 and "no usable checkpoint" in err
    assert (run_dir / "metrics.jsonl").read_bytes() == before


def test_changed_config_is_refused_unless_passed_as_override(tmp_path, config_file, capsys):
    run_dir = train(config_file, tmp_path / "run", "train.max_steps=3")
    config_path = run_dir / "config.yaml"
    edited = yaml.safe_load(config_path.read_text())
    edited["train"]["models"][1]["optimizer"]["lr"] = 0.5
    edited["distill"]["temperature"] = 0.2
    edited["logging"]["log_every"] = 1  # does not alter training: accepted silently
    config_path.write_text(yaml.safe_dump(edited))
    code, err = run_in_process(["pretrain", "--resume", str(run_dir)], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "train.models.1.optimizer.lr (checkpoint 0.05, config.yaml 0.5)" in err
    assert "distill.temperature" in err and "log_every" not in err

    code, err = run_in_process(
        [
            "pretrain",
            "--resume",
            str(run_dir),
            "train.models.1.optimizer.lr=0.5",
            "distill.temperature=0.2",
            "train.max_steps=4",
        ],
        capsys,
    )
    assert code == 0, err
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert state["step"] == 4 and state["config"]["distill"]["temperature"] == 0.2
    entry = json.loads((run_dir / "resume-log.jsonl").read_text())
    assert entry["changes"]["train.models.1.optimizer.lr"] == [0.05, 0.5]
    assert entry["changes"]["logging.log_every"] == [2, 1]


def test_more_epochs_on_resume(tmp_path, config_file, capsys):
    run_dir = train(config_file, tmp_path / "run", "train.epochs=1")
    code, err = run_in_process(["pretrain", "--resume", str(run_dir), "train.epochs=2"], capsys)
    assert code == 0, err
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == 2 * STEPS_PER_EPOCH
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["epochs"] == 2


@pytest.mark.parametrize(
    "override",
    ["train.models.0.width=0.125", "train.batch_size=16", "dataset.image_size=16", "train.models.1.objective=simclr"],
)
def test_settings_the_checkpoint_depends_on_cannot_change(tmp_path, config_file, capsys, override):
    run_dir = train(config_file, tmp_path / "run", "train.max_steps=3")
    before = {p.name: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    code, err = run_in_process(["pretrain", "--resume", str(run_dir), override], capsys)
    assert code == 2 and err.count("\n") == 1
    assert override.split("=")[0] in err and "start a new run" in err
    assert {p.name: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


# ---------------------------------------------------------------------------- non-finite


def poison(monkeypatch, objective: str, from_step: int) -> None:
    """Make the SSL loss of the peer with ``objective`` NaN from its ``from_step``-th forward on."""
    from dogo.training import cohort

    real = cohort.Peer.forward
    calls = {"n": 0}

    def forward(self, *views, autocast=None):
        out = real(self, *views, autocast=autocast)
        if self.objective.name == objective:
            calls["n"] += 1
            if calls["n"] >= from_step:
                out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(cohort.Peer, "forward", forward)


def test_nonfinite_loss_stops_naming_peer_and_term_and_keeps_checkpoint(tmp_path, config_file, capsys, monkeypatch):
    poison(monkeypatch, "simsiam", from_step=5)  # the 5th step is index 4; checkpoint at step 3
    code, err = run_in_process(["pretrain", str(config_file), "--out", str(tmp_path / "run")], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and "Traceback" not in err
    assert lines[-1].startswith("dogo pretrain: error: non-finite peer 1 (resnet18x0.0625-simsiam) loss/ssl at step 4")
    assert "last good checkpoint" in lines[-1]
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["step"] == 3 and all(
        torch.isfinite(v).all() for v in state["peers"][1].values() if v.is_floating_point()
    )


def test_nonfinite_loss_skip_continues(tmp_path, config_file, capsys, monkeypatch):
    poison(monkeypatch, "simsiam", from_step=5)
    code, err = run_in_process(
        ["pretrain", str(config_file), "--out", str(tmp_path / "run"), "train.nonfinite=skip", "train.max_steps=6"],
        capsys,
    )
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("loss/ssl" in row.get("skipped", "") for row in rows)
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["step"] == 6
    assert all(torch.isfinite(v).all() for peer in state["peers"] for v in peer.values() if v.is_floating_point())
