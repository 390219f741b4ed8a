"""``init_from: RUN_DIR[#peer]``: a peer starts from another run's trained peer (two-stage
training; frozen, offline distillation)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from dogo.config import load_config
from dogo.core.errors import ConfigError
from dogo.runs.checkpoint import load_checkpoint
from dogo.runs.rundir import prepare_run_dir
from dogo.training.init_from import parse_init_from
from dogo.training.trainer import Trainer
from test_resume import write_idx_dataset

PEER = {"backbone": "resnet18", "width": 0.0625, "n_proj": 16}


def _config(data: Path, models: list[dict], epochs: int = 1) -> dict:
    return {
        "name": "stage",
        "seed": 1,
        "dataset": {"name": "fashion-mnist", "root": str(data), "image_size": 8, "eval_split": None},
        "train": {"epochs": epochs, "batch_size": 32, "precision": "fp32", "num_threads": 1, "models": models},
        "logging": {"log_every": 2, "save_every": 1, "knn_every": 0, "tensorboard": False, "progress": False},
    }


def _train(tmp_path: Path, name: str, config: dict, lines: list[str] | None = None) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    cfg = load_config(path)
    run_dir = prepare_run_dir(cfg, tmp_path / name)
    Trainer(cfg, run_dir, log=(lines.append if lines is not None else lambda m: None)).fit()
    return run_dir


@pytest.fixture(scope="module")
def stage1(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("stage1")
    data = write_idx_dataset(tmp / "data", count=64)
    run = _train(tmp, "teacher", _config(data, [{"name": "teacher", "objective": "simclr", **PEER}]))
    return data, run


def test_parse_init_from():
    assert parse_init_from("runs/a#teacher") == (Path("runs/a"), "teacher")
    assert parse_init_from("runs/a") == (Path("runs/a"), "0")
    with pytest.raises(ConfigError):
        parse_init_from("#1")


def test_frozen_peer_from_a_run_is_an_offline_teacher(tmp_path, stage1):
    data, teacher_run = stage1
    source = load_checkpoint(teacher_run / "checkpoints" / "last.pt")["peers"][0]
    lines: list[str] = []
    models = [
        {"name": "student", "objective": "simclr", **PEER, "distill_weight": 100},
        {"name": "teacher", "objective": "simclr", **PEER, "trainable": False, "init_from": f"{teacher_run}#teacher"},
    ]
    run = _train(tmp_path, "student", _config(data, models), lines)
    assert any("the whole peer" in line and "teacher" in line for line in lines)
    final = load_checkpoint(run / "checkpoints" / "last.pt")["peers"]
    for key, value in source.items():  # the frozen teacher is the stage-1 peer, unchanged by training
        assert torch.equal(final[1][key], value), key
    assert not torch.equal(final[0]["encoder.conv1.weight"], source["encoder.conv1.weight"])


def test_other_objective_takes_the_encoder_and_copies_its_targets(tmp_path, stage1):
    data, teacher_run = stage1
    source = load_checkpoint(teacher_run / "checkpoints" / "last.pt")["peers"][0]
    cfg_path = tmp_path / "byol.yaml"
    cfg_path.write_text(
        yaml.safe_dump(
            _config(
                data,
                [{"objective": "byol", **PEER, "objective_options": {"hidden": 16}, "init_from": str(teacher_run)}],
            )
        )
    )
    trainer = Trainer(
        load_config(cfg_path), prepare_run_dir(load_config(cfg_path), tmp_path / "byol"), log=lambda m: None
    )
    peer = trainer.cohort.peers[0]
    for key, value in peer.encoder.state_dict().items():
        assert torch.equal(value, source["encoder." + key])
        assert torch.equal(peer.objective.target_encoder.state_dict()[key], source["encoder." + key])


def test_bad_init_from_is_a_config_error(tmp_path, stage1):
    data, teacher_run = stage1
    for init_from, match in ((f"{teacher_run}#nobody", "no such peer"), (str(tmp_path / "missing"), "missing")):
        cfg_path = tmp_path / "bad.yaml"
        cfg_path.write_text(yaml.safe_dump(_config(data, [{"objective": "simclr", **PEER, "init_from": init_from}])))
        with pytest.raises(Exception, match=match):
            Trainer(load_config(cfg_path), tmp_path / "bad", log=lambda m: None)
    cfg_path.write_text(
        yaml.safe_dump(
            _config(
                data, [{"objective": "simclr", "backbone": "resnet18", "width": 0.125, "init_from": str(teacher_run)}]
            )
        )
    )
    with pytest.raises(ConfigError, match="does not fit"):
        Trainer(load_config(cfg_path), tmp_path / "bad", log=lambda m: None)


def test_resume_does_not_read_the_source_again(tmp_path, stage1):
    data, teacher_run = stage1
    source = tmp_path / "copy"
    shutil.copytree(teacher_run, source)
    models = [{"objective": "simclr", **PEER, "init_from": str(source)}]
    run = _train(tmp_path, "two", _config(data, models))
    shutil.rmtree(source)
    trainer = Trainer.resume(run, ["train.epochs=2"], warn=lambda m: None, log=lambda m: None)
    trainer.fit()
    assert trainer.step == 4
