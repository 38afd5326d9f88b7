"""Files that survive a crash or a full disk: atomic writes, JSON reads, result files and the errors that name them."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

MIN_FREE_BYTES = 5 * 2**20  # below this a run is refused up front: its first checkpoint would not fit


class RunError(Exception):
    """A run that cannot be found, read or written; the message says which file and why."""


class DiskFullError(RunError):
    """A write failed because the disk is full (or the user's quota is used up)."""


_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, DiskFullError) or (isinstance(exc, OSError) and exc.errno in _DISK_FULL)


def disk_full_message(folder: Path, exc: BaseException | None = None) -> str:
    try:
        free = f"{shutil.disk_usage(folder).free / 2**20:,.0f} MB free"
    except OSError:
        free = "free space unknown"
    while exc is not None and not isinstance(exc, OSError):
        exc = exc.__cause__
    why = f"{exc.strerror}; " if exc is not None and exc.strerror else ""
    return f"the disk holding {folder} is full ({why}{free})"


def atomic_write(path: Path, write) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        if exc.errno in _DISK_FULL:
            raise DiskFullError(disk_full_message(path.parent, exc)) from exc
        raise
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; runs are meant to be shared (e.g. with the app user)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            raise DiskFullError(disk_full_message(path.parent, exc)) from exc
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    data = json.dumps(obj, indent=1, default=_json_default).encode()
    atomic_write(Path(path), lambda fh: fh.write(data))


def output_file_problem(path) -> str | None:
    """Why a result file could not be written at ``path`` (None: it can), for checking before the minutes of work
    whose result it holds: a folder in its place, or a parent that is a file or cannot be written."""
    path = Path(path)
    if path.is_dir():
        return f"is a folder, not a file; give a file name inside it, e.g. {path / 'result.json'}"
    if path.exists() and not path.is_file():
        return "is not a regular file; give the name of a file to write"
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent  # atomic_write creates the missing folders below the nearest existing one
    if not parent.is_dir():
        return f"cannot be written: {parent} is a file, not a folder"
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return f"cannot be written: the folder {parent} is not writable ({exc.strerror or exc}); choose another place"
    return None


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _first_line(exc: BaseException, limit: int = 300) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:limit]


@contextlib.contextmanager
def recording(path: Path, result: dict, stop_event=None, finish=None):
    """Save an experiment's result JSON however its body ends: ``status`` done, stopped (``stop_event`` set) or
    failed (with the error's first line; the error propagates), ``seconds_total``, then ``finish(result)``'s
    additions (a verdict, a comparison). A stop or crash keeps what was written so far."""
    t0 = time.perf_counter()
    try:
        yield
        result["status"] = "stopped" if stop_event is not None and stop_event.is_set() else "done"
    except BaseException as exc:
        result["status"] = "failed"
        result["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise
    finally:
        result["seconds_total"] = time.perf_counter() - t0
        if finish is not None:
            finish(result)
        atomic_write_json(path, result)


def load_result_file(path, fmt: str, what: str, error: type[Exception]) -> dict:
    """An experiment's result JSON (``format`` == ``fmt``, a list of ``nets``) with its ``path`` added; anything
    else raises ``error`` saying what is wrong with the file."""
    path = Path(path)
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise error(f"{path} is not a readable {what} file ({exc})") from exc
    if not isinstance(result, dict) or result.get("format") != fmt or not isinstance(result.get("nets"), list):
        raise error(f"{path} is not a resnet_lab {what} result")
    result["path"] = str(path)
    return result


def list_saved_results(folders, load, skip: type[Exception]) -> list[dict]:
    """Experiment results saved as JSON files: ``folders`` is ``[(folder, shipped), ...]``; each file read with
    ``load(path)`` (files it rejects with ``skip`` are passed over), marked ``shipped``, newest first per folder."""
    found = []
    for folder, shipped in folders:
        if not Path(folder).is_dir():
            continue
        items = []
        for p in Path(folder).glob("*.json"):
            try:
                r = load(p)
            except skip:
                continue
            r["shipped"] = shipped
            items.append(r)
        found += sorted(items, key=lambda r: r.get("created") or "", reverse=True)
    return found


def read_json(path: Path, default=None):
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunError(f"{path} is not readable JSON ({exc}); the run folder may be damaged") from exc
