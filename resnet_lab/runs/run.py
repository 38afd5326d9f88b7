"""One run folder: the ``Run`` it holds, how it is read (damaged parts said, not hidden) and whether its process still
lives.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from resnet_lab.models import build, files
from resnet_lab.runs.files import _first_line, read_json, RunError

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}$")
FILES = ("config.json", "status.json", "history.json", "metrics.json", "predictions.npz", "model.pt")
STATUSES = ("running", "done", "stopped", "failed", "interrupted", "damaged")


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
        model = files.display_name(self.config.get("model", "?"))  # a student's file by its name, not its path
        if self.reference:
            return f"{self.id} · {model} · shipped reference{acc_txt}"
        return f"{self.id} · {model} · {self.status}{acc_txt}"

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
        """Rebuild the model from the stored config (a model file from the run's copy of its source) and load the
        weights (eval mode)."""

        name = self.config.get("model")
        num_classes = len(self.classes or range(10))
        record = self.config.get("model_file")
        try:
            if isinstance(record, dict):  # a network from a file: rebuilt from the run's own copy of its source
                model = files.from_record(self.path, record, num_classes, self.config.get("model_options") or {})
            else:
                model = build(name, num_classes=num_classes, **(self.config.get("model_options") or {}))
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


def run_folder(root: Path, run_id: str) -> Path:
    """The folder of a run id; never a path outside ``root``, never a symbolic link followed out of it."""
    if not isinstance(run_id, str) or not RUN_ID.match(run_id):
        raise RunError(f"'{run_id}' is not a valid run id")
    path = root / run_id
    if path.is_symlink():
        raise RunError(f"run {run_id} in {root} is a symbolic link; links are not followed out of the "
                       "runs folder (remove the link itself with rm if it is not wanted)")
    return path


def read_run(path: Path, run_id: str, present: list, allow_damaged: bool = False) -> Run:
    """The ``Run`` stored in ``path`` (``present``: which of FILES exist there). A damaged JSON file raises
    RunError, or with ``allow_damaged`` gives a Run with status ``damaged``, ``error`` saying why, the damaged
    parts empty and the rest (``intact``) as stored."""
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


def open_folder(folder: Path) -> Run:
    """The run stored in ``folder`` (its parent is taken as the runs folder); RunError when there is none."""
    path = run_folder(folder.parent, folder.name)
    present = [f for f in FILES if (path / f).exists()] if path.is_dir() else []
    if "config.json" not in present:
        raise RunError(f"no run '{folder.name}' in {folder.parent.resolve()}")
    return read_run(path, folder.name, present)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _host() -> str:
    import socket

    return socket.gethostname()
