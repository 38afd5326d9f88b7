"""``load_dataset``: a data source (``cifar10``, a folder, an archive) to a ``Dataset``, memoised per process, plus
what the app asks before loading (is it decoded, how many bytes are left to decode, its status).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from resnet_lab.config import resolve_data_source
from resnet_lab.data.cache import _as_typed, _cache_file, _cache_labels, _cache_root, _fingerprint, _load_class_folders
from resnet_lab.data.dataset import CLASSES, DataError, Dataset, EXPECTED_LAYOUT, Progress, safe_text
from resnet_lab.data.layout import _check_layout, _Layout, _list, _scan_archive, _scan_directory

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
