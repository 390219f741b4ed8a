"""RandomResizedCrop + horizontal flip, batched with per-image boxes (see :mod:`dogo.views`).

Boxes are drawn as torchvision's ``RandomResizedCrop.get_params`` for every image at once; the
crop is resampled with per-image separable weight matrices (two batched matmuls).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_CROP_ATTEMPTS = 10


def _crop_boxes_from_uniforms(
    u: Tensor, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float]
) -> Tensor:
    """torchvision's ``RandomResizedCrop.get_params`` for every row of ``u`` (``B x 22``, float64).

    Columns 0-9: the area fractions of the 10 attempts, 10-19: their log-ratios, 20-21: the
    top/left positions. Returns ``B x 4`` int64 ``(top, left, height, width)``.
    """
    n = _CROP_ATTEMPTS
    area = float(height * width)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    target = area * (scale[0] + (scale[1] - scale[0]) * u[:, :n])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[:, n : 2 * n])
    w = torch.round(torch.sqrt(target * aspect))  # round half to even, as Python's round()
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = ok.to(torch.uint8).argmax(dim=1, keepdim=True)  # first attempt that fits
    found = ok.any(dim=1)
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)
    # the fallback: a centre crop of the ratio clamped into range (same for every image)
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        fw, fh = round(height * max(ratio)), height
    else:
        fw, fh = width, height
    w = torch.where(found, w, torch.full_like(w, fw))
    h = torch.where(found, h, torch.full_like(h, fh))
    # uniform integers in [0, H - h] and [0, W - w] (torch.randint in torchvision)
    top = torch.minimum(torch.floor(u[:, 2 * n] * (height - h + 1)), height - h)
    left = torch.minimum(torch.floor(u[:, 2 * n + 1] * (width - w + 1)), width - w)
    top = torch.where(found, top, torch.full_like(top, (height - fh) // 2))
    left = torch.where(found, left, torch.full_like(left, (width - fw) // 2))
    return torch.stack([top, left, h, w], dim=1).to(torch.int64)


def sample_crop_boxes(
    batch: int,
    height: int,
    width: int,
    generator: torch.Generator | None,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Tensor:
    """Per-image RandomResizedCrop boxes ``B x 4`` int64 ``(top, left, height, width)``."""
    device = generator.device if generator is not None else None
    u = torch.rand(batch, 2 * _CROP_ATTEMPTS + 2, generator=generator, dtype=torch.float64, device=device)
    return _crop_boxes_from_uniforms(u.cpu(), height, width, scale, ratio)


def _resample_matrix(start: Tensor, length: Tensor, in_size: int, out_size: int) -> Tensor:
    """``B x out x in`` weights that resize the span ``[start, start + length)`` to ``out``.

    Bilinear (triangle) weights at half-pixel centres, widened by the scale factor when
    shrinking (antialias) and renormalised over the pixels inside the span: torchvision's
    ``interpolate(mode="bilinear", antialias=True, align_corners=False)`` of the cropped region.
    """
    dtype = torch.float32
    start = start.to(dtype)
    length = length.to(dtype)
    scale = length / out_size  # input pixels per output pixel
    k = torch.arange(out_size, dtype=dtype, device=start.device)
    center = start[:, None] + (k[None, :] + 0.5) * scale[:, None]  # B x out
    pix = torch.arange(in_size, dtype=dtype, device=start.device)  # B x in
    inv_support = (1.0 / scale.clamp(min=1.0))[:, None, None]
    weights = (1.0 - (pix[None, None, :] + 0.5 - center[:, :, None]).abs() * inv_support).clamp_(min=0.0)
    inside = (pix[None, :] >= start[:, None]) & (pix[None, :] < (start + length)[:, None])
    weights = weights * inside[:, None, :]
    return weights / weights.sum(dim=2, keepdim=True)


def resized_crop(x: Tensor, boxes: Tensor, size: int, flip: Tensor | None = None, value_scale: float = 1.0) -> Tensor:
    """Crop every image to its box, resize to ``size x size`` and optionally flip it horizontally.

    ``x``: ``B x C x H x W`` (any real dtype; uint8 is converted), ``boxes``: ``B x 4``
    ``(top, left, height, width)``, ``flip``: ``(B,)`` bool. Returns float32
    ``B x C x size x size`` multiplied by ``value_scale`` (1/255 turns uint8 into [0, 1]).
    Two batched matmuls with per-image separable weights (see :func:`_resample_matrix`).
    """
    bsz, ch, h, w = x.shape
    boxes = boxes.to(x.device)
    rows = _resample_matrix(boxes[:, 0], boxes[:, 2], h, size)  # B x S x H
    cols = _resample_matrix(boxes[:, 1], boxes[:, 3], w, size)  # B x S x W
    if value_scale != 1.0:
        rows = rows * value_scale
    if flip is not None:
        flip = flip.to(x.device)
        cols = torch.where(flip[:, None, None], cols.flip(1), cols)
    xf = x.to(torch.float32)
    # explicit per-channel copies of the (small) row matrices and a contiguous transposed
    # column matrix: plain bmm, several times faster on CPU than matmul's broadcasting path
    cols_t = cols.transpose(1, 2).contiguous()  # B x W x S
    rows = rows.unsqueeze(1).expand(bsz, ch, size, h).reshape(bsz * ch, size, h)
    if h * (w + size) <= w * (h + size):  # cheaper to shrink the width first
        t = torch.bmm(xf.reshape(bsz, ch * h, w), cols_t)  # B x C*H x S
        return torch.bmm(rows, t.view(bsz * ch, h, size)).view(bsz, ch, size, size)
    t = torch.bmm(rows, xf.reshape(bsz * ch, h, w))  # B*C x S x W
    return torch.bmm(t.view(bsz, ch * size, w), cols_t).view(bsz, ch, size, size)
