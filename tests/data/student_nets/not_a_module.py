class Net:
    """Forgot to inherit from nn.Module."""

    def __init__(self):
        self.layers = []

    def forward(self, x):
        return x
