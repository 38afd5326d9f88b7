"""Small synthetic class-folder datasets (coloured shapes per class) for tests and demos, as folders or archives."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import Iterable

import numpy as np

from resnet_lab.data.dataset import CLASSES

# --------------------------------------------------------------------------------------------------
# Small synthetic data in the real format (for tests and demos)


def _class_image(k: int, n_classes: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """Class k: its own hue and stripe orientation/frequency, with per-image shift, brightness and noise."""
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(k / n_classes, 0.8, 0.9)
    base = np.array([r, g, b]) * 255
    yy, xx = np.mgrid[0:size, 0:size] / size
    angle = np.pi * (k % 4) / 4
    freq = 2 + k // 4
    phase = rng.uniform(0, 2 * np.pi)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)
    img = base * (0.55 + 0.45 * stripes[..., None]) * rng.uniform(0.85, 1.1)
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_class_folder_dataset(root: str | os.PathLike, n_train_per_class: int, n_test_per_class: int,
                              classes: Iterable[str] = CLASSES, size: int = 32, fmt: str = "png",
                              seed: int = 0) -> Path:
    """Write a small synthetic dataset in class-folder layout: ``root/{train,test}/<class>/NNNN.<fmt>``.

    Each class has a distinct colour and stripe pattern (plus per-image noise), so a small model learns it
    in an epoch or two. ``size`` other than 32 exercises the resize-on-load path. Returns ``root``.
    """
    from PIL import Image

    root = Path(root)
    classes = list(classes)
    ext = {"jpeg": "jpg"}.get(fmt.lower(), fmt.lower())
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train_per_class), ("test", n_test_per_class)):
        for k, cls in enumerate(classes):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = Image.fromarray(_class_image(k, len(classes), rng, size))
                img.save(folder / f"{i:04d}.{ext}", **({"quality": 95} if ext == "jpg" else {}))
    return root


def archive_class_folders(root: str | os.PathLike, archive: str | os.PathLike, wrap: str | None = None) -> Path:
    """Pack a class-folder directory into a tar archive (``.tar.gz``/``.tgz`` compress, ``.tar`` does not),
    optionally under one top-level folder ``wrap``. Returns the archive path."""
    root, archive = Path(root), Path(archive)
    mode = "w:gz" if archive.name.endswith((".gz", ".tgz")) else "w"
    with tarfile.open(archive, mode) as tf:
        for split in ("train", "test"):
            if (root / split).exists():
                tf.add(root / split, arcname=f"{wrap}/{split}" if wrap else split)
    return archive
