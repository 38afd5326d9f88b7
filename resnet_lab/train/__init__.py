"""The trainer, one module per concept (see resnet_lab/training.py, its front door, for the map)."""
