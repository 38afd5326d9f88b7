"""Reference runs shipped with the app: ``assets/reference/<run-id>/``, read-only and checksummed.

A reference folder is a normal run folder (config.json, status.json, history.json, metrics.json, predictions.npz,
model.pt — the weights may be stored as fp16 to keep the folder small; they load into the fp32 model) plus
``about.json`` ({"title", "command", "data", "hardware", "date", "top1", "notes"}) and ``checksums.json``
({"<file name>": "<sha256 hex>"} for every other file, about.json included). ``RunStore`` lists these runs after
the user's own and refuses to delete them; each file is verified before use, so a modified file is refused with a
message instead of being shown as the reference. ``write_checksums(folder)`` (or
``python scripts/reference_checksums.py FOLDER``) rewrites checksums.json after a deliberate change.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from resnet_lab.runs.files import atomic_write_json, read_json, RunError
from resnet_lab.runs.run import open_folder, Run

REFERENCE_ENV = "RESNET_LAB_REFERENCE"
CHECKSUMS = "checksums.json"
ABOUT_FIELDS = ("title", "command", "data", "hardware", "date", "top1", "notes")
# (file, device, inode, size, mtime_ns, ctime_ns, sha256 expected) -> ok: each file is hashed once per change. Size
# and mtime alone can be restored after an edit (os.utime), the inode's change time cannot: any write or utime
# sets it to now. A file changed less than RACY_S before it was hashed is not cached at all, as git treats a
# "racily clean" index entry: a second edit within the same timestamp tick would leave every stamp as it was.
_VERIFIED: dict[tuple, bool] = {}
RACY_S = 2.0


def reference_dir() -> Path | None:
    """``RESNET_LAB_REFERENCE`` (``none`` or empty: no reference runs), else the repo's ``assets/reference``."""
    value = os.environ.get(REFERENCE_ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "none", "off") else Path(value)
    return Path(__file__).resolve().parents[2] / "assets" / "reference"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_checksums(folder: str | Path) -> dict:
    """(Re)write ``folder/checksums.json``: the sha256 of every other file in it (about.json included)."""
    folder = Path(folder)
    sums = {p.name: sha256_file(p) for p in sorted(folder.iterdir())
            if p.is_file() and p.name != CHECKSUMS and not p.name.startswith(".")}
    atomic_write_json(folder / CHECKSUMS, sums)
    return sums


def verify_reference(folder: str | Path) -> None:
    """Raise RunError unless every file of the folder is listed in checksums.json with a matching sha256."""
    folder = Path(folder)
    sums = read_json(folder / CHECKSUMS, None)
    fix = "restore it (git checkout -- assets/reference) or fetch a fresh copy of the app"
    if not isinstance(sums, dict) or not sums:
        raise RunError(f"reference run {folder.name}: {folder / CHECKSUMS} is missing or empty, so its files "
                       f"cannot be trusted; {fix}")
    present = {p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")} - {CHECKSUMS}
    for name in sorted(present - set(sums)):
        raise RunError(f"reference run {folder.name}: {name} is not listed in {CHECKSUMS} (a file was added); {fix}")
    for name, expected in sums.items():
        path = folder / name
        if not path.is_file():
            raise RunError(f"reference run {folder.name}: {name} is missing; {fix}")
        stat = path.stat()
        key = (str(path.resolve()), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns,
               expected)
        ok = _VERIFIED.get(key)
        if ok is None:
            ok = sha256_file(path) == str(expected).lower()
            if time.time_ns() - max(stat.st_mtime_ns, stat.st_ctime_ns) > RACY_S * 1e9:
                _VERIFIED[key] = ok
        if not ok:
            raise RunError(f"reference run {folder.name}: {name} was modified (its sha256 no longer matches "
                           f"{CHECKSUMS}), so it is refused; {fix}")


def open_reference(folder: str | Path) -> Run:
    """A reference run folder as a verified, read-only ``Run`` (RunError names a modified or missing file)."""
    folder = Path(folder)
    verify_reference(folder)
    run = open_folder(folder)
    about = read_json(folder / "about.json", {}) or {}
    if not isinstance(about, dict):
        raise RunError(f"{folder / 'about.json'} should hold a JSON object")
    run.reference, run.about = True, about
    return run
