"""``dogo embed``: a run's encoder applied to every image of a dataset or a folder, saved as one array.

``--data`` is a dataset name (``digits``, ``cifar10``, ... with ``--split`` and ``--root``) or a
folder of image files (read recursively, sorted by path; any size: each image gets the exact
evaluation-time preprocessing of :func:`dogo.views.eval_transform` on its own, so nothing is
resized twice). The output is ``N x feature_dim`` float32:

- ``FILE.npy``: the features (``numpy.load``);
- ``FILE.safetensors``: tensors ``features`` and, for a labelled dataset, ``labels``.

A sidecar ``FILE.json`` records the encoder (as ``dogo export`` does), the data (name, split,
count) and, for a folder, the file of each row, in order.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from dogo.core.errors import DataError, DogoError
from dogo.guards.inputs import reading
from dogo.guards.outputs import Data, Outputs, check_target
from dogo.runs.export import sidecar_path

OUTPUT_SUFFIXES = (".npy", ".safetensors")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive, hidden entries skipped), sorted by relative path."""
    files = [
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def _decode(path: Path) -> torch.Tensor:
    """One file as uint8 ``1 x C x H x W`` (grey stays one channel, as dataset readers keep it)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            image = opened.convert("L") if opened.mode in ("L", "I", "I;16", "1") else opened.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image ({' '.join(str(exc).split())})") from None
    array = np.asarray(image, dtype=np.uint8)
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return torch.from_numpy(array.copy()).unsqueeze(0)


def _folder_batches(files: list[Path], preprocess, batch_size: int) -> Iterator[torch.Tensor]:
    batch = []
    for path in files:
        batch.append(preprocess(_decode(path)))
        if len(batch) == batch_size:
            yield torch.cat(batch)
            batch = []
    if batch:
        yield torch.cat(batch)


def _dataset_batches(images: torch.Tensor, preprocess, batch_size: int) -> Iterator[torch.Tensor]:
    for start in range(0, len(images), batch_size):
        yield preprocess(images[start : start + batch_size])


def embed(
    run_dir: str | Path,
    data: str,
    out: str | Path,
    *,
    peer: str | int = 0,
    checkpoint: str = "last",
    split: str = "train",
    root: str | None = None,
    batch_size: int = 256,
    device: str = "cpu",
) -> tuple[Path, Path, int]:
    """Features of every image of ``data`` by one peer's encoder -> ``out`` and its sidecar.

    Returns ``(out, sidecar, number of images)``.
    """
    out = Path(out)
    if out.suffix not in OUTPUT_SUFFIXES:
        raise DogoError(f"--out {out}: name a .npy or .safetensors file")
    if not out.parent.is_dir():
        raise DogoError(f"{out.parent}: no such folder for --out; create it first, or name a file in an existing one")
    sidecar = sidecar_path(out)
    check_target(out), check_target(sidecar)  # before any work: never over a run's files or an input
    from dogo.guards.locks import holding

    with holding(out.parent):  # one export or embedding into a folder at a time
        return _embed(run_dir, data, out, sidecar, peer, checkpoint, split, root, batch_size, device)


def _embed(
    run_dir: str | Path,
    data: str,
    out: Path,
    sidecar: Path,
    peer: str | int,
    checkpoint: str,
    split: str,
    root: str | None,
    batch_size: int,
    device: str,
) -> tuple[Path, Path, int]:
    from dogo.runs.encoder import load_encoder_with_info

    encoder, preprocess, info = load_encoder_with_info(run_dir, peer, checkpoint, device)
    source: dict[str, Any]
    labels = None
    folder = Path(data)
    if folder.is_dir():
        files = image_files(folder)
        if not files:
            raise DataError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
        reading(*files)
        batches = _folder_batches(files, preprocess, batch_size)
        source = {"folder": str(folder), "files": [p.relative_to(folder).as_posix() for p in files]}
    else:
        from dogo.data import load_dataset

        dataset = load_dataset(data, root=root, split=split)
        labels = dataset.labels
        batches = _dataset_batches(dataset.images, preprocess, batch_size)
        source = {"dataset": dataset.name, "split": split, "source": dataset.source, "classes": list(dataset.classes)}
    chunks = []
    with torch.no_grad():
        for batch in batches:
            chunks.append(encoder(batch.to(device)).flatten(1).float().cpu())
    features = torch.cat(chunks)
    if out.suffix == ".npy":
        import numpy as np

        payload: Data = lambda handle: np.save(handle, features.numpy())  # noqa: E731 - rendered by Outputs
    else:
        from dogo.runs.export import _need

        _need("safetensors", "export")
        from safetensors.torch import save

        tensors = {"features": features.contiguous()}
        if labels is not None:
            tensors["labels"] = labels.contiguous()
        payload = save(tensors)
    meta = {
        "file": out.name,
        "rows": int(features.shape[0]),
        "feature_dim": int(features.shape[1]),
        "has_labels": labels is not None and out.suffix == ".safetensors",
        "encoder": info.as_dict(),
        "preprocessing": preprocess.describe(),
        "data": source,
    }
    with Outputs() as written:  # both or neither: the sidecar always describes the file beside it
        written.write(out, payload)
        written.write(sidecar, json.dumps(meta, indent=2) + "\n")
    return out, sidecar, int(features.shape[0])
