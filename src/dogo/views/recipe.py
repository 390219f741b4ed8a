"""The random view recipes: :class:`ViewRecipe` (validated fields, one draw of every parameter,
then the batched ops in the reference's order), the registry of named recipes and
:func:`make_recipe`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dogo.core.errors import ConfigError
from dogo.core.registry import Registry
from dogo.views.color import _color_jitter, _grayscale_and_normalize
from dogo.views.crop import _CROP_ATTEMPTS, _crop_boxes_from_uniforms, resized_crop
from dogo.views.evaluation import _check_images, normalization_for
from dogo.views.filters import _blur_subset, _solarize_normalized, blur_kernel_size


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


def _pair(value: Any, name: str) -> tuple[float, float]:
    """``value`` as it came from a config, checked here."""
    try:
        lo, hi = (float(v) for v in value)
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
                raise ConfigError(
                    f"view recipe: jitter_factors must be 4 numbers >= 0 (hue <= 0.5), got {self.jitter_factors!r}"
                )
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

    def sample_params(self, batch: int, height: int, width: int, generator: torch.Generator | None) -> ViewParams:
        """Draw every random choice for ``batch`` images of ``height x width`` (one ``torch.rand``).

        The number of draws depends only on the batch size and the number of grayscale
        stages, never on the outcomes, so a generator advances the same way on every call.
        """
        n_crop = 2 * _CROP_ATTEMPTS + 2
        n_gray = len(self.grayscale_p)
        device = generator.device if generator is not None else None
        n_solarize = 1 if self.solarize_p > 0 else 0
        u = torch.rand(
            batch,
            n_crop + 1 + 1 + 4 + 4 + n_gray + 2 + n_solarize,
            generator=generator,
            dtype=torch.float64,
            device=device,
        ).cpu()
        boxes = _crop_boxes_from_uniforms(u[:, :n_crop], height, width, self.crop_scale, self.crop_ratio)
        c = n_crop
        flip = u[:, c] < self.flip_p
        jitter = u[:, c + 1] < self.jitter_p
        fu = u[:, c + 2 : c + 6]
        lo = torch.tensor(
            [
                max(0.0, 1.0 - self.brightness),
                max(0.0, 1.0 - self.contrast),
                max(0.0, 1.0 - self.saturation),
                -self.hue,
            ],
            dtype=torch.float64,
        )
        hi = torch.tensor(
            [1.0 + self.brightness, 1.0 + self.contrast, 1.0 + self.saturation, self.hue], dtype=torch.float64
        )
        factors = (lo + (hi - lo) * fu).to(torch.float32)
        order = torch.argsort(u[:, c + 6 : c + 10], dim=1)  # a uniform random permutation per image
        c += 10
        gray = (u[:, c : c + n_gray] < torch.tensor(self.grayscale_p, dtype=torch.float64)).any(dim=1)
        c += n_gray
        assert self.blur_p is not None  # __post_init__ fills it in
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
        assert self.blur_p is not None  # __post_init__ fills it in
        if self.blur_p > 0:
            x = _blur_subset(x, p.blur, p.sigma, blur_kernel_size(self.size))
        if self.solarize_p > 0:
            x = torch.where(p.solarize[:, None, None, None], _solarize_normalized(x, mean, std), x)
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
        raise ConfigError(f"view recipe {name!r}: unknown option(s) {', '.join(unknown)}; known: {', '.join(_FIELDS)}")
    params.update(overrides)
    return ViewRecipe(**params)
