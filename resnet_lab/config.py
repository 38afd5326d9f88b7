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


DEVICE_CHOICES = "auto, cpu or cuda[:N]"


def parse_device(device) -> str:
    """The one device parser of every command and config: 'auto', 'cpu', 'cuda' or 'cuda:N', normalised.
    Anything else (tpu, mps, cuda:x, a blank) is a ValueError saying what is accepted; None means auto."""
    import re

    if device is None:
        return "auto"
    text = str(device).strip().lower()
    if not re.fullmatch(r"auto|cpu|cuda(:\d{1,3})?", text):
        raise ValueError(f"device must be {DEVICE_CHOICES}; got {str(device)[:40]!r}")
    return text


def resolve_device(device: str | None = None):
    """A torch.device for a device setting ('' and None mean auto); ValueError with the fix otherwise."""
    import torch

    text = "auto" if device is None or not str(device).strip() else parse_device(device)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(text)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device '{text}' was asked for but CUDA is not available here; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device '{text}' does not exist: this machine has {torch.cuda.device_count()} "
                             f"GPU(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
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
