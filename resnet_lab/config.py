"""Where things live: data source, caches, runs, device. Environment variables override defaults."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DATA = "cifar10"


def resolve_data_source(data: str | None = None) -> str:
    """Explicit argument, else ``RESNET_LAB_DATA``, else torchvision's CIFAR-10 (``cifar10``)."""
    if data is not None and str(data).strip():
        return str(data).strip()
    env = os.environ.get("RESNET_LAB_DATA", "").strip()
    return env or DEFAULT_DATA


def cache_dir() -> Path:
    path = Path(os.environ.get("RESNET_LAB_CACHE") or Path.home() / ".cache" / "resnet_lab")
    path.mkdir(parents=True, exist_ok=True)
    return path


def runs_dir() -> Path:
    return Path(os.environ.get("RESNET_LAB_RUNS") or "runs")


def resolve_device(device: str | None = None):
    import torch

    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{device}' was asked for but CUDA is not available here; use --device cpu")
    return dev


def device_description() -> dict:
    """What the user is running on, for the Home page and ``info``."""
    import torch

    info = {"cuda": torch.cuda.is_available(), "cpu_cores": os.cpu_count(), "torch": torch.__version__}
    if info["cuda"]:
        info["device"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    else:
        info["device"] = "cpu"
    return info
