"""The image store (dogo prepare), the decode pool's bad-file report and the background batch gatherer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dogo.cli import main
from dogo.config import DatasetConfig
from dogo.core.errors import DataError, DogoError
from dogo.data import decode, load_dataset
from dogo.data import store as store_mod
from dogo.data.source import load_split, prepare, store_path
from dogo.training.gather import BatchGatherer
from dogo.training.step import Sampler


def image_folder(root: Path, count: int = 24, classes: int = 3, bad: tuple[int, ...] = ()) -> Path:
    rng = np.random.default_rng(0)
    for i in range(count):
        path = root / f"c{i % classes}" / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        if i in bad:
            path.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
        else:
            Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(path)
    return root


def test_store_holds_exactly_what_memory_holds_in_standard_npy(tmp_path):
    store = prepare("digits", store_dir=str(tmp_path))
    assert store == store_path("digits", "train", {}, str(tmp_path))
    memory = load_dataset("digits")
    mapped = store_mod.open_store(store)
    assert torch.equal(mapped.images, memory.images) and torch.equal(mapped.labels, memory.labels)
    assert mapped.classes == memory.classes
    assert isinstance(np.load(store / "images.npy", mmap_mode="r"), np.memmap)  # readable by any numpy tool
    meta = json.loads((store / "store.json").read_text())
    assert meta["format"] == "dogo-store" and meta["version"] == store_mod.VERSION and meta["count"] == len(memory)
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_folder_store_decodes_into_the_map_and_skips_bad_files_after_listing_them_all(tmp_path, capsys):
    root = image_folder(tmp_path / "imgs", bad=(4, 9, 17))
    with pytest.raises(DataError) as refused:
        prepare("imagefolder", root=str(root), options={"image_size": 8}, out=tmp_path / "s1")
    message = str(refused.value)
    assert "3 of 24 image files cannot be read" in message and "\n" not in message
    assert all(f"{i:04d}.png" in message for i in (4, 9, 17))
    assert not (tmp_path / "s1").exists() and not (tmp_path / "s1.partial").exists()

    store = prepare("imagefolder", root=str(root), options={"image_size": 8, "bad_files": "skip"}, out=tmp_path / "s2")
    assert "skipped 3 of 24" in capsys.readouterr().err
    memory = load_dataset("imagefolder", root=root, image_size=8, bad_files="skip")
    mapped = store_mod.open_store(store)
    assert len(mapped) == 21 and torch.equal(mapped.images, memory.images)
    assert torch.equal(mapped.labels, memory.labels)
    assert np.load(store / "images.npy").shape == (21, 3, 8, 8)  # header rewritten, file cut to 21 images


def test_a_killed_prepare_continues_where_it_stopped(tmp_path, monkeypatch):
    root = image_folder(tmp_path / "imgs", count=40)
    monkeypatch.setattr(decode, "CHUNK", 8)
    calls = []
    original = store_mod._Output.progress

    def killed_after_two_chunks(self, done, bad):
        original(self, done, bad)
        calls.append(done)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(store_mod._Output, "progress", killed_after_two_chunks)
    with pytest.raises(KeyboardInterrupt):
        prepare("imagefolder", root=str(root), options={"image_size": 8}, out=tmp_path / "s")
    assert (tmp_path / "s.partial" / "progress.json").is_file() and not (tmp_path / "s").exists()
    with pytest.raises(DataError, match="did not finish"):
        store_mod.open_store(tmp_path / "s")

    calls.clear()
    monkeypatch.setattr(store_mod._Output, "progress", original)
    decoded = []
    from dogo.data import folder

    real = folder.decode_image
    monkeypatch.setattr(folder, "decode_image", lambda path, image_size: decoded.append(path) or real(path, image_size))
    store = prepare("imagefolder", root=str(root), options={"image_size": 8}, out=tmp_path / "s")
    assert len(decoded) == 40 - 16  # only the images after the two recorded chunks
    monkeypatch.setattr(folder, "decode_image", real)
    assert torch.equal(store_mod.open_store(store).images, load_dataset("imagefolder", root=root, image_size=8).images)


def test_stale_foreign_old_and_truncated_stores_are_refused(tmp_path):
    root = image_folder(tmp_path / "imgs", count=12)
    cfg = DatasetConfig(
        name="imagefolder", root=str(root), options={"image_size": 8}, store="on", store_dir=str(tmp_path / "stores")
    )
    load_split(cfg, "train")  # prepared on first use
    store = store_path("imagefolder", "train", {"image_size": 8}, str(tmp_path / "stores"))
    assert (store / "store.json").is_file()

    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(root / "c0" / "new.png")  # the source changes
    with pytest.raises(DataError, match=r"has changed since it was prepared.*--force"):
        load_split(cfg, "train")
    prepare("imagefolder", root=str(root), options={"image_size": 8}, out=store, force=True)
    assert len(load_split(cfg, "train")) == 13

    meta = json.loads((store / "store.json").read_text())
    (store / "store.json").write_text(json.dumps({**meta, "version": 0}))
    with pytest.raises(DataError, match="format version 0, this dogo reads version 1"):
        load_split(cfg, "train")
    (store / "store.json").write_text(json.dumps(meta))

    images = store / "images.npy"
    images.write_bytes(images.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated"):
        load_split(cfg, "train")


def test_full_disk_while_preparing_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    def no_space(fd, offset, length):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with pytest.raises(
        DogoError, match=r"s\.partial/images\.npy: cannot write [\d.]+ (kB|MB) \(No space left on device"
    ) as error:
        prepare("digits", out=tmp_path / "s")
    assert "\n" not in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_auto_uses_memory_for_small_data_and_a_prepared_store_when_there_is_one(tmp_path):
    cfg = DatasetConfig(name="digits", store_dir=str(tmp_path))
    assert not isinstance(load_split(cfg, "train").images.numpy().base, np.memmap)
    assert list(tmp_path.iterdir()) == []  # auto prepared nothing for a small dataset
    prepare("digits", store_dir=str(tmp_path))
    data = load_split(cfg, "train")
    assert data.source == str(store_path("digits", "train", {}, str(tmp_path)))
    off = load_split(cfg.model_copy(update={"store": "off"}), "train")
    assert torch.equal(off.images, data.images)


def test_training_from_the_store_is_bit_identical_to_memory(tmp_path):
    from dogo.config import load_config
    from dogo.training.trainer import Trainer

    weights = []
    for mode in ("off", "on"):
        config = load_config(
            None,
            [
                "dataset.name=digits",
                "dataset.image_size=8",
                "dataset.options={limit: 96}",
                f"dataset.store={mode}",
                f"dataset.store_dir={tmp_path / 'stores'}",
                "train.epochs=1",
                "train.batch_size=32",
                "train.precision=fp32",
                "train.num_threads=1",
                "train.models=[{backbone: resnet18, width: 0.0625, n_proj: 16}]",
                "logging.knn_every=0",
                "logging.tensorboard=false",
                "logging.progress=false",
                "logging.save_every=0",
            ],
        )
        trainer = Trainer(config, tmp_path / f"run-{mode}", log=lambda m: None)
        (tmp_path / f"run-{mode}" / "checkpoints").mkdir(parents=True)
        trainer.fit()
        weights.append(trainer.cohort.peers[0].state_dict())
    assert (tmp_path / "stores").is_dir()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key


def count_dataset_lookups(monkeypatch) -> list[str]:
    """Every lookup of a dataset's name in the registry from now on (``DATASETS.get``), in order."""
    from dogo.data import DATASETS

    looked_up, get = [], DATASETS.get
    monkeypatch.setattr(DATASETS, "get", lambda name: looked_up.append(name) or get(name))
    return looked_up


@pytest.mark.parametrize("store", ["off", "auto", "on"])
def test_one_load_resolves_its_dataset_once_and_hands_the_spec_down(tmp_path, monkeypatch, store):
    cfg = DatasetConfig(name="Digits", options={"limit": 100}, store=store, store_dir=str(tmp_path))  # checked here
    looked_up = count_dataset_lookups(monkeypatch)
    assert len(load_split(cfg, "train")) == 100  # "on": prepares the store first, then maps it
    assert looked_up == ["digits"]
    looked_up.clear()
    assert len(load_split(cfg, "train")) == 100  # "auto" now finds the prepared store
    assert looked_up == ["digits"]


def test_evaluation_loads_both_labelled_splits_with_one_lookup(monkeypatch):
    from dogo.config import build_config
    from dogo.evaluate.runner import labelled_splits

    config = build_config({"dataset": {"name": "digits", "options": {"limit": 100}}, "train": {"models": [{}]}})
    looked_up = count_dataset_lookups(monkeypatch)
    train, test = labelled_splits(config)
    assert (len(train), len(test)) == (100, 100) and train.labels is not None and test.labels is not None
    assert looked_up == ["digits"]


def test_cli_prepare_prints_the_store_and_refuses_a_foreign_one(tmp_path, capsys):
    assert main(["prepare", "digits", "--store-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.strip()
    assert out == str(tmp_path / "digits-train")
    assert main(["prepare", "digits", "--split", "test", "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds digits/train" in err and "--force" in err


def test_gatherer_gives_the_samplers_batches_in_order_and_raises_its_errors():
    images = torch.arange(40 * 2, dtype=torch.uint8).reshape(40, 1, 1, 2)
    sampler = Sampler(40, 8, seed=3)
    with BatchGatherer(images, sampler, 2, 9) as gatherer:
        for step in range(2, 9):
            assert torch.equal(gatherer.get(step), images[sampler.indices(step)])
        with pytest.raises(ValueError, match="past the gatherer's last step"):
            gatherer.get(9)

    class Broken(Sampler):
        def indices(self, step):
            if step == 1:
                raise RuntimeError("boom")
            return super().indices(step)

    with BatchGatherer(images, Broken(40, 8, seed=3), 0, 5) as gatherer:
        gatherer.get(0)
        with pytest.raises(RuntimeError, match="boom"):
            gatherer.get(1)
    early = BatchGatherer(images, sampler, 0, 1000, depth=1)
    early.get(0)
    early.close()  # stops a thread that is ahead without waiting for it to finish


def _rss_anon_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    pytest.skip("no RssAnon in /proc/self/status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_gathering_every_batch_of_a_store_keeps_private_memory_flat(tmp_path):
    """A 64 MB store read batch by batch: its pages are the page cache's (shared), not the process's."""
    from dogo.data.store import identity, prepare_store

    count = 64 * 1024
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (count, 1, 32, 32), dtype=np.uint8))
    from dogo.data.base import ImageDataset

    store = prepare_store(
        tmp_path / "s",
        lambda images=images: ImageDataset("synthetic", images, None, [], "memory"),  # bound now: deleted below
        identity("synthetic", "train", {}),
        "digest",
    )
    del images
    data = store_mod.open_store(store)
    sampler = Sampler(count, 512, seed=0)
    before = _rss_anon_kb()
    with BatchGatherer(data.images, sampler, 0, sampler.steps_per_epoch) as gatherer:
        total = sum(int(gatherer.get(step)[0, 0, 0, 0]) for step in range(sampler.steps_per_epoch))
    assert total >= 0
    grown_mb = (_rss_anon_kb() - before) / 1024
    assert grown_mb < 24, f"private memory grew by {grown_mb:.0f} MB reading a 64 MB store"


def test_a_limited_class_sorted_store_names_its_subset_rule():
    # A store made when a folder's `limit` took the first N images must not pass for a balanced one.
    identity = store_mod.identity
    assert identity("imagefolder", "train", {"limit": 20}, class_sorted=True)["subset"] == "class-balanced, seed 0"
    assert "subset" not in identity("imagefolder", "train", {}, class_sorted=True)
    assert "subset" not in identity("fashion-mnist", "train", {"limit": 20})  # IDX keeps the first N
