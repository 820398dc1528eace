"""DRAEM's two networks (Zavrtanik et al., ICCV 2021).

* :class:`ReconstructiveNetwork`: an encoder-decoder *without* skip connections that
  learns to repaint anomalous regions as normal. Skips would let the anomaly leak
  straight through to the output, so there are none.
* :class:`DiscriminativeNetwork`: a U-Net on the image stacked with its reconstruction
  (6 channels) that segments where the two disagree in an anomalous way.

Layer shapes follow the reference (and so its parameter counts, ~69 M and ~28 M at the
paper widths): every block is two 3x3 conv + BN + ReLU, max-pool down, bilinear (align_corners=True)
x2 up followed by a 3x3 conv.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_block(in_channels: int, out_channels: int, mid_channels: int | None = None) -> nn.Sequential:
    """Two 3x3 conv + BatchNorm + ReLU layers."""
    mid_channels = out_channels if mid_channels is None else mid_channels
    return nn.Sequential(
        nn.Conv2d(in_channels, mid_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(mid_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def up_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """x2 bilinear upsampling, then 3x3 conv + BatchNorm + ReLU."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ReconstructiveNetwork(nn.Module):
    """Encoder (widths w, 2w, 4w, 8w, 8w; 4 poolings) and decoder back to the image, no skips."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, base_width: int = 128) -> None:
        super().__init__()
        w = base_width
        self.encoder = nn.ModuleList([
            conv_block(in_channels, w),
            conv_block(w, 2 * w),
            conv_block(2 * w, 4 * w),
            conv_block(4 * w, 8 * w),
            conv_block(8 * w, 8 * w),
        ])
        self.pool = nn.MaxPool2d(2)
        # (up-block in, out) then (conv-block in, out): each stage halves the width.
        self.decoder_up = nn.ModuleList([up_block(8 * w, 8 * w), up_block(4 * w, 4 * w),
                                         up_block(2 * w, 2 * w), up_block(w, w)])
        self.decoder_conv = nn.ModuleList([
            conv_block(8 * w, 4 * w, mid_channels=8 * w),
            conv_block(4 * w, 2 * w, mid_channels=4 * w),
            conv_block(2 * w, w, mid_channels=2 * w),
            conv_block(w, w),
        ])
        self.output = nn.Conv2d(w, out_channels, kernel_size=3, padding=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image
        for index, block in enumerate(self.encoder):
            if index > 0:
                x = self.pool(x)
            x = block(x)
        for up, conv in zip(self.decoder_up, self.decoder_conv):
            x = conv(up(x))
        return self.output(x)


class DiscriminativeNetwork(nn.Module):
    """U-Net: encoder widths w, 2w, 4w, 8w, 8w, 8w (5 poolings), decoder with skips, logits out."""

    def __init__(self, in_channels: int = 6, out_channels: int = 2, base_width: int = 64) -> None:
        super().__init__()
        w = base_width
        encoder_widths = [w, 2 * w, 4 * w, 8 * w, 8 * w, 8 * w]
        blocks = []
        previous = in_channels
        for width in encoder_widths:
            blocks.append(conv_block(previous, width))
            previous = width
        self.encoder = nn.ModuleList(blocks)
        self.pool = nn.MaxPool2d(2)
        # Decoder stage i upsamples, then fuses with the encoder feature of the same size.
        decoder_widths = [8 * w, 4 * w, 2 * w, w, w]
        skip_widths = [8 * w, 8 * w, 4 * w, 2 * w, w]
        ups, convs = [], []
        previous = 8 * w
        for width, skip in zip(decoder_widths, skip_widths):
            ups.append(up_block(previous, width))
            convs.append(conv_block(width + skip, width))
            previous = width
        self.decoder_up = nn.ModuleList(ups)
        self.decoder_conv = nn.ModuleList(convs)
        self.output = nn.Conv2d(w, out_channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = []
        for index, block in enumerate(self.encoder):
            if index > 0:
                x = self.pool(x)
            x = block(x)
            features.append(x)
        x = features.pop()
        for up, conv in zip(self.decoder_up, self.decoder_conv):
            x = conv(torch.cat((up(x), features.pop()), dim=1))
        return self.output(x)


def init_draem_weights(module: nn.Module) -> None:
    """The reference initialisation: conv weights N(0, 0.02), BN scale N(1, 0.02), BN shift 0."""
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
