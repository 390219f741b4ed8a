"""Wide residual networks WRN-d-k (Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016).

The standard pre-activation CIFAR architecture (the authors' and the DoGo reference's):
a 3x3 stride-1 conv to 16 channels, three groups of n = (d - 4) / 6 pre-activation basic blocks
with 16k, 32k and 64k channels (strides 1, 2, 2), a final BN + ReLU and a global average pool.
Block: BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3, added to the input, or to a 1x1 strided
projection of the *pre-activated* input where the shape changes. Convolutions have no bias and
are initialised N(0, 2 / (k*k*out_channels)) (Kaiming-normal, fan_out); BN weight 1, bias 0.
There is no torchvision model to match.

What differs from the reference's ``WideResNet``:

* no ``fc``: ``forward`` returns the pooled ``B x 64k`` feature (the reference returned the
  1000-way fc output as its "feature");
* no unused ``sub_block1`` (the reference built one, inflating its parameter count);
* no dropout (the reference's rate is 0);
* adaptive average pooling (the reference pooled with a square kernel of the map's width);
* ``width`` scales every channel count: (16, 16k, 32k, 64k) * width, rounded half up, >= 1;
* ``in_channels`` sets the input channels of the first conv.

The network keeps the CIFAR strides at every image size, as the reference does (total stride 4:
a 224-px image reaches the last group at 56 x 56, which is costly); there is no ImageNet stem.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from dogo.models import BACKBONES, scale_channels

__all__ = ["PreActBlock", "WideResNet"]


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3 + (1x1-projected pre-activated) input."""

    def __init__(self, in_planes: int, out_planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if in_planes != out_planes or stride != 1:
            self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu1(self.bn1(x))
        # Where the shape changes, the shortcut sees the pre-activated input (as in the
        # authors' code); otherwise the raw input passes through.
        shortcut = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv2(self.relu2(self.bn2(self.conv1(pre))))
        return out + shortcut


class WideResNet(nn.Module):
    """WRN-depth-widen_factor encoder without classifier: ``B x C x H x W -> B x feature_dim``.

    Args:
        depth: 6n + 4 (10, 16, 22, 28, 40, ...).
        widen_factor: k; feature_dim = 64k (times ``width``).
        width: channel multiplier applied to (16, 16k, 32k, 64k).
        in_channels: input channels.
    """

    def __init__(self, depth: int, widen_factor: int, width: float = 1.0, in_channels: int = 3) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n + 4 with n >= 1, got {depth}")
        n = (depth - 4) // 6
        k = widen_factor
        channels = [scale_channels(c, width) for c in (16, 16 * k, 32 * k, 64 * k)]
        self.depth, self.widen_factor = depth, widen_factor
        self.conv1 = nn.Conv2d(in_channels, channels[0], 3, stride=1, padding=1, bias=False)
        self.block1 = self._group(n, channels[0], channels[1], stride=1)
        self.block2 = self._group(n, channels[1], channels[2], stride=2)
        self.block3 = self._group(n, channels[2], channels[3], stride=2)
        self.bn1 = nn.BatchNorm2d(channels[3])
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.feature_dim: int = channels[3]

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @staticmethod
    def _group(n: int, in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
        blocks = [PreActBlock(in_planes, out_planes, stride)]
        blocks += [PreActBlock(out_planes, out_planes) for _ in range(1, n)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B x C x H x W`` -> pooled ``B x feature_dim``."""
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return torch.flatten(self.avgpool(self.relu(self.bn1(x))), 1)


def _factory(depth: int, widen_factor: int) -> Callable[..., WideResNet]:
    def build(image_size: int = 32, width: float = 1.0, in_channels: int = 3) -> WideResNet:
        del image_size  # CIFAR strides at every size (module docstring)
        return WideResNet(depth, widen_factor, width=width, in_channels=in_channels)

    return build


wrn10 = BACKBONES.register("wrn10")(_factory(10, 2))
wrn16 = BACKBONES.register("wrn16")(_factory(16, 2))
wrn16_4 = BACKBONES.register("wrn16-4")(_factory(16, 4))
wrn16_8 = BACKBONES.register("wrn16-8")(_factory(16, 8))
wrn28 = BACKBONES.register("wrn28")(_factory(28, 2))
