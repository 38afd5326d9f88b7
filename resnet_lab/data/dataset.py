"""The ``Dataset`` (uint8 arrays, class names, where each image came from), its class-balanced seeded subsets, and the
errors and limits every source shares.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
IMAGE_SIZE = 32
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
EXAMPLE_ARCHIVE = "../shared/data/cifar10-jpeg.tar.gz"
EXPECTED_LAYOUT = (
    "a directory or a .tar.gz/.tgz/.tar archive laid out as train/<class>/*.png|jpg|jpeg and "
    "test/<class>/*.png|jpg|jpeg (optionally inside one top-level folder), with the same class "
    "folders in train/ and test/"
)

Progress = Callable[[int, int, str], None]


# Per-image limits for class-folder sources (CIFAR images are ~3 KB and 32x32, far below): a bigger file or
# canvas is refused unread and counted, so one stray 150 MB member or 100-megapixel PNG cannot take the memory.
MAX_IMAGE_BYTES = 10 * 1024 * 1024
MAX_IMAGE_PIXELS = 4096 * 4096
# A class with this many times fewer train images than the largest one gets a warning.
IMBALANCE_RATIO = 10


def limits_text() -> str:
    return f"{MAX_IMAGE_BYTES / 2**20:.0f} MB and {MAX_IMAGE_PIXELS / 1e6:.1f} megapixels per image"


def safe_text(text: object, limit: int = 120) -> str:
    """A name from the file system made safe to print: control characters (terminal escapes) become '?'."""
    text = "".join(ch if ch.isprintable() else "?" for ch in str(text))
    return text if len(text) <= limit else text[: limit - 1] + "…"


class DataError(Exception):
    """The data source cannot be used. ``str(err)`` is the full message a student can act on.

    ``path`` is the source as the user typed it: messages never show a resolved path, the cache folder or
    names found inside a source other than its train/<class>/ folders (the server's files stay private)."""

    def __init__(self, path: str, problem: str, expected: str = EXPECTED_LAYOUT):
        self.path = safe_text(path, 300)
        self.problem = problem
        self.expected = expected
        super().__init__(
            f"Cannot load the data from {self.path}: {problem}\n"
            f"Expected: {expected}.\n"
            "Fix it in either of two ways:\n"
            f"  1. point --data (or the env var RESNET_LAB_DATA) at a class-folder directory or .tar.gz "
            f"archive, e.g. --data {EXAMPLE_ARCHIVE}\n"
            "  2. or use --data cifar10 on a machine with internet access: torchvision downloads "
            "CIFAR-10 (~170 MB) once into the cache folder (RESNET_LAB_CACHE)"
        )


class DataWarning(UserWarning):
    """Something a student should know about a source that still loaded (also kept in ``Dataset.notes``)."""


def _warn(notes: list[str] | None, message: str) -> None:
    if notes is not None:
        notes.append(message)
    warnings.warn(DataWarning(message), stacklevel=3)


# --------------------------------------------------------------------------------------------------
# Dataset


def _balanced_counts(available: np.ndarray, n: int) -> np.ndarray:
    """How many images to take from each class: equal shares, the remainder to the lowest class ids,
    and whatever a small class cannot give is spread over the others (so the total is n when possible)."""
    counts = np.zeros_like(available)
    remaining = int(n)
    active = [c for c in range(len(available)) if available[c] > 0]
    while remaining > 0 and active:
        share, extra = divmod(remaining, len(active))
        for i, c in enumerate(active):
            give = min(share + (1 if i < extra else 0), int(available[c] - counts[c]))
            counts[c] += give
            remaining -= give
        active = [c for c in active if counts[c] < available[c]]
    return counts


def _balanced_pick(y: np.ndarray, n_classes: int, n: int | None, rng: np.random.Generator) -> np.ndarray | None:
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ValueError(f"subset size must be a positive integer or None, got {n!r}")
    if n <= 0:
        raise ValueError(f"subset size must be a positive integer or None, got {n}")
    if n >= len(y):
        return None
    available = np.bincount(y, minlength=n_classes)
    counts = _balanced_counts(available, int(n))
    chosen = []
    for c in range(n_classes):
        if counts[c]:
            members = np.flatnonzero(y == c)
            chosen.append(rng.permutation(members)[: counts[c]])
    # Sorted so a subset keeps the full set's (class, file name) order.
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def _channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in 0..1, exact, from 256-bin histograms (chunked: no float copy of x)."""
    hist = np.zeros((3, 256), np.int64)
    offsets = np.array([0, 256, 512], np.intp)
    for start in range(0, len(x), 2048):
        chunk = x[start:start + 2048].reshape(-1, 3).astype(np.intp) + offsets
        hist += np.bincount(chunk.ravel(), minlength=768).reshape(3, 256)
    values = np.arange(256, dtype=np.float64) / 255.0
    total = hist.sum(axis=1)
    mean = (hist * values).sum(axis=1) / total
    var = (hist * (values[None, :] - mean[:, None]) ** 2).sum(axis=1) / total
    return tuple(float(m) for m in mean), tuple(float(v) for v in np.sqrt(var))


@dataclass(eq=False)
class Dataset:
    """Train and test images as uint8 NHWC arrays with int64 labels.

    ``train_index[i]`` is the position of ``train_x[i]`` in the full train split (same for test), so
    predictions on a subset can always be traced back to the full set's image.
    """

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]
    source: str
    train_index: np.ndarray | None = None
    test_index: np.ndarray | None = None
    path: str | None = None
    notes: list = field(default_factory=list)  # what a student should know (imbalance, a re-decoded cache...)
    _stats: tuple | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.classes = list(self.classes)
        for name in ("train", "test"):
            x, y = getattr(self, f"{name}_x"), getattr(self, f"{name}_y")
            if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
                raise ValueError(f"{name}_x must be uint8 (N,{IMAGE_SIZE},{IMAGE_SIZE},3), got {x.dtype} {x.shape}")
            if y.shape != (len(x),):
                raise ValueError(f"{name}_y must have shape ({len(x)},), got {y.shape}")
            setattr(self, f"{name}_y", y.astype(np.int64, copy=False))
            index = getattr(self, f"{name}_index")
            if index is None:
                setattr(self, f"{name}_index", np.arange(len(x), dtype=np.int64))
            elif len(index) != len(x):
                raise ValueError(f"{name}_index must have {len(x)} entries, got {len(index)}")

    @property
    def n_train(self) -> int:
        return len(self.train_x)

    @property
    def n_test(self) -> int:
        return len(self.test_x)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _stats_pair(self) -> tuple:
        if self._stats is None:
            self._stats = _channel_stats(self.train_x)
        return self._stats

    @property
    def mean(self) -> tuple[float, float, float]:
        """Per-channel mean of the train images, in 0..1."""
        return self._stats_pair()[0]

    @property
    def std(self) -> tuple[float, float, float]:
        """Per-channel standard deviation of the train images, in 0..1."""
        return self._stats_pair()[1]

    def class_counts(self, split: str = "train") -> np.ndarray:
        y = self.train_y if split == "train" else self.test_y
        return np.bincount(y, minlength=self.num_classes)

    def subset(self, train: int | None = None, test: int | None = None, seed: int = 0) -> "Dataset":
        """A class-balanced, seeded subset: equal images per class (the remainder to the lowest class
        ids). ``None`` or a size at least the split's keeps the whole split; 0 or negative is an error."""
        train_pick = _balanced_pick(self.train_y, self.num_classes, train, np.random.default_rng([seed, 0]))
        # Separate stream per split, so changing the test size never changes the train images.
        test_pick = _balanced_pick(self.test_y, self.num_classes, test, np.random.default_rng([seed, 1]))
        if train_pick is None and test_pick is None:
            return self
        base = self.source.split("; subset ")[0]

        def take(x, y, index, pick):
            return (x, y, index) if pick is None else (x[pick], y[pick], index[pick])

        tx, ty, ti = take(self.train_x, self.train_y, self.train_index, train_pick)
        vx, vy, vi = take(self.test_x, self.test_y, self.test_index, test_pick)
        out = Dataset(
            tx, ty, vx, vy, self.classes, f"{base}; subset {len(tx):,} train / {len(vx):,} test",
            train_index=ti, test_index=vi, path=self.path, notes=list(self.notes),
        )
        if train_pick is None:
            out._stats = self._stats  # same train images, same statistics
        return out

    def with_shuffled_labels(self, seed: int = 0) -> "Dataset":
        """The same images with the training labels permuted (a seeded shuffle: the class counts stay, the link
        between an image and its class is gone; the test labels stay true). A network that still fits these has
        memorised them (Zhang et al. 2017), and is the baseline of Adebayo et al.'s data-randomisation test."""
        shuffled = np.random.default_rng([seed, 2]).permutation(self.train_y)
        out = Dataset(self.train_x, shuffled, self.test_x, self.test_y, self.classes,
                      f"{self.source}; training labels shuffled (seed {seed})", train_index=self.train_index,
                      test_index=self.test_index, path=self.path, notes=list(self.notes))
        out._stats = self._stats  # same images, same statistics
        return out

    def __repr__(self) -> str:
        return (f"Dataset({self.n_train:,} train, {self.n_test:,} test, {self.num_classes} classes, "
                f"source={self.source!r})")
