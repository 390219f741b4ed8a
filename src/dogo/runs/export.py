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

Every export writes a sidecar ``FILE.json``: architecture, width, backbone options (a ViT's patch
size and pooling), image size, normalisation,
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
from dogo.guards.outputs import Outputs, check_target, render
from dogo.runs.export_code import check_code_path, module_source

FORMATS = ("safetensors", "torchscript", "onnx")
ONNX_OPSET = 17


def sidecar_path(out: str | Path) -> Path:
    """``model.onnx`` -> ``model.onnx.json`` (so exports of several formats never share one)."""
    out = Path(out)
    return out.with_name(out.name + ".json")


def _need(module: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DogoError(
            f"this format needs the {module} package: pip install 'dogo[{extra}]' (or pip install {module})"
        ) from None


# Each writer renders the file in memory (:mod:`dogo.guards.outputs` writes it to disk, so a full disk
# is one line whatever the format, and no library sees the disk).


def _write_safetensors(encoder: nn.Module, metadata: dict[str, str]) -> bytes:
    _need("safetensors", "export")
    from safetensors.torch import save

    state = {key: value.detach().cpu().contiguous().clone() for key, value in encoder.state_dict().items()}
    return save(state, metadata=metadata)


def _write_torchscript(encoder: nn.Module, example: torch.Tensor) -> bytes:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice: the format is still what was asked
        traced = torch.jit.trace(encoder, example)
        return render(lambda handle: torch.jit.save(traced, handle))


def _write_onnx(encoder: nn.Module, example: torch.Tensor) -> bytes:
    _need("onnx", "onnx")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice (no onnxscript needed)
        return render(
            lambda handle: torch.onnx.export(
                encoder,
                (example,),
                handle,  # type: ignore[arg-type]  # the legacy (dynamo=False) exporter writes to a file object too
                dynamo=False,
                opset_version=ONNX_OPSET,
                input_names=["images"],
                output_names=["features"],
                dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
            )
        )


def export_encoder(
    run_dir: str | Path, out: str | Path, fmt: str, *, peer: str | int = 0, checkpoint: str = "last"
) -> tuple[Path, Path]:
    """Write one peer's encoder to ``out`` in ``fmt`` and its sidecar JSON; returns both paths."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    out = Path(out)
    if not out.parent.is_dir():
        raise DogoError(f"{out.parent}: no such folder for --out; create it first, or name a file in an existing one")
    meta = sidecar_path(out)
    check_target(out), check_target(meta)  # before any work: never over a run's files or an input
    code = check_code_path(out) if fmt == "safetensors" else None  # refused before anything is written
    if code is not None:
        check_target(code)
    from dogo.guards.locks import holding

    with holding(out.parent):  # one export or embedding into a folder at a time
        return _export(run_dir, out, meta, code, fmt, peer, checkpoint)


def _export(
    run_dir: str | Path, out: Path, meta: Path, code: Path | None, fmt: str, peer: str | int, checkpoint: str
) -> tuple[Path, Path]:
    from dogo.runs.encoder import load_encoder_with_info

    encoder, preprocess, info = load_encoder_with_info(run_dir, peer, checkpoint)
    check_target(out), check_target(meta)  # the checkpoint is an input now
    example = torch.zeros(2, 3, info.image_size, info.image_size)
    sidecar = {"format": fmt, "file": out.name, **info.as_dict(), "preprocessing": preprocess.describe()}
    if fmt == "onnx":
        sidecar.update(onnx_opset=ONNX_OPSET, input_name="images", output_name="features")
    if code is not None:
        sidecar["python"] = code.name  # load(FILE) -> nn.Module, torch only
    if fmt == "safetensors":
        data = _write_safetensors(encoder, {"dogo": json.dumps(sidecar)})
    elif fmt == "torchscript":
        data = _write_torchscript(encoder, example)
    else:
        data = _write_onnx(encoder, example)
    sidecar["sha256"] = hashlib.sha256(data).hexdigest()
    with Outputs() as written:  # all or none: the sidecar always describes the files beside it
        written.write(out, data)
        if code is not None:
            written.write(code, module_source(sidecar))
        written.write(meta, json.dumps(sidecar, indent=2) + "\n")
    return out, meta
