import torch.nn as nn
from torchsummary import summary  # not installed here

class Net(nn.Module):
    def forward(self, x):
        return x
