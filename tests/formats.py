"""Writers of the real on-disk dataset formats, shared by the tests.

They produce the exact layouts of the published datasets (IDX headers, Python 2 protocol-2
CIFAR pickles, PNG folders, tarballs), so tests exercise the readers' byte order, not just
their self-consistency.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    """An IDX file: magic 0x0000 08 <ndim>, big-endian uint32 dims, then the bytes."""
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


class Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Pickles as Python 2's cPickle wrote the CIFAR batches: protocol 2, ``str`` as BINSTRING,
    numpy globals under ``numpy.core.multiarray``."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_py2str(self, obj):
        data = obj if isinstance(obj, bytes) else obj.encode("latin-1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2str
    dispatch[str] = save_py2str

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        name = name or obj.__qualname__
        self.write(pickle.GLOBAL + module.encode() + b"\n" + name.encode() + b"\n")
        self.memoize(obj)


def py2_pickle(obj) -> bytes:
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def cifar10_files(rng: np.random.Generator, per_batch: int = 4) -> tuple[dict[str, bytes], np.ndarray, np.ndarray]:
    """The CIFAR-10 file set (name -> bytes) plus the train images/labels it encodes."""
    files, all_images, all_labels = {}, [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(x) for x in rng.integers(0, 10, per_batch)]
        files[name] = py2_pickle(
            {
                b"batch_label": b"training batch",
                b"labels": labels,
                b"data": data,
                b"filenames": [f"img_{i}.png".encode() for i in range(per_batch)],
            }
        )
        if name != "test_batch":
            all_images.append(data)
            all_labels.extend(labels)
    files["batches.meta"] = py2_pickle(
        {
            b"label_names": [
                n.encode()
                for n in ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
            ],
            b"num_cases_per_batch": per_batch,
            b"num_vis": 3072,
        }
    )
    return files, np.concatenate(all_images), np.asarray(all_labels)


def write_tar_gz(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def write_png(path: Path, array_hwc: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array_hwc).save(path)
