"""ResNet-18/34/50/101/152 (He et al. 2015) and their pre-activation twins (He et al. 2016).

Written in the style of torchvision's ``models/resnet.py`` rather than reusing it: torchvision's builders
assume ImageNet at 224 px, while this lab needs a CIFAR stem (3x3 conv, stride 1, no max-pool), the
paper's parameter-free option-A shortcut and shortcut-free "plain" nets, none of which torchvision has.

Every ReLU is its own non-inplace module and every addition is out of place: forward/backward hooks
(activation maps, Grad-CAM) then see each tensor exactly once and autograd never finds a hooked output
overwritten.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from typing import Callable

import torch
from torch import nn

STEMS = ("cifar", "imagenet")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    # No bias: the BatchNorm right after has its own shift, which would make a conv bias redundant.
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


def projection(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    """Learned shortcut (1x1 conv + BN) for when the block changes width or resolution."""
    return nn.Sequential(OrderedDict(conv=conv1x1(in_planes, out_planes, stride), bn=nn.BatchNorm2d(out_planes)))


def init_weights(model: nn.Module) -> None:
    """Kaiming (He) init for convs, so activations keep their scale through deep ReLU stacks."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


ConvSpec = tuple[Callable[..., nn.Conv2d], int, int, int]  # (conv3x3 or conv1x1, in_planes, out_planes, stride)


class _BasicConvs:
    """Two 3x3 convs; the first carries the stride."""

    expansion = 1

    @staticmethod
    def layout(in_planes: int, planes: int, stride: int) -> list[ConvSpec]:
        return [(conv3x3, in_planes, planes, stride), (conv3x3, planes, planes, 1)]


class _BottleneckConvs:
    """1x1 squeeze -> 3x3 -> 1x1 expand (x4): deep nets at a fraction of the 3x3-only cost.

    The stride sits on the 3x3 conv (torchvision's "ResNet v1.5"), which loses less information
    than striding the first 1x1 as the original paper did.
    """

    expansion = 4

    @classmethod
    def layout(cls, in_planes: int, planes: int, stride: int) -> list[ConvSpec]:
        return [(conv1x1, in_planes, planes, 1), (conv3x3, planes, planes, stride),
                (conv1x1, planes, planes * cls.expansion, 1)]


class _Block(nn.Module):
    """Numbered units (conv1/bn1/relu1, conv2/...), one per conv of the block's ``layout``, then the shortcut.

    Checkpoints, layer pickers and hooks refer to these names, and the registration order fixes the seeded
    initialisation and the parameter order that optimizer states follow; subclasses order each unit
    (``_add_unit``) and the forward pass. ``shortcut`` is None only in a plain block, which has no addition.
    """

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: nn.Module | None) -> None:
        super().__init__()
        convs = self.layout(in_planes, planes, stride)
        self.units = len(convs)
        for i, spec in enumerate(convs, start=1):
            self._add_unit(i, *spec)
        self.shortcut = shortcut

    def _unit(self, i: int) -> tuple[nn.Module, nn.Module, nn.Module]:
        return getattr(self, f"conv{i}"), getattr(self, f"bn{i}"), getattr(self, f"relu{i}")


class _PostActBlock(_Block):
    """ResNet v1: conv-BN-ReLU units, the last ReLU applied to the sum; ``residual=False`` drops the addition."""

    make_shortcut = staticmethod(projection)

    def __init__(self, in_planes: int, planes: int, stride: int = 1,
                 shortcut: nn.Module | None = None, residual: bool = True) -> None:
        if not residual and shortcut is not None:
            raise ValueError("a plain block (residual=False) has no shortcut")
        if residual and shortcut is None:
            shortcut = nn.Identity()
        super().__init__(in_planes, planes, stride, shortcut)
        self.add_module(f"relu{self.units}", nn.ReLU())

    def _add_unit(self, i, make_conv, in_planes, out_planes, stride):
        self.add_module(f"conv{i}", make_conv(in_planes, out_planes, stride))
        self.add_module(f"bn{i}", nn.BatchNorm2d(out_planes))
        if i < self.units:  # the last unit's ReLU acts on the sum: registered after the shortcut
            self.add_module(f"relu{i}", nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for i in range(1, self.units):
            conv, bn, relu = self._unit(i)
            out = relu(bn(conv(out)))
        conv, bn, relu = self._unit(self.units)
        out = bn(conv(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return relu(out)


class BasicBlock(_BasicConvs, _PostActBlock):
    """relu(bn(conv3x3(relu(bn(conv3x3(x))))) + shortcut(x)); ``residual=False`` drops the addition."""


class Bottleneck(_BottleneckConvs, _PostActBlock):
    """relu(bn(conv1x1(relu(bn(conv3x3(relu(bn(conv1x1(x))))))) + shortcut(x))."""


def preact_projection(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    # No BN here: its input is already batch-normalised by the block's pre-activation.
    return nn.Sequential(OrderedDict(conv=conv1x1(in_planes, out_planes, stride)))


class _PreActBlock(_Block):
    """ResNet v2: BN-ReLU-conv units and a bare addition, so nothing touches the identity path."""

    make_shortcut = staticmethod(preact_projection)

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: nn.Module | None = None) -> None:
        super().__init__(in_planes, planes, stride, shortcut if shortcut is not None else nn.Identity())

    def _add_unit(self, i, make_conv, in_planes, out_planes, stride):
        self.add_module(f"bn{i}", nn.BatchNorm2d(in_planes))
        self.add_module(f"relu{i}", nn.ReLU())
        self.add_module(f"conv{i}", make_conv(in_planes, out_planes, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn, relu = self._unit(1)
        out = relu(bn(x))
        # A projection reads the pre-activated tensor; a true identity carries raw x (He et al. 2016).
        skip = self.shortcut(x if isinstance(self.shortcut, nn.Identity) else out)
        out = conv(out)
        for i in range(2, self.units + 1):
            conv, bn, relu = self._unit(i)
            out = conv(relu(bn(out)))
        return out + skip


class PreActBasicBlock(_BasicConvs, _PreActBlock):
    """x + conv3x3(relu(bn(conv3x3(relu(bn(x)))))): nothing touches the identity path (ResNet v2)."""


class PreActBottleneck(_BottleneckConvs, _PreActBlock):
    """Pre-activation bottleneck: BN-ReLU-1x1, BN-ReLU-3x3, BN-ReLU-1x1(x4), plus the untouched shortcut."""


def projection_where_needed(block: type[_Block], in_planes: int, out_planes: int, stride: int) -> nn.Module | None:
    """torchvision's rule: the block's own projection where it changes shape; None (the identity) elsewhere."""
    if stride != 1 or in_planes != out_planes:
        return block.make_shortcut(in_planes, out_planes, stride)
    return None


def make_stages(block: type[_Block], in_planes: int, widths: tuple[int, ...], depths: list[int],
                shortcut: Callable[[int, int, int], nn.Module | None], **block_options) -> list[nn.Sequential]:
    """One stage of ``depths[i]`` blocks per width; every stage after the first halves the resolution.

    Only a stage's first block can change shape: it carries the stride (2 from the second stage on) and widens to
    ``widths[i] * block.expansion`` channels. ``shortcut(in_planes, out_planes, stride)`` makes each block's
    shortcut, just before the block itself: that creation order is part of the seeded initialisation.
    """
    stages = []
    for i, (planes, depth) in enumerate(zip(widths, depths)):
        out_planes = planes * block.expansion
        blocks = []
        for j in range(depth):
            stride = 2 if i > 0 and j == 0 else 1
            blocks.append(block(in_planes, planes, stride, shortcut(in_planes, out_planes, stride), **block_options))
            in_planes = out_planes
        stages.append(nn.Sequential(*blocks))
    return stages


class ResNet(nn.Module):
    """stem -> layer1..layer4 (64/128/256/512 wide, stride 1/2/2/2) -> global average pool -> fc.

    ``stem="cifar"`` keeps 32x32 images at full resolution into layer1 (a 7x7/2 conv plus a max-pool
    would shrink them to 8x8 before any block); ``stem="imagenet"`` is the paper's stem for 224 px.
    """

    def __init__(self, block: type[nn.Module], layers: list[int], num_classes: int = 10, stem: str = "cifar") -> None:
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {', '.join(STEMS)}; got {stem!r}")
        self.preact = issubclass(block, _PreActBlock)
        self.stem = self._make_stem(stem)
        self.layer1, self.layer2, self.layer3, self.layer4 = make_stages(
            block, 64, (64, 128, 256, 512), layers, functools.partial(projection_where_needed, block))
        width = 512 * block.expansion
        if self.preact:
            # v2 blocks end on an addition, so the head needs the last BN-ReLU itself.
            self.final_bn = nn.BatchNorm2d(width)
            self.final_relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)
        init_weights(self)

    def _make_stem(self, stem: str) -> nn.Sequential:
        if stem == "cifar":
            parts = [("conv", conv3x3(3, 64))]
        else:
            parts = [("conv", nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False))]
        # A CIFAR pre-activation net starts straight into a block that normalises its own input.
        if not (self.preact and stem == "cifar"):
            parts += [("bn", nn.BatchNorm2d(64)), ("relu", nn.ReLU())]
        if stem == "imagenet":
            parts.append(("maxpool", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)))
        return nn.Sequential(OrderedDict(parts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        if self.preact:
            x = self.final_relu(self.final_bn(x))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)

