"""What the guard families (tests/test_guards_*.py) share: one tiny world per module, and the commands.

:func:`build_world` makes, once per test module, what every command needs: a trained run (scikit-
learn's digits at 8 px, two steps, one kNN evaluation so it has results and a feature cache), a
folder of images, an image store and a finished study directory (its files written as ``dogo
study`` writes them, with the run as its one arm x seed, so that no training runs again). A test
copies what it changes into its own ``tmp_path``.

:data:`WRITERS` lists every command that writes files for the user, each as a function from a
world copied into ``tmp`` to the argv of one successful invocation; a new command joins the
families by adding itself here.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from dogo.cli import main


def tiny_config(dataset: dict | None = None, train: dict | None = None, **sections) -> dict:
    """A tiny valid run: one ResNet-18 x1/16 peer on digits at 8 px, two steps, a checkpoint per step, with the
    given changes to its ``dataset`` and ``train`` sections and whole top-level keys (``name``, ``distill``...)."""
    return {
        "name": "tiny",
        "dataset": {"name": "digits", "image_size": 8, "eval_split": "test", **(dataset or {})},
        "train": {
            "epochs": 1,
            "batch_size": 8,
            "precision": "fp32",
            "num_threads": 1,
            "max_steps": 2,
            "models": [{"backbone": "resnet18", "width": 0.0625, "n_proj": 16}],
            **(train or {}),
        },
        "logging": {
            "log_every": 1,
            "save_every": 0,
            "save_every_steps": 1,
            "knn_every": 0,
            "tensorboard": False,
            "progress": False,
        },
        **sections,
    }


def digits_config(**train) -> dict:
    """:func:`tiny_config` with changes to its ``train`` section only."""
    return tiny_config(train=train)


@dataclass
class World:
    root: Path
    config: Path  # the run's config file
    run: Path  # a trained, evaluated run directory
    photos: Path  # a folder of 8 PNG images in two class folders
    store: Path  # an image store of digits/train
    study: Path  # a finished study directory (one arm, one seed: the run)
    study_file: Path

    def copy(self, tmp: Path) -> World:
        """Everything copied under ``tmp`` (paths in the copies point at the copies)."""
        names = {
            "config": "run.yaml",
            "run": "run",
            "photos": "photos",
            "store": "store",
            "study": "study",
            "study_file": "study.yaml",
        }
        for field, name in names.items():
            source = getattr(self, field)
            if source.is_dir():
                shutil.copytree(source, tmp / name, symlinks=True)
            else:
                shutil.copy2(source, tmp / name)
        world = World(tmp, *(tmp / names[f] for f in names))
        study_text = (world.study / "study.yaml").read_text().replace(str(self.config), str(world.config))
        (world.study / "study.yaml").write_text(study_text)
        world.study_file.write_text(study_text)
        return world


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    threads = torch.get_num_threads()
    try:
        code = main([*argv])
    except SystemExit as exc:  # argparse's own refusals
        code = exc.code if isinstance(exc.code, int) else 2
    finally:
        torch.set_num_threads(threads)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def build_world(root: Path) -> World:
    from dogo.guards.ownership import mark
    from dogo.study.plan import load_study
    from dogo.study.records import settings_key
    from dogo.study.runner import _without_seed

    root.mkdir(parents=True, exist_ok=True)
    config = root / "run.yaml"
    config.write_text(yaml.safe_dump(digits_config()))
    run = root / "run"
    threads = torch.get_num_threads()
    try:
        assert main(["pretrain", str(config), "--out", str(run), "-q"]) == 0
        assert main(["evaluate", str(run), "--protocol", "knn", "k=5", "-q"]) == 0
        assert main(["prepare", "digits", "--out", str(root / "store"), "-q"]) == 0
    finally:
        torch.set_num_threads(threads)
    photos = root / "photos"
    rng = np.random.default_rng(0)
    for i in range(8):
        (photos / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(photos / f"c{i % 2}" / f"{i}.png")
    # A study as `dogo study` leaves it when its one run is trained and evaluated.
    study_file = root / "study.yaml"
    study_file.write_text(
        yaml.safe_dump(
            {
                "name": "tiny",
                "base": str(config),
                "seeds": [0],
                "arms": [{"name": "a"}],
                "evaluate": {"protocols": {"knn": {"k": 5}}},
            }
        )
    )
    _study, arms = load_study(study_file)
    folder = root / "study"
    (folder / "arms").mkdir(parents=True)
    mark(folder, "study")
    (folder / "study.yaml").write_text(study_file.read_text())
    (folder / "arms" / "a.yaml").write_text(yaml.safe_dump(_without_seed(arms["a"]), sort_keys=False))
    shutil.copytree(run, folder / "a" / "seed-0")
    record = {
        "arm": "a",
        "seed": 0,
        "trained": True,
        "train_seconds": 1.0,
        "evaluations": {"knn": settings_key("knn", {"k": 5})},
        "eval_seconds": {"knn": 1.0},
    }
    (folder / "a" / "seed-0.json").write_text(json.dumps(record))
    return World(root, config, run, photos, root / "store", folder, study_file)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return build_world(tmp_path_factory.mktemp("world"))


# ------------------------------------------------------------------------------ the commands that write


WRITERS: dict[str, Callable[[World, Path], list[str]]] = {
    "pretrain": lambda w, tmp: ["pretrain", str(w.config), "--out", str(tmp / "new-run")],
    # config.yaml written back with the new setting, resume-log.jsonl, then checkpoints and metrics as training
    "pretrain-resume": lambda w, tmp: ["pretrain", "--resume", str(w.run), "train.max_steps=3"],
    "evaluate": lambda w, tmp: ["evaluate", str(w.run), "--protocol", "knn", "k=3"],
    "export-safetensors": lambda w, tmp: [
        "export",
        str(w.run),
        "--format",
        "safetensors",
        "--out",
        str(tmp / "out" / "enc.safetensors"),
    ],
    "export-torchscript": lambda w, tmp: [
        "export",
        str(w.run),
        "--format",
        "torchscript",
        "--out",
        str(tmp / "out" / "enc.ts"),
    ],
    "export-onnx": lambda w, tmp: ["export", str(w.run), "--format", "onnx", "--out", str(tmp / "out" / "enc.onnx")],
    "embed-npy": lambda w, tmp: ["embed", str(w.run), "--data", str(w.photos), "--out", str(tmp / "out" / "f.npy")],
    "embed-safetensors": lambda w, tmp: [
        "embed",
        str(w.run),
        "--data",
        "digits",
        "--split",
        "test",
        "--out",
        str(tmp / "out" / "f.safetensors"),
    ],
    "report": lambda w, tmp: ["report", str(w.run), "--out", str(tmp / "out" / "report")],
    "report-study": lambda w, tmp: ["report", str(w.study), "--out", str(tmp / "out" / "study.md")],
    "prepare": lambda w, tmp: [
        "prepare",
        "imagefolder",
        "--root",
        str(w.photos),
        "--image-size",
        "8",
        "--out",
        str(tmp / "out" / "photos-store"),
        "--force",
    ],
    "study": lambda w, tmp: ["study", str(w.study_file), "--out", str(w.study)],
    # train.keep_at: checkpoints/step-N.pt and kept.json besides the run's own files
    "pretrain-keep-at": lambda w, tmp: [
        "pretrain",
        str(w.config),
        "--out",
        str(tmp / "kept-run"),
        "train.keep_at=[0,2]",
    ],
    # a study with budgets: arms/<arm>.flops.json, a run keeping its weights at each budget, the budget figures
    "study-budgets": lambda w, tmp: ["study", str(budget_study(w, tmp)), "--out", str(tmp / "out" / "budget-study")],
    # the files a report reads, copied to a folder of published results
    "study-publish": lambda w, tmp: [
        "study",
        str(w.study_file),
        "--out",
        str(w.study),
        "--publish",
        str(tmp / "out" / "published"),
    ],
    "quickstart": lambda w, tmp: ["quickstart", "--out", str(tmp / "quickstart"), *TINY_QUICKSTART],
}

#: dogo quickstart's two runs made as small as the world's run (its config is packaged: overrides only)
TINY_QUICKSTART = [
    "dataset.image_size=8",
    "train.max_steps=2",
    "train.batch_size=8",
    "train.num_threads=1",
    "train.models.0.width=0.0625",
    "train.models.1.width=0.0625",
    "logging.knn_every=0",
    "logging.tensorboard=false",
]


def budget_study(w: World, tmp: Path) -> Path:
    """A study file with budgets (steps 0 and 2 of the world's two-step run), one arm, one seed."""
    path = tmp / "budgets.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "budgets",
                "base": str(w.config),
                "seeds": [0],
                "budgets": [0, 2],
                "arms": [{"name": "a"}],
                "evaluate": {"protocols": {"knn": {"k": 5}}},
            }
        )
    )
    return path


def add_photo(w: World) -> None:
    """One more image in the photos folder (a store made from it is then stale)."""
    Image.fromarray(np.full((12, 12, 3), 7, dtype=np.uint8)).save(w.photos / "c0" / "new.png")


def needs(name: str) -> None:
    """Skip a command whose optional package is missing here."""
    if name == "export-onnx":
        pytest.importorskip("onnx")
    if "safetensors" in name:
        pytest.importorskip("safetensors")
