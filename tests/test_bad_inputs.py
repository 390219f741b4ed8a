"""A catalogue of bad inputs, each answered by ``dogo`` with one line, a non-zero exit, no traceback.

Every case builds its bad input under ``tmp_path`` (damaged dataset files in their real formats,
bad configs, broken run directories and checkpoints), runs the CLI entry point in-process
(``dogo.cli.main``), and checks that:

* the exit status is 2,
* stderr is exactly one line, ``dogo pretrain: error: ...``, naming what is wrong,
* there is no traceback,
* nothing was lost or left behind: every file under ``tmp_path`` (the user's dataset, an
  existing run's config, metrics and checkpoints) is byte-identical afterwards and no file was
  created (a case may allow named new files, e.g. a verified download).

A few cases need more than one line of set-up or run a real training loop (a full disk while
saving, an unwritable folder, the whole CLI in a subprocess); they follow the catalogue.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import os
import pickle
import shutil
import stat
import struct
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from dogo.cli import main
from dogo.config import load_config
from dogo.data import download
from dogo.runs import checkpoint
from dogo.runs.checkpoint import load_checkpoint
from dogo.runs.rundir import prepare_run_dir
from dogo.training.trainer import Trainer
from guarded import tiny_config

# ------------------------------------------------------------------------------ writers


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def idx_dataset(folder: Path, count: int = 64, gz: bool = False) -> Path:
    rng = np.random.default_rng(0)
    write_idx(folder / "train-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28), dtype=np.uint8), gz)
    write_idx(folder / "train-labels-idx1-ubyte", rng.integers(0, 10, count, dtype=np.uint8), gz)
    return folder


def cifar_folder(root: Path, data: dict[str, object] | None = None) -> Path:
    """A CIFAR-10 python-version folder with 10 images per batch; ``data`` replaces batches."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {"batches.meta": {b"label_names": [f"c{i}".encode() for i in range(10)]}}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = {b"data": rng.integers(0, 256, (10, 3072), dtype=np.uint8), b"labels": list(range(10))}
    batches.update(data or {})
    for name, content in batches.items():
        if content is not None:
            # Protocol 4 (bytes pickled natively); Python 2's protocol-2 files are covered in test_data.
            payload = content if isinstance(content, bytes) else pickle.dumps(content, protocol=4)
            (folder / name).write_bytes(payload)
    return root


def png(path: Path, size: int = 12) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), 128, dtype=np.uint8)).save(path)


class RunsCode:
    """Unpickling this would create ``marker``: proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def tarball(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    path.write_bytes(buffer.getvalue())
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


# ------------------------------------------------------------------------------ configs


def config(dataset: dict | None = None, train: dict | None = None, **sections) -> dict:
    """guarded's tiny run (one ResNet-18 x1/16 peer, fp32) on fashion-mnist, no eval split, with the given changes."""
    dataset = {"name": "fashion-mnist", "eval_split": None, **(dataset or {})}
    return tiny_config(dataset, train, **{"name": "bad", **sections})


def write_config(tmp: Path, data: dict | str, name: str = "bad.yaml") -> Path:
    path = tmp / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


@dataclass
class Case:
    argv: list[str]
    expect: str  # a piece of the error line
    may_create: tuple[str, ...] = ()  # files under tmp_path the command may add (relative paths)
    absent: tuple[Path, ...] = field(default_factory=tuple)  # must not exist afterwards


def pretrain(tmp: Path, data: dict, *overrides: str) -> list[str]:
    return ["pretrain", str(write_config(tmp, data)), *overrides, "--out", str(tmp / "run")]


def data_case(tmp: Path, dataset: dict, expect: str, **train) -> Case:
    return Case(pretrain(tmp, config(dataset, train or None)), expect)


# ------------------------------------------------------------------------------ the catalogue

CASES: dict[str, Callable[..., Case]] = {}


def case(name: str):
    def register(fn):
        CASES[name] = fn
        return fn

    return register


# --- datasets in their real formats


@case("idx-truncated-gz")
def _(tmp, **_):
    root = idx_dataset(tmp / "fmnist", gz=True)
    gz = root / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:200])
    return data_case(tmp, {"root": str(root)}, "train-images-idx3-ubyte.gz: cannot read")


@case("idx-gz-not-gzip")
def _(tmp, **_):
    root = idx_dataset(tmp / "fmnist", gz=True)
    (root / "train-labels-idx1-ubyte.gz").write_bytes(b"this is not gzip data")
    return data_case(tmp, {"root": str(root)}, "train-labels-idx1-ubyte.gz: cannot read")


@case("idx-wrong-magic")
def _(tmp, **_):
    root = idx_dataset(tmp / "fmnist")
    path = root / "train-images-idx3-ubyte"
    path.write_bytes(struct.pack(">I", 0x0801) + path.read_bytes()[4:])
    return data_case(tmp, {"root": str(root)}, "magic 0x00000801, expected 0x00000803")


@case("idx-wrong-count")
def _(tmp, **_):
    root = idx_dataset(tmp / "fmnist")
    write_idx(root / "train-labels-idx1-ubyte", np.zeros(63, dtype=np.uint8))
    return data_case(tmp, {"root": str(root)}, "63 labels, but")


@case("idx-truncated-data")
def _(tmp, **_):
    root = idx_dataset(tmp / "fmnist")
    path = root / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-784])
    return data_case(tmp, {"root": str(root)}, "truncated")


@case("dataset-missing")
def _(tmp, **_):
    (tmp / "empty").mkdir()
    # mnist: fashion-mnist may be installed system-wide (/usr/share/datasets), mnist has no such place
    return data_case(tmp, {"name": "mnist", "root": str(tmp / "empty")}, "no train-images-idx3-ubyte[.gz] in")


@case("cifar-wrong-shape")
def _(tmp, **_):
    root = cifar_folder(
        tmp / "cifar", {"data_batch_2": {b"data": np.zeros((10, 100), np.uint8), b"labels": list(range(10))}}
    )
    return data_case(tmp, {"name": "cifar10", "root": str(root)}, "'data' is (10, 100) uint8, expected N x 3072")


@case("cifar-pickle-runs-code")
def _(tmp, **_):
    marker = tmp / "pwned"
    root = cifar_folder(tmp / "cifar", {"data_batch_1": pickle.dumps(RunsCode(marker), protocol=2)})
    found = data_case(tmp, {"name": "cifar10", "root": str(root)}, "refused to unpickle global posix.system")
    found.absent = (marker,)
    return found


@case("cifar-truncated-pickle")
def _(tmp, **_):
    root = cifar_folder(tmp / "cifar")
    batch = root / "cifar-10-batches-py" / "data_batch_4"
    batch.write_bytes(batch.read_bytes()[:300])
    return data_case(tmp, {"name": "cifar10", "root": str(root)}, "data_batch_4: damaged pickle")


@case("cifar-missing-batch")
def _(tmp, **_):
    root = cifar_folder(tmp / "cifar", {"data_batch_3": None})
    return data_case(tmp, {"name": "cifar10", "root": str(root)}, "missing data_batch_3")


@case("cifar-damaged-tarball")
def _(tmp, **_):
    (tmp / "cifar").mkdir()
    good = tarball(
        tmp / "cifar" / "cifar-10-python.tar.gz", [(member("cifar-10-batches-py/batches.meta"), b"x" * 5000)]
    )
    good.write_bytes(good.read_bytes()[:60])
    return data_case(tmp, {"name": "cifar10", "root": str(tmp / "cifar")}, "damaged tar archive")


@case("stl10-binary-wrong-size")
def _(tmp, **_):
    (tmp / "stl" / "stl10_binary").mkdir(parents=True)
    (tmp / "stl" / "stl10_binary" / "unlabeled_X.bin").write_bytes(b"\0" * 27_000)
    return data_case(
        tmp,
        {"name": "stl10", "root": str(tmp / "stl"), "split": "unlabeled"},
        "27000 bytes is not a positive multiple of 27648",
    )


@case("stl10-label-count")
def _(tmp, **_):
    folder = tmp / "stl" / "stl10_binary"
    folder.mkdir(parents=True)
    (folder / "train_X.bin").write_bytes(b"\0" * 27_648 * 8)
    (folder / "train_y.bin").write_bytes(bytes([1] * 9))
    return data_case(tmp, {"name": "stl10", "root": str(tmp / "stl")}, "9 labels, but the images file has 8")


@case("imagefolder-not-an-image")
def _(tmp, **_):
    for i in range(8):
        png(tmp / "images" / "cat" / f"{i}.png")
    (tmp / "images" / "dog").mkdir()
    (tmp / "images" / "dog" / "notes.png").write_text("not an image")
    return data_case(tmp, {"name": "imagefolder", "root": str(tmp / "images")}, "notes.png: not a readable image")


@case("imagefolder-empty")
def _(tmp, **_):
    (tmp / "images").mkdir()
    return data_case(tmp, {"name": "imagefolder", "root": str(tmp / "images")}, "no class folders")


@case("imagefolder-no-images")
def _(tmp, **_):
    for name in ("cat", "dog"):
        (tmp / "images" / name).mkdir(parents=True)
    return data_case(tmp, {"name": "imagefolder", "root": str(tmp / "images")}, "hold no image files")


def folder_with_3_corrupt_of_1000(tmp: Path) -> Path:
    for i in range(1000):
        path = tmp / "images" / f"c{i % 4}" / f"{i:04d}.png"
        if i in (10, 500, 999):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"\x89PNG\r\n\x1a\n cut short")
        else:
            png(path, size=4)
    return tmp / "images"


@case("imagefolder-3-corrupt-of-1000")
def _(tmp, **_):
    return data_case(
        tmp,
        {"name": "imagefolder", "root": str(folder_with_3_corrupt_of_1000(tmp)), "image_size": 8},
        "3 of 1000 image files cannot be read",
    )


@case("imagefolder-3-corrupt-of-1000-into-a-store")
def _(tmp, **_):
    # decoded into a store (dataset.store: on): refused before a store, or a partial one, is left
    return data_case(
        tmp,
        {
            "name": "imagefolder",
            "root": str(folder_with_3_corrupt_of_1000(tmp)),
            "image_size": 8,
            "store": "on",
            "store_dir": str(tmp / "stores"),
        },
        "3 of 1000 image files cannot be read",
    )


# --- image stores (dogo prepare; dataset.store)


def store_case(
    tmp: Path, expect: str, damage: Callable[[Path], None] | None = None, split: str = "train", **source
) -> Case:
    """A digits store (or ``source``'s) prepared under tmp/stores (of ``split``, at digits/train's place),
    then damaged."""
    stores = tmp / "stores"
    from dogo.data.source import prepare

    prepare(**{"name": "digits", **source}, split=split, out=stores / "digits-train")
    if damage is not None:
        damage(stores / "digits-train")
    return data_case(tmp, {"name": "digits", "store": "on", "store_dir": str(stores)}, expect)


@case("store-of-another-split")
def _(tmp, **_):
    return store_case(tmp, "holds digits/test (options {}), not digits/train", split="test")


@case("store-of-another-dataset")
def _(tmp, **_):
    png(tmp / "images" / "c0" / "0.png")
    return store_case(
        tmp,
        'holds imagefolder/train (options {"image_size": 8}), not digits/train',
        name="imagefolder",
        root=str(tmp / "images"),
        options={"image_size": 8},
    )


@case("store-older-format-version")
def _(tmp, **_):
    def older(store: Path) -> None:
        meta = json.loads((store / "store.json").read_text())
        (store / "store.json").write_text(json.dumps({**meta, "version": 0}))

    return store_case(tmp, "store format version 0, this dogo reads version 1", older)


@case("store-truncated")
def _(tmp, **_):
    def cut(store: Path) -> None:
        images = store / "images.npy"
        images.write_bytes(images.read_bytes()[:1000])

    return store_case(tmp, "images.npy: truncated (1000 of", cut)


@case("store-full-disk")
def _(tmp, monkeypatch, **_):
    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    return data_case(
        tmp, {"name": "digits", "store": "on", "store_dir": str(tmp / "stores")}, "images.npy: cannot write"
    )


def file_list(tmp: Path, lines: list[str]) -> Path:
    for i in range(3):
        png(tmp / "list" / "img" / f"{i}.png")
    (tmp / "list" / "train.txt").write_text("\n".join(lines) + "\n")
    return tmp / "list"


@case("filelist-missing-file")
def _(tmp, **_):
    root = file_list(tmp, ["img/0.png 0", "img/1.png 1", "img/gone.png 2"])
    return data_case(
        tmp,
        {"name": "filelist", "root": str(root), "options": {"list_file": "{split}.txt"}},
        "train.txt:3: no image file",
    )


@case("filelist-bad-label")
def _(tmp, **_):
    root = file_list(tmp, ["img/0.png 0", "img/1.png cat"])
    return data_case(
        tmp,
        {"name": "filelist", "root": str(root), "options": {"list_file": "{split}.txt"}},
        "train.txt:2: label 'cat' is not an integer",
    )


@case("filelist-negative-label")
def _(tmp, **_):
    root = file_list(tmp, ["img/0.png 0", "img/1.png -1"])
    return data_case(
        tmp, {"name": "filelist", "root": str(root), "options": {"list_file": "{split}.txt"}}, "label -1 is negative"
    )


@case("filelist-missing-list")
def _(tmp, **_):
    root = file_list(tmp, ["img/0.png 0"])
    return data_case(
        tmp,
        {"name": "filelist", "root": str(root), "options": {"list_file": "{split}_kv.txt"}},
        "train_kv.txt: no such file list",
    )


@case("batch-larger-than-dataset")
def _(tmp, **_):
    root = idx_dataset(tmp / "fmnist", count=12)
    return data_case(
        tmp, {"root": str(root)}, "train.batch_size=16 is larger than the dataset (12 images", batch_size=16
    )


# --- configs


@case("config-unknown-key")
def _(tmp, **_):
    return Case(pretrain(tmp, config(), "train.epoch=3"), "unknown key 'train.epoch' (did you mean 'train.epochs'?)")


@case("config-unknown-key-in-file")
def _(tmp, **_):
    return Case(pretrain(tmp, {**config(), "distil": {"temperature": 0.1}}), "unknown key 'distil'")


@case("config-wrong-type")
def _(tmp, **_):
    return Case(pretrain(tmp, config(), "train.epochs=three"), "train.epochs: ")


@case("config-negative-lr")
def _(tmp, **_):
    return Case(
        pretrain(tmp, config(), "train.models.0.optimizer.lr=-0.1"),
        "train.models.0.optimizer.lr: Input should be greater than 0 (got -0.1)",
    )


@case("config-unknown-backbone")
def _(tmp, **_):
    return Case(pretrain(tmp, config(), "train.models.0.backbone=resnet19"), "unknown backbone 'resnet19'")


@case("config-unknown-objective")
def _(tmp, **_):
    return Case(pretrain(tmp, config(), "train.models.0.objective=byol2"), "unknown objective 'byol2'")


@case("config-bad-choice")
def _(tmp, **_):
    return Case(pretrain(tmp, config(), "train.precision=fp8"), "train.precision: ")


@case("config-image-size-out-of-range")
def _(tmp, **_):
    return Case(pretrain(tmp, config(), "dataset.image_size=4"), "dataset.image_size: ")


@case("config-empty-cohort")
def _(tmp, **_):
    return Case(pretrain(tmp, config(train={"models": []})), "train.models: ")


@case("config-invalid-yaml")
def _(tmp, **_):
    return Case(
        ["pretrain", str(write_config(tmp, "train: {epochs: 3\nname: [")), "--out", str(tmp / "run")],
        "is not valid YAML",
    )


@case("config-python-tag")
def _(tmp, **_):
    marker = tmp / "pwned"
    text = f"name: !!python/object/apply:os.system ['touch {marker}']\n"
    return Case(
        ["pretrain", str(write_config(tmp, text)), "--out", str(tmp / "run")], "is not valid YAML", absent=(marker,)
    )


@case("config-not-a-mapping")
def _(tmp, **_):
    return Case(
        ["pretrain", str(write_config(tmp, "- 1\n- 2\n")), "--out", str(tmp / "run")], "a config must be a YAML mapping"
    )


@case("config-missing-file")
def _(tmp, **_):
    return Case(["pretrain", str(tmp / "nope.yaml"), "--out", str(tmp / "run")], "nope.yaml: no such config file")


@case("config-override-without-value")
def _(tmp, **_):
    return Case(pretrain(tmp, config(), "train.epochs"), "expected key=value")


@case("config-unknown-dataset")
def _(tmp, **_):
    return Case(pretrain(tmp, config({"name": "imagenet-22k"})), "imagenet-22k")


@case("config-unknown-split")
def _(tmp, **_):
    root = idx_dataset(tmp / "fmnist")
    return data_case(tmp, {"root": str(root), "split": "validation"}, "unknown split 'validation'")


@case("config-unknown-dataset-option")
def _(tmp, **_):
    root = idx_dataset(tmp / "fmnist")
    return data_case(tmp, {"root": str(root), "options": {"limt": 10}}, "unknown option 'limt'")


@case("no-config")
def _(tmp, **_):
    return Case(["pretrain", "--out", str(tmp / "run")], "no config")


# --- run directories, resume, checkpoints


@case("run-dir-exists")
def _(tmp, runs, **_):
    existing = shutil.copytree(runs["a"], tmp / "existing")
    return Case(["pretrain", str(write_config(tmp, config())), "--out", str(existing)], "already exists; pass --resume")


@case("out-under-a-file")
def _(tmp, **_):
    (tmp / "afile").write_text("mine")
    return Case(
        ["pretrain", str(write_config(tmp, config())), "--out", str(tmp / "afile" / "run")], "is a file, not a folder"
    )


@case("resume-missing-dir")
def _(tmp, **_):
    return Case(["pretrain", "--resume", str(tmp / "gone")], "gone: no such run directory")


@case("resume-not-a-run")
def _(tmp, **_):
    (tmp / "folder").mkdir()
    (tmp / "folder" / "notes.txt").write_text("hi")
    return Case(["pretrain", "--resume", str(tmp / "folder")], "not a dogo run directory (no config.yaml)")


@case("resume-no-checkpoint")
def _(tmp, runs, **_):
    run = shutil.copytree(runs["a"], tmp / "run-a")
    shutil.rmtree(run / "checkpoints")
    return Case(["pretrain", "--resume", str(run)], "no checkpoint to resume")


@case("resume-damaged-checkpoint")
def _(tmp, runs, **_):
    run = shutil.copytree(runs["a"], tmp / "run-a")
    for path in (run / "checkpoints").iterdir():
        path.write_bytes(path.read_bytes()[:1000])
    return Case(["pretrain", "--resume", str(run)], "no usable checkpoint")


@case("resume-checkpoint-from-another-config")
def _(tmp, runs, **_):
    run = shutil.copytree(runs["a"], tmp / "run-a")
    for path in (run / "checkpoints").iterdir():
        path.unlink()
    shutil.copy(runs["b"] / "checkpoints" / "last.pt", run / "checkpoints" / "last.pt")
    return Case(
        ["pretrain", "--resume", str(run)], "does not fit this run: train.models.0.width (checkpoint 0.125, run 0.0625)"
    )


@case("resume-checkpoint-needs-code")
def _(tmp, runs, **_):
    marker = tmp / "pwned"
    run = shutil.copytree(runs["a"], tmp / "run-a")
    for path in (run / "checkpoints").iterdir():
        path.unlink()
    torch.save({"format": checkpoint.FORMAT, "model": RunsCode(marker)}, run / "checkpoints" / "last.pt")
    found = Case(["pretrain", "--resume", str(run)], "refused: loading it would unpickle posix.system")
    found.absent = (marker,)
    return found


@case("resume-foreign-checkpoint")
def _(tmp, runs, **_):
    run = shutil.copytree(runs["a"], tmp / "run-a")
    for path in (run / "checkpoints").iterdir():
        path.unlink()
    torch.save(torch.nn.Linear(3, 2).state_dict(), run / "checkpoints" / "last.pt")
    return Case(["pretrain", "--resume", str(run)], "not a dogo checkpoint")


@case("resume-edited-config")
def _(tmp, runs, **_):
    run = shutil.copytree(runs["a"], tmp / "run-a")
    edited = yaml.safe_load((run / "config.yaml").read_text())
    edited["train"]["models"][0]["optimizer"]["lr"] = 0.01
    (run / "config.yaml").write_text(yaml.safe_dump(edited))
    return Case(["pretrain", "--resume", str(run)], "differs from")


@case("resume-changes-the-architecture")
def _(tmp, runs, **_):
    run = shutil.copytree(runs["a"], tmp / "run-a")
    return Case(
        ["pretrain", "--resume", str(run), "train.models.0.backbone=mobilenetv2"],
        "does not fit this run: train.models.0.backbone (checkpoint resnet18, run mobilenetv2)",
    )


@case("resume-damaged-config-yaml")
def _(tmp, runs, **_):
    run = shutil.copytree(runs["a"], tmp / "run-a")
    (run / "config.yaml").write_text("train: [unclosed\n")
    return Case(["pretrain", "--resume", str(run)], "config.yaml: line")


@case("resume-with-a-config-file")
def _(tmp, runs, **_):
    run = shutil.copytree(runs["a"], tmp / "run-a")
    return Case(["pretrain", "--resume", str(run), str(write_config(tmp, config()))], "pass only key=value")


@case("resume-bad-override-value")
def _(tmp, runs, **_):
    run = shutil.copytree(runs["a"], tmp / "run-a")
    return Case(["pretrain", "--resume", str(run), "train.epochs=0"], "train.epochs: ")


# --- downloads (served from file:// URLs) and archive extraction


def serve(monkeypatch, tmp: Path, archive: Path, md5: str | None = None) -> None:
    digest = md5 or hashlib.md5(archive.read_bytes()).hexdigest()
    resource = download.Resource("stl10_binary.tar.gz", (archive.as_uri(),), md5=digest, extract=True)
    monkeypatch.setitem(download.RESOURCES, "stl10", (resource,))


def evil_download(tmp: Path, monkeypatch, members, expect: str) -> Case:
    (tmp / "server").mkdir()
    archive = tarball(tmp / "server" / "stl10_binary.tar.gz", members)
    serve(monkeypatch, tmp, archive)
    (tmp / "data" / "stl").mkdir(parents=True)
    argv = pretrain(
        tmp, config({"name": "stl10", "root": str(tmp / "data" / "stl"), "download": True, "split": "unlabeled"})
    )
    # The verified tarball is kept (a re-run does not download it again); nothing is extracted.
    return Case(
        argv,
        expect,
        may_create=("data/stl/stl10_binary.tar.gz",),
        absent=(tmp / "data" / "evil.txt", tmp / "evil.txt", tmp / "data" / "stl" / "stl10_binary"),
    )


@case("tar-member-with-dotdot")
def _(tmp, monkeypatch, **_):
    return evil_download(tmp, monkeypatch, [(member("stl10_binary/../../evil.txt"), b"x")], "path contains '..'")


@case("tar-member-absolute")
def _(tmp, monkeypatch, **_):
    return evil_download(tmp, monkeypatch, [(member(str(tmp / "evil.txt")), b"x")], "absolute path")


@case("tar-symlink-outside")
def _(tmp, monkeypatch, **_):
    return evil_download(
        tmp,
        monkeypatch,
        [(member("stl10_binary/link", tarfile.SYMTYPE, "../../.."), b"")],
        "points outside the destination",
    )


@case("download-checksum-mismatch")
def _(tmp, monkeypatch, **_):
    (tmp / "server").mkdir()
    archive = tarball(tmp / "server" / "stl10_binary.tar.gz", [(member("stl10_binary/x"), b"x")])
    serve(monkeypatch, tmp, archive, md5="0" * 32)
    (tmp / "data" / "stl").mkdir(parents=True)
    return Case(
        pretrain(
            tmp, config({"name": "stl10", "root": str(tmp / "data" / "stl"), "download": True, "split": "unlabeled"})
        ),
        "checksum mismatch",
    )


# ------------------------------------------------------------------------------ running them


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two tiny trained runs (2 steps) that differ in the width of their peer."""
    data = idx_dataset(tmp_path_factory.mktemp("fmnist"))
    out = {}
    threads = torch.get_num_threads()
    for name, width in (("a", 0.0625), ("b", 0.125)):
        cfg = config({"root": str(data)}, {"models": [{"backbone": "resnet18", "width": width, "n_proj": 16}]})
        path = write_config(tmp_path_factory.mktemp(f"config-{name}"), cfg)
        run_dir = prepare_run_dir(load_config(path), tmp_path_factory.mktemp(f"run-{name}") / "run")
        Trainer(load_config(path), run_dir, log=lambda m: None).fit()
        out[name] = run_dir
    torch.set_num_threads(threads)
    return out


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root`` -> its content hash; links and FIFOs by what they are (reading one blocks)."""
    found = {}
    for path in sorted(root.rglob("*")):
        mode = path.lstat().st_mode
        key = str(path.relative_to(root))
        if stat.S_ISLNK(mode):
            found[key] = "link:" + os.readlink(path)
        elif stat.S_ISDIR(mode):
            found[key] = "dir"
        elif not stat.S_ISREG(mode):
            found[key] = "special"
        else:
            found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def assert_nothing_lost(before: dict[str, str], after: dict[str, str], may_create: tuple[str, ...] = ()) -> None:
    """Nothing the user had changed or removed, and nothing left behind but ``may_create``."""
    changed = {k for k in before if after.get(k) != before[k]}
    assert not changed, f"changed or removed: {sorted(changed)}"
    created = set(after) - set(before) - set(may_create)
    assert not created, f"left behind: {sorted(created)}"


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    threads = torch.get_num_threads()
    try:
        code = main(argv)
    finally:
        torch.set_num_threads(threads)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, expect: str, command: str = "pretrain") -> str:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"dogo {command}: error: "), err
    assert expect in lines[0], err
    return lines[0]


def test_the_catalogue_is_long_enough():
    assert len(CASES) >= 30


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, tmp_path, capsys, monkeypatch, runs):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DOGO_DATA", raising=False)
    found = CASES[name](tmp_path, monkeypatch=monkeypatch, runs=runs)
    before = snapshot(tmp_path)
    code, out, err = run_cli(found.argv, capsys)
    assert_one_line_error(code, err, found.expect)
    assert out == ""
    assert_nothing_lost(before, snapshot(tmp_path), found.may_create)
    for path in found.absent:
        assert not path.exists(), path


# ------------------------------------------------------------------------------ beyond one line of set-up


def test_full_disk_while_saving_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    """ENOSPC on the third checkpoint write: one error line, the step-2 checkpoint intact."""
    data = idx_dataset(tmp_path / "fmnist")
    argv = pretrain(tmp_path, config({"root": str(data)}, {"max_steps": 4}))
    real, saves = os.write, {"n": 0}

    def write(fd, payload):
        if f".last.pt{checkpoint.TEMP_MARK}" in os.readlink(f"/proc/self/fd/{fd}"):
            saves["n"] += 1
            if saves["n"] >= 3:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, payload)

    monkeypatch.setattr(os, "write", write)
    code, _, err = run_cli(argv, capsys)
    monkeypatch.undo()
    assert code == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0]
    assert errors[0].startswith("dogo pretrain: error: ") and "No space left on device" in errors[0]
    assert "previous checkpoint is kept" in errors[0]
    checkpoints = tmp_path / "run" / "checkpoints"
    assert load_checkpoint(checkpoints / "last.pt")["step"] == 2
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.prev.pt", "last.pt"]  # no temp files
    # ... and the run resumes from it once there is space again.
    code, _, err = run_cli(["pretrain", "--resume", str(tmp_path / "run")], capsys)
    assert code == 0, err
    assert load_checkpoint(checkpoints / "last.pt")["step"] == 4


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        code, _, err = run_cli(
            ["pretrain", str(write_config(tmp_path, config())), "--out", str(locked / "run")], capsys
        )
        assert_one_line_error(code, err, "is not writable")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_subprocess_exit_status_and_single_line(tmp_path, runs):
    """The real process: exit status 2, one line on stderr, nothing on stdout."""
    run = shutil.copytree(runs["a"], tmp_path / "run")
    (run / "checkpoints" / "last.pt").write_bytes(b"\0" * 100)
    for other in (run / "checkpoints").glob("*.prev.pt"):
        other.unlink()
    env = {k: v for k, v in os.environ.items() if k != "DOGO_DATA"}
    proc = subprocess.run(
        [sys.executable, "-m", "dogo", "pretrain", "--resume", str(run)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert_one_line_error(2, proc.stderr, "no usable checkpoint")
