"""Gaussian blur and solarization, batched with per-image parameters (see :mod:`dogo.views`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def blur_kernel_size(image_size: int) -> int:
    """SimCLR's blur kernel: 10 % of the image size, made odd (23 at 224 px)."""
    return (int(0.1 * image_size) // 2) * 2 + 1


def gaussian_blur(x: Tensor, sigma: Tensor | float, kernel_size: int) -> Tensor:
    """Separable Gaussian blur with a per-image ``sigma`` (``(B,)`` or scalar), reflect padding.

    One grouped convolution per axis over all ``B * C`` planes, each plane with its image's
    kernel ``exp(-t^2 / 2 sigma^2)``, ``t = -r..r``, normalised to sum 1.
    """
    bsz, ch, h, w = x.shape
    radius = min(kernel_size // 2, h - 1, w - 1)
    if radius <= 0 or bsz == 0:
        return x
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1).expand(bsz, 1)
    kernel = torch.exp(-(t**2) / (2 * s**2))
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(ch, dim=0)
    k = 2 * radius + 1
    y = F.pad(x.reshape(1, bsz * ch, h, w), (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, kernel.view(bsz * ch, 1, 1, k), groups=bsz * ch)
    y = F.conv2d(y, kernel.view(bsz * ch, 1, k, 1), groups=bsz * ch)
    return y.view(bsz, ch, h, w)


def _blur_subset(x: Tensor, blur: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    idx = torch.nonzero(blur).squeeze(1)
    if idx.numel():
        x = x.clone()
        x[idx] = gaussian_blur(x[idx], sigma[idx], kernel_size)
    return x


def solarize(x: Tensor, threshold: float = 0.5) -> Tensor:
    """``x`` where ``x < threshold``, else ``1 - x`` (torchvision / kornia ``solarize`` on [0, 1] pixels;
    BYOL's, Grill et al. 2020, Table 6, threshold 0.5)."""
    return torch.where(x < threshold, x, 1.0 - x)


def _solarize_normalized(x: Tensor, mean: Tensor, std: Tensor, threshold: float = 0.5) -> Tensor:
    """:func:`solarize` of the pixels ``q = x std + mean`` of a normalised ``x``, staying normalised.

    ``q >= t`` is ``x >= (t - mean) / std`` and ``(1 - q - mean) / std`` is ``(1 - 2 mean) / std - x``,
    so the result equals normalising the solarized pixels (to float rounding), per channel.
    """
    cut = ((threshold - mean) / std).view(1, -1, 1, 1)
    flip = ((1.0 - 2.0 * mean) / std).view(1, -1, 1, 1)
    return torch.where(x < cut, x, flip - x)
