import torch.nn as nn


class Net(nn.Module):
    """Sized for 28x28 MNIST digits: the flatten size is wrong for 32x32 CIFAR images."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(16 * 14 * 14, 10)

    def forward(self, x):
        x = self.pool(self.conv(x))
        x = x.view(x.size(0), -1)
        return self.fc(x)
