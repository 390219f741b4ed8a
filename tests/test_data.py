"""dogo.data: every reader against tiny files written in the real on-disk formats.

Writers here produce the exact layouts of the published datasets (IDX headers, Python 2
protocol-2 CIFAR pickles, column-major STL-10 binaries, PNG folders, 'path label' lists), so a
round trip checks the readers' byte order, not just their self-consistency.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from dogo.core.errors import ConfigError, DataError
from dogo.data import (
    DATASETS,
    ImageDataset,
    dataset_status,
    get_spec,
    load_dataset,
    long_tail_counts,
    subsample_long_tailed,
)
from dogo.data.idx import FASHION_CLASSES
from dogo.data.safe_pickle import safe_load

FASHION_SYSTEM = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _no_dogo_data(monkeypatch):
    monkeypatch.delenv("DOGO_DATA", raising=False)


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


from formats import cifar10_files, py2_pickle, write_idx, write_png, write_tar_gz  # noqa: E402

# ---------------------------------------------------------------------------------------------
# names, registry, options


def test_reference_spellings_resolve():
    for spelling, name in [
        ("CIFAR10", "cifar10"),
        ("CIFAR100", "cifar100"),
        ("CIFAR10Imbalanced", "cifar10-imbalanced"),
        ("TinyImageNet", "tiny-imagenet"),
        ("STL10", "stl10"),
        ("ImageNet", "imagenet"),
        ("quickdraw", "quickdraw"),
        ("sketch", "sketch"),
        ("clipart", "clipart"),
        ("Fashion_MNIST", "fashion-mnist"),
    ]:
        assert get_spec(spelling).name == name


def test_unknown_name_split_option():
    with pytest.raises(ConfigError, match=r"known: .*cifar10") as error:
        load_dataset("cifar11")
    one_line(error)
    with pytest.raises(ConfigError, match="unknown split 'val'"):
        load_dataset("digits", split="val")
    with pytest.raises(ConfigError, match="unknown option 'colour'"):
        load_dataset("digits", colour=True)
    with pytest.raises(ConfigError, match="limit"):
        load_dataset("digits", limit=0)
    with pytest.raises(ConfigError, match="long_tail key 'beta'"):
        load_dataset("digits", long_tail={"beta": 1})
    with pytest.raises(ConfigError, match="needs root"):
        load_dataset("imagefolder")


def test_dataset_status_lists_every_dataset(tmp_path):
    rows = {row["name"]: row for row in dataset_status()}
    assert set(rows) == set(DATASETS.names())
    assert rows["digits"]["found"]
    fashion = rows["fashion-mnist"]
    assert "$DOGO_DATA/fashion-mnist" in fashion["looks_in"]
    assert "/usr/share/datasets/fashion-mnist" in fashion["looks_in"]
    assert fashion["downloadable"] and "dataset-fashion-mnist" in fashion["how_to_get"]
    keys = {"name", "description", "splits", "looks_in", "found", "found_at", "how_to_get"}
    assert keys <= set(fashion)


def test_missing_dataset_message(tmp_path, monkeypatch):
    # hide the Debian copy (if installed) so that the message is the one a user without it sees
    spec = DATASETS.get("fashion-mnist")
    hidden = replace(spec, find=lambda folder: None if folder == FASHION_SYSTEM else spec.find(folder))
    monkeypatch.setitem(DATASETS._items, "fashion-mnist", hidden)
    with pytest.raises(DataError) as error:
        load_dataset("fashion-mnist", root=tmp_path, split="train")
    assert one_line(error) == (
        f"fashion-mnist: no train-images-idx3-ubyte[.gz] in {tmp_path}, $DOGO_DATA/fashion-mnist, "
        "/usr/share/datasets/fashion-mnist; install the Debian package dataset-fashion-mnist "
        "or pass download: true"
    )


def test_missing_cifar_message(tmp_path, monkeypatch):
    monkeypatch.setenv("DOGO_DATA", str(tmp_path / "data"))
    with pytest.raises(DataError) as error:
        load_dataset("CIFAR10", root=tmp_path / "x")
    assert one_line(error) == (
        f"cifar10: no cifar-10-batches-py/ or cifar-10-python.tar.gz in {tmp_path / 'x'}, "
        f"{tmp_path / 'data' / 'cifar10'}; put cifar-10-python.tar.gz (from "
        "https://www.cs.toronto.edu/~kriz/cifar.html) in root or pass download: true"
    )


# ---------------------------------------------------------------------------------------------
# long tail


def test_long_tail_counts_match_reference():
    assert long_tail_counts(10) == [5000, 858, 557, 439, 375, 333, 304, 282, 264, 250]
    assert sum(long_tail_counts(10)) == 8662
    counts = long_tail_counts(100, n_max=500, n_min=50)
    assert counts[0] == 500 and counts[-1] == 50 and counts == sorted(counts, reverse=True)


def test_subsample_long_tailed_keeps_first_images_in_file_order():
    labels = torch.arange(10).repeat(5000)  # interleaved: 0..9, 0..9, ...
    images = torch.arange(50000, dtype=torch.int64).view(-1, 1, 1, 1)  # image i holds i
    ds = ImageDataset("t", images, labels, [str(i) for i in range(10)], "mem")
    out = subsample_long_tailed(ds)
    counts = torch.bincount(out.labels, minlength=10).tolist()
    assert counts == [5000, 858, 557, 439, 375, 333, 304, 282, 264, 250]
    ids = out.images.flatten()
    assert torch.all(ids[1:] > ids[:-1])  # file order kept
    for c, n in enumerate(counts):  # each class keeps its first n images
        assert ids[out.labels == c].tolist() == [c + 10 * k for k in range(n)]


def test_long_tail_needs_labels():
    ds = ImageDataset("u", torch.zeros(3, 1, 2, 2, dtype=torch.uint8), None, [], "mem")
    with pytest.raises(DataError, match="needs labels"):
        subsample_long_tailed(ds)


# ---------------------------------------------------------------------------------------------
# digits and the real Fashion-MNIST


def test_digits_splits():
    train = load_dataset("digits")
    test = load_dataset("digits", split="test")
    everything = load_dataset("digits", split="all")
    assert train.images.shape == (1437, 1, 8, 8) and len(test) == 360 and len(everything) == 1797
    assert train.images.dtype == torch.uint8 and int(train.images.max()) == 255
    assert train.labels.dtype == torch.int64 and train.classes == [str(i) for i in range(10)]
    order = np.random.default_rng(0).permutation(1797)
    assert torch.equal(train.images, everything.images[torch.from_numpy(order[:1437])])
    assert torch.equal(test.labels, everything.labels[torch.from_numpy(order[1437:])])
    assert len(load_dataset("digits", limit=7)) == 7


@pytest.mark.skipif(not FASHION_SYSTEM.is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist_from_debian_package():
    ds = load_dataset("fashion-mnist", split="train")
    assert ds.images.shape == (60000, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert ds.labels.shape == (60000,) and ds.labels.dtype == torch.int64
    assert torch.bincount(ds.labels).tolist() == [6000] * 10
    assert ds.classes == FASHION_CLASSES and ds.source.startswith(str(FASHION_SYSTEM))
    assert int(ds.images.max()) == 255


# ---------------------------------------------------------------------------------------------
# IDX


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 7).astype(np.uint8)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images, gz)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels, gz)
    ds = load_dataset("mnist", root=tmp_path, split="test")
    assert ds.name == "mnist" and ds.images.shape == (7, 1, 28, 28)
    assert np.array_equal(ds.images[:, 0].numpy(), images)
    assert np.array_equal(ds.labels.numpy(), labels)
    limited = load_dataset("mnist", root=tmp_path, split="test", limit=3)
    assert torch.equal(limited.images, ds.images[:3])


def _idx_pair(tmp_path: Path, n_images: int = 5, n_labels: int = 5) -> tuple[Path, Path]:
    images = write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((n_images, 28, 28)), True)
    labels = write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(n_labels), True)
    return images, labels


def test_idx_truncated_gz(tmp_path):
    images, _ = _idx_pair(tmp_path)
    images.write_bytes(images.read_bytes()[:-20])
    with pytest.raises(DataError, match=re.escape("train-images-idx3-ubyte.gz: cannot read")) as error:
        load_dataset("fashion-mnist", root=tmp_path)
    one_line(error)


def test_idx_truncated_data(tmp_path):
    _idx_pair(tmp_path)
    raw = gzip.decompress((tmp_path / "train-images-idx3-ubyte.gz").read_bytes())
    (tmp_path / "train-images-idx3-ubyte.gz").unlink()
    (tmp_path / "train-images-idx3-ubyte").write_bytes(raw[:-1])
    with pytest.raises(DataError, match="train-images-idx3-ubyte: truncated"):
        load_dataset("fashion-mnist", root=tmp_path)


def test_idx_wrong_magic(tmp_path):
    _, labels = _idx_pair(tmp_path)
    # a labels file where the images should be: magic 0x00000801
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(labels.read_bytes())
    with pytest.raises(
        DataError,
        match=r"images-idx3-ubyte.gz: .*magic 0x00000801, expected "
        r"0x00000803",
    ) as error:
        load_dataset("fashion-mnist", root=tmp_path)
    one_line(error)


def test_idx_count_mismatch(tmp_path):
    _idx_pair(tmp_path, n_images=5, n_labels=4)
    with pytest.raises(DataError, match=r"4 labels, but .* has 5 images") as error:
        load_dataset("fashion-mnist", root=tmp_path)
    one_line(error)


# ---------------------------------------------------------------------------------------------
# CIFAR


@pytest.mark.parametrize("packed", ["folder", "tarball"])
def test_cifar10_round_trip(tmp_path, packed):
    files, images, labels = cifar10_files(np.random.default_rng(2))
    if packed == "folder":
        folder = tmp_path / "cifar-10-batches-py"
        folder.mkdir()
        for name, data in files.items():
            (folder / name).write_bytes(data)
    else:
        write_tar_gz(tmp_path / "cifar-10-python.tar.gz", {f"cifar-10-batches-py/{k}": v for k, v in files.items()})
    ds = load_dataset("CIFAR10", root=tmp_path)
    assert ds.images.shape == (20, 3, 32, 32) and ds.images.dtype == torch.uint8
    # row = 1024 red, 1024 green, 1024 blue values, each 32x32 row-major
    assert np.array_equal(ds.images.numpy().reshape(20, 3072), images)
    assert ds.images[0, 1, 0, 5] == images[0, 1024 + 5]
    assert ds.labels.tolist() == labels.tolist()
    assert ds.classes[:2] == ["airplane", "automobile"]
    assert len(load_dataset("cifar10", root=tmp_path, split="test")) == 4


def test_cifar100_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    data = rng.integers(0, 256, (6, 3072), dtype=np.uint8)
    fine = [0, 99, 5, 5, 42, 7]
    for name in ("train", "test"):
        (folder / name).write_bytes(
            py2_pickle(
                {
                    b"data": data,
                    b"fine_labels": fine,
                    b"coarse_labels": [0] * 6,
                    b"filenames": [b"x"] * 6,
                    b"batch_label": b"b",
                }
            )
        )
    (folder / "meta").write_bytes(
        py2_pickle(
            {
                b"fine_label_names": [f"class{i}".encode() for i in range(100)],
                b"coarse_label_names": [f"super{i}".encode() for i in range(20)],
            }
        )
    )
    ds = load_dataset("cifar100", root=tmp_path, split="test")
    assert np.array_equal(ds.images.numpy().reshape(6, 3072), data)
    assert ds.labels.tolist() == fine and len(ds.classes) == 100 and ds.classes[99] == "class99"


def test_cifar10_imbalanced(tmp_path):
    files, _, labels = cifar10_files(np.random.default_rng(4), per_batch=40)
    write_tar_gz(tmp_path / "cifar-10-python.tar.gz", {f"cifar-10-batches-py/{k}": v for k, v in files.items()})
    lt = {"n_max": 20, "n_min": 2}
    ds = load_dataset("CIFAR10Imbalanced", root=tmp_path, long_tail=lt)
    assert ds.name == "cifar10-imbalanced"
    wanted = long_tail_counts(10, **lt)
    have = np.bincount(labels, minlength=10)
    assert torch.bincount(ds.labels, minlength=10).tolist() == np.minimum(wanted, have).tolist()
    test = load_dataset("CIFAR10Imbalanced", root=tmp_path, split="test", long_tail=lt)
    assert len(test) == 40  # balanced: untouched


def _cifar_folder(tmp_path: Path, batch: dict) -> None:
    files, _, _ = cifar10_files(np.random.default_rng(5))
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "data_batch_3").write_bytes(py2_pickle(batch))


def test_cifar_wrong_shape(tmp_path):
    _cifar_folder(tmp_path, {b"data": np.zeros((4, 1024), np.uint8), b"labels": [0] * 4})
    with pytest.raises(
        DataError,
        match=r"data_batch_3: 'data' is \(4, 1024\) uint8, expected "
        r"N x 3072 uint8",
    ) as error:
        load_dataset("cifar10", root=tmp_path)
    one_line(error)


def test_cifar_label_count_mismatch(tmp_path):
    _cifar_folder(tmp_path, {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0] * 3})
    with pytest.raises(DataError, match="data_batch_3: 3 labels for 4 images"):
        load_dataset("cifar10", root=tmp_path)


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_refused(tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar-10-batches-py"
    _cifar_folder(tmp_path, {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0] * 4})
    (folder / "data_batch_2").write_bytes(pickle.dumps({b"data": _Evil(marker)}, protocol=4))
    with pytest.raises(
        DataError,
        match=r"data_batch_2: refused to unpickle global "
        r"(posix|os|nt)\.system",
    ) as error:
        load_dataset("cifar10", root=tmp_path)
    one_line(error)
    assert not marker.exists()


def test_cifar_pickles_written_by_python3_at_protocol_2_load(tmp_path):
    """Python 3 writes bytes at protocol 2 through _codecs.encode(text, 'latin1'): allowed."""
    files, images, labels = cifar10_files(np.random.default_rng(6))
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name, data in files.items():
        with open(folder / name, "wb") as handle:  # re-saved the way a Python 3 user would
            pickle.dump(safe_load(io.BytesIO(data), name), handle, protocol=2)
    assert b"_codecs\nencode" in (folder / "data_batch_1").read_bytes()
    ds = load_dataset("cifar10", root=tmp_path)
    assert np.array_equal(ds.images.numpy().reshape(len(ds), 3072), images)
    assert ds.labels.tolist() == labels.tolist() and ds.classes[0] == "airplane"


def test_codecs_encode_is_allowed_only_as_latin1_bytes():
    # encode('x', 'rot13'): the same global with another codec, written by hand (protocol 2 opcodes)
    rot13 = b"\x80\x02c_codecs\nencode\nq\x00X\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R."
    with pytest.raises(
        DataError, match=r"^evil: refused to unpickle global _codecs.encode as encode\(str, 'rot13'\)"
    ) as error:
        safe_load(io.BytesIO(rot13), "evil")
    one_line(error)
    with pytest.raises(DataError, match=r"refused to unpickle global (posix|os|nt)\.system") as error:
        safe_load(io.BytesIO(pickle.dumps({b"data": _Evil(Path("/nonexistent/x"))}, protocol=2)), "evil")
    one_line(error)


def test_safe_load_refuses_other_numpy_globals():
    payload = pickle.dumps(np.load, protocol=2)
    with pytest.raises(DataError, match="refused"):
        safe_load(io.BytesIO(payload), "x")
    array = np.arange(6, dtype=np.uint8).reshape(2, 3)  # numpy 2's own pickles load too
    assert np.array_equal(safe_load(io.BytesIO(pickle.dumps(array, protocol=4)), "x"), array)


# ---------------------------------------------------------------------------------------------
# STL-10


def _stl_write_images(path: Path, images_nchw: np.ndarray) -> None:
    # on disk every channel is column-major: file[n, c, x, y] = image[n, c, y, x]
    path.write_bytes(np.ascontiguousarray(images_nchw.transpose(0, 1, 3, 2)).tobytes())


def test_stl10_round_trip_and_column_major(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    rng = np.random.default_rng(6)
    train = rng.integers(0, 256, (3, 3, 96, 96), dtype=np.uint8)
    unlabeled = rng.integers(0, 256, (2, 3, 96, 96), dtype=np.uint8)
    _stl_write_images(folder / "train_X.bin", train)
    _stl_write_images(folder / "unlabeled_X.bin", unlabeled)
    (folder / "train_y.bin").write_bytes(bytes([1, 10, 4]))
    (folder / "class_names.txt").write_text(
        "\n".join(["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"])
    )
    # test split written by hand: a single bright pixel at row 1, column 0 of channel 0
    (folder / "test_X.bin").write_bytes(b"\x00" + b"\xff" + bytes(27648 - 2))
    (folder / "test_y.bin").write_bytes(bytes([2]))

    ds = load_dataset("STL10", root=tmp_path, split="train")
    assert np.array_equal(ds.images.numpy(), train)
    assert ds.labels.tolist() == [0, 9, 3] and ds.classes[9] == "truck"
    test = load_dataset("stl10", root=tmp_path, split="test")
    assert test.images[0, 0, 1, 0] == 255 and int(test.images.sum()) == 255
    assert test.labels.tolist() == [1]
    un = load_dataset("stl10", root=tmp_path, split="unlabeled")
    assert un.labels is None and un.classes == [] and np.array_equal(un.images.numpy(), unlabeled)
    both = load_dataset("stl10", root=tmp_path, split="train+unlabeled")
    assert np.array_equal(both.images.numpy(), np.concatenate([train, unlabeled]))
    assert torch.equal(load_dataset("stl10", root=tmp_path, split="train+unlabeled", limit=4).images, both.images[:4])


def test_stl10_wrong_size(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    (folder / "unlabeled_X.bin").write_bytes(bytes(27648 + 5))
    message = "unlabeled_X.bin: 27653 bytes is not a positive multiple of 27648"
    with pytest.raises(DataError, match=re.escape(message)) as error:
        load_dataset("stl10", root=tmp_path, split="unlabeled")
    one_line(error)


# ---------------------------------------------------------------------------------------------
# ImageFolder and file lists


def test_imagefolder_round_trip(tmp_path):
    rng = np.random.default_rng(7)
    pixels = {}
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            for i in range(2):
                array = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
                path = tmp_path / split / cls / f"{i}.png"
                write_png(path, array)
                pixels[path] = array
    write_png(tmp_path / "train" / "dog" / "grey.png", np.full((16, 16), 77, np.uint8))
    ds = load_dataset("imagefolder", root=tmp_path, split="train", image_size=16)
    assert ds.classes == ["cat", "dog"] and ds.labels.tolist() == [0, 0, 1, 1, 1]
    assert ds.images.shape == (5, 3, 16, 16)
    dog0 = pixels[tmp_path / "train/dog/0.png"]
    assert np.array_equal(ds.images[2].numpy(), dog0.transpose(2, 0, 1))
    assert torch.all(ds.images[4] == 77)  # greyscale -> RGB
    val = load_dataset("ImageNet", root=tmp_path, split="val", image_size=8)
    assert val.images.shape == (4, 3, 8, 8)
    with pytest.raises(DataError, match="no test/ folder"):
        load_dataset("imagefolder", root=tmp_path, split="test")


def test_imagefolder_without_split_folder_and_resize(tmp_path):
    write_png(tmp_path / "a" / "x.png", np.zeros((20, 40, 3), np.uint8))
    ds = load_dataset("imagefolder", root=tmp_path)
    assert ds.images.shape == (1, 3, 64, 64) and ds.classes == ["a"]


def test_imagefolder_non_image_file(tmp_path):
    write_png(tmp_path / "train" / "a" / "x.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "train" / "a" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"notes.txt: not a readable image") as error:
        load_dataset("imagefolder", root=tmp_path)
    one_line(error)


def test_imagefolder_empty(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        load_dataset("imagefolder", root=tmp_path)
    (tmp_path / "train" / "a").mkdir()
    with pytest.raises(DataError, match="hold no image files"):
        load_dataset("imagefolder", root=tmp_path)


def _class_folder(root: Path, sizes: dict[str, int]) -> dict[tuple[str, int], int]:
    """root/<class>/<i>.png, every image one grey level (its id); returns (class, i) -> level."""
    levels, level = {}, 0
    for name, count in sizes.items():
        for i in range(count):
            level += 1
            levels[(name, i)] = level
            write_png(root / name / f"{i:02d}.png", np.full((4, 4), level, np.uint8))
    return levels


def test_limit_on_a_class_sorted_folder_is_a_seeded_class_balanced_subset(tmp_path):
    _class_folder(tmp_path, {"cat": 12, "dog": 12, "emu": 3, "fox": 12})
    everything = load_dataset("imagefolder", root=tmp_path, image_size=4)
    limited = load_dataset("imagefolder", root=tmp_path, image_size=4, limit=20)
    assert len(limited) == 20  # not 20 cats: 20 = 3 emus + the rest spread evenly
    assert sorted(torch.bincount(limited.labels).tolist()) == [3, 5, 6, 6]
    levels = everything.images[:, 0, 0, 0].tolist()
    rows = [levels.index(v) for v in limited.images[:, 0, 0, 0].tolist()]
    assert rows == sorted(rows)  # file order kept, each image with its own label
    assert torch.equal(limited.labels, everything.labels[rows])
    within = [r for r in rows if everything.labels[r] == 0]
    assert within != list(range(len(within)))  # drawn at random, not a class's first files
    again = load_dataset("imagefolder", root=tmp_path, image_size=4, limit=20)
    assert torch.equal(again.images, limited.images)  # the fixed seed: the same subset every time
    assert len(load_dataset("imagefolder", root=tmp_path, image_size=4, limit=100)) == len(everything)
    tail = load_dataset("imagefolder", root=tmp_path, image_size=4, limit=8, long_tail={"n_max": 12, "n_min": 3})
    assert torch.bincount(tail.labels).tolist() == [2, 2, 2, 2]  # limit after the long tail, balanced too


def test_limit_on_a_class_sorted_file_list_is_class_balanced(tmp_path):
    _class_folder(tmp_path / "img", {"a": 5, "b": 5, "c": 5})
    lines = [f"img/{c}/{i:02d}.png {k}" for k, c in enumerate("abc") for i in range(5)]
    (tmp_path / "list_train.txt").write_text("\n".join(lines) + "\n")
    ds = load_dataset("filelist", root=tmp_path, list_file="list_{split}.txt", image_size=4, limit=6)
    assert torch.bincount(ds.labels).tolist() == [2, 2, 2]


def test_limit_on_shuffled_formats_keeps_the_first_images():
    everything = load_dataset("digits")
    assert torch.equal(load_dataset("digits", limit=50).images, everything.images[:50])


def _list_setup(tmp_path: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(8)
    arrays = {}
    for name in ("quickdraw/a/0.png", "quickdraw/b dir/1.png", "quickdraw/a/2.png"):
        arrays[name] = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
        write_png(tmp_path / name, arrays[name])
    return arrays


def test_file_lists(tmp_path):
    arrays = _list_setup(tmp_path)
    (tmp_path / "quickdraw_train.txt").write_text("quickdraw/a/0.png 0\n\nquickdraw/b dir/1.png 344\n")
    (tmp_path / "quickdraw_test.txt").write_text("quickdraw/a/2.png 3\n")
    ds = load_dataset("quickdraw", root=tmp_path, image_size=12)
    assert ds.labels.tolist() == [0, 344] and len(ds.classes) == 345
    assert np.array_equal(ds.images[1].numpy(), arrays["quickdraw/b dir/1.png"].transpose(2, 0, 1))
    test = load_dataset("quickdraw", root=tmp_path, split="test", image_size=12)
    assert test.labels.tolist() == [3]

    (tmp_path / "train_kv_list.txt").write_text("quickdraw/a/2.png 199\n")
    tiny = load_dataset("TinyImageNet", root=tmp_path, image_size=12)
    assert tiny.labels.tolist() == [199] and len(tiny.classes) == 200

    generic = load_dataset("filelist", root=tmp_path, list_file="quickdraw_{split}.txt", image_size=12, split="test")
    assert generic.classes == ["0", "1", "2", "3"]


def test_file_list_missing_image(tmp_path):
    _list_setup(tmp_path)
    (tmp_path / "sketch_train.txt").write_text("quickdraw/a/0.png 0\nquickdraw/a/nope.png 1\n")
    with pytest.raises(DataError, match=r"sketch_train.txt:2: no image file .*nope.png") as error:
        load_dataset("sketch", root=tmp_path)
    one_line(error)


def test_file_list_bad_label(tmp_path):
    _list_setup(tmp_path)
    (tmp_path / "clipart_train.txt").write_text("# header\nquickdraw/a/0.png zero\n")
    with pytest.raises(DataError, match=r"clipart_train.txt:2: label 'zero' is not an integer"):
        load_dataset("clipart", root=tmp_path)
