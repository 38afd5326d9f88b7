"""A small net that ends in softmax: cross-entropy on its outputs applies softmax twice."""
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, num_classes=10, width=8):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = self.features(x).flatten(1)
        return torch.softmax(self.head(x), dim=1)


class TinyLogits(TinyNet):
    """The same net returning scores, as cross-entropy wants."""

    def forward(self, x):
        return self.head(self.features(x).flatten(1))
