"""Reading a class-folder source's layout (a folder or a tar archive) without decoding it: which files are train/test
images of which class, and a clear DataError when the layout is not ``train/<class>/*``.
"""

from __future__ import annotations

import os
import tarfile
import zlib
from pathlib import Path
from typing import Iterable, Sequence

from resnet_lab.data.dataset import DataError, IMAGE_EXTENSIONS, MAX_IMAGE_BYTES, Progress, safe_text

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
