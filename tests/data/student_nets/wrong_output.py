import torch.nn as nn


class Net(nn.Module):
    """Forgot the classifier: returns 512 features per image."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 512, 3, padding=1), nn.AdaptiveMaxPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.features(x)
