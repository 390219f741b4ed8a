"""Backbones and heads: the encoders f_k and the heads g_k (and SimSiam's predictor h_k) of a peer.

Every backbone is built by :func:`build_backbone` from its registry name (docs/reference.md §3) and
returns the *pooled feature*, never a classifier output:

    backbone(x: B x C x H x W float) -> B x backbone.feature_dim

(global average pool over the last feature map, flattened). Images under
:data:`SMALL_IMAGE_SIZE` pixels get a stem that keeps the spatial resolution (the CIFAR
adaptation, documented per family); larger images keep the ImageNet strides.

============  ========================================  ===============  ===============
name          network                                   feature_dim      module
============  ========================================  ===============  ===============
resnet18      ResNet-18 (He et al. 2016)                512 * width      resnet.py
resnet34      ResNet-34                                 512 * width      resnet.py
resnet50      ResNet-50 (bottleneck, v1.5 strides)      2048 * width     resnet.py
wrn10         WRN-10-2 (Zagoruyko & Komodakis 2016)     128 * width      wide_resnet.py
wrn16         WRN-16-2                                  128 * width      wide_resnet.py
wrn16-4       WRN-16-4                                  256 * width      wide_resnet.py
wrn16-8       WRN-16-8                                  512 * width      wide_resnet.py
wrn28         WRN-28-2                                  128 * width      wide_resnet.py
mobilenetv2   MobileNetV2 x1.0 (Sandler et al. 2018)    1280             mobilenet.py
shufflenetv2  ShuffleNetV2 x1.0 (Ma et al. 2018)        1024             shufflenet.py
vit_tiny      ViT-Tiny (Dosovitskiy et al. 2021)        192 * width      vit.py
vit_small     ViT-Small                                 384 * width      vit.py
============  ========================================  ===============  ===============

(``* width`` rounded to an integer, see :func:`scale_channels`; MobileNetV2 keeps 1280 and
ShuffleNetV2 keeps 1024 for ``width <= 1``, as torchvision's width variants do.)

The ViTs return the class token (or the mean of the patch tokens) instead of a pooled map, and
take ``backbone_options`` (``patch_size``, ``pool``: see :mod:`dogo.models.vit`); the CNNs take none.

Adding a backbone is one file with one ``@BACKBONES.register("name")`` line on a factory
``(image_size: int, width: float, in_channels: int, **options) -> nn.Module`` whose module has an
integer attribute ``feature_dim``; import the file at the bottom of this one. A factory with
options carries their pydantic model as its ``Options`` attribute (checked by
:func:`backbone_options`).
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch.nn as nn
from pydantic import ValidationError

from dogo.core.errors import ConfigError
from dogo.core.registry import Registry, nearest

__all__ = [
    "BACKBONES",
    "SMALL_IMAGE_SIZE",
    "SimCLRHead",
    "SimSiamPredictor",
    "SimSiamProjector",
    "backbone_options",
    "build_backbone",
    "count_parameters",
    "is_small_image",
    "scale_channels",
]

#: Images with a side below this many pixels get the small-image ("CIFAR") stem.
SMALL_IMAGE_SIZE = 100


class BackboneFactory(Protocol):
    """A registered backbone: ``(image_size, width, in_channels)``; a factory with an ``Options``
    attribute takes those options as keyword arguments too (:func:`backbone_options` checks them)."""

    def __call__(self, image_size: int, width: float, in_channels: int) -> nn.Module: ...


#: name -> factory; see the table in the module docstring.
BACKBONES: Registry[BackboneFactory] = Registry("backbone")


def is_small_image(image_size: int) -> bool:
    """True when ``image_size`` < :data:`SMALL_IMAGE_SIZE` (CIFAR, Tiny-ImageNet, STL-10)."""
    return image_size < SMALL_IMAGE_SIZE


def scale_channels(channels: int, width: float, divisor: int = 1) -> int:
    """``channels * width`` rounded half up to a multiple of ``divisor``, at least ``divisor``.

    ``scale_channels(64, 0.25) == 16`` (ResNet-18 "at width 16", docs/reference.md §3.1);
    ``scale_channels(116, 0.5, 2) == 58``.
    """
    return max(divisor, int(channels * width / divisor + 0.5) * divisor)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``module`` (shared parameters counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def backbone_options(name: str, options: dict[str, Any] | None, where: str = "backbone_options") -> dict[str, Any]:
    """Validate ``options`` for the backbone registered as ``name``; returns the options given (converted).

    Raises :class:`~dogo.core.errors.ConfigError` naming ``where`` and the key (an unknown key: the
    nearest valid one; a backbone without options: that it takes none).
    """
    factory = BACKBONES.get(name)
    options = {} if options is None else options
    if not isinstance(options, dict):
        raise ConfigError(f"{where}: must be a mapping of {name} options, got {type(options).__name__}")
    model = getattr(factory, "Options", None)
    if model is None:
        if options:
            raise ConfigError(
                f"{where}: backbone {name!r} takes no options (got {', '.join(map(str, options))}); remove them"
            )
        return {}
    valid = list(model.model_fields)
    for key in options:
        if key not in valid:
            raise ConfigError(
                f"{where}: unknown {name} option {key!r}{nearest(str(key), valid)}; {name} takes: {', '.join(valid)}"
            )
    try:
        checked = model.model_validate(options)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{where}.{key}: {first['msg']} (got {first.get('input')!r})") from None
    return checked.model_dump(include=set(options))


def build_backbone(
    name: str, image_size: int = 32, width: float = 1.0, in_channels: int = 3, **options: Any
) -> nn.Module:
    """Build the registered backbone ``name`` for square images of side ``image_size``.

    Args:
        name: a registry name (``BACKBONES.names()``), e.g. ``"resnet18"``.
        image_size: input side in pixels; below :data:`SMALL_IMAGE_SIZE` the small-image stem is
            used (see each family's module docstring). Inputs of other sizes still work: the
            pooling is adaptive.
        width: channel multiplier (1.0 = the published network).
        in_channels: channels of the input images.
        options: the backbone's own options (``backbone_options``, e.g. a ViT's ``patch_size``),
            checked by :func:`backbone_options`.

    Returns:
        an ``nn.Module`` mapping ``B x in_channels x H x W`` to the pooled ``B x feature_dim``
        feature, with the integer attribute ``feature_dim``.

    Raises:
        ConfigError: unknown name (with the nearest known one) or an out-of-range argument.
    """
    factory = BACKBONES.get(name)
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ConfigError(f"backbone {name!r}: image_size must be a positive integer, got {image_size!r}")
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not math.isfinite(width) or width <= 0:
        raise ConfigError(f"backbone {name!r}: width must be a positive number, got {width!r}")
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ConfigError(f"backbone {name!r}: in_channels must be a positive integer, got {in_channels!r}")
    model = factory(
        image_size=image_size, width=float(width), in_channels=in_channels, **backbone_options(name, options)
    )
    if not isinstance(getattr(model, "feature_dim", None), int):
        raise TypeError(f"backbone {name!r} has no integer attribute feature_dim")
    return model


# The families register themselves on import; they import the names defined above.
from dogo.models import mobilenet, resnet, shufflenet, vit, wide_resnet  # noqa: E402,F401
from dogo.models.heads import SimCLRHead, SimSiamPredictor, SimSiamProjector  # noqa: E402
