"""The runs store: one folder per training run, written atomically, read safely.

``runs/<run-id>/`` (root overridable by ``RESNET_LAB_RUNS``) holds ``config.json``, ``status.json``,
``history.json`` (one row per epoch), ``metrics.json`` (final numbers), ``predictions.npz`` (test-set
probabilities, so no page re-evaluates) and ``model.pt`` (a state_dict only).

Every write goes to a temp file in the same folder and is renamed over the target, so a run killed
mid-write leaves the previous complete file, never a half one. Checkpoints are read with
``torch.load(weights_only=True)``: a foreign or tampered pickle raises ``RunError``, it never runs code.

Reference runs ship with the app in ``assets/reference/<run-id>/`` (``RESNET_LAB_REFERENCE`` overrides the folder;
``none`` turns them off): the same files plus ``about.json`` (title, command, data, hardware, date, top1, notes)
and ``checksums.json`` (sha256 of every other file). The store lists them after the user's own runs, read-only:
never deleted, and every file is checked against its checksum before it is used (``resnet_lab.reference``).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import re
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resnet_lab.config import runs_dir
from resnet_lab.metrics import classification_metrics

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}$")
FILES = ("config.json", "status.json", "history.json", "metrics.json", "predictions.npz", "model.pt")
STATUSES = ("running", "done", "stopped", "failed", "interrupted", "damaged")
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


_KINDS = {"config.json": dict, "status.json": dict, "history.json": list, "metrics.json": dict}


def _read_part(path: Path, name: str):
    """(value, problem) of one JSON file of a run: a missing file is its empty default, never a problem."""
    kind = _KINDS[name]
    try:
        value = read_json(path / name, kind())
    except RunError as exc:
        return kind(), f"{name}: not readable JSON ({_first_line(exc.__cause__ or exc, 80)})"
    if not isinstance(value, kind):
        return kind(), f"{name}: should hold a JSON {'object' if kind is dict else 'list'}"
    if kind is list and not all(isinstance(row, dict) for row in value):
        return [row for row in value if isinstance(row, dict)], f"{name}: some rows are not JSON objects"
    return value, None


def _boot_id() -> str | None:
    """This boot of the machine (Linux); a pid and its start time are only unique within one boot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _process_start(pid) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (field 22 of /proc/<pid>/stat); None where there
    is no /proc (the pid alone is checked then). With the pid it names one process: pids are reused."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])  # after the command name, which may hold spaces
    except (OSError, IndexError, ValueError):
        return None


def _process_record() -> dict:
    """Who writes a status.json: host, boot, pid and the process's start time (all four name one process)."""
    return {"pid": os.getpid(), "host": _host(), "boot": _boot_id(), "started": _process_start(os.getpid())}


def _liveness(status: dict) -> tuple[bool | None, str, str]:
    """Whether the process that wrote a ``running`` status.json still runs: True, False, or None when it cannot be
    told from here; then that process and why, in words. Alive only if host, pid and start time all match: a pid
    alone is reused by unrelated processes, and a runs folder copied from (or shared with) another machine names a
    process there."""
    pid, host = status.get("pid"), status.get("host")
    who = f"process {pid} on host {host}"
    if host != _host():
        return None, who, ("that is another machine (the runs folder was copied or is shared), so whether it still "
                           "runs cannot be checked here")
    boot = status.get("boot")
    if boot and _boot_id() and boot != _boot_id():
        return False, who, "which ended when the machine restarted"
    if not _pid_alive(pid):
        return False, who, "which has ended"
    started, now = status.get("started"), _process_start(pid)
    if started is None or now is None:  # a status.json from before start times were recorded, or no /proc
        return None, who, ("whose start time is not recorded, so it cannot be told apart from a new process that "
                           "reuses the pid")
    if started != now:
        return False, who, "whose pid now belongs to another process"
    return True, who, "which is running on this machine"


def _pid_alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def load_state_dict(path: str | Path, device="cpu") -> dict:
    """Load a checkpoint safely. Anything but a plain state_dict of tensors is refused with RunError."""
    import torch

    path = Path(path)
    if not path.exists():
        raise RunError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # UnpicklingError for code, RuntimeError/EOFError for truncation
        raise RunError(
            f"{path} is not a loadable resnet_lab checkpoint: it is truncated, corrupt, or contains objects "
            f"other than tensors (refused for safety with weights_only=True). Details: {_first_line(exc)}"
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise RunError(f"{path} does not hold a state_dict (a mapping of names to tensors)")
    return state


@dataclass
class Run:
    id: str
    path: Path
    config: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    status: str = "unknown"
    created: float = 0.0
    error: str | None = None
    intact: list = field(default_factory=list)  # the run's files that read fine (all of them unless damaged)
    reference: bool = False                        # shipped with the app: read-only, checksummed
    about: dict = field(default_factory=dict)      # a reference run's about.json
    # A run that reads "running" although its process cannot be checked from here (another host, an older
    # status.json): which process, and why it cannot be checked. None for every other run.
    unverified: str | None = None

    @property
    def classes(self) -> list[str]:
        """The class names in config.json ([] when it names none). Anything but a list of names (a hand-edited
        ``"classes": 5``) is a RunError that says so, not a TypeError wherever the names are used."""
        classes = self.config.get("classes")
        if classes is None:
            return []
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise RunError(f"run {self.id}: \"classes\" in its config.json should be a list of class names, not "
                           f"{repr(classes)[:60]}; the file was edited or damaged (train the run again, or delete it)")
        return list(classes)

    def _missing(self, otherwise: str) -> RunError:
        """A file of the run is not there: because the whole run was deleted since it was read, or ``otherwise``."""
        if not self.path.is_dir():
            return RunError(f"run {self.id} was deleted: its folder {self.path} is gone (it was there when the run "
                            "was opened)")
        return RunError(otherwise)

    @property
    def owner(self) -> str | None:
        """The app session that started the run (None: the CLI or a run from before owners existed)."""
        owner = self.config.get("owner")
        return owner if isinstance(owner, str) and owner else None

    def may_delete(self, owner: str | None, teacher: bool = False, ownerless_ok: bool = True) -> bool:
        """Whether ``owner`` may delete this run: their own, any run for a teacher, and an ownerless one (CLI,
        older versions) when ``ownerless_ok`` (the app passes False on a class server with a teacher password)."""
        if teacher:
            return True
        return self.owner == owner if self.owner is not None else ownerless_ok

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "model.pt"

    @property
    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.exists()

    @property
    def has_predictions(self) -> bool:
        return (self.path / "predictions.npz").exists()

    @property
    def label(self) -> str:
        acc = self.metrics.get("top1")
        acc_txt = f" · {acc * 100:.1f}%" if _is_number(acc) else ""
        if self.reference:
            return f"{self.id} · {self.config.get('model', '?')} · shipped reference{acc_txt}"
        return f"{self.id} · {self.config.get('model', '?')} · {self.status}{acc_txt}"

    def predictions(self) -> dict:
        """Stored test-set predictions: probs (N,C) float32, labels (N,), indices (N,), preds (N,)."""
        import numpy as np

        path = self.path / "predictions.npz"
        if not path.exists():
            raise self._missing(f"run {self.id} has no stored predictions (it failed before its final evaluation)")
        try:
            with np.load(path, allow_pickle=False) as npz:  # no pickled objects: a tampered file can't run code
                out = {k: npz[k] for k in npz.files}
        except Exception as exc:
            raise RunError(f"{path} is damaged or not a predictions file: {_first_line(exc, 200)}") from exc
        for key in ("probs", "labels", "indices"):
            if key not in out:
                raise RunError(f"{path} lacks '{key}'")
        problem = _predictions_problem(out, len(self.classes))
        if problem:
            raise RunError(f"{path} cannot be used: {problem}; the file is damaged or was not written by "
                           "resnet_lab (train the run again, or delete it)")
        if not len(out["probs"]):  # every summary of them would read "top-1 0.00%"
            raise RunError(f"run {self.id} has no predictions: its predictions.npz holds 0 test images, so there "
                           "is nothing to summarise (train the run again, or delete it)")
        out.setdefault("preds", out["probs"].argmax(1))
        return out

    def state_dict(self, device="cpu") -> dict:
        if not self.checkpoint_path.exists():
            raise self._missing(f"run {self.id} has no saved weights (model.pt)")
        return load_state_dict(self.checkpoint_path, device)

    def load_model(self, device="cpu"):
        """Rebuild the registry model from the stored config and load the weights (eval mode)."""
        from resnet_lab.models import build

        name = self.config.get("model")
        num_classes = len(self.classes or range(10))
        try:
            model = build(name, num_classes=num_classes,
                          **(self.config.get("model_options") or {}))
        except Exception as exc:  # a config edited by hand, or a model removed from the registry
            raise RunError(f"run {self.id}: cannot build model {name!r} from its config.json ({exc})") from exc
        state = self.state_dict(device)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise RunError(f"checkpoint of run {self.id} does not fit model {name}: "
                           f"{_first_line(exc)}") from exc
        return model.to(device).eval()


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _num(value):
    """A stored number, or None when a hand-edited file holds something else ("fast", null, NaN)."""
    return value if _is_number(value) else None


def _predictions_problem(out: dict, n_classes: int) -> str | None:
    """What makes stored predictions unusable (shapes, label range, probabilities), or None."""
    import numpy as np

    probs, labels, indices = out["probs"], out["labels"], out["indices"]
    if probs.ndim != 2 or probs.shape[1] < 1 or len(labels) != len(probs) or len(indices) != len(probs) \
            or labels.ndim != 1 or indices.ndim != 1:
        return (f"its arrays are inconsistent (probs {probs.shape}, labels {labels.shape}, "
                f"indices {indices.shape})")
    for key in ("probs", "labels", "indices") + (("preds",) if "preds" in out else ()):
        if out[key].dtype.kind not in ("f" if key == "probs" else "iu"):
            return f"'{key}' has the wrong type ({out[key].dtype})"
    classes = probs.shape[1]
    if n_classes and n_classes != classes:
        return f"the probabilities have {classes} columns but the run has {n_classes} classes"
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        return f"a true label is outside 0..{classes - 1} (found {labels.min()}..{labels.max()})"
    if "preds" in out and (out["preds"].shape != labels.shape or
                           (len(labels) and (out["preds"].min() < 0 or out["preds"].max() >= classes))):
        return f"a predicted label is outside 0..{classes - 1}"
    if len(indices) and indices.min() < 0:
        return "an image index is negative"
    bad = ~np.isfinite(probs).all(axis=1)
    if bad.any():
        return f"the probabilities of {int(bad.sum()):,} of {len(probs):,} images are not finite (NaN or inf)"
    if len(probs) and (probs.min() < 0 or np.abs(probs.sum(axis=1) - 1).max() > 1e-2):
        return "the probabilities are not a distribution (negative, or rows not summing to 1)"
    return None


class RunStore:
    def __init__(self, root: str | Path | None = None, reference_root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else runs_dir()
        if reference_root is None:
            from resnet_lab.reference import reference_dir

            reference_root = reference_dir()
        self.reference_root = Path(reference_root) if reference_root else None

    # -- writing --------------------------------------------------------------
    def check_root(self) -> None:
        """RunError when the runs folder is a file: said as such, never listed as an empty store ("no runs")."""
        if self.root.exists() and not self.root.is_dir():
            named = "RESNET_LAB_RUNS names" if os.environ.get("RESNET_LAB_RUNS") else "the runs folder is"
            raise RunError(f"{named} {self.root}, which is a file, not a folder; set RESNET_LAB_RUNS to a folder "
                           "(it is created if missing), or unset it for ./runs")

    def check_writable(self) -> None:
        """Raise RunError now rather than after minutes of training when the runs folder can't be written."""
        self.check_root()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-test-{secrets.token_hex(4)}"
            probe.write_bytes(b"")
            probe.unlink()
            if shutil.disk_usage(self.root).free < MIN_FREE_BYTES:
                raise OSError(errno.ENOSPC, "almost no space left")
        except OSError as exc:
            if exc.errno in _DISK_FULL:
                raise DiskFullError(disk_full_message(self.root.resolve(), exc) + "; free some space or set "
                                    "RESNET_LAB_RUNS to a folder on another disk") from exc
            raise RunError(f"the runs folder {self.root.resolve()} is not writable ({exc.strerror or exc}); "
                           "set RESNET_LAB_RUNS to a folder you can write to") from exc

    def create(self, config: dict, prefix: str | None = None) -> Run:
        self.check_writable()
        name = re.sub(r"[^A-Za-z0-9_.-]", "-", str(prefix or config.get("model", "run")))[:40]
        for _ in range(20):  # two runs started in the same second get different suffixes
            run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{name}-{secrets.token_hex(2)}"
            try:
                (self.root / run_id).mkdir()
                break
            except FileExistsError:
                continue
        else:  # pragma: no cover - 20 collisions of a random suffix
            raise RunError(f"could not create a new run folder in {self.root.resolve()}")
        config = dict(config)
        # A job's worker process names its owner (the browser session that started it); CLI runs have none.
        if "owner" not in config and os.environ.get("RESNET_LAB_OWNER"):
            config["owner"] = os.environ["RESNET_LAB_OWNER"]
            config["owner_name"] = os.environ.get("RESNET_LAB_OWNER_NAME") or None
        run = Run(id=run_id, path=self.root / run_id, config=config, status="running", created=time.time())
        try:
            atomic_write_json(run.path / "config.json", run.config)
            self.set_status(run, "running")
        except BaseException:
            shutil.rmtree(run.path, ignore_errors=True)  # no half-created (config-less, unlisted) folder left
            raise
        return run

    def set_status(self, run: Run, status: str, error: str | None = None) -> None:
        run.status, run.error = status, error
        # host, boot, pid and start time: a run left "running" by a process that has since died (or whose pid now
        # belongs to another process) is reported as "interrupted" (see _liveness)
        atomic_write_json(run.path / "status.json",
                          {"status": status, "created": run.created, "updated": time.time(), "error": error,
                           **_process_record()})

    def save_history(self, run: Run, history: list) -> None:
        run.history = list(history)
        atomic_write_json(run.path / "history.json", run.history)

    def save_metrics(self, run: Run, metrics: dict) -> None:
        run.metrics = dict(metrics)
        atomic_write_json(run.path / "metrics.json", run.metrics)

    def save_checkpoint(self, run: Run, state_dict: dict) -> None:
        import torch

        state = {k: v.detach().to("cpu").clone() for k, v in state_dict.items()}
        # Serialised in memory first: torch.save into a file reports a full disk as "[enforce fail at
        # inline_container.cc] unexpected pos"; a plain write raises OSError(ENOSPC), which says what happened.
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write(run.checkpoint_path, lambda fh: fh.write(buf.getbuffer()))

    def save_predictions(self, run: Run, probs, labels, indices) -> None:
        import numpy as np

        probs = np.asarray(probs, dtype=np.float32)

        def write(fh):
            np.savez_compressed(fh, probs=probs, labels=np.asarray(labels, dtype=np.int64),
                                indices=np.asarray(indices, dtype=np.int64), preds=probs.argmax(1).astype(np.int64))

        atomic_write(run.path / "predictions.npz", write)

    # -- reading --------------------------------------------------------------
    def _path(self, run_id: str) -> Path:
        """The folder of a run id; never a path outside the store, never a symbolic link followed out of it."""
        if not isinstance(run_id, str) or not RUN_ID.match(run_id):
            raise RunError(f"'{run_id}' is not a valid run id")
        path = self.root / run_id
        if path.is_symlink():
            raise RunError(f"run {run_id} in {self.root} is a symbolic link; links are not followed out of the "
                           "runs folder (remove the link itself with rm if it is not wanted)")
        return path

    def get(self, run_id: str, allow_damaged: bool = False) -> Run:
        """A run. A damaged JSON file raises RunError, or with ``allow_damaged`` gives a Run with status
        ``damaged``, ``error`` saying why, the damaged parts empty and the rest (``intact``) as stored."""
        path = self._path(run_id)
        present = [f for f in FILES if (path / f).exists()] if path.is_dir() else []
        if "config.json" not in present and not (allow_damaged and present):
            if self.reference_root is not None and (self.reference_root / run_id / "config.json").exists():
                from resnet_lab.reference import open_reference

                return open_reference(self.reference_root / run_id)
            raise RunError(f"no run '{run_id}' in {self.root.resolve()}")
        parts, problems = {}, []
        for name in _KINDS:
            parts[name], problem = _read_part(path, name)
            if problem:
                problems.append(problem)
        if "config.json" not in present:
            problems.insert(0, "config.json: missing")
        if problems and not allow_damaged:
            raise RunError(f"{path / problems[0].split(':')[0]}: {problems[0].split(': ', 1)[1]}; "
                           "the run folder is damaged")
        status = parts["status.json"]
        state = status.get("status", "unknown")
        unverified = None
        if state == "running":
            alive, who, why = _liveness(status)
            if alive is False:
                state = "interrupted"  # its process ended without saying so (killed, crashed, app restarted)
            elif alive is None:
                unverified = f"{who}; {why}"
        created = status.get("created")
        damaged = {p.split(":")[0] for p in problems}
        return Run(id=run_id, path=path, config=parts["config.json"], history=parts["history.json"],
                   metrics=parts["metrics.json"], status="damaged" if problems else str(state),
                   created=created if _is_number(created) else _mtime(path),
                   error="; ".join(problems) if problems else status.get("error"),
                   intact=[f for f in present if f not in damaged], unverified=None if problems else unverified)

    def list(self, include_damaged: bool = False) -> list[Run]:
        """The runs, newest first. With ``include_damaged`` a run with damaged files is listed too, with status
        ``damaged`` (``runs`` shows them so they can be recovered or deleted; pages pick from readable runs)."""
        if not self.root.is_dir():
            return self.references(include_damaged=include_damaged)
        runs = []
        for path in self.root.iterdir():
            if path.is_symlink() or not path.is_dir() or not RUN_ID.match(path.name):
                continue
            try:
                run = self.get(path.name, allow_damaged=True)
            except (RunError, OSError):
                continue  # not a run folder (none of its files): a damaged folder must not hide the others
            if include_damaged or run.status != "damaged":
                runs.append(run)
        return sorted(runs, key=lambda r: r.created, reverse=True) + self.references(
            exclude={r.id for r in runs}, include_damaged=include_damaged)

    def latest(self, with_predictions: bool = False) -> Run | None:
        for run in self.list():
            if run.status != "damaged" and (not with_predictions or run.has_predictions):
                return run
        return None

    def delete(self, run_id: str, force: bool = False) -> None:
        """Delete a run folder, damaged or not (not one still training). ``force`` deletes a run that reads
        ``running`` although its process cannot be checked from here (``Run.unverified``); a run whose process
        is alive on this machine is never deleted. The folder is first renamed out of the listing in one step, so
        a failure leaves the run whole, never half-deleted."""
        run = self.get(run_id, allow_damaged=True)
        if run.reference:
            raise RunError(f"run {run_id} is a reference run shipped with the app ({run.path}); it is read-only "
                           "and cannot be deleted")
        if run.status == "running" and run.unverified is None:
            raise RunError(f"run {run_id} is still training (its process runs on this machine); stop it before "
                           "deleting it")
        if run.status == "running" and not force:
            raise RunError(f"run {run_id} is marked running by {run.unverified}; if it is not training any more, "
                           "delete it anyway (force), or recover it: that marks it interrupted and keeps what it has")
        trash = self.root / f".deleting-{run_id}-{secrets.token_hex(3)}"
        try:
            os.rename(run.path, trash)
        except OSError as exc:
            raise RunError(f"cannot delete run {run_id}: {exc.strerror or exc} (is the runs folder {self.root} "
                           "read-only?); nothing was deleted") from None
        try:
            shutil.rmtree(trash)
        except OSError as exc:
            raise RunError(f"run {run_id} is gone from the list, but some of its files could not be removed "
                           f"from {trash} ({exc.strerror or exc}); delete that folder by hand") from None

    def recover(self, run_id: str) -> list[str]:
        """Rewrite the damaged JSON files of a run from what is intact; returns what was done.

        metrics.json is recomputed from predictions.npz, status.json says ``done`` (or ``interrupted`` without
        predictions), history.json restarts empty. A damaged config.json cannot be rebuilt (it names the model):
        that is a RunError, and the run can still be deleted. A readable run whose status.json says ``running``
        but whose process is gone (or on another host) is marked ``interrupted``, its files kept."""
        run = self.get(run_id, allow_damaged=True)
        if run.status != "damaged":
            return self._mark_interrupted(run)
        bad = {p.split(":")[0] for p in (run.error or "").split("; ")}
        if "config.json" in bad:
            raise RunError(f"run {run_id}: config.json is damaged and holds what cannot be guessed (the model and "
                           f"its settings); intact: {', '.join(run.intact) or 'nothing'}. Delete the run instead")
        done = []
        has_predictions = "predictions.npz" in run.intact
        if "metrics.json" in bad:
            metrics = {}
            if has_predictions:
                pred = run.predictions()
                metrics = classification_metrics(pred["probs"], pred["labels"], pred["probs"].shape[1])
            self.save_metrics(run, {**metrics, "recovered": True})
            done.append("metrics.json recomputed from predictions.npz" if has_predictions else "metrics.json reset")
        if "history.json" in bad:
            self.save_history(run, [])
            done.append("history.json reset (the per-epoch curve is lost)")
        if "status.json" in bad:
            run.created = _mtime(run.path)
            self.set_status(run, "done" if has_predictions else "interrupted", "recovered from a damaged run folder")
            done.append("status.json rewritten")
        return done

    def _mark_interrupted(self, run: Run) -> list[str]:
        """``recover`` of a readable run: one whose status.json still says ``running`` although its process is gone
        (or cannot be checked from here, ``Run.unverified``) is marked interrupted; its files are kept as they are."""
        if run.reference:
            return []
        recorded = _read_part(run.path, "status.json")[0]
        if recorded.get("status") != "running":
            return []
        if run.status == "running" and run.unverified is None:
            raise RunError(f"run {run.id} is still training (its process runs on this machine); nothing to recover")
        _, who, _why = _liveness(recorded)
        self.set_status(run, "interrupted", f"marked interrupted by recover: status.json said running, by {who}")
        kept = ", ".join(f for f in FILES if f != "status.json" and (run.path / f).exists()) or "nothing else"
        return [f"marked interrupted (status.json said running, by {who}); kept {kept}"]

    def references(self, exclude: set | None = None, include_damaged: bool = False) -> list[Run]:
        """The shipped reference runs (verified), by id. A modified or incomplete one is left out, or with
        ``include_damaged`` listed with status ``damaged`` and ``error`` saying which file fails its checksum."""
        from resnet_lab.reference import open_reference

        root = self.reference_root
        if root is None or not root.is_dir():
            return []
        out = []
        for path in sorted(root.iterdir()):
            if path.is_dir() and RUN_ID.match(path.name) and path.name not in (exclude or ()) \
                    and (path / "config.json").exists():
                try:
                    out.append(open_reference(path))
                except RunError as exc:  # get() names the problem to whoever asks for this run
                    if include_damaged:
                        config = _read_part(path, "config.json")[0]
                        out.append(Run(id=path.name, path=path, config=config, status="damaged", error=str(exc),
                                       created=_mtime(path), reference=True))
        return out

    def compare(self, run_ids: list[str]) -> list[dict]:
        """One row per run with the headline numbers and its per-epoch curves, for tables and overlays."""
        rows = []
        for rid in run_ids:
            run = self.get(rid, allow_damaged=True)
            cfg, met = run.config, run.metrics
            rows.append({"run": run.id, "model": cfg.get("model"), "preset": cfg.get("preset"),
                         "status": run.status, "epochs": len(run.history), "optimizer": cfg.get("optimizer"),
                         "lr_max": cfg.get("lr_max"), "batch_size": cfg.get("batch_size"),
                         "n_train": cfg.get("n_train"), "seed": cfg.get("seed"),
                         "top1": _num(met.get("top1")), "top5": _num(met.get("top5")),
                         "seconds": _num(met.get("seconds_total")),
                         "test_acc": [h.get("test_acc") for h in run.history],
                         "train_loss": [h.get("train_loss") for h in run.history]})
        return rows


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _host() -> str:
    import socket

    return socket.gethostname()

