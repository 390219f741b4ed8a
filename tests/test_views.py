"""Batched augmentation (dogo.views) against slow per-image references and, where installed, kornia.

The slow references are written here from torchvision's formulas (``RandomResizedCrop.get_params``,
``F.resized_crop`` with antialias, ``adjust_*``, ``colorsys`` for hue) and loop over images or
pixels in Python on tiny inputs, so that they are obviously right and the file stays fast.
"""

from __future__ import annotations

import colorsys
import math

import pytest
import torch
import torch.nn.functional as F

from dogo.core.errors import ConfigError
from dogo.views import (  # the internals under test
    LUMA,
    ViewRecipe,
    _color_jitter,
    _crop_boxes_from_uniforms,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    blur_kernel_size,
    eval_transform,
    gaussian_blur,
    make_recipe,
    normalization_for,
    resized_crop,
    rgb_to_grayscale,
    sample_crop_boxes,
    solarize,
)

try:  # kornia is optional: only a cross-check, never a dependency
    import kornia
except Exception:  # pragma: no cover - absent in the default environment
    kornia = None

needs_kornia = pytest.mark.skipif(kornia is None, reason="kornia not installed")


def _images(b: int = 4, c: int = 3, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (b, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _unnormalise(x: torch.Tensor, size: int) -> torch.Tensor:
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in normalization_for(size))
    return x * std + mean


def _plain(size: int, **kw) -> ViewRecipe:
    """A recipe without any random op (identity crop, no flip, jitter, greyscale or blur)."""
    base = dict(
        size=size, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0
    )
    base.update(kw)
    return ViewRecipe(**base)


# ------------------------------------------------------------------------------ recipes, config


def test_normalization_is_keyed_on_size():
    assert normalization_for(32) == ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))
    assert normalization_for(64) == ((0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262))
    assert normalization_for(96) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert normalization_for(224) == imagenet and normalization_for(28) == imagenet


def test_make_recipe_reference_values():
    simclr = make_recipe("simclr", 32)
    assert (simclr.size, simclr.crop_scale, simclr.flip_p, simclr.jitter_p) == (32, (0.08, 1.0), 0.5, 0.8)
    assert simclr.crop_ratio == pytest.approx((3 / 4, 4 / 3))
    assert (simclr.brightness, simclr.contrast, simclr.saturation, simclr.hue) == pytest.approx((0.8, 0.8, 0.8, 0.2))
    assert simclr.grayscale_p == (0.2,) and simclr.effective_grayscale_p == pytest.approx(0.2)
    assert simclr.blur_p == 0.0 and (simclr.mean, simclr.std) == normalization_for(32)
    simsiam = make_recipe("simsiam", 64)
    assert (simsiam.brightness, simsiam.hue) == pytest.approx((0.4, 0.1))
    assert simsiam.grayscale_p == (0.2, 0.2) and simsiam.effective_grayscale_p == pytest.approx(0.36)
    assert make_recipe("simclr", 224).blur_p == 0.5 and blur_kernel_size(224) == 23
    assert make_recipe("simclr", 32, blur_p=0.5, grayscale_p=0.0).grayscale_p == (0.0,)


@pytest.mark.parametrize(
    "call",
    [
        lambda: make_recipe("simclrr", 32),
        lambda: make_recipe("simclr", 32, colour=1),
        lambda: make_recipe("simclr", 32, flip_p=1.5),
        lambda: make_recipe("simclr", 32, crop_scale=(0.9, 0.1)),
        lambda: make_recipe("simclr", 0),
        lambda: make_recipe("simclr", 32, jitter_strength=3.0),
        lambda: make_recipe("simclr", 32, std=(0.2, 0.2)),
        lambda: make_recipe("simclr", 32, jitter_strength="strong"),
    ],
)
def test_bad_recipes_are_config_errors(call):
    with pytest.raises(ConfigError):
        call()


def test_bad_images_are_rejected():
    recipe = make_recipe("simclr", 32)
    with pytest.raises(ValueError):
        recipe(torch.zeros(2, 2, 32, 32, dtype=torch.uint8), _gen())
    with pytest.raises(ValueError):
        recipe(torch.zeros(32, 32, dtype=torch.uint8), _gen())


# ------------------------------------------------------------------------------ the whole recipe


@pytest.mark.parametrize("name", ["simclr", "simsiam"])
@pytest.mark.parametrize("shape,size", [((3, 32, 32), 32), ((1, 28, 28), 32), ((3, 96, 80), 64)])
def test_output_shape_dtype_and_range(name, shape, size):
    out = make_recipe(name, size)(_images(6, *shape), _gen())
    assert out.shape == (6, 3, size, size) and out.dtype == torch.float32 and out.is_contiguous()
    pixels = _unnormalise(out, size)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    assert torch.isfinite(out).all()


def test_same_seed_same_views_other_seed_other_views():
    images, recipe = _images(8), make_recipe("simclr", 32)
    a = recipe(images, _gen(1))
    assert torch.equal(a, recipe(images, _gen(1)))
    assert not torch.allclose(a, recipe(images, _gen(2)))
    g = _gen(1)
    first, second = recipe(images, g), recipe(images, g)  # the generator advances: two views differ
    assert torch.equal(first, a) and not torch.allclose(first, second)


def test_every_image_draws_its_own_view():
    images = _images(1).expand(16, -1, -1, -1).contiguous()
    out = make_recipe("simclr", 32)(images, _gen())
    flat = out.flatten(1)
    distinct = {tuple(row[:64].tolist()) for row in flat}
    assert len(distinct) == 16


def test_output_dtype_and_device_options():
    recipe = make_recipe("simsiam", 32)
    out = recipe(_images(2), _gen(), device="cpu", dtype=torch.bfloat16)
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), recipe(_images(2), _gen()), atol=0.05)


def test_identity_crop_returns_the_image():
    images = _images(3)
    out = _plain(32)(images, _gen())
    assert torch.allclose(_unnormalise(out, 32), images.float() / 255, atol=1e-5)


def test_identity_crop_equals_resize_and_eval_transform():
    grey = _images(3, c=1, h=28, w=28)
    out = _plain(32)(grey, _gen())
    expected = F.interpolate(grey.float() / 255, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    assert torch.allclose(_unnormalise(out, 32), expected.expand(-1, 3, -1, -1), atol=1e-5)
    assert torch.allclose(out, eval_transform(grey, 32), atol=1e-5)
    big = _images(2, h=64, w=64)  # downscaling: antialiased like torchvision's Resize
    assert torch.allclose(_plain(32)(big, _gen()), eval_transform(big, 32), atol=1e-4)


def test_flip_mirrors_the_image():
    image = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    image[..., :, :3] = 255  # bright left band: asymmetric
    image[0, 0, 2, 6] = 100
    out = _unnormalise(_plain(8, flip_p=1.0)(image, _gen()), 8)
    assert torch.allclose(out, image.flip(-1).float() / 255, atol=1e-5)
    assert out[0, :, :, -3:].min() > 0.99 and out[0, :, :, :5].max() < 0.5


def test_greyscale_input_equals_repeated_rgb():
    grey = _images(8, c=1, h=28, w=28)
    for name in ("simclr", "simsiam"):
        recipe = make_recipe(name, 32)
        a = recipe(grey, _gen(3))
        b = recipe(grey.expand(-1, 3, -1, -1).contiguous(), _gen(3))
        assert torch.allclose(a, b, atol=1e-5)
        channels = _unnormalise(a, 32)
        assert torch.allclose(channels[:, 0], channels[:, 1], atol=1e-5)


def test_grayscale_op_makes_channels_equal():
    out = _unnormalise(make_recipe("simclr", 32, grayscale_p=1.0)(_images(4), _gen()), 32)
    assert torch.allclose(out[:, 0], out[:, 1], atol=1e-5) and torch.allclose(out[:, 0], out[:, 2], atol=1e-5)
    x = torch.rand(2, 3, 4, 4, generator=_gen())
    expected = LUMA[0] * x[:, 0] + LUMA[1] * x[:, 1] + LUMA[2] * x[:, 2]
    assert torch.allclose(rgb_to_grayscale(x)[:, 0], expected)


def test_blur_only_at_224_and_it_smooths():
    recipe = make_recipe(
        "simclr",
        224,
        blur_p=1.0,
        jitter_p=0.0,
        grayscale_p=0.0,
        crop_scale=(1.0, 1.0),
        crop_ratio=(1.0, 1.0),
        flip_p=0.0,
    )
    images = _images(2, h=224, w=224)
    out, sharp = recipe(images, _gen()), _plain(224)(images, _gen())
    assert out.shape == (2, 3, 224, 224)
    assert out.diff(dim=-1).abs().mean() < 0.7 * sharp.diff(dim=-1).abs().mean()


# ------------------------------------------------------------------------------ parameters


def _tv_get_params(u: list[float], height: int, width: int, scale, ratio) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params, with its random numbers taken from ``u``."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for a in range(10):
        target_area = area * (scale[0] + (scale[1] - scale[0]) * u[a])
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[10 + a])
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(u[20] * (height - h + 1)), int(u[21] * (width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@pytest.mark.parametrize(
    "height,width,scale,ratio",
    [
        (32, 32, (0.08, 1.0), (3 / 4, 4 / 3)),
        (20, 60, (0.5, 1.0), (3 / 4, 4 / 3)),
        (60, 20, (0.9, 1.0), (1.0, 1.0)),
        (17, 23, (0.08, 0.3), (0.5, 2.0)),
    ],
)
def test_crop_boxes_match_torchvision_get_params(height, width, scale, ratio):
    u = torch.rand(300, 22, generator=_gen(), dtype=torch.float64)
    boxes = _crop_boxes_from_uniforms(u, height, width, scale, ratio)
    expected = [_tv_get_params(row.tolist(), height, width, scale, ratio) for row in u]
    assert boxes.tolist() == [list(b) for b in expected]


def test_crop_box_statistics():
    boxes = sample_crop_boxes(4000, 32, 32, _gen())
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 32).all() and (left + w <= 32).all()
    area = (h * w).double() / (32 * 32)
    ratio = w.double() / h.double()
    # rounding moves area and ratio a little outside the sampled ranges on small images
    assert area.min() >= 0.06 and area.max() <= 1.0 and area.min() < 0.12 and area.max() > 0.95
    assert ratio.min() >= 0.7 and ratio.max() <= 1.45
    assert (ratio < 0.9).any() and (ratio > 1.1).any()
    assert 0.45 < area.mean() < 0.6  # E[U(0.08, 1)] = 0.54
    # every position is reachable
    assert set(top.tolist()) == set(range(int((32 - h).max()) + 1))


def test_sampled_parameter_distributions():
    recipe = make_recipe("simsiam", 32)
    p = recipe.sample_params(20000, 32, 32, _gen())
    assert abs(p.flip.double().mean() - 0.5) < 0.02 and abs(p.jitter.double().mean() - 0.8) < 0.02
    assert abs(p.gray.double().mean() - 0.36) < 0.02
    assert not p.blur.any()
    b, c, s, hue = p.factors.unbind(1)
    for f in (b, c, s):
        assert f.min() >= 0.6 and f.max() <= 1.4 and f.min() < 0.61 and f.max() > 1.39
    assert hue.min() >= -0.1 and hue.max() <= 0.1
    assert torch.equal(p.order.sort(dim=1).values, torch.arange(4).expand(20000, 4))
    first = torch.bincount(p.order[:, 0], minlength=4).double() / 20000  # every op comes first 1/4 of the time
    assert (first - 0.25).abs().max() < 0.02
    blur = make_recipe("simclr", 224).sample_params(4000, 8, 8, _gen()).blur
    assert abs(blur.double().mean() - 0.5) < 0.03


# ------------------------------------------------------------------------------ resampling


def _slow_resized_crop(x: torch.Tensor, boxes: torch.Tensor, size: int, flip: torch.Tensor) -> torch.Tensor:
    """torchvision's F.resized_crop on tensors (crop, then antialiased bilinear resize), per image."""
    out = []
    for img, (top, left, h, w), f in zip(x, boxes.tolist(), flip.tolist(), strict=True):
        crop = img[None, :, top : top + h, left : left + w]
        r = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out.append(r.flip(-1) if f else r)
    return torch.cat(out)


@pytest.mark.parametrize("height,width,size", [(32, 32, 32), (48, 40, 24), (28, 28, 32), (16, 50, 20)])
def test_resized_crop_matches_torchvision_per_image(height, width, size):
    x = torch.rand(24, 3, height, width, generator=_gen())
    boxes = sample_crop_boxes(24, height, width, _gen(1))
    flip = torch.arange(24) % 2 == 0
    got = resized_crop(x, boxes, size, flip=flip)
    assert torch.allclose(got, _slow_resized_crop(x, boxes, size, flip), atol=2e-5)


# ------------------------------------------------------------------------------ colour ops


def _pixels(seed: int = 0) -> torch.Tensor:
    """2 x 3 x 4 x 4 colours in [0, 1], with grey, black, white and saturated pixels mixed in."""
    x = torch.rand(2, 3, 4, 4, generator=_gen(seed))
    x[0, :, 0, 0] = 0.5  # grey
    x[0, :, 0, 1] = 0.0
    x[0, :, 0, 2] = 1.0
    x[0, :, 0, 3] = torch.tensor([1.0, 0.0, 0.0])
    x[1, :, 0, 0] = torch.tensor([0.2, 0.9, 0.9])  # ties between maxima
    x[1, :, 0, 1] = torch.tensor([0.7, 0.7, 0.1])
    return x


def _slow_pointwise(x: torch.Tensor, fn) -> torch.Tensor:
    out = torch.empty_like(x)
    for b in range(x.shape[0]):
        for i in range(x.shape[2]):
            for j in range(x.shape[3]):
                out[b, :, i, j] = torch.tensor(fn(b, *x[b, :, i, j].tolist()))
    return out


def _clamp01(v: float) -> float:
    return min(max(v, 0.0), 1.0)


def _luma(r: float, g: float, b: float) -> float:
    return LUMA[0] * r + LUMA[1] * g + LUMA[2] * b


def test_brightness_matches_formula():
    x, f = _pixels(), torch.tensor([0.3, 1.7])
    expected = _slow_pointwise(x, lambda b, *rgb: [_clamp01(f[b].item() * v) for v in rgb])
    assert torch.allclose(adjust_brightness(x, f), expected, atol=1e-6)


def test_contrast_matches_formula():
    x, f = _pixels(), torch.tensor([0.4, 1.8])
    means = [sum(_luma(*x[b, :, i, j].tolist()) for i in range(4) for j in range(4)) / 16 for b in range(2)]
    expected = _slow_pointwise(
        x, lambda b, *rgb: [_clamp01(f[b].item() * v + (1 - f[b].item()) * means[b]) for v in rgb]
    )
    assert torch.allclose(adjust_contrast(x, f), expected, atol=1e-6)


def test_saturation_matches_formula():
    x, f = _pixels(), torch.tensor([0.0, 1.6])
    expected = _slow_pointwise(
        x, lambda b, *rgb: [_clamp01(f[b].item() * v + (1 - f[b].item()) * _luma(*rgb)) for v in rgb]
    )
    assert torch.allclose(adjust_saturation(x, f), expected, atol=1e-6)


@pytest.mark.parametrize("shift", [0.0, 0.1, -0.2, 0.5, -0.5, 0.37])
def test_hue_matches_colorsys(shift):
    x = _pixels(1)

    def rotate(b, r, g, bl):
        h, s, v = colorsys.rgb_to_hsv(r, g, bl)
        return colorsys.hsv_to_rgb((h + shift) % 1.0, s, v)

    assert torch.allclose(adjust_hue(x, torch.tensor([shift, shift])), _slow_pointwise(x, rotate), atol=2e-6)


def test_hue_per_image_shift_and_zero_shift_is_identity():
    x = torch.rand(3, 3, 5, 5, generator=_gen())
    shifts = torch.tensor([0.0, 0.25, -0.1])
    out = adjust_hue(x, shifts)
    assert torch.allclose(out[0], x[0], atol=1e-6)
    assert torch.allclose(out[1], adjust_hue(x[1:2], 0.25)[0]) and torch.allclose(out[2], adjust_hue(x[2:3], -0.1)[0])


def test_color_jitter_applies_ops_in_each_images_order():
    recipe = make_recipe("simclr", 8)
    x = torch.rand(32, 3, 8, 8, generator=_gen())
    p = recipe.sample_params(32, 8, 8, _gen(5))
    assert not p.jitter.all() and p.jitter.any()
    got = _color_jitter(x, p.factors, p.order, p.jitter)
    ops = [adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue]
    for i in range(32):  # the slow reference: one image at a time, torchvision's loop over fn_idx
        img = x[i : i + 1]
        if p.jitter[i]:
            for op in p.order[i].tolist():
                img = ops[op](img, p.factors[i, op].item())
        assert torch.allclose(got[i], img[0], atol=1e-5), i


def test_gaussian_blur_matches_per_image_conv():
    x = torch.rand(3, 3, 20, 20, generator=_gen())
    sigma = torch.tensor([0.3, 1.0, 2.0])
    got = gaussian_blur(x, sigma, 7)
    for i, s in enumerate(sigma.tolist()):
        t = torch.arange(-3, 4, dtype=torch.float32)
        k1 = torch.exp(-(t**2) / (2 * s * s))
        k1 = k1 / k1.sum()
        k2 = torch.outer(k1, k1).expand(3, 1, 7, 7)
        ref = F.conv2d(F.pad(x[i : i + 1], (3, 3, 3, 3), mode="reflect"), k2, groups=3)
        assert torch.allclose(got[i], ref[0], atol=1e-5)


# ------------------------------------------------------------------------------ evaluation view


def test_eval_transform():
    images = _images(3)
    out = eval_transform(images, 32)
    assert out.shape == (3, 3, 32, 32) and out.dtype == torch.float32
    assert torch.allclose(_unnormalise(out, 32), images.float() / 255, atol=1e-5)
    assert eval_transform(_images(2, h=40, w=60), 32).shape == (2, 3, 32, 32)  # short side, centre crop
    grey = _unnormalise(eval_transform(_images(2, c=1, h=28, w=28), 32), 32)
    assert torch.allclose(grey[:, 0], grey[:, 2], atol=1e-5)
    assert torch.equal(eval_transform(images, 32), eval_transform(images, 32))


def test_solarize_matches_per_pixel_reference():
    x = torch.rand(2, 3, 5, 5, generator=_gen(7))
    x[0, 0, 0, 0] = 0.5  # the threshold itself flips (torchvision: x >= t -> 1 - x)
    expected = x.clone()
    for idx in torch.cartesian_prod(*(torch.arange(n) for n in x.shape)):
        v = x[tuple(idx)].item()
        expected[tuple(idx)] = v if v < 0.5 else 1.0 - v
    assert torch.equal(solarize(x), expected)


def test_solarize_in_the_recipe_equals_solarizing_the_pixels():
    images = _images(6, seed=3)
    plain, solar = _plain(16, blur_p=1.0), _plain(16, blur_p=1.0, solarize_p=1.0)
    a, b = plain(images, _gen(1)), solar(images, _gen(1))
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in normalization_for(16))
    expected = (solarize(_unnormalise(a, 16)) - mean) / std
    torch.testing.assert_close(b, expected, atol=1e-5, rtol=0)
    # solarize_p = 0 draws nothing for it: the other recipes' views are unchanged
    half = _plain(16, blur_p=1.0, solarize_p=0.5)
    params = half.sample_params(64, 32, 32, _gen(2))
    assert 10 < int(params.solarize.sum()) < 54
    assert not plain.sample_params(64, 32, 32, _gen(2)).solarize.any()


def test_jitter_factors_and_solarize_p_are_checked():
    r = make_recipe("simclr", 32, jitter_factors=(0.4, 0.4, 0.2, 0.1))
    assert (r.brightness, r.contrast, r.saturation, r.hue) == pytest.approx((0.4, 0.4, 0.2, 0.1))
    with pytest.raises(ConfigError, match="jitter_factors"):
        make_recipe("simclr", 32, jitter_factors=(0.4, 0.4, 0.2))
    with pytest.raises(ConfigError, match="solarize_p"):
        make_recipe("simclr", 32, solarize_p=1.5)


# ------------------------------------------------------------------------------ kornia cross-checks


@needs_kornia
def test_solarize_against_kornia():
    from kornia.enhance import solarize as k_solarize

    x = torch.rand(4, 3, 9, 9, generator=_gen(5))
    assert torch.allclose(solarize(x), k_solarize(x, 0.5), atol=1e-7)


@needs_kornia
def test_against_kornia_functional_ops():
    from kornia.color import rgb_to_grayscale as k_gray
    from kornia.enhance import (
        adjust_brightness_accumulative,
        adjust_contrast_with_mean_subtraction,
        adjust_saturation_with_gray_subtraction,
    )
    from kornia.enhance import (
        adjust_hue as k_hue,
    )

    x = torch.rand(4, 3, 9, 9, generator=_gen())
    f = torch.tensor([0.3, 0.9, 1.2, 1.8])
    shift = torch.tensor([-0.5, -0.13, 0.0, 0.41])
    assert torch.allclose(rgb_to_grayscale(x), k_gray(x), atol=1e-6)
    assert torch.allclose(adjust_brightness(x, f), adjust_brightness_accumulative(x, f), atol=1e-6)
    assert torch.allclose(adjust_contrast(x, f), adjust_contrast_with_mean_subtraction(x, f), atol=1e-6)
    assert torch.allclose(adjust_saturation(x, f), adjust_saturation_with_gray_subtraction(x, f), atol=1e-6)
    assert torch.allclose(adjust_hue(x, shift), k_hue(x, shift * 2 * math.pi), atol=1e-5)


@needs_kornia
def test_against_kornia_resized_crop():
    from kornia.geometry.transform import crop_by_indices

    x = torch.rand(6, 3, 32, 32, generator=_gen())
    boxes = sample_crop_boxes(6, 32, 32, _gen(2))
    top, left, h, w = boxes.unbind(1)
    corners = torch.stack(
        [
            torch.stack([left, top], 1),
            torch.stack([left + w - 1, top], 1),
            torch.stack([left + w - 1, top + h - 1], 1),
            torch.stack([left, top + h - 1], 1),
        ],
        1,
    )
    # kornia crops then resizes (bilinear, align_corners=False): as torchvision when upscaling
    ref = crop_by_indices(x, corners.float(), size=(32, 32), interpolation="bilinear", align_corners=False)
    assert torch.allclose(resized_crop(x, boxes, 32), ref, atol=1e-4)


# ------------------------------------------------------------------------------ GPU


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_gives_the_cpu_views():
    images = _images(16)
    cases = [("simclr", 32, images), ("simsiam", 32, images), ("simclr", 224, _images(4, h=256, w=256))]
    for name, size, imgs in cases:
        recipe = make_recipe(name, size)
        cpu = recipe(imgs, _gen(7))
        gpu = recipe(imgs.cuda(), _gen(7))
        assert gpu.device.type == "cuda"
        assert torch.allclose(gpu.cpu(), cpu, atol=1e-3)
        assert torch.allclose(recipe(imgs, _gen(7), device="cuda").cpu(), cpu, atol=1e-3)
    assert torch.allclose(eval_transform(images.cuda(), 32).cpu(), eval_transform(images, 32), atol=1e-5)
