"""A plain 2D U-Net (Ronneberger et al. 2015) with batch norm."""

from __future__ import annotations

import torch
from torch import nn


def conv_block(cin: int, cout: int) -> nn.Sequential:
    """(conv3x3 -> batch norm -> ReLU) twice."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """U-Net returning logits; apply sigmoid for probabilities.

    `depth` is the number of 2x poolings, so H and W must be divisible by 2**depth.
    Widths are base, 2*base, ..., base * 2**depth at the bottleneck.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 1, base: int = 16, depth: int = 4):
        super().__init__()
        widths = [base * 2**i for i in range(depth + 1)]
        self.depth = depth
        self.encoders = nn.ModuleList()
        cin = in_channels
        for w in widths[:-1]:
            self.encoders.append(conv_block(cin, w))
            cin = w
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = conv_block(widths[-2], widths[-1])
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for w_low, w in zip(widths[:0:-1], widths[-2::-1]):
            self.ups.append(nn.ConvTranspose2d(w_low, w, 2, stride=2))
            self.decoders.append(conv_block(2 * w, w))
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The decoder's outputs, coarsest (1/2**(depth-1) of the input) first; the head reads the last."""
        skips = []
        for enc in self.encoders:
            x = enc(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        outs = []
        for up, dec, skip in zip(self.ups, self.decoders, reversed(skips)):
            x = dec(torch.cat([up(x), skip], dim=1))
            outs.append(x)
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)[-1])


class DeepSupervision(nn.Module):
    """Training-time wrapper: a 1x1 head on each coarser decoder output (as in nnU-Net).

    `forward` returns the U-Net's logits and a list of logits at 1/2, 1/4, ... of the input size.
    The heads are not part of the U-Net, so its checkpoints, exports and inference do not change.
    """

    def __init__(self, net: UNet):
        super().__init__()
        self.net = net
        widths = [d[0].out_channels for d in net.decoders]  # coarsest first
        self.heads = nn.ModuleList(nn.Conv2d(w, net.head.out_channels, 1) for w in widths[-2::-1])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        outs = self.net.features(x)
        aux = [head(f) for head, f in zip(self.heads, outs[-2::-1])]  # 1/2 first
        return self.net.head(outs[-1]), aux


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
