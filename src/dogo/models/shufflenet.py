"""ShuffleNetV2 x1.0 encoder (Ma et al., "ShuffleNet V2: Practical Guidelines for Efficient CNN
Architecture Design", ECCV 2018).

torchvision's ``shufflenet_v2_x1_0`` written on plain torch: a 3x3 stride-2 stem conv to 24
channels + BN + ReLU, a 3x3 stride-2 max-pool, stages of [4, 8, 4] units with 116, 232, 464
channels (each stage opens with a stride-2 unit with two branches; the other units split the
channels in half and transform one half), channel shuffle with 2 groups, a 1x1 conv to 1024
channels + BN + ReLU, and a global mean. Convs have no bias; initialisation is PyTorch's default,
as in torchvision (which sets none). Module names match torchvision's (``conv1``, ``stage2``..
``stage4``, ``conv5``), so an ImageNet state_dict without ``fc.*`` loads into the
``image_size >= 100`` model.

What differs from torchvision:

* no ``fc``: ``forward`` returns the pooled ``B x 1024`` feature;
* for ``image_size < 100`` the stem conv has stride 1 and there is no max-pool (``maxpool`` is
  an ``nn.Identity``): total stride 8 instead of 32, so a 32-px image ends at 4 x 4. Parameters
  are unchanged;
* ``width`` scales the three stage widths (116, 232, 464) * width, rounded half up to an even
  number >= 2 (the units split channels in half); the 24-channel stem and the 1024-channel
  ``conv5`` stay, as they do across torchvision's x0.5 / x1.0 / x1.5 variants;
* the channel shuffle keeps a channels_last input channels_last;
* ``in_channels`` sets the input channels of the stem conv.

Unlike the reference, this is not an unmodified ImageNet network at every size (which returned
its 1000-way output as the feature).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from dogo.models import BACKBONES, is_small_image, scale_channels

__all__ = ["ShuffleNetV2", "ShuffleUnit", "channel_shuffle"]

STAGES_REPEATS = (4, 8, 4)
STAGES_OUT_CHANNELS = (24, 116, 232, 464, 1024)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``groups`` groups: ``B x C x H x W -> B x C x H x W``."""
    b, c, h, w = x.shape
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        y = x.permute(0, 2, 3, 1).reshape(b, h, w, groups, c // groups)
        return y.transpose(3, 4).reshape(b, h, w, c).permute(0, 3, 1, 2)
    y = x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous()
    return y.view(b, c, h, w)


def _depthwise_conv(channels: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride, 1, bias=False, groups=channels)


class ShuffleUnit(nn.Module):
    """torchvision's ShuffleNetV2 ``InvertedResidual`` (stride 1: split; stride 2: two branches)."""

    def __init__(self, inp: int, oup: int, stride: int) -> None:
        super().__init__()
        if stride not in (1, 2, 3):
            raise ValueError(f"illegal stride value {stride}")
        self.stride = stride
        branch_features = oup // 2
        if stride == 1 and inp != branch_features * 2:
            raise ValueError(f"a stride-1 unit needs inp == oup (even), got {inp} -> {oup}")
        if stride > 1:
            self.branch1: nn.Module = nn.Sequential(
                _depthwise_conv(inp, stride),
                nn.BatchNorm2d(inp),
                nn.Conv2d(inp, branch_features, 1, 1, 0, bias=False),
                nn.BatchNorm2d(branch_features),
                nn.ReLU(inplace=True),
            )
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if stride > 1 else branch_features, branch_features, 1, 1, 0, bias=False),
            nn.BatchNorm2d(branch_features),
            nn.ReLU(inplace=True),
            _depthwise_conv(branch_features, stride),
            nn.BatchNorm2d(branch_features),
            nn.Conv2d(branch_features, branch_features, 1, 1, 0, bias=False),
            nn.BatchNorm2d(branch_features),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2 encoder without classifier: ``B x C x H x W -> B x feature_dim``.

    Args:
        image_size: below 100 the stem conv has stride 1 and there is no max-pool.
        width: multiplier of the stage widths (116, 232, 464), rounded to even numbers.
        in_channels: input channels.
    """

    stage2: nn.Sequential  # set by name in __init__ (torchvision's module names)
    stage3: nn.Sequential
    stage4: nn.Sequential

    def __init__(self, image_size: int = 32, width: float = 1.0, in_channels: int = 3) -> None:
        super().__init__()
        small = is_small_image(image_size)
        stem, *stages, last = STAGES_OUT_CHANNELS
        stage_channels = [scale_channels(c, width, divisor=2) for c in stages]
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, stem, 3, 1 if small else 2, 1, bias=False),
            nn.BatchNorm2d(stem),
            nn.ReLU(inplace=True),
        )
        self.maxpool: nn.Module = nn.Identity() if small else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        input_channels = stem
        for name, repeats, output_channels in zip(
            ("stage2", "stage3", "stage4"), STAGES_REPEATS, stage_channels, strict=True
        ):
            units = [ShuffleUnit(input_channels, output_channels, 2)]
            units += [ShuffleUnit(output_channels, output_channels, 1) for _ in range(repeats - 1)]
            setattr(self, name, nn.Sequential(*units))
            input_channels = output_channels
        self.conv5 = nn.Sequential(
            nn.Conv2d(input_channels, last, 1, 1, 0, bias=False),
            nn.BatchNorm2d(last),
            nn.ReLU(inplace=True),
        )
        self.feature_dim: int = last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B x C x H x W`` -> pooled ``B x feature_dim``."""
        x = self.maxpool(self.conv1(x))
        x = self.stage4(self.stage3(self.stage2(x)))
        return self.conv5(x).mean((2, 3))


@BACKBONES.register("shufflenetv2")
def shufflenetv2(image_size: int = 32, width: float = 1.0, in_channels: int = 3) -> ShuffleNetV2:
    return ShuffleNetV2(image_size=image_size, width=width, in_channels=in_channels)
