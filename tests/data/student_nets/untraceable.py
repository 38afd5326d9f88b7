import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    """A forward with a data-dependent branch: torch.fx cannot trace it (the RF table cannot be computed)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = F.relu(self.conv(x))
        if x.mean() > 0:  # depends on the data: fx cannot follow it
            x = x * 2
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
