"""The runs store: one folder per training run, written atomically, read safely.

``runs/<run-id>/`` (root overridable by ``RESNET_LAB_RUNS``) holds ``config.json``, ``status.json``,
``history.json`` (one row per epoch), ``metrics.json`` (final numbers), ``predictions.npz`` (test-set
probabilities, so no page re-evaluates) and ``model.pt`` (a state_dict only).

Every write goes to a temp file in the same folder and is renamed over the target, so a run killed
mid-write leaves the previous complete file, never a half one. Checkpoints are read with
``torch.load(weights_only=True)``: a foreign or tampered pickle raises ``RunError``, it never runs code.
"""

from __future__ import annotations

import json
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

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}$")
FILES = ("config.json", "status.json", "history.json", "metrics.json", "predictions.npz", "model.pt")
STATUSES = ("running", "done", "stopped", "failed", "interrupted")


class RunError(Exception):
    """A run that cannot be found, read or written; the message says which file and why."""


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; runs are meant to be shared (e.g. with the app user)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    data = json.dumps(obj, indent=1, default=_json_default).encode()
    _atomic_write(Path(path), lambda fh: fh.write(data))


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


def _read_json(path: Path, default=None):
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunError(f"{path} is not readable JSON ({exc}); the run folder may be damaged") from exc


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
        acc_txt = f" · {acc * 100:.1f}%" if isinstance(acc, (int, float)) else ""
        return f"{self.id} · {self.config.get('model', '?')} · {self.status}{acc_txt}"

    def predictions(self) -> dict:
        """Stored test-set predictions: probs (N,C) float32, labels (N,), indices (N,), preds (N,)."""
        import numpy as np

        path = self.path / "predictions.npz"
        if not path.exists():
            raise RunError(f"run {self.id} has no stored predictions (it failed before its final evaluation)")
        try:
            with np.load(path, allow_pickle=False) as npz:  # no pickled objects: a tampered file can't run code
                out = {k: npz[k] for k in npz.files}
        except Exception as exc:
            raise RunError(f"{path} is damaged or not a predictions file: {_first_line(exc, 200)}") from exc
        for key in ("probs", "labels", "indices"):
            if key not in out:
                raise RunError(f"{path} lacks '{key}'")
        probs = out["probs"]
        if probs.ndim != 2 or len(out["labels"]) != len(probs) or len(out["indices"]) != len(probs):
            raise RunError(f"{path} is inconsistent: probs {probs.shape}, labels {out['labels'].shape}, "
                           f"indices {out['indices'].shape}")
        out.setdefault("preds", probs.argmax(1))
        return out

    def state_dict(self, device="cpu") -> dict:
        return load_state_dict(self.checkpoint_path, device)

    def load_model(self, device="cpu"):
        """Rebuild the registry model from the stored config and load the weights (eval mode)."""
        from resnet_lab.models import build

        name = self.config.get("model")
        try:
            model = build(name, num_classes=len(self.config.get("classes") or range(10)),
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


class RunStore:
    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else runs_dir()

    # -- writing --------------------------------------------------------------
    def check_writable(self) -> None:
        """Raise RunError now rather than after minutes of training when the runs folder can't be written."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-test-{secrets.token_hex(4)}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
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
        atomic_write_json(run.path / "config.json", run.config)
        self.set_status(run, "running")
        return run

    def set_status(self, run: Run, status: str, error: str | None = None) -> None:
        run.status, run.error = status, error
        # pid: a run left "running" by a process that has since died is reported as "interrupted"
        atomic_write_json(run.path / "status.json",
                          {"status": status, "created": run.created, "updated": time.time(), "error": error,
                           "pid": os.getpid(), "host": _host()})

    def save_history(self, run: Run, history: list) -> None:
        run.history = list(history)
        atomic_write_json(run.path / "history.json", run.history)

    def save_metrics(self, run: Run, metrics: dict) -> None:
        run.metrics = dict(metrics)
        atomic_write_json(run.path / "metrics.json", run.metrics)

    def save_checkpoint(self, run: Run, state_dict: dict) -> None:
        import torch

        state = {k: v.detach().to("cpu").clone() for k, v in state_dict.items()}
        _atomic_write(run.checkpoint_path, lambda fh: torch.save(state, fh))

    def save_predictions(self, run: Run, probs, labels, indices) -> None:
        import numpy as np

        probs = np.asarray(probs, dtype=np.float32)

        def write(fh):
            np.savez_compressed(fh, probs=probs, labels=np.asarray(labels, dtype=np.int64),
                                indices=np.asarray(indices, dtype=np.int64), preds=probs.argmax(1).astype(np.int64))

        _atomic_write(run.path / "predictions.npz", write)

    # -- reading --------------------------------------------------------------
    def get(self, run_id: str) -> Run:
        if not isinstance(run_id, str) or not RUN_ID.match(run_id):
            raise RunError(f"'{run_id}' is not a valid run id")
        path = self.root / run_id
        if not (path / "config.json").exists():
            raise RunError(f"no run '{run_id}' in {self.root.resolve()}")
        config = _read_json(path / "config.json", {})
        status = _read_json(path / "status.json", {}) or {}
        history = _read_json(path / "history.json", []) or []
        metrics = _read_json(path / "metrics.json", {}) or {}
        for name, value, kind in (("config.json", config, dict), ("status.json", status, dict),
                                  ("history.json", history, list), ("metrics.json", metrics, dict)):
            if not isinstance(value, kind):
                raise RunError(f"{path / name} should hold a JSON {'object' if kind is dict else 'list'}; "
                               "the run folder is damaged")
        state = status.get("status", "unknown")
        if state == "running" and status.get("host") == _host() and not _pid_alive(status.get("pid")):
            state = "interrupted"  # its process ended without saying so (killed, crashed, app restarted)
        created = status.get("created")
        return Run(id=run_id, path=path, config=config, history=history, metrics=metrics, status=state,
                   created=created if isinstance(created, (int, float)) else path.stat().st_mtime,
                   error=status.get("error"))

    def list(self) -> list[Run]:
        if not self.root.is_dir():
            return []
        runs = []
        for path in self.root.iterdir():
            if path.is_dir() and RUN_ID.match(path.name) and (path / "config.json").exists():
                try:
                    runs.append(self.get(path.name))
                except RunError:
                    continue  # a damaged folder must not hide the others
        return sorted(runs, key=lambda r: r.created, reverse=True)

    def latest(self, with_predictions: bool = False) -> Run | None:
        for run in self.list():
            if not with_predictions or run.has_predictions:
                return run
        return None

    def delete(self, run_id: str) -> None:
        run = self.get(run_id)
        if run.status == "running":
            raise RunError(f"run {run_id} is still training; stop it before deleting it")
        shutil.rmtree(run.path)

    def compare(self, run_ids: list[str]) -> list[dict]:
        """One row per run with the headline numbers and its per-epoch curves, for tables and overlays."""
        rows = []
        for rid in run_ids:
            run = self.get(rid)
            cfg, met = run.config, run.metrics
            rows.append({"run": run.id, "model": cfg.get("model"), "preset": cfg.get("preset"),
                         "status": run.status, "epochs": len(run.history), "optimizer": cfg.get("optimizer"),
                         "lr_max": cfg.get("lr_max"), "batch_size": cfg.get("batch_size"),
                         "n_train": cfg.get("n_train"), "seed": cfg.get("seed"),
                         "top1": met.get("top1"), "top5": met.get("top5"), "seconds": met.get("seconds_total"),
                         "test_acc": [h.get("test_acc") for h in run.history],
                         "train_loss": [h.get("train_loss") for h in run.history]})
        return rows


def _host() -> str:
    import socket

    return socket.gethostname()
