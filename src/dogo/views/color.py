"""ColorJitter and RandomGrayscale, batched with per-image parameters (see :mod:`dogo.views`).

``x``: float ``B x C x H x W`` in [0, 1]. The single ops (``adjust_*``, :func:`rgb_to_grayscale`)
follow torchvision's formulas; :func:`_color_jitter` runs the four jitter ops in each image's own
random order as per-image colour matrices, and :func:`_grayscale_and_normalize` folds
RandomGrayscale into the normalisation.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: ITU-R 601-2 luma weights (R, G, B), as PIL's ``convert("L")``.
LUMA = (0.299, 0.587, 0.114)

#: Order of the jitter ops in :attr:`ViewParams.factors` and :attr:`ViewParams.order`.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3


def _per_image(value: Tensor | float, x: Tensor) -> Tensor:
    """A scalar or a length-B tensor as a B x 1 x 1 x 1 tensor on x's device and dtype."""
    return torch.as_tensor(value, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)


def rgb_to_grayscale(x: Tensor) -> Tensor:
    """Luma ``0.299 R + 0.587 G + 0.114 B``: ``B x 3 x H x W -> B x 1 x H x W``."""
    r, g, b = x.unbind(-3)
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(-3)


def adjust_brightness(x: Tensor, factor: Tensor | float) -> Tensor:
    """``clamp(f * x, 0, 1)`` (torchvision ``adjust_brightness``); ``factor`` scalar or ``(B,)``."""
    return (x * _per_image(factor, x)).clamp(0.0, 1.0)


def adjust_contrast(x: Tensor, factor: Tensor | float) -> Tensor:
    """``clamp(f * x + (1 - f) * mean(gray(x)), 0, 1)``, the mean per image (torchvision)."""
    f = _per_image(factor, x)
    mean = rgb_to_grayscale(x).mean(dim=(-3, -2, -1), keepdim=True)
    return (f * x + (1 - f) * mean).clamp(0.0, 1.0)


def adjust_saturation(x: Tensor, factor: Tensor | float) -> Tensor:
    """``clamp(f * x + (1 - f) * gray(x), 0, 1)`` (torchvision ``adjust_saturation``)."""
    f = _per_image(factor, x)
    return (f * x + (1 - f) * rgb_to_grayscale(x)).clamp(0.0, 1.0)


def adjust_hue(x: Tensor, shift: Tensor | float) -> Tensor:
    """Rotate the HSV hue by ``shift`` turns (in [-0.5, 0.5]); torchvision ``adjust_hue``.

    RGB -> HSV as torchvision's ``_rgb2hsv``; back with the closed form
    ``channel_n = v - (v - min) * clamp(min(k, 4 - k), 0, 1)``, ``k = (n + 6h) mod 6`` for
    ``n = 5, 3, 1`` (R, G, B), which equals the six-sector table of ``_hsv2rgb``. Written with
    arithmetic masks instead of ``torch.where`` (several times faster on CPU).
    """
    r, g, b = x.unbind(-3)
    maxc = torch.maximum(torch.maximum(r, g), b)
    chroma = maxc - torch.minimum(torch.minimum(r, g), b)
    r_max = (maxc == r).to(x.dtype)
    g_max = (maxc == g).to(x.dtype) * (1.0 - r_max)
    b_max = 1.0 - r_max - g_max
    # hue in sixths of a turn, in [-1, 5) (0 for grey pixels, whose numerator is 0)
    h6 = (r_max * (g - b) + g_max * (b - r) + b_max * (r - g)) / chroma.clamp(min=1e-12)
    h6 = h6 + 2.0 * g_max + 4.0 * b_max + 6.0 * _per_image(shift, x).squeeze(-3)
    h6 = torch.remainder(h6, 6.0)
    out = []
    for n in (5.0, 3.0, 1.0):
        k = h6 + n
        k = k - 6.0 * (k >= 6.0)
        out.append(maxc - chroma * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0))
    return torch.stack(out, dim=-3)


def _color_jitter(x: Tensor, factors: Tensor, order: Tensor, apply: Tensor) -> Tensor:
    """ColorJitter with per-image factors and op order, applied where ``apply`` (see :mod:`dogo.views`).

    Round r applies, to each image, the op ``order[:, r]``. Brightness, contrast and saturation
    are per-image ``C x C`` colour matrices plus an offset (the identity for images doing hue in
    that round or not jittered at all), so a round is one ``baddbmm`` and a clamp; the hue
    images of the round are then converted on their own (a quarter of the batch on average).
    Greyscale inputs (``C = 1``): saturation and hue are no-ops, only brightness and contrast act.
    """
    bsz, ch, h, w = x.shape
    dev, dt = x.device, x.dtype
    luma = torch.tensor(LUMA, dtype=dt, device=dev) if ch == 3 else torch.ones(1, dtype=dt, device=dev)
    eye = torch.eye(ch, dtype=dt, device=dev)
    # every round's matrices at once: B x 4 (rounds)
    ops = torch.where(apply[:, None], order, torch.full_like(order, -1))
    factor = factors.to(dt).gather(1, ops.clamp(min=0))
    acts = (ops >= 0) & (ops < HUE) & ((ops != SATURATION) if ch == 1 else True)
    f = torch.where(acts, factor, torch.ones_like(factor))
    sat = ((1.0 - f) * (ops == SATURATION))[..., None, None]
    mats = f[..., None, None] * eye + sat * luma.expand(ch, ch)  # B x 4 x C x C
    contrast = (1.0 - f) * (ops == CONTRAST)  # weight of the mean grey level in the offset
    hue_images = [torch.nonzero(ops[:, r] == HUE).squeeze(1) for r in range(4)] if ch == 3 else [None] * 4
    y, owned = x.reshape(bsz, ch, h * w), False
    for r in range(4):
        if acts[:, r].any():
            offset = (contrast[:, r] * (y.mean(dim=2) @ luma))[:, None, None].expand(bsz, ch, 1)
            y, owned = torch.baddbmm(offset, mats[:, r], y).clamp_(0.0, 1.0), True
        idx = hue_images[r]
        if idx is not None and idx.numel():
            hued = adjust_hue(y.index_select(0, idx).view(-1, 3, h, w), factor[idx, r])
            y, owned = (y if owned else y.clone()), True
            y.index_copy_(0, idx, hued.view(-1, 3, h * w))
    return y.view(bsz, ch, h, w)


def _grayscale_and_normalize(x: Tensor, gray: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """RandomGrayscale where ``gray`` and ``(x - mean) / std``, as one per-image colour matrix."""
    bsz, _, h, w = x.shape
    luma = torch.tensor(LUMA, dtype=x.dtype, device=x.device)
    eye = torch.eye(3, dtype=x.dtype, device=x.device)
    mat = torch.where(gray[:, None, None], luma.expand(3, 3), eye) / std[None, :, None]
    offset = (-mean / std)[None, :, None].expand(bsz, 3, 1)
    return torch.baddbmm(offset, mat, x.reshape(bsz, 3, h * w)).view(bsz, 3, h, w)
