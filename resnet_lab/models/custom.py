"""The assignment network ("custom_resnet"): a fast CIFAR-10 ResNet of 6,573,130 parameters.

    prep        conv3x3(64)  -> BN -> ReLU                              32x32
    layer1      conv3x3(128) -> MaxPool2 -> BN -> ReLU                   16x16
    layer1_res  (conv3x3(128) -> BN -> ReLU) x2, added back to layer1's output
    layer2      conv3x3(256) -> MaxPool2 -> BN -> ReLU                    8x8
    layer3      conv3x3(512) -> MaxPool2 -> BN -> ReLU                    4x4
    layer3_res  (conv3x3(512) -> BN -> ReLU) x2, added back to layer3's output
    pool        MaxPool(4)                                               1x1
    fc          512 -> num_classes (with bias)

The model returns logits. ``nn.CrossEntropyLoss`` applies log-softmax itself, so softmax belongs
only at inference (probabilities for display); applying it before the loss would squash gradients.
Built for 32x32 inputs: MaxPool(4) must leave a 1x1 map for the 512-wide fc.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from resnet_lab.models.resnet import conv3x3, init_weights


def conv_pool_bn_relu(in_planes: int, out_planes: int, inplace: bool) -> nn.Sequential:
    # The assignment's order: pooling first lets BN and ReLU run on a 4x smaller map.
    return nn.Sequential(OrderedDict(
        conv=conv3x3(in_planes, out_planes),
        pool=nn.MaxPool2d(2),
        bn=nn.BatchNorm2d(out_planes),
        relu=nn.ReLU(inplace=inplace),
    ))


class ResBlock(nn.Module):
    """R(x) = relu(bn(conv(relu(bn(conv(x)))))) at constant width; the network adds x itself."""

    def __init__(self, planes: int, inplace: bool = False) -> None:
        super().__init__()
        self.conv1 = conv3x3(planes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=inplace)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=inplace)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(out)))


class CustomResNet(nn.Module):
    """``inplace_relu=True`` saves activation memory, but each ReLU then overwrites the BN output it
    reads, which breaks a full backward hook on that BN; the default (False) is hook-safe."""

    def __init__(self, num_classes: int = 10, inplace_relu: bool = False) -> None:
        super().__init__()
        self.prep = nn.Sequential(OrderedDict(
            conv=conv3x3(3, 64), bn=nn.BatchNorm2d(64), relu=nn.ReLU(inplace=inplace_relu),
        ))
        self.layer1 = conv_pool_bn_relu(64, 128, inplace_relu)
        self.layer1_res = ResBlock(128, inplace_relu)
        self.layer2 = conv_pool_bn_relu(128, 256, inplace_relu)
        self.layer3 = conv_pool_bn_relu(256, 512, inplace_relu)
        self.layer3_res = ResBlock(512, inplace_relu)
        self.pool = nn.MaxPool2d(4)
        self.fc = nn.Linear(512, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prep(x)
        x = self.layer1(x)
        x = x + self.layer1_res(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = x + self.layer3_res(x)
        x = torch.flatten(self.pool(x), 1)
        return self.fc(x)


def custom_resnet(num_classes: int = 10, inplace_relu: bool = False) -> CustomResNet:
    return CustomResNet(num_classes, inplace_relu)
