"""End to end: `dogo pretrain` on real data, run directories, determinism, every config schema."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dogo.cli import main
from dogo.runs.checkpoint import load_checkpoint
from formats import cifar10_files, write_png, write_tar_gz

ROOT = Path(__file__).parent.parent
FIXTURES = Path(__file__).parent / "fixtures" / "reference"
SIMCLR = "resnet18x0.0625-simclr"  # the label of tiny_config's first peer (keys peer/<label>/... in metrics.jsonl)


def tiny_config(tmp_path, peers=2) -> Path:
    models = "\n".join(
        f"    - {{objective: {obj}, backbone: resnet18, width: 0.0625, distill_weight: {w}}}"
        for obj, w in [("simclr", 100), ("simsiam", 1), ("simclr", 1)][:peers]
    )
    path = tmp_path / "tiny.yaml"
    path.write_text(f"""
name: tiny
dataset: {{name: digits, image_size: 8, options: {{limit: 128}}}}
train:
  epochs: 2
  batch_size: 32
  precision: fp32
  models:
{models}
logging: {{log_every: 2, save_every: 1, knn_k: 10, progress: false}}
""")
    return path


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def losses(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if "/loss" in k or "collapse" in k or "knn" in k} for row in rows]


def test_pretrain_writes_a_complete_run_directory(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", str(tiny_config(tmp_path)), "--out", str(run)]) == 0
    assert (run / "config.yaml").exists() and list((run / "tb").iterdir())
    assert set(p.name for p in (run / "checkpoints").iterdir()) >= {"epoch-1.pt", "epoch-2.pt", "last.pt"}
    rows = metrics(run)
    steps = [r for r in rows if "images_per_s" in r]
    epochs = [r for r in rows if f"peer/{SIMCLR}/knn_top1" in r]
    assert len(steps) == 4 and len(epochs) == 2  # 128 // 32 = 4 steps an epoch, a line every 2
    for label in (SIMCLR, "resnet18x0.0625-simsiam"):  # peers keyed by label (unnamed: backbone, width, objective)
        for key in ("loss", "loss/ssl", "loss/kl", "lr", "collapse_std"):
            assert np.isfinite(steps[0][f"peer/{label}/{key}"])
        assert 0 <= epochs[-1][f"peer/{label}/knn_top1"] <= 100
    assert steps[0][f"peer/{SIMCLR}/loss/kl"] > 0
    assert not any(re.match(r"peer/\d+/", key) for row in rows for key in row)
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] == 8 and len(state["peers"]) == 2
    err = capsys.readouterr().err
    assert "2 peer(s)" in err


def test_epoch_rows_report_how_long_steps_waited_for_data(tmp_path):
    run = tmp_path / "run"
    assert main(["pretrain", str(tiny_config(tmp_path)), "--out", str(run)]) == 0
    rows = metrics(run)
    epochs = [r for r in rows if "data_wait_share" in r]
    assert len(epochs) == 2 and all(any(k.endswith("/knn_top1") for k in r) for r in epochs)  # the epoch rows
    for row in epochs:
        assert 0 <= row["data_wait_share"] <= 1 and row["data_wait_s"] >= 0
    # the second epoch's wait is a part of that epoch's wall clock
    assert epochs[1]["data_wait_s"] <= epochs[1]["time"] - epochs[0]["time"]
    steps = [r for r in rows if "images_per_s" in r]
    assert not any("data_wait_s" in r for r in steps)  # an epoch's number, not a step's


def test_same_seed_gives_identical_losses(tmp_path):
    config = tiny_config(tmp_path, peers=2)
    for name in ("a", "b"):  # the default settings (precision, layout, peers one after another)
        assert (
            main(["pretrain", str(config), "train.epochs=1", "train.precision=auto", "--out", str(tmp_path / name)])
            == 0
        )
    assert losses(metrics(tmp_path / "a")) == losses(metrics(tmp_path / "b"))
    assert main(["pretrain", str(config), "train.epochs=1", "seed=1", "--out", str(tmp_path / "c")]) == 0
    assert losses(metrics(tmp_path / "a")) != losses(metrics(tmp_path / "c"))


def test_single_peer_is_the_baseline_and_has_no_kl(tmp_path):
    run = tmp_path / "run"
    assert main(["pretrain", str(tiny_config(tmp_path, peers=1)), "train.max_steps=2", "--out", str(run)]) == 0
    assert not any(key.endswith("/loss/kl") for r in metrics(run) for key in r)
    assert any(f"peer/{SIMCLR}/loss" in r for r in metrics(run))


def test_existing_run_directory_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "keep.txt").write_text("mine")
    assert main(["pretrain", str(tiny_config(tmp_path)), "--out", str(run)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (run / "keep.txt").read_text() == "mine"


def cifar_data_dir(directory: Path, per_batch: int) -> None:
    files, _, _ = cifar10_files(np.random.default_rng(0), per_batch=per_batch)
    directory.mkdir(parents=True)
    write_tar_gz(directory / "cifar-10-python.tar.gz", {f"cifar-10-batches-py/{k}": v for k, v in files.items()})


@pytest.mark.parametrize("name", ["template-small.yaml", "simclr-small.yaml", "simsiam-small.yaml"])
def test_reference_configs_train_unchanged(tmp_path, monkeypatch, capsys, name):
    """Files in the reference's schemas, data_dir pointing at CIFAR-format data: one epoch, no overrides."""
    monkeypatch.chdir(tmp_path)
    cifar_data_dir(tmp_path / "data", per_batch=26)  # 5 x 26 = 130 train images: 2 steps of 64
    shutil.copy(FIXTURES / name, tmp_path / name)
    assert main(["pretrain", "--config-file", name, "--out", "run"]) == 0
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "ignored" in err
    rows = metrics(tmp_path / "run")
    assert rows[-1]["step"] == 2 and any(key.endswith("/knn_top1") for key in rows[-1])
    assert (tmp_path / name).read_bytes() == (FIXTURES / name).read_bytes()


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_config_runs_a_step(tmp_path, path):
    """Each shipped config builds its cohort and takes one step (on digits, to need no download)."""
    size = min(32, int(re.search(r"image_size: (\d+)", path.read_text()).group(1)))  # 96 px: same stem, slower

    def args(config: Path, out: Path) -> list[str]:
        return [
            "pretrain",
            str(config),
            "dataset.name=digits",
            "dataset.split=train",
            "dataset.options={}",
            f"dataset.image_size={size}",
            "train.batch_size=8",
            "train.max_steps=1",
            "logging.knn_every=0",
            "logging.progress=false",
            "logging.tensorboard=false",
            "--out",
            str(out),
        ]

    overrides = []
    for i, peer in enumerate(yaml.safe_load(path.read_text())["train"]["models"]):
        if peer.get("init_from"):  # a two-stage example: its stage 1 first (the same shipped pair)
            stage1 = ROOT / "configs" / path.name.replace("stage2-distill", "stage1-teacher")
            if not (tmp_path / "stage1").exists():
                assert main(args(stage1, tmp_path / "stage1")) == 0
            overrides.append(f"train.models.{i}.init_from={tmp_path / 'stage1'}#{peer['init_from'].split('#')[-1]}")
    assert main(args(path, tmp_path / "run") + overrides) == 0
    assert metrics(tmp_path / "run")[0]["step"] == 1


def test_python_api_examples_run(tmp_path, monkeypatch, capsys):
    """The Python examples of docs/python-api.md (the manual, moved there from the README) and the README's."""
    for page, least in (("docs/python-api.md", 2), ("README.md", 1)):
        folder = tmp_path / page.replace("/", "-")
        folder.mkdir()
        monkeypatch.chdir(folder)
        (folder / "configs").symlink_to(ROOT / "configs")
        blocks = re.findall(r"```python\n(.*?)```", (ROOT / page).read_text(), re.S)
        assert len(blocks) >= least, page
        for block in blocks:
            exec(compile(block, page, "exec"), {})
        out = capsys.readouterr().out
        assert "knn" in out, page
        if page == "docs/python-api.md":
            assert out.startswith("0 [")


def test_fashion_mnist_dogo_config_reads_the_debian_data(tmp_path):
    if not Path("/usr/share/datasets/fashion-mnist").exists():
        pytest.skip("dataset-fashion-mnist is not installed")
    run = tmp_path / "run"
    args = [
        "pretrain",
        str(ROOT / "configs" / "fmnist-dogo.yaml"),
        "train.max_steps=1",
        "train.batch_size=16",
        "train.models.1.width=0.125",
        "logging.knn_every=0",
        "logging.progress=false",
        "--out",
        str(run),
    ]
    assert main(args) == 0
    assert metrics(run)[0]["step"] == 1


def test_a_frozen_peer_teaches_but_never_changes(tmp_path):
    from dogo.config import load_config
    from dogo.runs.rundir import prepare_run_dir
    from dogo.training.trainer import Trainer

    config = load_config(
        tiny_config(tmp_path), ["train.models.1.trainable=false", "train.epochs=1", "logging.knn_every=0"]
    )
    trainer = Trainer(config, prepare_run_dir(config, tmp_path / "run"), log=lambda m: None)
    frozen = trainer.cohort.peers[1]
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    assert trainer.cohort.optimizers[1] is None and not any(p.requires_grad for p in frozen.parameters())
    trainer.fit()
    assert not frozen.training  # eval-mode BatchNorm: running statistics never updated
    assert all(torch.equal(before[k], v) for k, v in frozen.state_dict().items())
    rows = [r for r in metrics(tmp_path / "run") if f"peer/{SIMCLR}/loss/kl" in r]
    assert rows and all(r[f"peer/{SIMCLR}/loss/kl"] > 0 for r in rows)  # still a teacher of the student
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["optimizers"][1] is None
    # resumes, and a resume may not unfreeze it
    assert main(["pretrain", "--resume", str(tmp_path / "run"), "train.epochs=2"]) == 0
    assert main(["pretrain", "--resume", str(tmp_path / "run"), "train.models.1.trainable=true"]) == 2


def test_a_folder_without_splits_says_in_one_line_that_the_knn_monitor_and_probes_are_off(tmp_path):
    from dogo.config import load_config
    from dogo.runs.rundir import prepare_run_dir
    from dogo.training.trainer import Trainer

    for label in ("a", "b"):  # root/<class>/<images>: a train split only
        for i in range(8):
            write_png(tmp_path / "data" / label / f"{i}.png", np.full((8, 8, 3), 30 * i, np.uint8))
    config = load_config(
        tiny_config(tmp_path, peers=1),
        [
            "dataset.name=imagefolder",
            f"dataset.root={tmp_path / 'data'}",
            "dataset.options={image_size: 8}",
            "train.batch_size=8",
            "logging.knn_every=1",
        ],
    )
    lines = []
    trainer = Trainer(config, prepare_run_dir(config, tmp_path / "run"), log=lines.append)
    said = [line for line in lines if "kNN monitor" in line]
    assert trainer.monitor is None and len(said) == 1 and "\n" not in said[0]
    assert said[0].startswith("kNN monitor and probes off: no labelled 'test' split (") and "no test/ folder" in said[0]
