"""Decoding class-folder images once into an ``.npz`` cache keyed by the source's path, size and mtime; later loads
read that file.
"""

from __future__ import annotations

import copy
import hashlib
import io
import os
import tempfile
from pathlib import Path

import numpy as np

from resnet_lab.config import cache_dir
from resnet_lab.data.dataset import (
    _channel_stats,
    _warn,
    DataError,
    Dataset,
    IMAGE_SIZE,
    IMBALANCE_RATIO,
    limits_text,
    MAX_IMAGE_PIXELS,
    Progress,
    safe_text,
)
from resnet_lab.data.layout import _check_layout, _Layout, _scan_archive, _scan_directory
from resnet_lab.uploads import to_rgb

# Bump when the cache file's contents change, so old files are not read as new ones.
_CACHE_FORMAT = 2  # 2: counts hold oversized images; 16-bit images converted like uploads


def _cache_root() -> Path:
    """``cache_dir()``, or a DataError when RESNET_LAB_CACHE cannot be a folder (a file, no permission)."""
    try:
        return cache_dir()
    except OSError as err:
        raise DataError("RESNET_LAB_CACHE", f"the cache folder cannot be created ({err.strerror or err}): "
                        "RESNET_LAB_CACHE must name a folder (or be unset), not a file.",
                        expected="RESNET_LAB_CACHE set to a writable folder, or unset") from None


# --------------------------------------------------------------------------------------------------
# Class-folder sources: decoding and the on-disk cache

# How many class-folder decodes this process has run (the tests read it to see the cache being used).
_decodes = 0


def decode_count() -> int:
    """Class-folder decodes run by this process so far (a cache hit decodes nothing)."""
    return _decodes


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
    global _decodes
    if layout is None:
        layout = _scan_directory(path, shown) if path.is_dir() else _scan_archive(path, True, progress, shown)
    classes = _check_layout(shown, layout)
    total = len(layout.entries["train"]) + len(layout.entries["test"])
    train_x, train_y, r1, s1, t1 = _decode_split(shown, layout.entries["train"], classes, "train", progress, 0, total)
    test_x, test_y, r2, s2, t2 = _decode_split(shown, layout.entries["test"], classes, "test", progress,
                                               len(layout.entries["train"]), total)
    _decodes += 1
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
