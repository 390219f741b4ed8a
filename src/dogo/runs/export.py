"""``dogo export``: one peer's encoder as a file other code loads without dogo.

Formats (``--format``):

- ``safetensors``: the backbone's state dict, and beside it ``FILE.py`` (``student.safetensors`` ->
  ``student.py``): the backbone in plain torch with ``load(weights_path) -> nn.Module`` and
  ``preprocess(images)``, generated from dogo's own source (:mod:`dogo.runs.export_code`), so the
  weights load where dogo is not installed. Writing needs the ``safetensors`` package (``pip install
  'dogo[export]'``); loading with ``FILE.py`` needs torch only.
- ``torchscript``: the traced encoder (``torch.jit.load(FILE)``; any batch size, input of the
  sidecar's ``image_size``).
- ``onnx``: opset 17, input ``images`` (``B x 3 x S x S`` float32, dynamic batch), output
  ``features`` (``B x feature_dim``). Written with torch's TorchScript-based exporter, which
  needs the ``onnx`` package only (``pip install 'dogo[onnx]'``; ``onnxruntime`` to run it).

Every export writes a sidecar ``FILE.json``: architecture, width, image size, normalisation,
the preprocessing steps, feature size, peer, source checkpoint and its sha256, dogo and torch
versions, and the export file's own sha256. Only the encoder is exported: no heads, optimiser
state or other peers.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dogo.core.errors import ConfigError, DogoError
from dogo.core.fileio import atomic_path
from dogo.runs.export_code import check_code_path, module_source

FORMATS = ("safetensors", "torchscript", "onnx")
ONNX_OPSET = 17


def sidecar_path(out: str | Path) -> Path:
    """``model.onnx`` -> ``model.onnx.json`` (so exports of several formats never share one)."""
    out = Path(out)
    return out.with_name(out.name + ".json")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _need(module: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DogoError(f"this format needs the {module} package: pip install 'dogo[{extra}]' "
                        f"(or pip install {module})") from None


def _write_safetensors(encoder: nn.Module, out: Path, metadata: dict[str, str]) -> None:
    _need("safetensors", "export")
    from safetensors.torch import save_file

    state = {key: value.detach().cpu().contiguous().clone() for key, value in encoder.state_dict().items()}
    save_file(state, str(out), metadata=metadata)


def _write_torchscript(encoder: nn.Module, out: Path, example: torch.Tensor) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice: the format is still what was asked
        traced = torch.jit.trace(encoder, example)
        torch.jit.save(traced, str(out))


def _write_onnx(encoder: nn.Module, out: Path, example: torch.Tensor) -> None:
    _need("onnx", "onnx")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice (no onnxscript needed)
        torch.onnx.export(encoder, (example,), str(out), dynamo=False, opset_version=ONNX_OPSET,
                          input_names=["images"], output_names=["features"],
                          dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}})


def export_encoder(run_dir: str | Path, out: str | Path, fmt: str, *, peer: str | int = 0,
                   checkpoint: str = "last") -> tuple[Path, Path]:
    """Write one peer's encoder to ``out`` in ``fmt`` and its sidecar JSON; returns both paths."""
    from dogo.runs.encoder import load_encoder_with_info

    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    out = Path(out)
    if not out.parent.is_dir():
        raise DogoError(f"{out.parent}: no such folder for --out")
    code = check_code_path(out) if fmt == "safetensors" else None  # refused before anything is written
    encoder, preprocess, info = load_encoder_with_info(run_dir, peer, checkpoint)
    example = torch.zeros(2, 3, info.image_size, info.image_size)
    sidecar = {"format": fmt, "file": out.name, **info.as_dict(), "preprocessing": preprocess.describe()}
    if fmt == "onnx":
        sidecar.update(onnx_opset=ONNX_OPSET, input_name="images", output_name="features")
    if code is not None:
        sidecar["python"] = code.name  # load(FILE) -> nn.Module, torch only
    try:
        with atomic_path(out) as tmp:
            if fmt == "safetensors":
                _write_safetensors(encoder, tmp, {"dogo": json.dumps(sidecar)})
            elif fmt == "torchscript":
                _write_torchscript(encoder, tmp, example)
            else:
                _write_onnx(encoder, tmp, example)
    except OSError as exc:
        raise DogoError(f"{out}: cannot write ({exc.strerror or exc})") from None
    sidecar["sha256"] = _sha256(out)
    if code is not None:
        with atomic_path(code) as tmp:
            tmp.write_text(module_source(sidecar))
    meta = sidecar_path(out)
    with atomic_path(meta) as tmp:
        tmp.write_text(json.dumps(sidecar, indent=2) + "\n")
    return out, meta
