"""The assignment network ("custom_resnet"): a fast CIFAR-10 ResNet of 6,573,130 parameters.

    prep        conv3x3(64)  -> BN -> ReLU                              32x32
    layer1      h = conv3x3(128) -> MaxPool2 -> BN -> ReLU; out = h + res(h)   16x16
      .res      (conv3x3(128) -> BN -> ReLU) x2: the residual branch alone
    layer2      conv3x3(256) -> MaxPool2 -> BN -> ReLU                    8x8
    layer3      h = conv3x3(512) -> MaxPool2 -> BN -> ReLU; out = h + res(h)    4x4
      .res      (conv3x3(512) -> BN -> ReLU) x2: the residual branch alone
    pool        MaxPool(4)                                               1x1
    fc          512 -> num_classes (with bias)

``layer1`` and ``layer3`` are ``Residual`` modules, so a hook on them sees the sum ``h + res(h)`` that the next
layer really receives (Grad-CAM there includes the shortcut), while ``layer1.res``/``layer3.res`` give the branch
alone and ``layer1.relu`` the shortcut term ``h``. Checkpoints of the earlier layout (branches at the top level
as ``layer1_res``/``layer3_res``) load unchanged: ``CustomResNet`` renames their keys on load. The parameters, their
creation order and so the seeded initial weights are the same as in that layout.

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


class Residual(nn.Module):
    """``h = body(x)`` (its layers in order), then ``h + res(h)``: the stage's output is the sum.

    The body's layers are direct children (``layer1.conv``, ``layer1.bn``, ...) so their parameter names are the
    same as in a plain ``nn.Sequential`` stage; only the branch moved inside (``layer1.res``)."""

    def __init__(self, body: "OrderedDict[str, nn.Module]", res: nn.Module) -> None:
        super().__init__()
        self._body = list(body)
        for name, module in body.items():
            self.add_module(name, module)
        self.res = res

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self._body:
            x = getattr(self, name)(x)
        return x + self.res(x)



def residual_stage(in_planes: int, out_planes: int, inplace: bool) -> Residual:
    # Built in the same order as the earlier layout (stage convs, then the branch): same RNG use, same weights.
    body = conv_pool_bn_relu(in_planes, out_planes, inplace)
    return Residual(OrderedDict(body.named_children()), ResBlock(out_planes, inplace))


class CustomResNet(nn.Module):
    """``inplace_relu=True`` saves activation memory, but each ReLU then overwrites the BN output it
    reads, which breaks a full backward hook on that BN; the default (False) is hook-safe."""

    def __init__(self, num_classes: int = 10, inplace_relu: bool = False) -> None:
        super().__init__()
        self.prep = nn.Sequential(OrderedDict(
            conv=conv3x3(3, 64), bn=nn.BatchNorm2d(64), relu=nn.ReLU(inplace=inplace_relu),
        ))
        self.layer1 = residual_stage(64, 128, inplace_relu)
        self.layer2 = conv_pool_bn_relu(128, 256, inplace_relu)
        self.layer3 = residual_stage(256, 512, inplace_relu)
        self.pool = nn.MaxPool2d(4)
        self.fc = nn.Linear(512, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prep(x)
        x = self.layer1(x)  # h + res(h)
        x = self.layer2(x)
        x = self.layer3(x)  # h + res(h)
        x = torch.flatten(self.pool(x), 1)
        return self.fc(x)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The earlier layout kept each branch beside its stage ("layer1_res.conv1.weight", now
        # "layer1.res.conv1.weight"). Renamed in the dict torch passes down (it derives the children's dicts from
        # it afterwards), so checkpoints written before the change, e.g. a shipped reference run, still load.
        for name, child in self.named_children():
            if isinstance(child, Residual):
                old, new = f"{prefix}{name}_res.", f"{prefix}{name}.res."
                for key in [k for k in state_dict if k.startswith(old)]:
                    state_dict[new + key[len(old):]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def custom_resnet(num_classes: int = 10, inplace_relu: bool = False) -> CustomResNet:
    return CustomResNet(num_classes, inplace_relu)
