"""ResNet-18/34/50 encoders (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016).

The blocks, layer order, bias-free convolutions, BatchNorm placement, strides (ResNet-50: the
"v1.5" stride on the 3x3 conv of the bottleneck) and initialisation (Kaiming-normal, fan_out,
for convolutions; BatchNorm weight 1, bias 0; no zero-init of the last BN of a block) are
torchvision's ``resnet18/34/50``, written on plain torch. Module names match torchvision's, so a
torchvision ImageNet state_dict without ``fc.*`` loads into the ``image_size >= 100`` model.

What differs from torchvision:

* no ``fc``: ``forward`` returns the global-average-pooled ``B x feature_dim`` feature
  (feature_dim = 512 * width for ResNet-18/34, 2048 * width for ResNet-50);
* for ``image_size < 100`` the "CIFAR stem": ``conv1`` is a 3x3 stride-1 convolution (padding 1)
  and there is no max-pool (``maxpool`` is an ``nn.Identity``), as in the DoGo reference, so a
  32-px image reaches ``layer4`` at 4 x 4; for ``image_size >= 100`` the ImageNet stem (7x7
  stride-2 conv, 3x3 stride-2 max-pool) is kept;
* ``width`` scales every channel count: stage widths (64, 128, 256, 512) * width, each rounded
  half up to an integer >= 1 (width 0.25: 16, 32, 64, 128);
* ``in_channels`` sets the input channels of ``conv1``.

Unlike the reference, ``resnet34`` at >= 100 px is a ResNet-34 (the reference built a ResNet-18).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from dogo.models import BACKBONES, is_small_image, scale_channels

__all__ = ["BasicBlock", "Bottleneck", "ResNet"]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution, no bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the (projected) input, then ReLU."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """conv1x1-BN-ReLU-conv3x3(stride)-BN-ReLU-conv1x1(x4)-BN, plus the input, then ReLU."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """A ResNet encoder without classifier: ``B x C x H x W -> B x feature_dim``.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
        image_size: below 100 the CIFAR stem (3x3 stride-1 conv, no max-pool), else ImageNet's.
        width: channel multiplier of the stage widths (64, 128, 256, 512).
        in_channels: input channels.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, int, int, int],
        image_size: int = 32,
        width: float = 1.0,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        planes = [scale_channels(c, width) for c in (64, 128, 256, 512)]
        self.inplanes = planes[0]
        if is_small_image(image_size):
            self.conv1 = nn.Conv2d(in_channels, planes[0], 3, stride=1, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, planes[0], 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(planes[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, planes[0], layers[0])
        self.layer2 = self._make_layer(block, planes[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, planes[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, planes[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.feature_dim: int = planes[3] * block.expansion

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        planes: int,
        blocks: int,
        stride: int = 1,
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers: list[nn.Module] = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B x C x H x W`` -> pooled ``B x feature_dim``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def _factory(block: type[BasicBlock] | type[Bottleneck], layers: tuple[int, int, int, int]) -> Callable[..., ResNet]:
    def build(image_size: int = 32, width: float = 1.0, in_channels: int = 3) -> ResNet:
        return ResNet(block, layers, image_size=image_size, width=width, in_channels=in_channels)

    return build


resnet18 = BACKBONES.register("resnet18")(_factory(BasicBlock, (2, 2, 2, 2)))
resnet34 = BACKBONES.register("resnet34")(_factory(BasicBlock, (3, 4, 6, 3)))
resnet50 = BACKBONES.register("resnet50")(_factory(Bottleneck, (3, 4, 6, 3)))
