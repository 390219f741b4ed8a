"""Distribution shift: a probe trained on clean A, scored on corrupted copies of A's test set.

Six corruptions of CIFAR-10-C (Hendrycks & Dietterich, "Benchmarking neural network robustness
to common corruptions and perturbations", ICLR 2019), made on the fly from the uint8 test
images (before ``eval_transform``), at severities 1..5 with the parameters of their
``make_cifar_c.py`` (:data:`SEVERITY_PARAMS`):

- ``gaussian_noise``: x + N(0, c^2) per pixel and channel, x in [0, 1], clipped.
- ``gaussian_blur``: Gaussian filter of std c pixels at 32 px (scaled by min(H, W) / 32 for
  other sizes), truncated at 4 std, edges replicated.
- ``contrast``: (x - m) * c + m, m = the image's per-channel mean.
- ``brightness``: HSV value V -> min(V + c, 1) with hue and saturation kept (for RGB that is
  x * V' / V; black becomes grey c).
- ``jpeg``: a real JPEG round trip (Pillow) at quality c.
- ``pixelate``: box-resample (Pillow) to int(c * side) pixels and back.

The noise is drawn from a generator seeded by (seed, corruption) only, so every severity of an
image uses the same noise pattern scaled by its std: the distance from the clean image grows
with severity. Results are rounded back to uint8, as the stored CIFAR-10-C images are.

Some corruptions do nothing at small sizes (a blur of std 0.4 px at 32 px is 0.1 px at 8 px: the
rounded images are the clean ones). A (corruption, severity) whose images differ from the clean
ones by less than :data:`NO_EFFECT_LEVELS` grey levels on average is listed in the result's
``no_effect`` (with ``image_px``, the side it was applied at), so that reports say "no effect at
N px" instead of plotting a flat line.
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Callable
from typing import Annotated, Literal, cast

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pydantic import Field

from dogo.evaluate.base import (
    CommaList,
    derive_seed,
    generator,
)
from dogo.evaluate.features import features_of
from dogo.evaluate.inputs import ProtocolInput, protocol
from dogo.evaluate.probe import ProbeSettings, fit_with_holdout

__all__ = ["CORRUPTIONS", "NO_EFFECT_LEVELS", "SEVERITY_PARAMS", "ShiftSettings", "corrupt", "has_effect", "run"]

Corruption = Literal["gaussian_noise", "gaussian_blur", "contrast", "brightness", "jpeg", "pixelate"]

#: Per corruption, its parameter c at severities 1..5 (CIFAR-10-C's values).
SEVERITY_PARAMS: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),  # noise std, images in [0, 1]
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),  # blur std in pixels at 32 px
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # contrast factor around the mean
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),  # added to the HSV value
    "jpeg": (80, 65, 58, 50, 40),  # JPEG quality
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),  # side of the downsampled image / side
}


#: A corruption changing the uint8 images by less than this many grey levels on average has no effect.
NO_EFFECT_LEVELS = 0.01


def has_effect(clean: torch.Tensor, corrupted: torch.Tensor) -> bool:
    """Whether ``corrupted`` differs from ``clean`` (uint8) by at least :data:`NO_EFFECT_LEVELS` on average."""
    if clean.numel() == 0:
        return False
    return float((corrupted.float() - clean.float()).abs().mean()) >= NO_EFFECT_LEVELS


def _gaussian_noise(x: torch.Tensor, c: float, g: torch.Generator) -> torch.Tensor:
    return x + c * torch.randn(x.shape, generator=g)


def _gaussian_blur(x: torch.Tensor, c: float, g: torch.Generator) -> torch.Tensor:
    sigma = c * min(x.shape[-2:]) / 32
    radius = max(1, math.ceil(4 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel /= kernel.sum()
    channels = x.shape[1]
    row = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), row, groups=channels)
    col = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), col, groups=channels)


def _contrast(x: torch.Tensor, c: float, g: torch.Generator) -> torch.Tensor:
    mean = x.mean(dim=(2, 3), keepdim=True)
    return (x - mean) * c + mean


def _brightness(x: torch.Tensor, c: float, g: torch.Generator) -> torch.Tensor:
    value = x.amax(dim=1, keepdim=True)
    brighter = (value + c).clamp(max=1.0)
    return torch.where(value > 0, x * brighter / value.clamp_min(1e-12), brighter.expand_as(x))


def _per_image(x: torch.Tensor, edit: Callable[[Image.Image], Image.Image]) -> torch.Tensor:
    """Apply a Pillow edit to every image of a float batch (RGB, or L for one channel)."""
    images = (x * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = []
    for image in images:
        pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        out.append(np.asarray(edit(pil).convert(pil.mode)).reshape(image.shape))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255


def _jpeg(x: torch.Tensor, c: float, g: torch.Generator) -> torch.Tensor:
    def round_trip(pil: Image.Image) -> Image.Image:
        buffer = io.BytesIO()
        pil.save(buffer, format="JPEG", quality=int(c))
        return Image.open(buffer)

    return _per_image(x, round_trip)


def _pixelate(x: torch.Tensor, c: float, g: torch.Generator) -> torch.Tensor:
    h, w = x.shape[-2:]
    small = (max(1, int(w * c)), max(1, int(h * c)))
    return _per_image(x, lambda pil: pil.resize(small, Image.Resampling.BOX).resize((w, h), Image.Resampling.BOX))


#: name -> f(images float N x C x H x W in [0, 1], parameter c, generator) -> images.
CORRUPTIONS: dict[str, Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]] = {
    "gaussian_noise": _gaussian_noise,
    "gaussian_blur": _gaussian_blur,
    "contrast": _contrast,
    "brightness": _brightness,
    "jpeg": _jpeg,
    "pixelate": _pixelate,
}


def corrupt(
    images: torch.Tensor,
    name: str,
    severity: int,
    seed: int = 0,
    chunk: int = 1024,
) -> torch.Tensor:
    """A corrupted copy of ``images`` (uint8 N x C x H x W, C in {1, 3}) at ``severity`` 1..5."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
    if not 1 <= severity <= 5:
        raise ValueError(f"severity must be 1..5, got {severity}")
    c = SEVERITY_PARAMS[name][severity - 1]
    g = generator(seed, "shift", name)
    out = torch.empty_like(images)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].float() / 255
        y = CORRUPTIONS[name](x, c, g)
        out[start : start + chunk] = (y.clamp(0, 1) * 255).round().to(torch.uint8)
    return out


class ShiftSettings(ProbeSettings):
    """Settings of the ``shift`` protocol: corruptions, severities, and the probe's settings."""

    corruptions: CommaList[Corruption] = Field(
        default=cast("list[Corruption]", list(CORRUPTIONS)),  # its keys are the Corruption names
        description="corruptions to apply, e.g. gaussian_noise,jpeg",
    )
    severities: CommaList[Annotated[int, Field(ge=1, le=5)]] = Field(
        default=[1, 2, 3, 4, 5], description="severities 1..5"
    )
    max_test_images: int | None = Field(
        default=None, ge=1, description="score a seeded random subset of this many test images (speed)"
    )


def _corrupted_accuracies(
    data: ProtocolInput, probe, images: torch.Tensor, labels: torch.Tensor, settings: ShiftSettings
) -> tuple[dict[str, dict[str, float]], dict[str, list[int]]]:
    """Accuracy per corruption and severity, and the severities of each corruption that had no effect."""
    seed = derive_seed(settings.seed, "shift-noise")
    table: dict[str, dict[str, float]] = {}
    no_effect: dict[str, list[int]] = {}
    for name in settings.corruptions:
        table[name] = {}
        for severity in settings.severities:
            corrupted = corrupt(images, name, severity, seed)
            if not has_effect(images, corrupted):
                no_effect.setdefault(name, []).append(severity)
            shifted = dataclasses.replace(data.test, images=corrupted, labels=labels)
            x, y = features_of(
                data.encoder,
                shifted,
                "test",
                data.image_size,
                cache=data.feature_cache,
                batch_size=settings.feature_batch_size,
                device=data.device,
                options={"corruption": name, "severity": severity, "seed": seed},
                normalization=data.normalization,
            )
            table[name][str(severity)] = probe.accuracy(x, y)
    return table, no_effect


@protocol("shift", ShiftSettings)
def run(data: ProtocolInput, settings: ShiftSettings) -> dict:
    """Accuracy on clean test images and on each corruption at each severity."""
    train_x, train_y, test_x, test_y = data.features(settings)
    classes = data.classes
    fit = fit_with_holdout(train_x, train_y, classes, settings, device=data.device)
    keep = torch.arange(len(test_y))
    if settings.max_test_images is not None and settings.max_test_images < len(test_y):
        keep = torch.randperm(len(test_y), generator=generator(settings.seed, "shift-subset"))
        keep = keep[: settings.max_test_images].sort().values
    clean = fit.probe.accuracy(test_x[keep], test_y[keep])
    images = data.test.images[keep]
    table, no_effect = _corrupted_accuracies(data, fit.probe, images, test_y[keep], settings)
    values = [acc for row in table.values() for acc in row.values()]
    mean_corrupted = float(np.mean(values)) if values else float("nan")
    per_severity = (
        {str(s): float(np.mean([table[n][str(s)] for n in table])) for s in settings.severities} if table else {}
    )
    return data.result(
        "shift",
        settings,
        summary={"shift clean": clean, "shift mCA": mean_corrupted},
        num_classes=classes,
        num_test=len(keep),
        clean_top1=clean,
        mean_corruption_top1=mean_corrupted,
        severity_mean_top1=per_severity,
        corruption_top1=table,
        no_effect=no_effect,
        image_px=int(images.shape[-1]),
        best_val_top1=fit.best_val_top1,
        best_epoch=fit.best_epoch,
    )
