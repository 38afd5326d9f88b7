"""ResNet-18/34/50/101/152 (He et al. 2015) and their pre-activation twins (He et al. 2016).

Written in the style of torchvision's ``models/resnet.py`` rather than reusing it: torchvision's builders
assume ImageNet at 224 px, while this lab needs a CIFAR stem (3x3 conv, stride 1, no max-pool), the
paper's parameter-free option-A shortcut and shortcut-free "plain" nets, none of which torchvision has.

Every ReLU is its own non-inplace module and every addition is out of place: forward/backward hooks
(activation maps, Grad-CAM) then see each tensor exactly once and autograd never finds a hooked output
overwritten.
"""

from __future__ import annotations

from collections import OrderedDict

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


class BasicBlock(nn.Module):
    """relu(bn(conv3x3(relu(bn(conv3x3(x))))) + shortcut(x)); ``residual=False`` drops the addition."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1,
                 shortcut: nn.Module | None = None, residual: bool = True) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        if residual:
            self.shortcut = shortcut if shortcut is not None else nn.Identity()
        else:
            if shortcut is not None:
                raise ValueError("a plain block (residual=False) has no shortcut")
            self.shortcut = None
        self.relu2 = nn.ReLU()

    make_shortcut = staticmethod(projection)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.relu2(out)


class Bottleneck(nn.Module):
    """1x1 squeeze -> 3x3 -> 1x1 expand (x4): deep nets at a fraction of the 3x3-only cost.

    The stride sits on the 3x3 conv (torchvision's "ResNet v1.5"), which loses less information
    than striding the first 1x1 as the original paper did.
    """

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: nn.Module | None = None) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = conv1x1(in_planes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.conv3 = conv1x1(planes, out_planes)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = shortcut if shortcut is not None else nn.Identity()
        self.relu3 = nn.ReLU()

    make_shortcut = staticmethod(projection)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu3(out + self.shortcut(x))


def preact_projection(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    # No BN here: its input is already batch-normalised by the block's pre-activation.
    return nn.Sequential(OrderedDict(conv=conv1x1(in_planes, out_planes, stride)))


class PreActBasicBlock(nn.Module):
    """x + conv3x3(relu(bn(conv3x3(relu(bn(x)))))): nothing touches the identity path (ResNet v2)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: nn.Module | None = None) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.conv2 = conv3x3(planes, planes)
        self.shortcut = shortcut if shortcut is not None else nn.Identity()

    make_shortcut = staticmethod(preact_projection)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(x))
        # A projection reads the pre-activated tensor; a true identity carries raw x (He et al. 2016).
        skip = self.shortcut(x if isinstance(self.shortcut, nn.Identity) else out)
        out = self.conv1(out)
        out = self.conv2(self.relu2(self.bn2(out)))
        return out + skip


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck: BN-ReLU-1x1, BN-ReLU-3x3, BN-ReLU-1x1(x4), plus the untouched shortcut."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: nn.Module | None = None) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = conv1x1(in_planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes)
        self.relu3 = nn.ReLU()
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.shortcut = shortcut if shortcut is not None else nn.Identity()

    make_shortcut = staticmethod(preact_projection)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(x))
        skip = self.shortcut(x if isinstance(self.shortcut, nn.Identity) else out)
        out = self.conv1(out)
        out = self.conv2(self.relu2(self.bn2(out)))
        out = self.conv3(self.relu3(self.bn3(out)))
        return out + skip


class ResNet(nn.Module):
    """stem -> layer1..layer4 (64/128/256/512 wide, stride 1/2/2/2) -> global average pool -> fc.

    ``stem="cifar"`` keeps 32x32 images at full resolution into layer1 (a 7x7/2 conv plus a max-pool
    would shrink them to 8x8 before any block); ``stem="imagenet"`` is the paper's stem for 224 px.
    """

    def __init__(self, block: type[nn.Module], layers: list[int], num_classes: int = 10, stem: str = "cifar") -> None:
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {', '.join(STEMS)}; got {stem!r}")
        self.preact = block in (PreActBasicBlock, PreActBottleneck)
        self.in_planes = 64
        self.stem = self._make_stem(stem)
        self.layer1 = self._make_layer(block, 64, layers[0], stride=1)
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
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

    def _make_layer(self, block: type[nn.Module], planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for i in range(blocks):
            s = stride if i == 0 else 1
            out_planes = planes * block.expansion
            shortcut = None
            if s != 1 or self.in_planes != out_planes:
                shortcut = block.make_shortcut(self.in_planes, out_planes, s)
            layers.append(block(self.in_planes, planes, s, shortcut))
            self.in_planes = out_planes
        return nn.Sequential(*layers)

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

