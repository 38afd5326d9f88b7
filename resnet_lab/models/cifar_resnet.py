"""The CIFAR-10 networks of He et al. 2015 ("Deep Residual Learning", section 4.2), with plain twins.

stem (3x3, 16) -> 3 stages of n basic blocks (16/32/64 filters, maps 32/16/8) -> global average pool
-> fc, so depth = 6n + 2 (n = 3, 5, 7, 9, 18 for 20..110 layers). The plain nets are the same stack
without shortcuts: identical parameter counts under option A, which is what makes the paper's
"deeper plain nets train worse" comparison fair.
"""

from __future__ import annotations

import functools
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from resnet_lab.models.resnet import BasicBlock, conv3x3, init_weights, make_stages, projection

SHORTCUTS = ("A", "B", "C")


class PadShortcut(nn.Module):
    """Option A: identity that matches a stride-2, wider block by subsampling and zero-padding channels.

    No parameters, so a residual net has exactly as many weights as its plain twin.
    """

    def __init__(self, extra_channels: int, stride: int) -> None:
        super().__init__()
        self.extra_channels = extra_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        # (W left, W right, H top, H bottom, C front, C back): new channels are all zero.
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))

    def extra_repr(self) -> str:
        return f"extra_channels={self.extra_channels}, stride={self.stride}"


def make_shortcut(kind: str | None, in_planes: int, out_planes: int, stride: int) -> nn.Module | None:
    """A: parameter-free everywhere; B: 1x1 projection only where shape changes; C: projection everywhere;
    None: no shortcut at all (a plain block)."""
    if kind is None:
        return None
    changes = stride != 1 or in_planes != out_planes
    if kind == "C" or (kind == "B" and changes):
        return projection(in_planes, out_planes, stride)
    if kind == "A" and changes:
        return PadShortcut(out_planes - in_planes, stride)
    return nn.Identity()


WIDTHS = (4, 8, 16, 32)


class CifarResNet(nn.Module):
    """6n+2-layer CIFAR ResNet; ``shortcut=None`` builds the plain (shortcut-free) network.

    ``width`` is the first stage's filter count (the paper: 16, then 32 and 64); narrower nets make the
    depth experiments affordable on a CPU. ``zero_init_residual`` starts the last BN of every residual
    branch at gamma = 0 (Goyal et al. 2017), so each block is exactly the identity at initialisation.
    """

    def __init__(self, depth: int, num_classes: int = 10, shortcut: str | None = "A", width: int = 16,
                 zero_init_residual: bool = False) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2 with n >= 1 (20, 32, 44, 56, 110, ...); got {depth}")
        if shortcut is not None and shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {', '.join(SHORTCUTS)}; got {shortcut!r}")
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a whole number >= 1; got {width!r}")
        if zero_init_residual and shortcut is None:
            raise ValueError("zero_init_residual needs residual blocks: in a plain net it would cut the signal")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(OrderedDict(conv=conv3x3(3, width), bn=nn.BatchNorm2d(width), relu=nn.ReLU()))
        self.layer1, self.layer2, self.layer3 = make_stages(
            BasicBlock, width, (width, 2 * width, 4 * width), [n, n, n], functools.partial(make_shortcut, shortcut),
            residual=shortcut is not None)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)
        init_weights(self)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)

