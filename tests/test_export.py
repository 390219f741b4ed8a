"""Taking the backbone elsewhere: `dogo export` (each format loaded without dogo), `dogo embed`,
`dogo.load_encoder`, peers by name, and checkpoints read with plain `torch.load`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import dogo
from dogo.cli import main

TOLERANCE = 1e-4  # max |difference| of features (fp32 on the CPU; ONNX Runtime fuses ops differently)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny two-peer digits run whose peers are named student and teacher."""
    root = tmp_path_factory.mktemp("export")
    config = root / "tiny.yaml"
    config.write_text("""
name: tiny
dataset: {name: digits, image_size: 8, options: {limit: 128}}
train:
  epochs: 1
  batch_size: 64
  precision: fp32
  models:
    - {name: student, objective: simclr, backbone: resnet18, width: 0.0625}
    - {name: teacher, objective: simsiam, backbone: resnet18, width: 0.125}
logging: {log_every: 1, save_every: 1, knn_every: 0, progress: false, tensorboard: false}
""")
    out = root / "run"
    assert main(["pretrain", str(config), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    from dogo.data import load_dataset

    return load_dataset("digits", split="test", limit=16).images


def reference_features(run: Path, images: torch.Tensor, peer) -> tuple[torch.Tensor, torch.Tensor]:
    encoder, preprocess = dogo.load_encoder(run, peer=peer)
    x = preprocess(images)
    with torch.no_grad():
        return x, encoder(x)


def test_load_encoder_is_the_peer_encoder_in_eval_mode(run, images):
    from dogo.training.cohort import load_trained_peers

    encoder, preprocess = dogo.load_encoder(run, peer="teacher")
    assert not encoder.training and preprocess.image_size == 8
    _, peers, _ = load_trained_peers(run)
    x = preprocess(images)
    with torch.no_grad():
        assert torch.equal(encoder(x), peers[1].encoder.eval()(x))
    by_index, _ = dogo.load_encoder(run, peer=1)
    with torch.no_grad():
        assert torch.equal(by_index(x), encoder(x))


def test_unknown_peer_is_a_one_line_error(run, capsys):
    assert main(["export", str(run), "--peer", "nobody", "--format", "torchscript", "--out", str(run / "x.ts")]) == 2
    err = capsys.readouterr().err
    assert "0 (student), 1 (teacher)" in err and "Traceback" not in err


def test_torchscript_loads_with_torch_jit(run, images, tmp_path):
    out = tmp_path / "student.ts"
    assert main(["export", str(run), "--peer", "student", "--format", "torchscript", "--out", str(out)]) == 0
    x, expected = reference_features(run, images, "student")
    loaded = torch.jit.load(str(out))
    with torch.no_grad():
        assert torch.allclose(loaded(x), expected, atol=TOLERANCE)
    meta = json.loads(out.with_name("student.ts.json").read_text())
    assert meta["architecture"] == "resnet18" and meta["width"] == 0.0625 and meta["image_size"] == 8
    assert meta["feature_dim"] == expected.shape[1] and meta["peer_label"] == "student"
    assert meta["normalization"]["mean"] and meta["dogo_version"] == dogo.__version__
    assert len(meta["source_checkpoint_sha256"]) == 64


def test_safetensors_loads_into_a_fresh_backbone(run, images, tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    out = tmp_path / "teacher.safetensors"
    assert (
        main(
            ["export", str(run), "--peer", "1", "--checkpoint", "epoch-1", "--format", "safetensors", "--out", str(out)]
        )
        == 0
    )
    meta = json.loads(out.with_name(out.name + ".json").read_text())
    state = safetensors.load_file(str(out))
    assert not any(k.startswith(("objective.", "encoder.")) for k in state)  # the backbone alone
    backbone = dogo.build_backbone(meta["architecture"], image_size=meta["image_size"], width=meta["width"])
    backbone.load_state_dict(state)
    x, expected = reference_features(run, images, "teacher")
    with torch.no_grad():
        assert torch.allclose(backbone.eval()(x), expected, atol=TOLERANCE)


def test_onnx_passes_the_checker_and_runs(run, images, tmp_path):
    onnx = pytest.importorskip("onnx")
    out = tmp_path / "student.onnx"
    assert main(["export", str(run), "--format", "onnx", "--out", str(out)]) == 0
    onnx.checker.check_model(onnx.load(str(out)))
    ort = pytest.importorskip("onnxruntime")
    x, expected = reference_features(run, images, 0)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(["features"], {"images": x.numpy()})[0]
    assert np.allclose(got, expected.numpy(), atol=TOLERANCE)


def test_embed_a_dataset_and_a_folder(run, images, tmp_path):
    out = tmp_path / "digits.npy"
    assert main(["embed", str(run), "--peer", "student", "--data", "digits", "--split", "test", "--out", str(out)]) == 0
    features = np.load(out)
    _, expected = reference_features(run, images, "student")
    assert features.shape[0] == 360 and np.allclose(features[:16], expected.numpy(), atol=TOLERANCE)
    meta = json.loads((tmp_path / "digits.npy.json").read_text())
    assert meta["data"]["split"] == "test" and meta["rows"] == 360

    from PIL import Image

    folder = tmp_path / "pictures"
    (folder / "sub").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(images[i, 0].numpy()).save(folder / ("sub" if i else ".") / f"img{i}.png")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "folder.npy"
    assert main(["embed", str(run), "--peer", "student", "--data", str(folder), "--out", str(out)]) == 0
    features = np.load(out)
    meta = json.loads((tmp_path / "folder.npy.json").read_text())
    assert meta["data"]["files"] == ["img0.png", "sub/img1.png", "sub/img2.png"]
    assert np.allclose(features, expected[:3].numpy(), atol=TOLERANCE)


def test_embed_safetensors_holds_labels(run, tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    out = tmp_path / "digits.safetensors"
    assert main(["embed", str(run), "--data", "digits", "--split", "test", "--out", str(out)]) == 0
    tensors = safetensors.load_file(str(out))
    assert tensors["features"].shape[0] == tensors["labels"].shape[0] == 360


def test_checkpoint_weights_read_with_plain_torch_load(run):
    """The layout documented in docs/python-api.md: torch.load twice, weights_only, no dogo code."""
    code = f"""
import io, sys, torch
outer = torch.load({str(run / "checkpoints" / "last.pt")!r}, weights_only=True)
state = torch.load(io.BytesIO(outer["payload"].numpy().tobytes()), weights_only=True)
encoder = {{k[len("encoder."):]: v for k, v in state["peers"][0].items() if k.startswith("encoder.")}}
assert "dogo" not in sys.modules
print(outer["format"], len(state["peers"]), state["labels"], len(encoder))
"""
    env_free = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    fmt, count, *rest = env_free.stdout.split(maxsplit=2)
    assert fmt == "dogo-checkpoint-v1" and count == "2" and "student" in rest[0]


def test_evaluate_peer_by_name(run, capsys):
    assert main(["evaluate", str(run), "--peer", "teacher", "--protocol", "knn", "k=5", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["peer"] for r in results] == [1] and results[0]["peer_label"] == "teacher"
    assert (
        main(
            [
                "evaluate",
                str(run),
                "--peer",
                "teacher",
                "--checkpoint",
                "epoch-1",
                "--protocol",
                "knn",
                "k=5",
                "--quiet",
            ]
        )
        == 0
    )
    names = sorted(p.name for p in (run / "eval").iterdir())
    assert "knn-peer1.json" in names and "knn-peer1@epoch-1.json" in names
    assert json.loads((run / "eval" / "knn-peer1@epoch-1.json").read_text())["checkpoint_name"] == "epoch-1"


def test_import_dogo_is_cheap_and_exposes_the_api():
    code = (
        "import sys, dogo; assert 'torch' not in sys.modules, 'import dogo pulled torch'; "
        "names = ['load_config', 'Trainer', 'load_encoder', 'evaluate', 'BACKBONES', 'OBJECTIVES', "
        "'DATASETS', 'PROTOCOLS']; [getattr(dogo, n) for n in names]; "
        "assert callable(dogo.evaluate) and 'knn' in dogo.PROTOCOLS.names(); print('ok')"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "ok\n"


def test_peers_by_name_or_index_on_every_command_and_in_metrics(run, tmp_path, capsys):
    """metrics.jsonl keys peers by name; evaluate, export and embed take --peer teacher and --peer 1 alike."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(f"peer/{name}/loss" in rows[0] for name in ("student", "teacher"))
    assert not any(key.startswith(("peer/0/", "peer/1/")) for row in rows for key in row)
    outputs = {}
    for peer in ("teacher", "1"):
        assert main(["evaluate", str(run), "--peer", peer, "--protocol", "knn", "k=5", "--json"]) == 0
        (result,) = json.loads(capsys.readouterr().out)
        out = tmp_path / peer  # the same file names: the sidecars name the file
        out.mkdir()
        assert main(["export", str(run), "--peer", peer, "--format", "safetensors", "--out", str(out / "enc.st")]) == 0
        assert (
            main(
                [
                    "embed",
                    str(run),
                    "--peer",
                    peer,
                    "--data",
                    "digits",
                    "--split",
                    "test",
                    "--out",
                    str(out / "emb.npy"),
                ]
            )
            == 0
        )
        capsys.readouterr()
        outputs[peer] = (
            result["peer"],
            result["summary"],
            (out / "enc.st").read_bytes(),
            np.load(out / "emb.npy").tolist(),
        )
    assert outputs["teacher"] == outputs["1"] and outputs["1"][0] == 1
