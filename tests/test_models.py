"""Backbones and heads (dogo.models): architecture checks against published parameter counts,
output shapes at every supported image size, and the pooled-feature contract."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn as nn

from dogo.core.errors import ConfigError
from dogo.models import (
    BACKBONES,
    SimCLRHead,
    SimSiamPredictor,
    SimSiamProjector,
    build_backbone,
    count_parameters,
    scale_channels,
)
from dogo.models.shufflenet import channel_shuffle

# feature_dim at width 1 (docs/reference.md §3; WRN-d-k: 64k).
FEATURE_DIMS = {
    "resnet18": 512,
    "resnet34": 512,
    "resnet50": 2048,
    "wrn10": 128,
    "wrn16": 128,
    "wrn16-4": 256,
    "wrn16-8": 512,
    "wrn28": 128,
    "mobilenetv2": 1280,
    "shufflenetv2": 1024,
}
NAMES = sorted(FEATURE_DIMS)
SIZES = (32, 64, 96, 224)

# Parameter counts of torchvision's ImageNet models, 1000-way fc included (docs/reference.md §3;
# torchvision's model documentation lists the same numbers).
TORCHVISION_COUNTS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "mobilenetv2": 3_504_872,
    "shufflenetv2": 2_278_604,
}

# Last feature map before pooling: (module attribute, spatial side at each image size).
# CIFAR stems give total stride 8 below 100 px; ImageNet strides give 32 at 224 px;
# the WRNs keep their CIFAR total stride 4 at every size.
LAST_MAP = {
    "resnet": ("layer4", {32: 4, 64: 8, 96: 12, 224: 7}),
    "mobilenetv2": ("features", {32: 4, 64: 8, 96: 12, 224: 7}),
    "shufflenetv2": ("conv5", {32: 4, 64: 8, 96: 12, 224: 7}),
    "wrn": ("block3", {32: 8, 64: 16, 96: 24, 224: 56}),
}


def last_map(name: str) -> tuple[str, dict[int, int]]:
    return LAST_MAP[next(key for key in LAST_MAP if name.startswith(key))]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_registry_has_exactly_the_reference_names() -> None:
    assert BACKBONES.names() == sorted([*NAMES, "vit_small", "vit_tiny"])  # the ViTs: tests/test_vit.py


@pytest.mark.parametrize("name", sorted(TORCHVISION_COUNTS))
def test_parameter_count_matches_torchvision(name: str) -> None:
    model = build_backbone(name, image_size=224)
    fc = model.feature_dim * 1000 + 1000
    assert count_parameters(model) + fc == TORCHVISION_COUNTS[name]


def wrn_count(depth: int, k: int, classes: int = 10) -> int:
    """WRN-depth-k parameters from the architecture (Zagoruyko & Komodakis 2016, Table 1):
    stem conv, three groups of n pre-activation blocks (BN, conv3x3, BN, conv3x3, 1x1 shortcut
    where the width changes), final BN, and a ``classes``-way fc."""
    n = (depth - 4) // 6
    widths = [16, 16 * k, 32 * k, 64 * k]
    total = 3 * 9 * 16
    for c_in, c in itertools.pairwise(widths):
        for i in range(n):
            c_block = c_in if i == 0 else c
            total += 2 * c_block + 9 * c_block * c + 2 * c + 9 * c * c
            total += c_block * c if c_block != c else 0
    return total + 2 * widths[-1] + widths[-1] * classes + classes


def test_wrn_formula_gives_the_published_counts() -> None:
    # WRN-28-10: 36.5M (paper, Table 4); 36,479,194 with a 10-way fc in the widely used
    # PyTorch port (xternalz/WideResNet-pytorch) and the reference's wide_resnet.py.
    # WRN-16-8: 11.0M (paper, Table 4); 10,961,370 with a 10-way fc.
    assert wrn_count(28, 10) == 36_479_194
    assert wrn_count(16, 8) == 10_961_370


@pytest.mark.parametrize(("depth", "k", "expected"), [(28, 10, 36_479_194), (16, 8, 10_961_370)])
def test_wrn_parameter_count_matches_published(depth: int, k: int, expected: int) -> None:
    from dogo.models.wide_resnet import WideResNet

    model = WideResNet(depth, k)
    assert count_parameters(model) + model.feature_dim * 10 + 10 == expected


@pytest.mark.parametrize(
    ("name", "depth", "k"),
    [("wrn10", 10, 2), ("wrn16", 16, 2), ("wrn16-4", 16, 4), ("wrn16-8", 16, 8), ("wrn28", 28, 2)],
)
def test_registered_wrn_counts_follow_the_formula(name: str, depth: int, k: int) -> None:
    # No unused extra block (the reference's sub_block1) and no fc.
    model = build_backbone(name)
    assert count_parameters(model) == wrn_count(depth, k, classes=0)
    assert model.feature_dim == 64 * k


@pytest.mark.parametrize("name", NAMES)
def test_feature_dim_at_width_one(name: str) -> None:
    model = build_backbone(name, image_size=32).eval()
    assert model.feature_dim == FEATURE_DIMS[name]
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, FEATURE_DIMS[name])


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", NAMES)
def test_output_shape_and_last_map(name: str, size: int) -> None:
    # width 0.25 keeps the 224-px WRNs (CIFAR strides) fast; shapes do not depend on width.
    model = build_backbone(name, image_size=size, width=0.25).eval()
    attribute, sides = last_map(name)
    seen: list[torch.Size] = []
    getattr(model, attribute).register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, model.feature_dim)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert seen[0][-2:] == (sides[size], sides[size])
    assert seen[0][1] == model.feature_dim


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [32, 224])
def test_backbones_have_no_classifier(name: str, size: int) -> None:
    model = build_backbone(name, image_size=size, width=0.25)
    assert not any(isinstance(m, nn.Linear) for m in model.modules())


@pytest.mark.parametrize("name", NAMES)
def test_width_multiplier_shrinks_parameters(name: str) -> None:
    full = count_parameters(build_backbone(name, width=1.0))
    half = count_parameters(build_backbone(name, width=0.5))
    quarter = count_parameters(build_backbone(name, width=0.25))
    assert quarter < half < full


def test_width_scales_resnet_channels() -> None:
    # "ResNet-18 at width 16" (docs/reference.md §3.1) is width 0.25.
    model = build_backbone("resnet18", width=0.25)
    assert model.conv1.out_channels == 16
    assert model.feature_dim == 128
    assert build_backbone("resnet50", width=0.25).feature_dim == 512
    assert build_backbone("wrn16-8", width=0.5).feature_dim == 256
    assert scale_channels(64, 0.25) == 16
    assert scale_channels(116, 0.5, divisor=2) == 58
    assert scale_channels(3, 0.01) == 1


def test_stems_depend_on_image_size() -> None:
    small, large = build_backbone("resnet18", 32), build_backbone("resnet18", 224)
    assert (small.conv1.kernel_size, small.conv1.stride) == ((3, 3), (1, 1))
    assert isinstance(small.maxpool, nn.Identity)
    assert (large.conv1.kernel_size, large.conv1.stride) == ((7, 7), (2, 2))
    assert isinstance(large.maxpool, nn.MaxPool2d)
    # The CIFAR adaptations change strides only, never parameters.
    for name in ("mobilenetv2", "shufflenetv2", "wrn16"):
        assert count_parameters(build_backbone(name, 32)) == count_parameters(build_backbone(name, 224))
    assert build_backbone("mobilenetv2", 32).features[0][0].stride == (1, 1)
    assert build_backbone("mobilenetv2", 224).features[0][0].stride == (2, 2)
    assert build_backbone("shufflenetv2", 32).conv1[0].stride == (1, 1)
    assert isinstance(build_backbone("shufflenetv2", 32).maxpool, nn.Identity)


@pytest.mark.parametrize("name", NAMES)
def test_channels_last_input_gives_the_same_features(name: str) -> None:
    model = build_backbone(name, image_size=32, width=0.25).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        model_cl = model.to(memory_format=torch.channels_last)
        got = model_cl(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name: str) -> None:
    model = build_backbone(name, image_size=32, width=0.25).train()
    x = torch.randn(4, 3, 32, 32, requires_grad=True)
    out = model(x)
    (out * torch.randn_like(out)).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    first = next(model.parameters())
    assert first.grad.abs().sum() > 0
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["resnet18", "wrn10", "mobilenetv2", "shufflenetv2"])
def test_in_channels(name: str) -> None:
    model = build_backbone(name, image_size=32, width=0.25, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, model.feature_dim)


def test_unknown_backbone_names_the_nearest() -> None:
    with pytest.raises(ConfigError, match="did you mean 'resnet18'"):
        build_backbone("resnet-18")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"width": 0},
        {"width": -1.0},
        {"width": float("nan")},
        {"image_size": 0},
        {"image_size": 32.0},
        {"in_channels": 0},
    ],
)
def test_bad_arguments_are_config_errors(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        build_backbone("resnet18", **kwargs)


def test_channel_shuffle_matches_definition_in_both_layouts() -> None:
    x = torch.arange(2 * 6 * 3 * 3, dtype=torch.float32).reshape(2, 6, 3, 3)
    expected = x[:, [0, 3, 1, 4, 2, 5]]  # groups (0,1,2) and (3,4,5) interleaved
    torch.testing.assert_close(channel_shuffle(x, 2), expected)
    cl = channel_shuffle(x.contiguous(memory_format=torch.channels_last), 2)
    torch.testing.assert_close(cl, expected)
    assert cl.is_contiguous(memory_format=torch.channels_last)


def test_count_parameters() -> None:
    layer = nn.Linear(3, 4)
    shared = nn.Sequential(layer, layer)
    assert count_parameters(shared) == 16
    layer.bias.requires_grad_(False)
    assert count_parameters(shared, trainable_only=True) == 12


# ---- heads ---------------------------------------------------------------------------------


def test_simclr_head_structure() -> None:
    head = SimCLRHead(512)
    kinds = [type(m) for m in head]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert head[0].bias is None and head[0].out_features == 512
    assert head[3].bias is not None and head[3].out_features == 128
    assert count_parameters(head) == 512 * 512 + 2 * 512 + 512 * 128 + 128
    assert head(torch.randn(4, 512)).shape == (4, 128)


@pytest.mark.parametrize("layers", [3, 2])
def test_simsiam_projector_structure(layers: int) -> None:
    proj = SimSiamProjector(128, dim=64, layers=layers)
    expected = [nn.Linear, nn.BatchNorm1d, nn.ReLU] * (layers - 1) + [nn.Linear, nn.BatchNorm1d]
    assert [type(m) for m in proj] == expected
    # As in the reference: biased Linear layers, affine BN everywhere (the paper's last BN
    # has no affine parameters).
    assert all(m.bias is not None for m in proj if isinstance(m, nn.Linear))
    assert all(m.affine for m in proj if isinstance(m, nn.BatchNorm1d))
    assert proj(torch.randn(4, 128)).shape == (4, 64)
    assert proj.out_dim == 64


def test_simsiam_default_sizes() -> None:
    proj, pred = SimSiamProjector(512), SimSiamPredictor()
    assert count_parameters(proj) == (512 * 2048 + 2048) + 2 * (2048 * 2048 + 2048) + 3 * 2 * 2048
    assert [type(m) for m in pred] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert pred[0].bias is None and pred[0].out_features == 512
    assert pred[3].out_features == 2048 and pred[3].bias is not None
    assert count_parameters(pred) == 2048 * 512 + 2 * 512 + 512 * 2048 + 2048


def test_heads_on_a_backbone_backpropagate() -> None:
    backbone = build_backbone("resnet18", width=0.25)
    proj = SimSiamProjector(backbone.feature_dim, dim=64)
    pred = SimSiamPredictor(dim=64, hidden=16)
    p = pred(proj(backbone(torch.randn(4, 3, 32, 32))))
    assert p.shape == (4, 64)
    p.pow(2).sum().backward()
    assert backbone.conv1.weight.grad is not None


@pytest.mark.parametrize(
    "make",
    [lambda: SimCLRHead(0), lambda: SimSiamProjector(8, layers=0), lambda: SimSiamPredictor(8, 0)],
)
def test_bad_head_sizes_are_config_errors(make) -> None:
    with pytest.raises(ConfigError):
        make()
