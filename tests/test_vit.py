"""ViT-Tiny / ViT-Small (dogo.models.vit): parameter counts equal to timm's, the patch size chosen
from the image size, both poolings, other input sides, options checked when the config is read,
and a ViT encoder through everything that takes an encoder elsewhere (load_encoder, every export,
embed, every evaluation protocol)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import dogo
from dogo.cli import main
from dogo.config import build_config
from dogo.core.errors import ConfigError
from dogo.models import BACKBONES, backbone_options, build_backbone, count_parameters
from dogo.models.vit import default_patch_size


def timm_vit_count(dim: int, depth: int, patch: int, image_size: int, class_token: bool = True) -> int:
    """Parameters of timm's ``VisionTransformer(num_classes=0)``, from its architecture:

    - patch embedding: a ``patch x patch`` conv, 3 -> dim, with bias: ``3 * patch^2 * dim + dim``;
    - class token ``dim`` (when used) and position embeddings ``(tokens) * dim``, with
      ``tokens = (image_size / patch)^2`` patches plus the class token;
    - per block: 2 LayerNorms (``2 * 2 dim``), qkv ``dim * 3 dim + 3 dim``, proj ``dim^2 + dim``,
      MLP 4x ``dim * 4 dim + 4 dim`` and ``4 dim * dim + dim``: ``12 dim^2 + 13 dim``;
    - the final LayerNorm (``fc_norm`` with average pooling) ``2 dim``.
    """
    tokens = (image_size // patch) ** 2 + (1 if class_token else 0)
    embed = 3 * patch * patch * dim + dim + (dim if class_token else 0) + tokens * dim
    return embed + depth * (12 * dim * dim + 13 * dim) + 2 * dim


# timm's published sizes at 224 px with the 1000-way head: vit_tiny_patch16_224 5,717,416 and
# vit_small_patch16_224 22,050,664 parameters; less the head (dim * 1000 + 1000) that is 5,524,416
# and 21,665,664. The 32-px rows are timm's VisionTransformer(img_size=32, patch_size=4,
# num_classes=0) at the same dim / depth / heads, from the formula above.
COUNTS = [
    ("vit_tiny", 224, {}, 5_717_416 - (192 * 1000 + 1000)),  # 5,524,416
    ("vit_small", 224, {}, 22_050_664 - (384 * 1000 + 1000)),  # 21,665,664
    ("vit_tiny", 32, {}, 5_360_832),  # patch 4: 64 patches + cls = 65 tokens
    ("vit_small", 32, {}, 21_338_496),
    ("vit_tiny", 32, {"pool": "mean"}, 5_360_448),  # no class token: 192 + 192 fewer
    ("vit_tiny", 64, {}, 5_388_480),  # patch 8: 64 patches + cls
]


@pytest.mark.parametrize("name, size, options, expected", COUNTS)
def test_parameter_counts_equal_timms(name, size, options, expected) -> None:
    dim = {"vit_tiny": 192, "vit_small": 384}[name]
    patch = default_patch_size(size)
    assert expected == timm_vit_count(dim, 12, patch, size, class_token=options.get("pool", "cls") == "cls")
    with torch.device("meta"):
        model = build_backbone(name, image_size=size, **options)
    assert count_parameters(model) == expected and model.feature_dim == dim


def test_patch_size_follows_the_image_size_and_can_be_set() -> None:
    assert [default_patch_size(s) for s in (8, 28, 32, 63, 64, 96, 223, 224, 512)] == [4, 4, 4, 4, 8, 8, 8, 16, 16]
    assert build_backbone("vit_tiny", image_size=32, width=0.0625).patch_size == 4
    assert build_backbone("vit_tiny", image_size=32, width=0.0625, patch_size=8).grid == 4
    with pytest.raises(ConfigError, match=r"image size 30 is not a multiple of the patch size 4.*patch_size"):
        build_backbone("vit_tiny", image_size=30)


def test_features_width_and_pooling() -> None:
    torch.manual_seed(0)
    model = build_backbone("vit_small", image_size=16, width=0.0625).eval()
    assert model.feature_dim == 24 and model.blocks[0].attn.heads == 6  # width scales dim, keeps the heads
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (3, 24)
        tokens = model.blocks(
            torch.cat([model.cls_token.expand(3, -1, -1), model.patch_embed(x).flatten(2).transpose(1, 2)], 1)
            + model.pos_embed
        )
        torch.testing.assert_close(out, model.norm(tokens)[:, 0])  # the class token after the final norm
    mean = build_backbone("vit_tiny", image_size=16, width=0.0625, pool="mean").eval()
    assert mean.cls_token is None and mean(x).shape == (3, 12)
    y = model(x)
    y.square().sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_other_input_sides_get_interpolated_position_embeddings() -> None:
    torch.manual_seed(0)
    model = build_backbone("vit_tiny", image_size=32, width=0.0625)
    assert model.position_embedding(8, 8) is model.pos_embed
    with torch.no_grad():
        model.pos_embed[:, 1:] = 0.25  # a constant grid stays constant whatever its size
        small = model.position_embedding(3, 3)
    assert small.shape == (1, 1 + 9, 12)
    torch.testing.assert_close(small[:, 1:], torch.full((1, 9, 12), 0.25))
    torch.testing.assert_close(small[:, 0], model.pos_embed[:, 0])
    assert model(torch.randn(2, 3, 12, 12)).shape == (2, 12)
    with pytest.raises(ValueError, match="not a multiple of its patch size 4"):
        model(torch.randn(2, 3, 10, 10))


def test_backbone_options_are_checked_when_the_config_is_read() -> None:
    assert {"vit_tiny", "vit_small"} <= set(BACKBONES.names())
    assert backbone_options("vit_tiny", {"patch_size": 2}) == {"patch_size": 2}
    with pytest.raises(ConfigError, match="did you mean 'patch_size'"):
        backbone_options("vit_tiny", {"patch": 2})
    bad = [
        ({"backbone": "resnet18", "backbone_options": {"pool": "mean"}}, "takes no options"),
        ({"backbone": "vit_tiny", "backbone_options": {"pool": "max"}}, r"backbone_options\.pool"),
        ({"backbone": "vit_small", "backbone_options": {"patch_size": 0}}, "patch_size"),
    ]
    for peer, needle in bad:
        with pytest.raises(ConfigError, match=needle):
            build_config({"train": {"models": [peer]}})


# --------------------------------------------------------------- a ViT encoder elsewhere


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny digits cohort: a ResNet student and a ViT-Tiny peer (mean pooling, patch 4)."""
    root = tmp_path_factory.mktemp("vit")
    config = root / "tiny.yaml"
    config.write_text("""
name: tiny-vit
dataset: {name: digits, image_size: 16, options: {limit: 128}}
train:
  epochs: 1
  batch_size: 64
  precision: fp32
  models:
    - {name: student, objective: simclr, backbone: resnet18, width: 0.0625, distill_weight: 100}
    - {name: vit, objective: simclr, backbone: vit_tiny, width: 0.0625, backbone_options: {pool: mean, patch_size: 4}}
logging: {log_every: 1, save_every: 1, knn_every: 0, progress: false, tensorboard: false}
""")
    out = root / "run"
    assert main(["pretrain", str(config), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    from dogo.data import load_dataset

    return load_dataset("digits", split="test", limit=16).images


def vit_features(run: Path, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    encoder, preprocess = dogo.load_encoder(run, peer="vit")
    assert type(encoder).__name__ == "VisionTransformer" and not encoder.training and encoder.cls_token is None
    x = preprocess(images)
    with torch.no_grad():
        return x, encoder(x)


def test_vit_exports_load_without_dogo(run, images, tmp_path) -> None:
    x, expected = vit_features(run, images)
    assert expected.shape == (16, 12)
    out = tmp_path / "vit.ts"
    assert main(["export", str(run), "--peer", "vit", "--format", "torchscript", "--out", str(out)]) == 0
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(out))(x), expected, atol=1e-4, rtol=0)
    meta = json.loads(out.with_name("vit.ts.json").read_text())
    assert meta["architecture"] == "vit_tiny" and meta["backbone_options"] == {"pool": "mean", "patch_size": 4}

    safetensors = pytest.importorskip("safetensors.torch")
    out = tmp_path / "vit.safetensors"
    assert main(["export", str(run), "--peer", "vit", "--format", "safetensors", "--out", str(out)]) == 0
    meta = json.loads(out.with_name(out.name + ".json").read_text())
    backbone = dogo.build_backbone(
        meta["architecture"], image_size=meta["image_size"], width=meta["width"], **meta["backbone_options"]
    )
    backbone.load_state_dict(safetensors.load_file(str(out)))
    with torch.no_grad():
        torch.testing.assert_close(backbone.eval()(x), expected, atol=1e-5, rtol=0)


def test_vit_onnx_export_runs(run, images, tmp_path) -> None:
    onnx = pytest.importorskip("onnx")
    out = tmp_path / "vit.onnx"
    assert main(["export", str(run), "--peer", "vit", "--format", "onnx", "--out", str(out)]) == 0
    onnx.checker.check_model(onnx.load(str(out)))
    ort = pytest.importorskip("onnxruntime")
    x, expected = vit_features(run, images)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert np.allclose(session.run(["features"], {"images": x.numpy()})[0], expected.numpy(), atol=1e-4)


def test_vit_embed(run, images, tmp_path) -> None:
    out = tmp_path / "digits.npy"
    assert main(["embed", str(run), "--peer", "vit", "--data", "digits", "--split", "test", "--out", str(out)]) == 0
    _, expected = vit_features(run, images)
    assert np.allclose(np.load(out)[:16], expected.numpy(), atol=1e-4)


PROTOCOLS = [
    ("linear", ["epochs=2"]),
    ("knn", ["k=10"]),
    ("fewshot", ["fractions=0.1", "per_class=2", "draws=1", "epochs=2", "finetune=true", "finetune_epochs=1"]),
    ("noisy", ["rates=0.4", "epochs=2"]),
    ("transfer", ["dataset=digits", "epochs=2"]),
    ("shift", ["corruptions=gaussian_noise", "severities=1", "epochs=2", "max_test_images=50"]),
]


def test_every_protocol_runs_on_a_vit_encoder(run, capsys) -> None:
    from dogo.evaluate import PROTOCOLS as REGISTERED

    assert sorted(p for p, _ in PROTOCOLS) == REGISTERED.names()  # a new protocol joins this list
    for protocol, settings in PROTOCOLS:
        assert main(["evaluate", str(run), "--peer", "vit", "--protocol", protocol, *settings, "--json"]) == 0, protocol
        (result,) = json.loads(capsys.readouterr().out)
        assert result["peer_label"] == "vit" and result["summary"], protocol
