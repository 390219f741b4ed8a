"""Batched, per-image random augmentation for SSL views (SimCLR and SimSiam recipes).

A recipe turns a batch of uint8 images ``B x C x H x W`` (``C`` in {1, 3}) into float32 views
``B x 3 x S x S``, normalised, with every image drawing its own parameters from the
``torch.Generator`` passed in. The operations follow the reference (docs/reference.md §2), i.e.
torchvision's ``RandomResizedCrop -> RandomHorizontalFlip -> RandomApply(ColorJitter, 0.8) ->
RandomGrayscale [-> RandomGrayscale] [-> GaussianBlur at 224 px] -> ToTensor -> Normalize``::

    recipe = make_recipe("simclr", image_size=32)
    g = torch.Generator().manual_seed(0)
    view_a, view_b = recipe(images, g), recipe(images, g)   # two views, different parameters

Everything is tensor arithmetic over the whole batch (a handful of small per-batch loops, no
per-image Python), so it runs on whatever device the images are on. All random numbers come
from the generator (drawn on the generator's device, normally the CPU, then moved to the
images' device), so the same seed gives the same parameters on CPU and GPU.

How each operation is done (``p`` = pixel values in [0, 1], float32 throughout):

- **RandomResizedCrop + flip.** Crop boxes are sampled as torchvision does (10 attempts of
  area ~ U(scale) * H * W and log-ratio ~ U(log ratio), rounded; the first attempt that fits wins;
  otherwise the centre crop of the clamped ratio), all images and attempts at once. The crop is
  resampled *separably* with per-image ``S x H`` and ``S x W`` weight matrices (two batched
  matmuls): bilinear (triangle) weights at half-pixel centres, widened by the scale factor when
  shrinking and renormalised inside the crop box. That is exactly torchvision's
  ``resized_crop(..., antialias=True)`` / PIL's bilinear resize of the cropped region (no
  bleeding of pixels outside the box, proper antialiasing when downscaling), which
  ``grid_sample`` would not give. The flip reverses the rows of the width matrix, and the
  1/255 scaling is folded into the height matrix, both for free.
- **ColorJitter** (torchvision semantics): brightness/contrast/saturation factors
  ~ U(max(0, 1 - x), 1 + x), hue shift ~ U(-h, h); the four ops run in a random order per image
  (a per-image permutation; applied in four rounds, each round doing, per image, the op that
  image drew for that round); the whole jitter is applied with probability ``jitter_p``.
  Brightness ``clamp(f p)``, contrast ``clamp(f p + (1 - f) mean(gray))``, saturation
  ``clamp(f p + (1 - f) gray)`` are per-image 3x3 colour matrices, so a round of them is one
  batched ``baddbmm`` plus a clamp; hue goes RGB -> HSV -> (h + shift) mod 1 -> RGB (the
  closed-form HSV -> RGB: ``v - v s clamp(min(k, 4 - k), 0, 1)``, ``k = (n + 6h) mod 6``).
  Differences from the reference: the reference jitters PIL images, which quantises to uint8
  after every op and rounds the contrast mean to an integer; dogo stays in float.
- **RandomGrayscale**: ITU-R 601-2 luma ``0.299 R + 0.587 G + 0.114 B`` (what PIL's ``"L"``
  conversion, the reference's path, uses; torchvision's tensor path uses 0.2989), replicated to
  three channels. The same luma is used for contrast and saturation. SimSiam's two
  ``RandomGrayscale(0.2)`` are kept as two independent draws (``grayscale_p=(0.2, 0.2)``:
  grey if either hits, effective p = 0.36; greyscale twice equals greyscale once).
- **Gaussian blur** (only at 224 px, as the reference): per-image sigma ~ U(0.1, 2), applied
  with p = 0.5, separable grouped convolution with per-image kernels of SimCLR's size (10 % of
  the image, made odd: 23 at 224) and reflect padding. The reference uses PIL's GaussianBlur
  (an extended-box approximation of the same Gaussian). Blur and normalisation commute (the
  kernel sums to 1), so blur runs on the normalised tensor.
- **Greyscale inputs** (C = 1) stay one channel until the normalisation (saturation, hue and
  greyscale are no-ops on grey pixels), which makes them about 3x cheaper; the output is the
  same as for the image repeated to three channels (to float rounding).

Why our own and not a library (the project rule): torchvision is not a dependency of dogo (it
pins torch), and kornia (pure PyTorch, the same ops batched) is several times slower. Measured
on the same inputs, batch 256, ``torch.set_num_threads(1)``, thread CPU time, on this project's
2-core AMD EPYC VM while it was shared with other jobs (load 2 to 6), so the numbers move by
about 30 % between runs; the ranges are the medians of four runs (torch 2.13 CPU, kornia 0.9.0):

=========================================  =====================  =====================
pipeline (uint8 in, normalised float out)  32 px RGB              28 px grey -> 32 px
=========================================  =====================  =====================
dogo ``make_recipe("simclr", 32)``         11,000-20,000 img/s    50,000-60,000 img/s
dogo ``make_recipe("simsiam", 32)``        12,000-20,000 img/s    32,000-60,000 img/s
kornia RRC + flip + ColorJitter + gray     5,200-7,700 img/s      6,400-9,900 img/s
=========================================  =====================  =====================

(kornia: ``AugmentationSequential(RandomResizedCrop, RandomHorizontalFlip, ColorJitter(0.8,
0.8, 0.8, 0.2, p=0.8), RandomGrayscale(0.2), Normalize)``, the uint8 -> float conversion and,
for grey input, the repeat to three channels included.) Where the time goes in dogo: the two
resampling matmuls and the hue conversion, about a third each. Four views per image (two per
peer, two peers) at these rates cost well under 1 % of a CPU training step, which handles
tens of images/s (docs/reference.md §6). ``tests/test_views.py`` checks every op against a slow
per-image reference written from torchvision's formulas, and against kornia's functional ops
where kornia is installed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from dogo.errors import ConfigError
from dogo.registry import Registry

__all__ = [
    "LUMA",
    "ViewParams",
    "ViewRecipe",
    "RECIPES",
    "make_recipe",
    "eval_transform",
    "normalization_for",
    "blur_kernel_size",
    "sample_crop_boxes",
    "resized_crop",
    "rgb_to_grayscale",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_saturation",
    "adjust_hue",
    "gaussian_blur",
    "solarize",
]

#: ITU-R 601-2 luma weights (R, G, B), as PIL's ``convert("L")``.
LUMA = (0.299, 0.587, 0.114)

#: Order of the jitter ops in :attr:`ViewParams.factors` and :attr:`ViewParams.order`.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3

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


def blur_kernel_size(image_size: int) -> int:
    """SimCLR's blur kernel: 10 % of the image size, made odd (23 at 224 px)."""
    return (int(0.1 * image_size) // 2) * 2 + 1


# --------------------------------------------------------------------------------------------
# functional ops (batched, per-image parameters). x: float B x 3 x H x W in [0, 1].
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# RandomResizedCrop
# --------------------------------------------------------------------------------------------

_CROP_ATTEMPTS = 10


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
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fw, fh = int(round(height * max(ratio))), height
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


def resized_crop(
    x: Tensor, boxes: Tensor, size: int, flip: Tensor | None = None, value_scale: float = 1.0
) -> Tensor:
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


# --------------------------------------------------------------------------------------------
# recipes
# --------------------------------------------------------------------------------------------


@dataclass
class ViewParams:
    """Every random choice of one call, per image (``B`` rows; all on the CPU).

    ``boxes`` ``B x 4`` int64 ``(top, left, height, width)``; ``flip`` ``(B,)`` bool;
    ``jitter`` ``(B,)`` bool (ColorJitter applied); ``factors`` ``B x 4`` float32 (brightness,
    contrast, saturation factors and hue shift); ``order`` ``B x 4`` int64 (a permutation of
    0..3 = brightness, contrast, saturation, hue: the order the ops run in); ``gray`` ``(B,)``
    bool; ``blur`` ``(B,)`` bool; ``sigma`` ``(B,)`` float32; ``solarize`` ``(B,)`` bool.
    """

    boxes: Tensor
    flip: Tensor
    jitter: Tensor
    factors: Tensor
    order: Tensor
    gray: Tensor
    blur: Tensor
    sigma: Tensor
    solarize: Tensor


def _pair(value: object, name: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ConfigError(f"view recipe: {name} must be two numbers (low, high), got {value!r}") from None
    if not lo <= hi:
        raise ConfigError(f"view recipe: {name} must have low <= high, got {value!r}")
    return lo, hi


def _probability(value: object, name: str) -> float:
    try:
        p = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"view recipe: {name} must be a probability, got {value!r}") from None
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"view recipe: {name} must be in [0, 1], got {value!r}")
    return p


@dataclass(frozen=True)
class ViewRecipe:
    """One view's augmentation: ``recipe(images_uint8, generator) -> float32 B x 3 x S x S``.

    Fields (defaults = SimCLR, docs/reference.md §2):

    - ``size``: output side ``S``.
    - ``crop_scale``, ``crop_ratio``: RandomResizedCrop's area fraction and aspect-ratio ranges.
    - ``flip_p``: horizontal flip probability.
    - ``jitter_strength`` ``s``: ColorJitter(0.8 s, 0.8 s, 0.8 s, 0.2 s); ``jitter_p`` its
      probability (the whole jitter, RandomApply).
    - ``grayscale_p``: one probability per RandomGrayscale in the chain (a float is one); the
      image turns grey when any draw hits: SimSiam's ``(0.2, 0.2)`` is an effective 0.36.
    - ``blur_p``, ``blur_sigma``: Gaussian blur probability and sigma range; ``blur_p=None``
      means the reference's rule, 0.5 when ``size == 224`` and 0 otherwise.
    - ``mean``, ``std``: normalisation; ``None`` means :func:`normalization_for` of ``size``.
    - ``jitter_factors``: ColorJitter's (brightness, contrast, saturation, hue) ranges given
      directly (BYOL's ``(0.4, 0.4, 0.2, 0.1)``), overriding ``jitter_strength``'s.
    - ``solarize_p``: probability of :func:`solarize` (threshold 0.5), after the blur (BYOL).
      With ``solarize_p = 0`` no draw is made for it, so the other recipes' draws are unchanged.

    Invalid values raise :class:`~dogo.errors.ConfigError`.
    """

    size: int
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_strength: float = 1.0
    jitter_p: float = 0.8
    grayscale_p: tuple[float, ...] = (0.2,)
    blur_p: float | None = None
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    jitter_factors: tuple[float, float, float, float] | None = None
    solarize_p: float = 0.0

    def __post_init__(self) -> None:
        def put(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size <= 0:
            raise ConfigError(f"view recipe: size must be a positive integer, got {self.size!r}")
        scale = _pair(self.crop_scale, "crop_scale")
        if not 0.0 < scale[0] <= 1.0 or scale[1] > 1.0:
            raise ConfigError(f"view recipe: crop_scale must lie in (0, 1], got {self.crop_scale!r}")
        ratio = _pair(self.crop_ratio, "crop_ratio")
        if ratio[0] <= 0:
            raise ConfigError(f"view recipe: crop_ratio must be positive, got {self.crop_ratio!r}")
        put("crop_scale", scale)
        put("crop_ratio", ratio)
        put("flip_p", _probability(self.flip_p, "flip_p"))
        put("jitter_p", _probability(self.jitter_p, "jitter_p"))
        try:
            s = float(self.jitter_strength)
        except (TypeError, ValueError):
            s = -1.0
        if not 0.0 <= s <= 2.5:  # hue 0.2 s must stay within [0, 0.5]
            raise ConfigError(f"view recipe: jitter_strength must be in [0, 2.5], got {self.jitter_strength!r}")
        put("jitter_strength", s)
        gp = self.grayscale_p
        gp = (gp,) if isinstance(gp, (int, float)) else tuple(gp)
        put("grayscale_p", tuple(_probability(p, "grayscale_p") for p in gp))
        blur_p = (0.5 if self.size == 224 else 0.0) if self.blur_p is None else self.blur_p
        put("blur_p", _probability(blur_p, "blur_p"))
        sigma = _pair(self.blur_sigma, "blur_sigma")
        if sigma[0] <= 0:
            raise ConfigError(f"view recipe: blur_sigma must be positive, got {self.blur_sigma!r}")
        put("blur_sigma", sigma)
        default_mean, default_std = normalization_for(self.size)
        mean = default_mean if self.mean is None else tuple(float(v) for v in self.mean)
        std = default_std if self.std is None else tuple(float(v) for v in self.std)
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ConfigError(f"view recipe: mean and std need 3 values each (std > 0), got {mean!r}, {std!r}")
        put("mean", mean)
        put("std", std)
        put("solarize_p", _probability(self.solarize_p, "solarize_p"))
        if self.jitter_factors is not None:
            try:
                jf = tuple(float(v) for v in self.jitter_factors)  # type: ignore[union-attr]
            except (TypeError, ValueError):
                jf = ()
            if len(jf) != 4 or min(jf) < 0 or jf[3] > 0.5:
                raise ConfigError(f"view recipe: jitter_factors must be 4 numbers >= 0 (hue <= 0.5), "
                                  f"got {self.jitter_factors!r}")
            put("jitter_factors", jf)

    # torchvision's ColorJitter ranges for strength s
    @property
    def brightness(self) -> float:
        return 0.8 * self.jitter_strength if self.jitter_factors is None else self.jitter_factors[0]

    @property
    def contrast(self) -> float:
        return 0.8 * self.jitter_strength if self.jitter_factors is None else self.jitter_factors[1]

    @property
    def saturation(self) -> float:
        return 0.8 * self.jitter_strength if self.jitter_factors is None else self.jitter_factors[2]

    @property
    def hue(self) -> float:
        return 0.2 * self.jitter_strength if self.jitter_factors is None else self.jitter_factors[3]

    @property
    def effective_grayscale_p(self) -> float:
        """Probability that an image ends up grey: ``1 - prod(1 - p)``."""
        return 1.0 - math.prod(1.0 - p for p in self.grayscale_p)

    def sample_params(
        self, batch: int, height: int, width: int, generator: torch.Generator | None
    ) -> ViewParams:
        """Draw every random choice for ``batch`` images of ``height x width`` (one ``torch.rand``).

        The number of draws depends only on the batch size and the number of grayscale
        stages, never on the outcomes, so a generator advances the same way on every call.
        """
        n_crop = 2 * _CROP_ATTEMPTS + 2
        n_gray = len(self.grayscale_p)
        device = generator.device if generator is not None else None
        n_solarize = 1 if self.solarize_p > 0 else 0
        u = torch.rand(
            batch, n_crop + 1 + 1 + 4 + 4 + n_gray + 2 + n_solarize, generator=generator, dtype=torch.float64,
            device=device,
        ).cpu()
        boxes = _crop_boxes_from_uniforms(u[:, :n_crop], height, width, self.crop_scale, self.crop_ratio)
        c = n_crop
        flip = u[:, c] < self.flip_p
        jitter = u[:, c + 1] < self.jitter_p
        fu = u[:, c + 2 : c + 6]
        lo = torch.tensor([max(0.0, 1.0 - self.brightness), max(0.0, 1.0 - self.contrast),
                           max(0.0, 1.0 - self.saturation), -self.hue], dtype=torch.float64)
        hi = torch.tensor([1.0 + self.brightness, 1.0 + self.contrast, 1.0 + self.saturation, self.hue],
                          dtype=torch.float64)
        factors = (lo + (hi - lo) * fu).to(torch.float32)
        order = torch.argsort(u[:, c + 6 : c + 10], dim=1)  # a uniform random permutation per image
        c += 10
        gray = (u[:, c : c + n_gray] < torch.tensor(self.grayscale_p, dtype=torch.float64)).any(dim=1)
        c += n_gray
        blur = u[:, c] < self.blur_p
        lo_s, hi_s = self.blur_sigma
        sigma = (lo_s + (hi_s - lo_s) * u[:, c + 1]).to(torch.float32)
        solar = u[:, c + 2] < self.solarize_p if n_solarize else torch.zeros(batch, dtype=torch.bool)
        return ViewParams(boxes, flip, jitter, factors, order, gray, blur, sigma, solar)

    def __call__(
        self,
        images: Tensor,
        generator: torch.Generator | None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """``B x C x H x W`` uint8 (or float in [0, 1]) -> normalised ``B x 3 x S x S`` of ``dtype``.

        ``device`` moves the images first (ship uint8 to the GPU, augment there); by default
        the output is on the images' device. ``generator`` None draws from torch's global RNG.
        """
        _check_images(images)
        if device is not None:
            images = images.to(device, non_blocking=True)
        bsz, _, h, w = images.shape
        params = self.sample_params(bsz, h, w, generator)
        return self.apply(images, params).to(dtype)

    def apply(self, images: Tensor, params: ViewParams) -> Tensor:
        """Apply already-sampled parameters (deterministic); see :meth:`sample_params`."""
        _check_images(images)
        dev = images.device
        p = ViewParams(*(t.to(dev, non_blocking=True) for t in dataclasses.astuple(params)))
        value_scale = 1.0 / 255.0 if images.dtype == torch.uint8 else 1.0
        x = resized_crop(images, p.boxes, self.size, flip=p.flip, value_scale=value_scale)
        if self.jitter_p > 0 and max(self.brightness, self.contrast, self.saturation, self.hue) > 0:
            x = _color_jitter(x, p.factors, p.order, p.jitter)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=dev)
        std = torch.tensor(self.std, dtype=x.dtype, device=dev)
        if x.shape[1] == 1:  # grey input: greyscale is a no-op, expand while normalising
            x = x * (1.0 / std).view(1, 3, 1, 1) + (-mean / std).view(1, 3, 1, 1)
        else:
            x = _grayscale_and_normalize(x, p.gray, mean, std)
        if self.blur_p > 0:
            x = _blur_subset(x, p.blur, p.sigma, blur_kernel_size(self.size))
        if self.solarize_p > 0:
            x = torch.where(p.solarize[:, None, None, None], _solarize_normalized(x, mean, std), x)
        return x


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a B x C x H x W tensor with C in (1, 3), got {shape}")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise ValueError(f"images must be uint8 (or float in [0, 1]), got {images.dtype}")


def _color_jitter(x: Tensor, factors: Tensor, order: Tensor, apply: Tensor) -> Tensor:
    """ColorJitter with per-image factors and op order, applied where ``apply`` (see module doc).

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
    bsz, ch, h, w = x.shape
    luma = torch.tensor(LUMA, dtype=x.dtype, device=x.device)
    eye = torch.eye(3, dtype=x.dtype, device=x.device)
    mat = torch.where(gray[:, None, None], luma.expand(3, 3), eye) / std[None, :, None]
    offset = (-mean / std)[None, :, None].expand(bsz, 3, 1)
    return torch.baddbmm(offset, mat, x.reshape(bsz, 3, h * w)).view(bsz, 3, h, w)


def _blur_subset(x: Tensor, blur: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    idx = torch.nonzero(blur).squeeze(1)
    if idx.numel():
        x = x.clone()
        x[idx] = gaussian_blur(x[idx], sigma[idx], kernel_size)
    return x


RECIPES: Registry[Callable[[int], dict]] = Registry("view recipe")


@RECIPES.register("simclr")
def _simclr(image_size: int) -> dict:
    """SimCLR: s = 1.0, one RandomGrayscale(0.2)."""
    return {"size": image_size, "jitter_strength": 1.0, "grayscale_p": (0.2,)}


@RECIPES.register("simsiam")
def _simsiam(image_size: int) -> dict:
    """SimSiam (the reference): s = 0.5 and two RandomGrayscale(0.2) (effective p = 0.36)."""
    return {"size": image_size, "jitter_strength": 0.5, "grayscale_p": (0.2, 0.2)}


_FIELDS = tuple(f.name for f in dataclasses.fields(ViewRecipe))


def make_recipe(name: str, image_size: int, **overrides: object) -> ViewRecipe:
    """The reference's recipe ``name`` ("simclr" | "simsiam") at ``image_size``, with overrides.

    ``overrides`` are :class:`ViewRecipe` fields, e.g. ``make_recipe("simclr", 32, blur_p=0.5)``.
    Unknown names and fields raise :class:`~dogo.errors.ConfigError`.
    """
    params = RECIPES.get(name)(int(image_size))
    unknown = sorted(set(overrides) - set(_FIELDS))
    if unknown:
        raise ConfigError(
            f"view recipe {name!r}: unknown option(s) {', '.join(unknown)}; known: {', '.join(_FIELDS)}"
        )
    params.update(overrides)
    return ViewRecipe(**params)


def eval_transform(
    images: Tensor,
    image_size: int,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Evaluation view: resize, scale to [0, 1], normalise (no randomness): ``B x 3 x S x S``.

    torchvision ``Resize(S)`` semantics (shorter side to ``S``, bilinear, antialias), then a
    centre crop to ``S x S`` for non-square inputs (square inputs, all the reference's
    evaluation data, are just resized). Normalisation from :func:`normalization_for`.
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
        top = int(round((new_h - size) / 2.0))
        left = int(round((new_w - size) / 2.0))
        x = x[:, :, top : top + size, left : left + size]
    mean_t, std_t = (
        torch.tensor(v, dtype=x.dtype, device=x.device).view(1, 3, 1, 1) for v in normalization_for(size)
    )
    return ((x - mean_t) / std_t).to(dtype).contiguous()
