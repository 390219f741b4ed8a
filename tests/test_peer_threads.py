"""Peers side by side (train.concurrent_peers): the same step as one after another, and when auto picks it."""

from __future__ import annotations

import json
import re

import pytest
import torch

from dogo.config import build_config
from dogo.core.errors import ConfigError
from dogo.training.peer_threads import PeerRunner, resolve_concurrent_peers
from dogo.training.step import draw_views, train_step
from dogo.training.trainer import Trainer

CONFIG = {
    "name": "peer-threads",
    "seed": 5,
    "dataset": {"name": "digits", "image_size": 8},
    "train": {
        "epochs": 1,
        "batch_size": 32,
        "precision": "fp32",
        "num_threads": 2,
        "channels_last": "off",
        "models": [
            {"objective": "simclr", "backbone": "resnet18", "width": 0.0625, "distill_weight": 100},
            {"objective": "simsiam", "backbone": "resnet18", "width": 0.0625, "n_proj": 32},
        ],
    },
    "logging": {"log_every": 1, "save_every": 0, "knn_every": 0, "tensorboard": False, "progress": False},
}


def _config(**train):
    data = json.loads(json.dumps(CONFIG))
    data["train"].update(train)
    return build_config(data)


def _one_step(tmp_path, concurrent: bool, dtype: torch.dtype):
    """Losses, gradients and parameters after one step of a fresh cohort (same seed, same views)."""
    torch.set_default_dtype(dtype)
    try:
        trainer = Trainer(_config(concurrent_peers="off"), tmp_path / f"run-{concurrent}-{dtype}", log=lambda m: None)
    finally:
        torch.set_default_dtype(torch.float32)
    cohort = trainer.cohort
    views = draw_views(cohort, trainer.data.images[:32], [11, 12], trainer.device, trainer.settings.channels_last)
    views = [(a.to(dtype), b.to(dtype)) for a, b in views]
    cohort.train(True)
    runner = PeerRunner(len(cohort), concurrent)
    try:
        result = train_step(cohort, views, trainer.kl, trainer.settings.autocast, runner=runner)
    finally:
        runner.close()
    state = {}
    for i, peer in enumerate(cohort.peers):
        state.update({f"{i}.{k}.grad": p.grad.detach().clone() for k, p in peer.named_parameters()})
        state.update({f"{i}.{k}": t.detach().clone() for k, t in peer.state_dict().items() if t.is_floating_point()})
    return result.losses, state


# fp64 shows the step is the same computation; fp32 that what changes with one thread per peer
# (the order of partial sums, amplified by distill_weight=100) stays at rounding level.
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-3)])
def test_side_by_side_step_equals_one_after_another(tmp_path, dtype, tol):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        losses_seq, state_seq = _one_step(tmp_path, False, dtype)
        losses_par, state_par = _one_step(tmp_path, True, dtype)
        assert torch.get_num_threads() == 2  # the workers' own thread counts stay theirs
    finally:
        torch.set_num_threads(threads)
    assert losses_seq.keys() == losses_par.keys()
    for key, value in losses_seq.items():
        assert losses_par[key] == pytest.approx(value, rel=tol, abs=tol), key
    assert state_seq.keys() == state_par.keys()
    for key, want in state_seq.items():
        got = state_par[key]
        assert float((got - want).abs().max()) <= tol * max(1.0, float(want.abs().max())), key
    # The step did something: every peer has a non-zero gradient.
    assert all(float(state_par[f"{i}.encoder.conv1.weight.grad"].abs().sum()) > 0 for i in range(2))


def test_runner_keeps_order_and_reraises():
    runner = PeerRunner(2, True, threads=2)
    try:
        assert runner.threads_per_peer == 1
        assert runner.map(lambda a, b: a * b, [1, 2], [3, 4]) == [3, 8]
        assert runner.map(lambda _: torch.get_num_threads(), [0, 1]) == [1, 1]
        with torch.no_grad():
            assert runner.map(lambda _: torch.is_grad_enabled(), [0, 1]) == [False, False]
        with pytest.raises(ZeroDivisionError):
            runner.map(lambda x: 1 / x, [1, 0])
    finally:
        runner.close()
    sequential = PeerRunner(2, False)
    assert sequential.map(lambda a: a + 1, [1, 2]) == [2, 3] and sequential.threads_per_peer is None


def test_auto_runs_peers_one_after_another_and_on_side_by_side():
    # auto is the deterministic path (two side-by-side runs of one seed are not bit-identical).
    cpu = torch.device("cpu")
    same = [{"backbone": "resnet18", "width": 0.25}, {"backbone": "resnet18", "width": 0.25, "objective": "simsiam"}]
    unequal = [{"backbone": "resnet18", "width": 0.25}, {"backbone": "resnet18", "width": 1.0}]
    assert not resolve_concurrent_peers(_config(models=same), cpu)
    assert not resolve_concurrent_peers(_config(models=unequal), cpu)
    assert resolve_concurrent_peers(_config(models=unequal, concurrent_peers="on"), cpu)
    assert not resolve_concurrent_peers(_config(models=same, concurrent_peers=False), cpu)
    with pytest.raises(ConfigError, match=re.escape("train.compile")):
        resolve_concurrent_peers(_config(models=same, compile=True, concurrent_peers="on"), cpu)


def test_on_is_refused_under_torchrun(monkeypatch):
    from dogo.core import dist

    monkeypatch.setattr(dist, "world_size", lambda: 2)
    same = [{"backbone": "resnet18", "width": 0.25}] * 2
    assert not resolve_concurrent_peers(_config(models=same), torch.device("cpu"))  # auto: off
    with pytest.raises(ConfigError, match="single process"):
        resolve_concurrent_peers(_config(models=same, concurrent_peers="on"), torch.device("cpu"))
