"""Data-parallel training on 2 CPU processes (gloo) against one process with the same global batch.

Two launches: ``torch.multiprocessing`` workers that start their process group through
``dogo.dist.init_from_env`` from torchrun's environment variables (the equivalence of one step, and
an uninterrupted 4-step run), and ``torchrun -m dogo pretrain`` twice (2 steps, then resumed to 4).

Tolerance of the equivalence: ``rtol=1e-4, atol=1e-6`` on float32 losses, gradients and BatchNorm
running statistics. Two ranks sum the same terms in another order (gathered similarity matrices,
BatchNorm sums reduced over ranks, DDP's gradient averaging), so only rounding differs: measured
differences are below 1e-6 relative on the losses and about 1e-5 relative on the largest
gradient differences; a run with per-rank BatchNorm (``sync_batchnorm=off``) misses by far more
(checked below, so the comparison is not vacuous).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from dogo import dist
from dogo.config import build_config
from dogo.rundir import prepare_run_dir
from dogo.train import Trainer, draw_views, train_step

WORLD = 2
GLOBAL_BATCH = 16
TOL = {"rtol": 1e-4, "atol": 1e-6}
LOSS_KEYS = [f"peer/{i}/{t}" for i in range(2) for t in ("loss", "loss/ssl", "loss/kl")]

# A SimCLR peer and a SimSiam peer (both objectives, both pairings of the KL) on 8x8 digits.
CONFIG = {
    "name": "ddp-test",
    "seed": 3,
    "dataset": {"name": "digits", "image_size": 8},
    "train": {
        "epochs": 1, "batch_size": GLOBAL_BATCH, "max_steps": 4, "precision": "fp32", "num_threads": 1,
        "sync_batchnorm": "on",
        "models": [
            {"objective": "simclr", "backbone": "resnet18", "width": 0.0625, "distill_weight": 100,
             "optimizer": {"lr": 1e-3}},
            {"objective": "simsiam", "backbone": "resnet18", "width": 0.0625, "n_proj": 32,
             "optimizer": {"lr": 1e-3}},
        ],
    },
    "logging": {"log_every": 1, "save_every": 0, "knn_every": 0, "tensorboard": False, "progress": False},
}


def _config(**train):
    data = json.loads(json.dumps(CONFIG))
    data["train"].update(train)
    return build_config(data)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _grads_and_buffers(trainer: Trainer) -> dict[str, torch.Tensor]:
    out = {}
    for i, peer in enumerate(trainer.cohort.peers):
        out.update({f"{i}.{k}.grad": p.grad.detach().clone() for k, p in peer.named_parameters()})
        out.update({f"{i}.{k}": b.detach().clone() for k, b in peer.named_buffers() if b.is_floating_point()})
    return out


def _worker(rank: int, port: int, views, out_dir: str) -> None:
    """One rank, started as torchrun would start it (environment variables only)."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    result = {}
    try:
        n = GLOBAL_BATCH // WORLD
        local = [(a[rank * n:(rank + 1) * n], b[rank * n:(rank + 1) * n]) for a, b in views]
        # 1. one step on this rank's slice of the parent's views (the trainer starts the group)
        for sync in ("on", "off"):
            trainer = Trainer(_config(sync_batchnorm=sync), out_dir, log=lambda m: None)
            trainer.cohort.train(True)
            step = train_step(trainer.cohort, local, trainer.kl, trainer.autocast)
            result[sync] = {"losses": step.losses, "state": _grads_and_buffers(trainer)}
        result["world"] = (dist.rank(), dist.world_size(), dist.is_main_process())
        result["params_after_step"] = [p.detach().clone() for p in trainer.cohort.peers[0].parameters()]
        result["seeds"] = [trainer._view_seeds(0, 0), trainer._view_seeds(0, 0), trainer._view_seeds(0, 1)]
        # 2. an uninterrupted 4-step run (rank 0 writes), the reference of the resume test
        Trainer(_config(), Path(out_dir) / "full", log=lambda m: None).fit()
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.cleanup()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Reference step in this process, then the same step (and a 4-step run) on 2 gloo ranks."""
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("ddp")
    reference = Trainer(_config(), out / "reference", log=lambda m: None)
    assert not dist.is_distributed() and reference.cohort.train_modules == reference.cohort.peers
    images = reference.data.images[:GLOBAL_BATCH]
    views = draw_views(reference.cohort, images, [11, 12], reference.device, reference.channels_last)
    reference.cohort.train(True)
    step = train_step(reference.cohort, views, reference.kl, reference.autocast)
    expected = {"losses": step.losses, "state": _grads_and_buffers(reference)}

    prepare_run_dir(_config(), out / "full")
    mp.spawn(_worker, args=(_free_port(), views, str(out)), nprocs=WORLD, join=True)
    results = [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]
    return out, expected, results


def test_two_ranks_compute_the_single_process_step(two_ranks) -> None:
    _, expected, results = two_ranks
    assert [r["world"] for r in results] == [(0, 2, True), (1, 2, False)]
    assert not dist.is_distributed()  # the parent never joined a group

    for r in results:
        got = r["on"]
        for key in LOSS_KEYS:  # logged losses: means over ranks = the global-batch losses
            torch.testing.assert_close(got["losses"][key], expected["losses"][key], **TOL, msg=key)
        assert got["state"].keys() == expected["state"].keys()
        for key, want in expected["state"].items():  # DDP-averaged gradients, synced BN statistics
            torch.testing.assert_close(got["state"][key], want, **TOL, msg=key)
    for a, b in zip(results[0]["params_after_step"], results[1]["params_after_step"]):
        assert torch.equal(a, b)  # one optimiser step on identical averaged gradients

    # Per-rank BatchNorm is a different computation: the tolerance above would catch it.
    off = results[0]["off"]["losses"]
    assert max(abs(off[k] - expected["losses"][k]) / abs(expected["losses"][k]) for k in LOSS_KEYS) > 1e-3


def test_each_rank_draws_its_own_views_reproducibly(two_ranks) -> None:
    _, _, results = two_ranks
    (a0, a0_again, a1), (b0, _, _) = results[0]["seeds"], results[1]["seeds"]
    assert a0 == a0_again and a0 != a1  # the same step gives the same seeds, the next step others
    assert set(a0).isdisjoint(b0)       # and the two ranks draw different augmentations


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--nproc_per_node", str(WORLD), "--master_port", str(_free_port()),
               "-m", "dogo", "pretrain", *args]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _step_rows(run: Path) -> list[int]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [row["step"] for row in rows if "peer/0/loss" in row]


@pytest.mark.slow
def test_torchrun_trains_checkpoints_and_resumes(two_ranks, tmp_path) -> None:
    out, _, _ = two_ranks
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(_config().dump()))
    run = tmp_path / "run"

    first = _torchrun(str(config), "--out", str(run), "train.max_steps=2")
    assert first.stderr.count("run directory:") == 1  # only rank 0 talks
    assert "2 processes (global batch 16)" in first.stderr
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=False)["step"] == 2
    assert _step_rows(run) == [1, 2]

    second = _torchrun("--resume", str(run), "train.max_steps=4")
    assert second.stderr.count("resuming") == 1
    resumed = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    full = torch.load(out / "full" / "checkpoints" / "last.pt", weights_only=False)
    assert resumed["step"] == full["step"] == 4
    assert _step_rows(run) == _step_rows(out / "full") == [1, 2, 3, 4]  # one writer, no duplicate lines
    # 2 steps + resume = 4 uninterrupted steps (same seeds, data order and per-rank views)
    for got, want in zip(resumed["peers"], full["peers"]):
        assert got.keys() == want.keys()
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-6, msg=key)
