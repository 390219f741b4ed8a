"""A folder of one's own images, as the README's "Your own images" says (its commands are read from
README.md and run on a tiny folder of PNGs written here); one image size for the reader, the store and
the views; normalisation statistics from the data, recorded in the run, and older runs keeping theirs."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dogo.cli import main
from formats import write_png

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
#: Appended to the README's pretrain command: the same command, sized for a test (seconds, not minutes).
SMALL = [
    "train.epochs=2",
    "train.batch_size=16",
    "train.models.0.width=0.0625",
    "train.models.1.width=0.0625",
    "dataset.image_size=16",
    "logging.knn_every=1",
    "logging.tensorboard=false",
    "--quiet",
]
CLASSES = {"red": (200, 40, 40), "blue": (30, 60, 210)}


def section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def own_images_commands() -> list[str]:
    """The README's commands for one's own images, in order, without their comments."""
    blocks = re.findall(r"```bash\n(.*?)```", section("Your own images"), re.S)
    assert len(blocks) == 1, "the section has one block of commands"
    return [line.split("  #")[0].strip() for line in blocks[0].splitlines() if line.strip()]


def write_photos(folder: Path, per_class: dict[str, int]) -> None:
    """``folder/<split>/<class>/*.png``: noisy images around each class's colour, of varying shapes."""
    rng = np.random.default_rng(0)
    for split, count in per_class.items():
        for name, colour in CLASSES.items():
            for i in range(count):
                shape = (20, 24) if i % 2 else (24, 18)
                pixels = np.clip(rng.normal(colour, 40, (*shape, 3)), 0, 255).astype(np.uint8)
                write_png(folder / split / name / f"{i:03d}.png", pixels)


@pytest.fixture(scope="module")
def walked(tmp_path_factory) -> Path:
    """A folder as the README lays it out, and every command of the section run on it (from that folder)."""
    import os

    home = tmp_path_factory.mktemp("own-images")
    layout = section("Your own images")
    assert "photos/train/cat/" in layout and "photos/test/cat/" in layout
    write_photos(home / "photos", {"train": 16, "test": 6})
    commands = own_images_commands()
    assert [shlex.split(c)[1] for c in commands] == ["pretrain", "evaluate", "report", "export", "embed"]
    before = Path.cwd()
    os.chdir(home)
    try:
        for command in commands:
            argv = shlex.split(command)
            assert argv[0] == "dogo"
            extra = SMALL if argv[1] == "pretrain" else []
            assert main(argv[1:] + extra) == 0, command
    finally:
        os.chdir(before)
    return home


def test_the_readmes_own_images_commands_train_evaluate_report_export_and_embed(walked):
    run = walked / "runs" / "photos"
    assert (run / "checkpoints" / "last.pt").is_file()
    results = sorted(p.name for p in (run / "eval").glob("linear-peer*.json"))
    assert results == ["linear-peer0.json", "linear-peer1.json"]
    assert (run / "report" / "report.md").is_file()
    for name in ("student.safetensors", "student.safetensors.json", "student.py"):
        assert (walked / name).is_file(), name
    features = np.load(walked / "photos-test.npy")
    assert features.shape[0] == 2 * 6
    rows = json.loads((walked / "photos-test.npy.json").read_text())["data"]["files"]
    assert rows[0] == "blue/000.png" and len(rows) == 12


def test_the_run_normalises_with_the_folders_statistics_and_records_them(walked):
    from dogo.data import load_dataset
    from dogo.data.stats import channel_stats

    run = walked / "runs" / "photos"
    train = load_dataset("imagefolder", root=walked / "photos", split="train", image_size=16)
    mean, std = channel_stats(train.images)
    recorded = yaml.safe_load((run / "config.yaml").read_text())["dataset"]["normalization"]
    assert recorded == {"mean": list(mean), "std": list(std)}
    assert mean[1] < 0.3  # red and blue images: little green, far from CIFAR-10's 0.48
    sidecar = json.loads((walked / "student.safetensors.json").read_text())
    assert sidecar["normalization"] == {"mean": list(mean), "std": list(std)}
    assert sidecar["preprocessing"]["mean"] == list(mean)
    assert f"MEAN = {tuple(mean)!r}" in (walked / "student.py").read_text()


def test_channel_stats_are_the_pixels_mean_and_std():
    from dogo.data.stats import channel_stats

    rgb = torch.randint(0, 256, (5, 3, 4, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean, std = channel_stats(rgb)
    pixels = rgb.numpy().transpose(1, 0, 2, 3).reshape(3, -1) / 255.0
    assert np.allclose(mean, pixels.mean(1), atol=1e-4) and np.allclose(std, pixels.std(1), atol=1e-4)
    grey_mean, grey_std = channel_stats(rgb[:, :1])
    assert grey_mean == (mean[0],) * 3 and grey_std == (std[0],) * 3


def test_a_store_prepared_at_the_runs_image_size_is_the_one_the_run_reads(tmp_path, monkeypatch, capsys):
    """One size: `dogo prepare --image-size 16` and `dataset.image_size: 16` name the same store, and the
    store records the statistics, so the run does not read the images for them."""
    import dogo.data.stats
    from dogo.data.store import read_meta

    write_photos(tmp_path / "photos", {"train": 8, "test": 2})
    monkeypatch.setenv("DOGO_DATA", str(tmp_path / "data"))
    assert main(["prepare", "imagefolder", "--root", str(tmp_path / "photos"), "--image-size", "16"]) == 0
    stores = sorted((tmp_path / "data" / "stores").iterdir())
    assert len(stores) == 1 and read_meta(stores[0])["shape"] == [3, 16, 16]
    meta = read_meta(stores[0])
    monkeypatch.setattr(dogo.data.stats, "channel_stats", lambda images: pytest.fail("statistics computed again"))
    argv = [
        "pretrain",
        "own-images",
        f"dataset.root={tmp_path / 'photos'}",
        "dataset.image_size=16",
        "dataset.eval_split=null",
        "train.max_steps=1",
        "train.batch_size=8",
        "train.models.0.width=0.0625",
        "train.models.1.width=0.0625",
        "logging.tensorboard=false",
        "--out",
        str(tmp_path / "run"),
        "--quiet",
    ]
    assert main(argv) == 0
    assert sorted((tmp_path / "data" / "stores").iterdir()) == stores  # no second store at another size
    recorded = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["dataset"]["normalization"]
    assert recorded == {"mean": meta["mean"], "std": meta["std"]}


def test_runs_recorded_before_statistics_keep_the_reference_ones(walked, tmp_path, monkeypatch):
    """A run whose config has no dataset.normalization (every run before it existed) evaluates, exports and
    resumes with the statistics it was trained with: the reference's, keyed on the image size."""
    import dogo
    from dogo.runs.checkpoint import load_checkpoint, save_checkpoint
    from dogo.training.trainer import Trainer
    from dogo.views import normalization_for

    old = tmp_path / "old"
    shutil.copytree(walked / "runs" / "photos", old, ignore=shutil.ignore_patterns("cache", "eval"))
    state = load_checkpoint(old / "checkpoints" / "last.pt")
    del state["config"]["dataset"]["normalization"]
    save_checkpoint(old / "checkpoints" / "last.pt", state)
    config = yaml.safe_load((old / "config.yaml").read_text())
    del config["dataset"]["normalization"]
    (old / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    monkeypatch.chdir(walked)  # the run's dataset.root is photos, relative to where it was trained
    _, preprocess = dogo.load_encoder(old, peer="student")
    assert (preprocess.mean, preprocess.std) == normalization_for(16)
    assert dogo.evaluate(old, "knn", {"k": 5}, peer="student")[0]["summary"]["knn"] >= 0
    from dogo.runs.runlock import release

    trainer = Trainer.resume(old, ["train.epochs=3"], log=lambda message: None)
    release(old)
    assert trainer.normalization == normalization_for(16)
    assert trainer.cohort.peers[0].recipe.mean == normalization_for(16)[0]


def test_reference_configs_normalise_as_the_reference():
    from dogo.config import load_config

    config = load_config(ROOT / "tests" / "fixtures" / "reference" / "template.yaml", warn=lambda message: None)
    assert config.dataset.normalization == "reference"
