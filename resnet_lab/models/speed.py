"""``speednet``: a small, wide, shallow CIFAR-10 net built for time-to-accuracy (the ``speed`` preset).

It follows the ideas behind the public CIFAR-10 speed record (Keller Jordan's airbench94, 2024), written
in this project's own terms so that each idea is a switch the "What buys speed" ablation can turn off:

    whiten   conv2x2(3 -> 24), weights from the data's patch covariance, frozen      31x31
    block1   conv3x3(64)  -> MaxPool2 -> BN -> GELU -> conv3x3(64)  -> BN -> GELU     15x15
    block2   conv3x3(256) -> MaxPool2 -> BN -> GELU -> conv3x3(256) -> BN -> GELU      7x7
    block3   conv3x3(256) -> MaxPool2 -> BN -> GELU -> conv3x3(256) -> BN -> GELU      3x3
    pool     MaxPool(3)                                                              1x1
    fc       256 -> num_classes, no bias, output scaled by 1/9

Why each piece (the ablation measures what it buys):
- Whitening: the first layer decorrelates 2x2 patches (PCA whitening, each eigenvector also negated so a
  ReLU-like GELU keeps both signs). The net starts from a well-conditioned input instead of learning it.
- No residual connections: at 7 convs depth is not the problem; width and few layers keep the GPU busy.
- BatchNorm with frozen scale (only the shift learns) and a fast running-average momentum: fewer
  parameters to tune, statistics that track the quickly changing weights.
- Dirac (identity) initialisation of each conv's first in_channels filters: the block starts close to
  passing its input through, which speeds up the first epoch.
- Output scale 1/9: keeps early logits small, a cheap form of temperature that pairs with label smoothing.
The trainer calls ``init_from_data`` once before the first step (inside the timed run) and
``epoch_start(epoch)`` at the start of every epoch.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

WIDTHS = (64, 256, 256)
WHITEN_KERNEL = 2
WHITEN_BIAS_EPOCHS = 3  # the whitening layer's bias learns for the first epochs only, then freezes
BN_MOMENTUM = 0.4  # torch's convention (weight of the new batch); = running-average decay 0.6
OUTPUT_SCALE = 1 / 9


def frozen_scale_bn(channels: int) -> nn.BatchNorm2d:
    """BatchNorm whose scale stays 1: only the shift is a trained parameter. A plain BatchNorm2d (not a subclass),
    so torch.fx and the receptive-field tracer treat it as the one layer it is."""
    bn = nn.BatchNorm2d(channels, eps=1e-12, momentum=BN_MOMENTUM)
    bn.weight.requires_grad_(False)
    return bn


def _conv(cin: int, cout: int) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:cin])  # identity on the first cin filters, default init for the rest
    return conv


class ConvGroup(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(OrderedDict(
            conv1=_conv(cin, cout), pool=nn.MaxPool2d(2), bn1=frozen_scale_bn(cout), act1=nn.GELU(),
            conv2=_conv(cout, cout), bn2=frozen_scale_bn(cout), act2=nn.GELU(),
        ))


class SpeedNet(nn.Module):
    def __init__(self, num_classes: int = 10, whiten: bool = True) -> None:
        super().__init__()
        self.whiten_enabled = whiten
        width0 = 2 * 3 * WHITEN_KERNEL ** 2
        self.whiten = nn.Conv2d(3, width0, WHITEN_KERNEL, padding=0, bias=True)
        if whiten:
            self.whiten.weight.requires_grad_(False)  # set from the data, never trained
        self.block1 = ConvGroup(width0, WIDTHS[0])
        self.block2 = ConvGroup(WIDTHS[0], WIDTHS[1])
        self.block3 = ConvGroup(WIDTHS[1], WIDTHS[2])
        self.pool = nn.MaxPool2d(3)
        self.fc = nn.Linear(WIDTHS[2], num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.gelu(self.whiten(x))
        x = self.block3(self.block2(self.block1(x)))
        return self.fc(torch.flatten(self.pool(x), 1)) * OUTPUT_SCALE

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """PCA-whiten 2x2 patches of normalized training images (N,3,32,32): weight = ±V / sqrt(λ + eps)."""
        if not self.whiten_enabled:
            return
        k = WHITEN_KERNEL
        c = images.shape[1]
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1)  # (N, C, H', W', k, k)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k)
        cov = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)  # ascending
        filters = (eigenvectors.T / torch.sqrt(eigenvalues + eps)[:, None]).reshape(-1, c, k, k).flip(0)
        self.whiten.weight.copy_(torch.cat([filters, -filters]).to(self.whiten.weight.dtype))
        self.whiten.bias.zero_()

    def epoch_start(self, epoch: int) -> None:
        """1-based epoch: the whitening bias trains during the first WHITEN_BIAS_EPOCHS epochs only."""
        if self.whiten_enabled:
            self.whiten.bias.requires_grad_(epoch <= WHITEN_BIAS_EPOCHS)
            if epoch > WHITEN_BIAS_EPOCHS:
                self.whiten.bias.grad = None


def speednet(num_classes: int = 10, whiten: bool = True) -> SpeedNet:
    return SpeedNet(num_classes, whiten)
