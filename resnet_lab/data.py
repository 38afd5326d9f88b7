"""CIFAR-10-shaped datasets as uint8 arrays: torchvision's CIFAR-10, or class folders (a dir or a tar archive).

Sources (``load_dataset(data=...)``, else env ``RESNET_LAB_DATA``, else ``cifar10``):

* ``cifar10``: torchvision downloads the original CIFAR-10 once into ``cache_dir()/"torchvision"``.
* a directory or ``.tar.gz``/``.tgz``/``.tar`` archive laid out as ``train/<class>/*.{png,jpg,jpeg}`` and
  ``test/<class>/*`` (optionally wrapped in one top-level folder). Images are decoded once into an ``.npz``
  in ``cache_dir()`` keyed by the source's absolute path, size and mtime; later loads read that file.

Every array is the full split in a stable order (class, then file name); ``Dataset.subset`` picks a
class-balanced, seeded part of it and remembers where each image came from (``train_index``/``test_index``).
The arrays of a loaded dataset are shared through an in-process memo: treat them as read-only.

Only stdlib, numpy and PIL are imported here at module level; torchvision is imported for ``cifar10`` only.
"""

from __future__ import annotations

import copy
import hashlib
import io
import os
import tarfile
import tempfile
import threading
import warnings
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from resnet_lab.config import cache_dir, resolve_data_source
from resnet_lab.uploads import to_rgb

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
# Bump when the cache file's contents change, so old files are not read as new ones.
_CACHE_FORMAT = 2  # 2: counts hold oversized images; 16-bit images converted like uploads

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


def _cache_root() -> Path:
    """``cache_dir()``, or a DataError when RESNET_LAB_CACHE cannot be a folder (a file, no permission)."""
    try:
        return cache_dir()
    except OSError as err:
        raise DataError("RESNET_LAB_CACHE", f"the cache folder cannot be created ({err.strerror or err}): "
                        "RESNET_LAB_CACHE must name a folder (or be unset), not a file.",
                        expected="RESNET_LAB_CACHE set to a writable folder, or unset") from None


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

    def __repr__(self) -> str:
        return (f"Dataset({self.n_train:,} train, {self.n_test:,} test, {self.num_classes} classes, "
                f"source={self.source!r})")


# --------------------------------------------------------------------------------------------------
# Class-folder sources: scanning


class _Layout:
    """What a scan found: image entries per split as (class, file name, payload) plus class folders seen.

    For a directory the payload is the file's path and ``stamps`` its size and mtime (the cache key)."""

    def __init__(self) -> None:
        self.entries: dict[str, list[tuple[str, str, object]]] = {"train": [], "test": []}
        self.class_dirs: dict[str, set[str]] = {"train": set(), "test": set()}
        self.ignored = 0
        self.too_large = 0
        self.stamps: list[str] = []


def _hidden(parts: Sequence[str]) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _split_of(part: str) -> str | None:
    low = part.lower()
    return low if low in ("train", "test") else None


def _list(folder: Path, shown: str, rel: str) -> list[os.DirEntry]:
    """The entries of one folder, sorted by name; an unreadable folder is a DataError naming it as typed."""
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as err:
        where = f"the folder {safe_text(rel)}/ in it" if rel else "the folder"
        raise DataError(shown, f"{where} cannot be read ({err.strerror or type(err).__name__}).") from None


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _scan_directory(path: Path, shown: str | None = None) -> _Layout:
    """List [wrapper/]{train,test}/<class>/<images>, level by level, and stop at the first level that is not
    that layout: `--data /` lists one folder, not the whole file system (no os.walk anywhere)."""
    shown = shown or str(path)
    layout = _Layout()
    top = _list(path, shown, "")
    rel_root, entries = "", top
    if not any(_split_of(e.name) and _is_dir(e) for e in top):
        subdirs = [e for e in top if _is_dir(e) and not _hidden([e.name])]
        if len(subdirs) != 1:
            return layout  # not the layout: _check_layout says what was expected
        inner = _list(Path(subdirs[0].path), shown, subdirs[0].name)
        if not any(_split_of(e.name) and _is_dir(e) for e in inner):
            return layout
        rel_root, entries = subdirs[0].name + "/", inner
    for split_entry in entries:
        split = _split_of(split_entry.name)
        if split is None or not _is_dir(split_entry):
            continue
        for class_entry in _list(Path(split_entry.path), shown, rel_root + split_entry.name):
            if not _is_dir(class_entry) or _hidden([class_entry.name]):
                continue
            cls = class_entry.name
            layout.class_dirs[split].add(cls)
            rel = f"{rel_root}{split_entry.name}/{cls}"
            for f in _list(Path(class_entry.path), shown, rel):
                try:
                    is_file, st = f.is_file(), f.stat()
                except OSError:  # a broken link: skipped like an unreadable image
                    layout.ignored += 1
                    continue
                if not is_file or not _is_image(f.name) or _hidden([f.name]):
                    layout.ignored += 1
                    continue
                layout.stamps.append(f"{rel}/{f.name}:{st.st_size}:{st.st_mtime_ns}")
                if st.st_size > MAX_IMAGE_BYTES:
                    layout.too_large += 1
                    continue
                layout.entries[split].append((cls, f.name, Path(f.path)))
    return layout


class _CountingReader:
    """File wrapper that reports how many compressed bytes the tar stream has consumed."""

    def __init__(self, raw, total: int, progress: Progress | None):
        self.raw, self.total, self.progress, self.done, self._last = raw, total, progress, 0, 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.done += len(data)
        if self.progress and (self.done - self._last > max(self.total // 50, 1) or not data):
            self._last = self.done
            self.progress(self.done, self.total, "Reading the archive")
        return data


def _scan_archive(path: Path, read_bytes: bool, progress: Progress | None = None, shown: str | None = None) -> _Layout:
    """Stream the tar once (any compression), keeping images under [prefix/]{train,test}/<class>/."""
    shown = shown or str(path)
    found: dict[tuple[str, ...], _Layout] = {}  # per top-level prefix, to detect a wrapper folder
    size = path.stat().st_size
    entries_read = 0
    try:
        with open(path, "rb") as raw:
            with tarfile.open(fileobj=_CountingReader(raw, size, progress), mode="r|*") as tf:
                for member in tf:
                    entries_read += 1
                    parts = [p for p in member.name.split("/") if p not in ("", ".")]
                    if _hidden(parts):
                        continue
                    if member.isdir():
                        split = _split_of(parts[-2]) if len(parts) >= 2 else None
                        if split:
                            found.setdefault(tuple(parts[:-2]), _Layout()).class_dirs[split].add(parts[-1])
                        continue
                    if not member.isfile():
                        continue
                    if len(parts) < 3 or not _split_of(parts[-3]):
                        found.setdefault((), _Layout()).ignored += 1
                        continue
                    layout = found.setdefault(tuple(parts[:-3]), _Layout())
                    split = _split_of(parts[-3])
                    # Archives need not list folders: a file in a class folder is enough to say it exists.
                    layout.class_dirs[split].add(parts[-2])
                    if not _is_image(parts[-1]):
                        layout.ignored += 1
                        continue
                    if member.size > MAX_IMAGE_BYTES:  # refused unread: the stream skips it
                        layout.too_large += 1
                        continue
                    payload = tf.extractfile(member).read() if read_bytes else None
                    layout.entries[split].append((parts[-2], parts[-1], payload))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        why = getattr(err, "strerror", None) or type(err).__name__  # str(err) may hold member names
        if entries_read == 0:
            raise DataError(shown, f"this is not a readable tar archive ({why}).") from None
        raise DataError(shown, f"the archive is truncated or corrupt after {entries_read:,} entries ({why}).") from None
    if entries_read == 0:
        raise DataError(shown, "the archive is empty.")
    with_images = {k: v for k, v in found.items() if any(v.entries.values()) or v.too_large}
    if len(with_images) > 1:
        # The prefixes are names inside the archive: counted, not echoed.
        raise DataError(shown, f"found train/ or test/ image folders in several places (under {len(with_images)} "
                               "different top-level folders of the archive); keep one.")
    if with_images:
        (prefix, layout), = with_images.items()
    else:
        dirs_only = [k for k, v in found.items() if any(v.class_dirs.values())]
        prefix = dirs_only[0] if dirs_only else ()
        layout = found.get(prefix, _Layout())
    layout.ignored += sum(v.ignored for k, v in found.items() if k != prefix)
    for split in ("train", "test"):
        layout.entries[split].sort(key=lambda e: (e[0], e[1]))
    return layout


def _names(names: Iterable[str], limit: int = 12) -> str:
    names = sorted(names)
    shown = ", ".join(safe_text(n, 40) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "") if names else "none"


def _check_layout(shown: str, layout: _Layout) -> list[str]:
    """Validate a scan and return the sorted class names (equal for train and test, at least 2)."""
    for split in ("train", "test"):
        if not layout.class_dirs[split]:
            other = "test" if split == "train" else "train"
            have = f" (found {other}/ only)" if layout.class_dirs[other] else ""
            ignored = f"; {layout.ignored:,} other entries were ignored" if layout.ignored else ""
            raise DataError(shown, f"no {split}/<class>/ folders with images{have}{ignored}.")
    train_classes, test_classes = layout.class_dirs["train"], layout.class_dirs["test"]
    if train_classes != test_classes:
        raise DataError(shown, f"train/ and test/ have different classes (only in train/: "
                               f"{_names(train_classes - test_classes)}; only in test/: "
                               f"{_names(test_classes - train_classes)}).")
    if len(train_classes) < 2:
        raise DataError(shown, f"found {len(train_classes)} class folder ({_names(train_classes)}); a classifier "
                               "needs at least 2 classes to tell apart (with one, every answer is right).")
    for split in ("train", "test"):
        with_images = {e[0] for e in layout.entries[split]}
        empty = sorted(layout.class_dirs[split] - with_images)
        if empty and not layout.too_large:
            raise DataError(shown, "class folder(s) with no images: "
                            + ", ".join(f"{split}/{safe_text(c, 40)}/" for c in empty[:12]) + ".")
    return sorted(train_classes)


# --------------------------------------------------------------------------------------------------
# Class-folder sources: decoding and the on-disk cache

# How many class-folder decodes this process has run (the tests read it to see the cache being used).
decode_count = 0


def _open_image(payload, name: str):
    """A fully decoded PIL image, or None when its canvas is over MAX_IMAGE_PIXELS (refused before decoding)."""
    from PIL import Image

    # A format hint skips PIL's trial of every other plugin (about 20% faster on 32x32 JPEGs).
    hint = ["JPEG"] if name.lower().endswith((".jpg", ".jpeg")) else None
    src = io.BytesIO(payload) if isinstance(payload, bytes) else payload
    try:
        img = Image.open(src, formats=hint)
    except Image.DecompressionBombError:
        return None
    except Exception:
        if hint is None:
            raise
        # A misnamed file (e.g. a PNG called .jpg): let PIL sniff the format.
        if isinstance(src, io.BytesIO):
            src.seek(0)
        img = Image.open(src)
    if img.size[0] * img.size[1] > MAX_IMAGE_PIXELS:
        img.close()
        return None
    img.load()
    return img


def _decode_split(shown: str, entries, classes: list[str], split: str, progress: Progress | None,
                  offset: int, total: int) -> tuple[np.ndarray, np.ndarray, int, int, int]:
    from PIL import Image


    class_id = {c: i for i, c in enumerate(classes)}
    x = np.empty((len(entries), IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    y = np.empty(len(entries), np.int64)
    kept = resized = too_large = 0
    step = max(total // 100, 1)
    for i, (cls, name, payload) in enumerate(entries):
        try:
            img = _open_image(payload, name)
            if img is None:
                too_large += 1
                continue
            # The same conversion as an uploaded image (16-bit, alpha, palette ...), so both agree pixel for pixel.
            img = to_rgb(img)
            if img.size != (IMAGE_SIZE, IMAGE_SIZE):
                img = img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
                resized += 1
            x[kept] = np.asarray(img)
        except Exception:  # unreadable image: skipped and counted, the load goes on
            continue
        y[kept] = class_id[cls]
        kept += 1
        if progress and (i + 1) % step == 0:
            progress(offset + i + 1, total, f"Decoding {split} images")
    skipped = len(entries) - kept - too_large
    x, y = x[:kept], y[:kept]
    if kept == 0:
        raise DataError(shown, f"none of the {len(entries):,} {split} images could be decoded"
                               + (f" ({too_large:,} over the limit of {limits_text()})" if too_large else "") + ".")
    missing = [classes[c] for c in np.flatnonzero(np.bincount(y, minlength=len(classes)) == 0)]
    if missing:
        raise DataError(shown, "no readable images in "
                        + ", ".join(f"{split}/{safe_text(c, 40)}/" for c in missing[:12]) + ".")
    return x, y, resized, skipped, too_large


def _fingerprint(path: Path, layout: _Layout | None = None) -> str:
    """Cache key: absolute path plus size and mtime (of every image file the scan found, for a directory)."""
    h = hashlib.sha256(f"v{_CACHE_FORMAT}|{path}".encode())
    if layout is not None:
        for stamp in layout.stamps:
            h.update(f"|{stamp}".encode())
    else:
        st = path.stat()
        h.update(f"|{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def _cache_file(path: Path, key: str) -> Path:
    stem = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in path.name)[:40]
    return _cache_root() / "decoded" / f"{stem}-{key}.npz"


_CACHE_KEYS = ("train_x", "train_y", "test_x", "test_y", "classes", "counts", "stats")


def _read_cache(file: Path, shown: str = "", notes: list[str] | None = None) -> dict | None:
    """The cached arrays, or None. A damaged file is deleted (and said once): every member of the .npz carries
    a CRC-32 that zipfile checks as np.load reads it whole, so a truncated or overwritten file never loads."""
    if not file.is_file():
        return None
    try:
        with np.load(file, allow_pickle=False) as z:
            arrays = {k: z[k] for k in _CACHE_KEYS}
        problem = _cache_problem(arrays)
    except Exception as err:  # BadZipFile (bad CRC, truncated), ValueError, KeyError, OSError, EOFError ...
        problem = f"{type(err).__name__}: {safe_text(err, 80)}"
    if problem is None:
        return arrays
    try:
        file.unlink()
    except OSError:
        pass
    _warn(notes, f"the decoded-image cache of {safe_text(shown or file.name)} was damaged ({problem}); "
                 "discarded it and decoding the images again")
    return None


def _cache_labels(file: Path) -> dict | None:
    """The labels and class names of a decoded cache, without reading its images (an .npz reads one member at a
    time): what a status check needs, in milliseconds instead of the seconds the whole 185 MB file costs. None when
    the file is missing or unreadable (the full read then says what is wrong)."""
    if not file.is_file():
        return None
    try:
        with np.load(file, allow_pickle=False) as z:
            return {k: z[k] for k in ("train_y", "test_y", "classes")}
    except Exception:
        return None


def _cache_problem(a: dict) -> str | None:
    for split in ("train", "test"):
        x, y = a[f"{split}_x"], a[f"{split}_y"]
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3) or y.shape != (len(x),):
            return f"{split} arrays have the wrong shape"
        if len(y) and (y.min() < 0 or y.max() >= len(a["classes"])):
            return f"{split} labels out of range"
    if a["counts"].shape != (3,) or a["stats"].shape != (2, 3):
        return "its bookkeeping arrays have the wrong shape"
    return None


def _write_cache(file: Path, arrays: dict) -> None:
    """Write via a temp file and os.replace, so a reader never sees a half-written cache."""
    tmp = None
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=file.stem, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)  # uncompressed: CIFAR pixels barely compress and loading stays fast
        os.replace(tmp, file)
    except OSError:
        # A read-only or full cache dir only costs a re-decode next time.
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)


def _describe(kind: str, shown: str, n: int, resized: int, skipped: int, too_large: int = 0) -> str:
    notes = []
    if resized:
        notes.append(f"{resized:,} resized to {IMAGE_SIZE}x{IMAGE_SIZE}")
    if skipped:
        notes.append(f"{skipped:,} unreadable skipped")
    if too_large:
        notes.append(f"{too_large:,} over the per-image limit ({limits_text()}) skipped")
    return f"{kind}: {safe_text(shown, 300)} ({n:,} images" + "".join(f"; {s}" for s in notes) + ")"


def _imbalance_note(y: np.ndarray, classes: list[str]) -> str | None:
    counts = np.bincount(y, minlength=len(classes))
    small, big = int(counts.argmin()), int(counts.argmax())
    if counts[small] * IMBALANCE_RATIO > counts[big]:
        return None
    n_small = f"{counts[small]:,} image{'' if counts[small] == 1 else 's'}"
    return (f"strong class imbalance in train/: '{safe_text(classes[small], 40)}' has {n_small}, "
            f"'{safe_text(classes[big], 40)}' has {counts[big]:,} ({counts[big] / max(counts[small], 1):.0f}x "
            "more); a model can score well by favouring the big classes, so read the per-class accuracy")


def _decode_source(path: Path, shown: str, layout: _Layout | None, progress: Progress | None) -> dict:
    global decode_count
    if layout is None:
        layout = _scan_directory(path, shown) if path.is_dir() else _scan_archive(path, True, progress, shown)
    classes = _check_layout(shown, layout)
    total = len(layout.entries["train"]) + len(layout.entries["test"])
    train_x, train_y, r1, s1, t1 = _decode_split(shown, layout.entries["train"], classes, "train", progress, 0, total)
    test_x, test_y, r2, s2, t2 = _decode_split(shown, layout.entries["test"], classes, "test", progress,
                                               len(layout.entries["train"]), total)
    decode_count += 1
    if progress:
        progress(total, total, f"Decoding done: {total:,} images")
    return dict(train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y, classes=np.array(classes),
                counts=np.array([r1 + r2, s1 + s2, t1 + t2 + layout.too_large], np.int64),
                stats=np.array(_channel_stats(train_x), np.float64))


def _load_class_folders(path: Path, progress: Progress | None, shown: str | None = None,
                        layout: _Layout | None = None, key: str | None = None) -> Dataset:
    shown = shown or str(path)
    kind = "class folders" if path.is_dir() else "class-folder archive"
    if path.is_dir() and layout is None:
        layout = _scan_directory(path, shown)
    key = key or _fingerprint(path, layout)
    file = _cache_file(path, key)
    notes: list[str] = []
    arrays = _read_cache(file, shown, notes)
    if arrays is None:
        arrays = _decode_source(path, shown, layout, progress)
        _write_cache(file, arrays)
    elif progress:
        progress(1, 1, "Loaded the decoded images from the cache")
    resized, skipped, too_large = (int(v) for v in arrays["counts"])
    classes = [str(c) for c in arrays["classes"]]
    if too_large:
        _warn(notes, f"{too_large:,} image(s) of {safe_text(shown)} are over the limit of {limits_text()} and "
                     "were skipped unread")
    imbalance = _imbalance_note(arrays["train_y"], classes)
    if imbalance:
        _warn(notes, imbalance)
    n = len(arrays["train_x"]) + len(arrays["test_x"])
    ds = Dataset(arrays["train_x"], arrays["train_y"], arrays["test_x"], arrays["test_y"], classes,
                 _describe(kind, shown, n, resized, skipped, too_large), path=str(path), notes=notes)
    # Stored with the arrays: ~1 s to recompute for 50,000 images on 2 cores.
    ds._stats = (tuple(float(v) for v in arrays["stats"][0]), tuple(float(v) for v in arrays["stats"][1]))
    ds._shown = shown
    return ds


def _as_typed(ds: Dataset, source: str) -> Dataset:
    """The memoised dataset described with this caller's spelling of the source (the arrays are shared), so
    one session never sees the path another session typed."""
    old = getattr(ds, "_shown", None)
    if old is None or old == source:
        return ds
    out = copy.copy(ds)
    out.source = ds.source.replace(f": {safe_text(old, 300)} (", f": {safe_text(source, 300)} (", 1)
    out.notes, out._shown = list(ds.notes), source
    return out


# --------------------------------------------------------------------------------------------------
# torchvision's CIFAR-10


def _torchvision_root() -> Path:
    return _cache_root() / "torchvision"


def _load_torchvision(progress: Progress | None) -> Dataset:
    root = _torchvision_root()
    if progress:
        progress(0, 1, "Getting CIFAR-10 from torchvision (downloads ~170 MB the first time)")
    try:
        from torchvision.datasets import CIFAR10

        train = CIFAR10(root=str(root), train=True, download=True)
        test = CIFAR10(root=str(root), train=False, download=True)
    except ImportError as err:
        raise DataError("cifar10", f"torchvision is not installed ({err}).",
                        expected="torchvision to download CIFAR-10, or a local class-folder source") from err
    except Exception as err:  # no network, DNS failure, corrupted download...
        raise DataError(
            "cifar10",
            f"torchvision could not download CIFAR-10 into the cache folder ({type(err).__name__}: "
            f"{safe_text(str(err).replace(str(root), '<cache>/torchvision'), 200)}). Is this machine offline?",
            expected="internet access for the one-time download, or " + EXPECTED_LAYOUT,
        ) from err
    if progress:
        progress(1, 1, "CIFAR-10 ready")
    ds = Dataset(np.ascontiguousarray(train.data, dtype=np.uint8), np.asarray(train.targets, np.int64),
                 np.ascontiguousarray(test.data, dtype=np.uint8), np.asarray(test.targets, np.int64),
                 list(train.classes), "torchvision CIFAR-10 (60,000 images)", path="cifar10")
    return ds


def _torchvision_downloaded(root: Path) -> bool:
    folder = root / "cifar-10-batches-py"
    return all((folder / f).is_file() for f in ("data_batch_1", "data_batch_5", "test_batch", "batches.meta"))


# --------------------------------------------------------------------------------------------------
# Public entry points

_MEMO: "OrderedDict[tuple, Dataset]" = OrderedDict()
_MEMO_SIZE = 2  # full CIFAR-10 is ~180 MB; two sources cover switching back and forth in the app
# _LOCK guards the memo and the lock table only, never I/O. Each source has its own lock, held while it is
# scanned and decoded, so two tabs loading the same source decode it once and nobody waits for another source.
_LOCK = threading.RLock()
_SOURCE_LOCKS: dict[str, threading.Lock] = {}


def _source_lock(key: str) -> threading.Lock:
    with _LOCK:
        return _SOURCE_LOCKS.setdefault(key, threading.Lock())


def clear_memory_cache() -> None:
    """Forget the in-process memo (the decoded files in ``cache_dir()`` stay)."""
    with _LOCK:
        _MEMO.clear()


def _typed_path(source: str) -> Path:
    """The typed source as an absolute path, links not resolved (the key of its lock)."""
    try:
        return Path(source).expanduser().absolute()
    except (RuntimeError, ValueError, OSError):  # "~nobody/x": no such user; cwd gone
        return Path(source)


def _local_path(source: str) -> Path:
    """The resolved path of a typed source (for I/O only: messages name ``source`` as typed)."""
    if "\0" in source:
        raise DataError(source, "this is not a valid path (it contains a NUL character).")
    path = _typed_path(source)
    try:
        path = path.resolve()
    except (OSError, RuntimeError):  # a link loop
        pass
    try:
        if not path.exists():
            raise DataError(source, "no such file or directory.")
        if path.is_dir():
            if not _list(path, source, ""):
                raise DataError(source, "the directory is empty.")
        elif not path.is_file():
            raise DataError(source, "this is neither a folder nor a regular file.")
        elif path.stat().st_size == 0:
            raise DataError(source, "the file is empty.")
    except OSError as err:
        raise DataError(source, f"it cannot be read ({err.strerror or type(err).__name__}).") from None
    return path


def _source_key(source: str) -> tuple[tuple, Path | None, _Layout | None]:
    """(memo key, resolved path, directory scan) for a typed source; I/O, so called under the source's lock."""
    if source.lower() == "cifar10":
        return ("cifar10", str(_torchvision_root())), None, None
    path = _local_path(source)
    layout = _scan_directory(path, source) if path.is_dir() else None
    return ("folders", str(path), _fingerprint(path, layout)), path, layout


def _load_full(source: str, progress: Progress | None) -> Dataset:
    name = "cifar10" if source.lower() == "cifar10" else str(_typed_path(source))
    with _source_lock(name):
        key, path, layout = _source_key(source)
        with _LOCK:
            memo = _MEMO.get(key)
            if memo is not None:
                _MEMO.move_to_end(key)
        if memo is not None:
            if progress:
                progress(1, 1, "Already loaded")
            return _as_typed(memo, source)
        if path is None:
            ds = _load_torchvision(progress)
        else:
            ds = _load_class_folders(path, progress, shown=source, layout=layout, key=key[2])
        with _LOCK:
            _MEMO[key] = ds
            while len(_MEMO) > _MEMO_SIZE:
                _MEMO.popitem(last=False)
        return ds


def load_dataset(data: str | None = None, subset: int | None = None, test_subset: int | None = None,
                 seed: int = 0, progress: Progress | None = None) -> Dataset:
    """Load a source (see the module doc) and optionally a class-balanced subset of it.

    ``progress(done, total, message)`` is called while the archive is read (bytes) and decoded (images).
    Raises ``DataError`` with a message naming the source as typed, the expected layout and both fixes;
    warns with ``DataWarning`` (also in ``Dataset.notes``) about what loaded but deserves a look.
    """
    full = _load_full(resolve_data_source(data), progress)
    return full.subset(train=subset, test=test_subset, seed=seed)


CIFAR10_DOWNLOAD_BYTES = 170_498_071  # torchvision's cifar-10-python.tar.gz


def undecoded_bytes(data: str | None = None) -> int | None:
    """How much decoding loading ``data`` still needs: 0 when it reads decoded arrays (this process's memo, the
    on-disk cache, torchvision's download), else the bytes of images to decode (the archive's size, or the image
    files' sizes of a folder) — a cheap measure of the work (a stat, or a folder listing). None when the source
    cannot be read at all: loading it then raises its DataError, quickly."""
    source = resolve_data_source(data)
    try:
        if source.lower() == "cifar10":
            return 0 if _torchvision_downloaded(_torchvision_root()) else CIFAR10_DOWNLOAD_BYTES
        with _source_lock(str(_typed_path(source))):
            key, path, layout = _source_key(source)
        with _LOCK:
            if key in _MEMO:
                return 0
        if _cache_file(path, key[2]).is_file():
            return 0
        if layout is not None:
            return sum(int(stamp.rsplit(":", 2)[1]) for stamp in layout.stamps)
        return path.stat().st_size
    except Exception:  # DataError and any I/O problem: the loader explains it
        return None


def is_decoded(data: str | None = None) -> bool:
    """True when loading ``data`` only reads decoded arrays (see ``undecoded_bytes``)."""
    return undecoded_bytes(data) == 0


def dataset_status(data: str | None = None) -> dict:
    """What a source holds, without decoding images: cheap when cached; scans an un-cached source's
    listing (a few seconds for the full archive). Never raises; ``error`` holds the DataError text.
    ``path`` is the source as typed (never a resolved path)."""
    source = resolve_data_source(data)
    status = {"ok": False, "source": source, "path": None, "train_size": None, "test_size": None,
              "classes": None, "error": None, "cached": False}
    try:
        if source.lower() == "cifar10":
            root = _torchvision_root()
            status.update(path="cifar10", train_size=50_000, test_size=10_000, classes=list(CLASSES), ok=True,
                          cached=_torchvision_downloaded(root))
            if not status["cached"]:
                status["note"] = "CIFAR-10 will be downloaded (~170 MB) into the cache folder on first use."
            return status
        with _source_lock(str(_typed_path(source))):
            key, path, layout = _source_key(source)
        status["path"] = source
        with _LOCK:
            memo = _MEMO.get(key)
        if memo is not None:
            status.update(ok=True, cached=True, train_size=memo.n_train, test_size=memo.n_test, classes=memo.classes)
            return status
        arrays = _cache_labels(_cache_file(path, key[2]))
        if arrays is not None:
            status.update(ok=True, cached=True, train_size=len(arrays["train_y"]), test_size=len(arrays["test_y"]),
                          classes=[str(c) for c in arrays["classes"]])
            return status
        if layout is None:
            layout = _scan_archive(path, read_bytes=False, shown=source)
        classes = _check_layout(source, layout)
        status.update(ok=True, train_size=len(layout.entries["train"]), test_size=len(layout.entries["test"]),
                      classes=classes)
    except DataError as err:
        status.update(ok=False, error=str(err))
    except Exception as err:  # never raise from a status check
        status.update(ok=False, error=f"{type(err).__name__}: {safe_text(err, 200)}")
    return status


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
