"""fp16 with a GradScaler per peer: config, the CPU refusal, the scalers' checkpointed state, skipped steps.

CUDA is where fp16 runs; on CPU it is refused (runtime.resolve_precision). The scaler logic
itself is device-agnostic, so these tests force fp16 on CPU (patching the refusal) to train a
few steps through ``torch.amp.GradScaler("cpu")`` and resume.
"""

from __future__ import annotations

import re

import pytest
import torch

from dogo.config import load_config
from dogo.core.errors import ConfigError
from dogo.core.runtime import autocast_for, resolve_precision
from dogo.runs.checkpoint import load_checkpoint
from dogo.runs.rundir import prepare_run_dir
from dogo.training import step as step_mod
from dogo.training.trainer import Trainer


def tiny(tmp_path, *extra):
    return load_config(
        None,
        [
            "dataset.name=digits",
            "dataset.image_size=8",
            "dataset.options={limit: 64}",
            "dataset.eval_split=null",
            "train.epochs=1",
            "train.batch_size=16",
            "train.num_threads=1",
            "train.precision=fp16",
            "train.models=[{backbone: resnet18, width: 0.0625, n_proj: 16}, "
            "{backbone: resnet18, width: 0.0625, n_proj: 16}]",
            "logging.knn_every=0",
            "logging.tensorboard=false",
            "logging.progress=false",
            "logging.save_every=0",
            "logging.log_every=1",
            *extra,
        ],
    )


def test_fp16_validates_and_is_refused_on_cpu_with_one_line():
    with pytest.raises(ConfigError, match=re.escape("train.precision=fp16 needs a CUDA GPU")):
        resolve_precision("fp16", torch.device("cpu"))
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert autocast_for("fp16", torch.device("cpu")).fast_dtype == torch.float16


def test_auto_picks_fp16_on_cuda_without_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", torch.device("cuda")) == "fp16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"


@pytest.fixture
def fp16_on_cpu(monkeypatch):
    real = step_mod.resolve_precision
    monkeypatch.setattr(
        step_mod, "resolve_precision", lambda name, device: "fp16" if name == "fp16" else real(name, device)
    )


def test_scalers_are_per_peer_checkpointed_and_resumed(tmp_path, fp16_on_cpu):
    config = tiny(tmp_path, "train.max_steps=2", "logging.save_every_steps=2")
    run = prepare_run_dir(config, tmp_path / "run")
    trainer = Trainer(config, run, log=lambda m: None)
    assert trainer.settings.precision == "fp16" and len(trainer.setup.scalers) == 2
    trainer.setup.scalers[1] = torch.amp.GradScaler("cpu", init_scale=1024.0)  # peers' scalers are independent
    trainer.fit()
    saved = load_checkpoint(run / "checkpoints" / "last.pt")["scaler"]
    assert [s["scale"] for s in saved] == [s.get_scale() for s in trainer.setup.scalers]
    assert saved[0]["scale"] != saved[1]["scale"]
    resumed = Trainer.resume(run, ["train.max_steps=3"], warn=lambda m: None, log=lambda m: None)
    assert [s.get_scale() for s in resumed.setup.scalers] == [s["scale"] for s in saved]
    assert resumed.setup.scalers[0].state_dict()["_growth_tracker"] == saved[0]["_growth_tracker"]


def test_a_non_finite_fp16_step_is_the_scalers_to_skip(tmp_path, fp16_on_cpu):
    trainer = Trainer(tiny(tmp_path, "train.max_steps=1"), tmp_path / "run", log=lambda m: None)
    before = [p.detach().clone() for p in trainer.cohort.peers[0].parameters()]
    scale = trainer.setup.scalers[0].get_scale()
    images = trainer.data.images[trainer.sampler.indices(0)].clone()
    images[:] = 0  # any batch: the first peer's forward is made to overflow below
    peer = trainer.cohort.train_modules[0]
    hook = peer.register_forward_hook(
        lambda m, a, out: type(out)(
            *[
                getattr(out, f.name) * float("inf") if f.name == "loss" else getattr(out, f.name)
                for f in __import__("dataclasses").fields(out)
            ]
        )
    )
    result, _ = step_mod.training_step(trainer.setup, images, trainer.sampler.view_seeds(0, 2), 0)
    hook.remove()
    assert result.finite and "peer 0" in result.bad_term  # not an error, whatever train.nonfinite says
    assert trainer.setup.scalers[0].get_scale() < scale  # the scaler skipped the step and backed off
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.cohort.peers[0].parameters(), strict=True))
