"""Normalisation statistics, the input check, and the deterministic evaluation view."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_CIFAR = ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))
_TINY_IMAGENET = ((0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262))
_STL10 = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def normalization_for(image_size: int) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """``(mean, std)`` per RGB channel, keyed on the image size as the reference does.

    32 -> CIFAR statistics, 64 -> Tiny-ImageNet, 96 -> 0.5 / 0.5 (STL-10), anything else ->
    ImageNet (docs/reference.md §2). The key is the size, not the dataset: Fashion-MNIST at 32 px
    gets the CIFAR statistics, exactly as the reference would give it.
    """
    return {32: _CIFAR, 64: _TINY_IMAGENET, 96: _STL10}.get(int(image_size), _IMAGENET)


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a B x C x H x W tensor with C in (1, 3), got {shape}")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise ValueError(f"images must be uint8 (or float in [0, 1]), got {images.dtype}")


def eval_transform(
    images: Tensor,
    image_size: int,
    *,
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Evaluation view: resize, scale to [0, 1], normalise (no randomness): ``B x 3 x S x S``.

    torchvision ``Resize(S)`` semantics (shorter side to ``S``, bilinear, antialias), then a
    centre crop to ``S x S`` for non-square inputs (square inputs, all the reference's
    evaluation data, are just resized). Normalisation with ``normalization`` (mean, std per RGB
    channel: a run's, see :mod:`dogo.config.normalization`), else :func:`normalization_for` the size.
    """
    _check_images(images)
    if device is not None:
        images = images.to(device, non_blocking=True)
    x = images.to(torch.float32)
    if images.dtype == torch.uint8:
        x = x / 255.0
    _, _, h, w = x.shape
    size = int(image_size)
    short, long = (h, w) if h <= w else (w, h)
    new_short, new_long = size, int(size * long / short)
    new_h, new_w = (new_short, new_long) if h <= w else (new_long, new_short)
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
    if (new_h, new_w) != (size, size):
        top = round((new_h - size) / 2.0)
        left = round((new_w - size) / 2.0)
        x = x[:, :, top : top + size, left : left + size]
    mean_t, std_t = (
        torch.tensor(v, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        for v in (normalization if normalization is not None else normalization_for(size))
    )
    return ((x - mean_t) / std_t).to(dtype).contiguous()
