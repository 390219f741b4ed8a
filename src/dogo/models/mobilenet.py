"""MobileNetV2 encoder (Sandler et al., "MobileNetV2: Inverted Residuals and Linear
Bottlenecks", CVPR 2018).

torchvision's ``mobilenet_v2`` written on plain torch: the same inverted-residual settings
(t, c, n, s) = (1,16,1,1) (6,24,2,2) (6,32,3,2) (6,64,4,2) (6,96,3,1) (6,160,3,2) (6,320,1,1),
a 3x3 stride-2 stem conv to 32 channels, a 1x1 conv to 1280 channels, ReLU6, bias-free convs,
``width_mult`` with channels rounded to multiples of 8 (``_make_divisible``), and the same
initialisation (Kaiming-normal fan_out convs, BN weight 1 bias 0). Module names match
torchvision's (``features.*``), so an ImageNet state_dict without ``classifier.*`` loads into the
``image_size >= 100`` model.

What differs from torchvision:

* no classifier (dropout + Linear): ``forward`` returns the pooled ``B x 1280`` feature
  (the last channel count is ``_make_divisible(1280 * max(1, width), 8)``, as in torchvision,
  so it stays 1280 for ``width <= 1``);
* for ``image_size < 100`` two strides become 1, the usual CIFAR adaptation: the stem conv
  (``features.0``) and the first block of the (6, 24, 2, 2) stage (``features.2``). Total stride
  8 instead of 32: a 32-px image ends at 4 x 4. Parameters are unchanged;
* ``in_channels`` sets the input channels of the stem conv.

Unlike the reference, this is not an unmodified ImageNet network at every size (which returned
its 1000-way output as the feature and crashed at >= 100 px).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from dogo.models import BACKBONES, is_small_image

__all__ = ["InvertedResidual", "MobileNetV2", "make_divisible"]

#: (expansion t, output channels c, repeats n, first stride s) of torchvision / the paper.
INVERTED_RESIDUAL_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """torchvision's ``_make_divisible``: nearest multiple of ``divisor``, >= 0.9 * ``v``."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvBNReLU6(nn.Sequential):
    """Conv (no bias, 'same' padding) - BN - ReLU6 (torchvision's ``Conv2dNormActivation``)."""

    def __init__(
        self,
        in_planes: int,
        out_planes: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
    ) -> None:
        padding = (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_planes, out_planes, kernel_size, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_planes),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """1x1 expand (if t != 1) - 3x3 depthwise(stride) - 1x1 linear projection (+ input)."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride should be 1 or 2, got {stride}")
        hidden_dim = round(inp * expand_ratio)
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(inp, hidden_dim, kernel_size=1))
        layers += [
            ConvBNReLU6(hidden_dim, hidden_dim, stride=stride, groups=hidden_dim),
            nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 encoder without classifier: ``B x C x H x W -> B x feature_dim``.

    Args:
        image_size: below 100 the stem and the first stride-2 stage get stride 1.
        width: torchvision's ``width_mult`` (channels rounded to multiples of 8).
        in_channels: input channels.
    """

    def __init__(self, image_size: int = 32, width: float = 1.0, in_channels: int = 3) -> None:
        super().__init__()
        small = is_small_image(image_size)
        input_channel = make_divisible(32 * width, 8)
        last_channel = make_divisible(1280 * max(1.0, width), 8)
        features: list[nn.Module] = [ConvBNReLU6(in_channels, input_channel, stride=1 if small else 2)]
        for index, (t, c, n, s) in enumerate(INVERTED_RESIDUAL_SETTING):
            if small and index == 1:
                s = 1  # CIFAR adaptation: the first stride-2 stage keeps the resolution
            output_channel = make_divisible(c * width, 8)
            for i in range(n):
                features.append(InvertedResidual(input_channel, output_channel, s if i == 0 else 1, t))
                input_channel = output_channel
        features.append(ConvBNReLU6(input_channel, last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.feature_dim: int = last_channel

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B x C x H x W`` -> pooled ``B x feature_dim``."""
        x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
        return torch.flatten(x, 1)


@BACKBONES.register("mobilenetv2")
def mobilenetv2(image_size: int = 32, width: float = 1.0, in_channels: int = 3) -> MobileNetV2:
    return MobileNetV2(image_size=image_size, width=width, in_channels=in_channels)
