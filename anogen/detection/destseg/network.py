"""DeSTSeg's trainable networks (Zhang et al., CVPR 2023).

* :class:`StudentNet`: a randomly initialised ResNet encoder and a residual decoder that
  maps a (possibly corrupted) image to the teacher's features of the clean image, at
  the teacher's three levels (1/4, 1/8, 1/16 of the input).
* :class:`SegmentationNet`: residual blocks and an ASPP head on the product of the
  normalised teacher and student features (448 channels at 1/4 resolution for ResNet18),
  producing anomaly logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from anogen.detection.destseg.teacher import ResNetFeatures, random_resnet


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv + BN with a (projected when needed) shortcut."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def residual_stage(in_channels: int, out_channels: int, blocks: int = 2) -> nn.Sequential:
    return nn.Sequential(BasicBlock(in_channels, out_channels),
                         *[BasicBlock(out_channels, out_channels) for _ in range(blocks - 1)])


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel_size // 2)
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation,
                                   bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


def init_he(module: nn.Module) -> None:
    """He (fan-out) conv init and unit BN, as the reference initialises its new layers."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class StudentNet(nn.Module):
    """Random ResNet encoder (4 stages) + decoder back up to the teacher's three levels."""

    def __init__(self, embedding_size: int, hidden_sizes: Sequence[int], depths: Sequence[int],
                 feature_channels: Sequence[int]) -> None:
        super().__init__()
        self.encoder = ResNetFeatures(random_resnet(embedding_size, hidden_sizes, depths), num_stages=4)
        deepest = hidden_sizes[3]
        level1, level2, level3 = feature_channels
        self.decoder4 = residual_stage(deepest, deepest)
        self.decoder3 = residual_stage(deepest, level3)
        self.decoder2 = residual_stage(level3, level2)
        self.decoder1 = residual_stage(level2, level1)
        init_he(self.decoder4)
        init_he(self.decoder3)
        init_he(self.decoder2)
        init_he(self.decoder1)

    def forward(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """Normalised image -> student features at 1/4, 1/8, 1/16 (the teacher's levels)."""
        x1, x2, x3, x4 = self.encoder(pixels)
        b3 = self.decoder3(_resize(self.decoder4(x4), x3))
        b2 = self.decoder2(_resize(b3, x2))
        b1 = self.decoder1(_resize(b2, x1))
        return [b1, b2, b3]


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: image-level pooling + dilated 3x3 branches, fused."""

    def __init__(self, in_channels: int, out_channels: int, rates: Sequence[int] = (6, 12, 18)) -> None:
        super().__init__()
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), conv_bn_relu(in_channels, out_channels, 1))
        self.branches = nn.ModuleList([conv_bn_relu(in_channels, out_channels, 3, dilation=r) for r in rates])
        self.fuse = conv_bn_relu((1 + len(rates)) * out_channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.image_pool(x).expand(-1, -1, x.shape[2], x.shape[3])
        return self.fuse(torch.cat([pooled] + [branch(x) for branch in self.branches], dim=1))


class SegmentationNet(nn.Module):
    """Residual blocks (``res``) then ASPP and convolutions (``head``) -> 1 logit per pixel."""

    def __init__(self, in_channels: int = 448, width: int = 256, rates: Sequence[int] = (6, 12, 18)) -> None:
        super().__init__()
        self.res = residual_stage(in_channels, width)
        init_he(self.res)
        # The head keeps PyTorch's default init, as in the reference.
        self.head = nn.Sequential(ASPP(width, width, rates), conv_bn_relu(width, width, 3),
                                  nn.Conv2d(width, 1, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.res(features))


def _resize(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[2:], mode="bilinear", align_corners=False)
