"""``RunStore``: the runs folder (``RESNET_LAB_RUNS``, default ./runs) with the shipped reference runs listed after the
user's own.
"""

from __future__ import annotations

import errno
import io
import os
import re
import secrets
import shutil
import time
from pathlib import Path

from resnet_lab.config import runs_dir
from resnet_lab.models import files
from resnet_lab.metrics import classification_metrics
from resnet_lab.runs.files import (
    _DISK_FULL,
    atomic_write,
    atomic_write_json,
    disk_full_message,
    DiskFullError,
    MIN_FREE_BYTES,
    RunError,
)
from resnet_lab.runs.reference import open_reference, reference_dir
from resnet_lab.runs.run import (
    _liveness,
    _mtime,
    _num,
    _process_record,
    _read_part,
    FILES,
    read_run,
    Run,
    run_folder,
    RUN_ID,
)


class RunStore:
    def __init__(self, root: str | Path | None = None, reference_root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else runs_dir()
        if reference_root is None:
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
        model = str(config.get("model", "run"))
        if files.is_spec(model):  # path/to/my_net.py:Net -> my_net-Net
            where, _, cls = model.rpartition(":")
            model = f"{Path(where).stem}-{cls}"
        name = re.sub(r"[^A-Za-z0-9_.-]", "-", str(prefix or model))[:40]
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
        return run_folder(self.root, run_id)

    def get(self, run_id: str, allow_damaged: bool = False) -> Run:
        """A run. A damaged JSON file raises RunError, or with ``allow_damaged`` gives a Run with status
        ``damaged``, ``error`` saying why, the damaged parts empty and the rest (``intact``) as stored."""
        path = self._path(run_id)
        present = [f for f in FILES if (path / f).exists()] if path.is_dir() else []
        if "config.json" not in present and not (allow_damaged and present):
            if self.reference_root is not None and (self.reference_root / run_id / "config.json").exists():
                return open_reference(self.reference_root / run_id)
            raise RunError(f"no run '{run_id}' in {self.root.resolve()}")
        return read_run(path, run_id, present, allow_damaged)

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


def open_run_folder(folder: str | Path, reference: bool = False) -> Run:
    """A run from its folder, as a job's worker receives it (a path string and whether it is a shipped reference,
    whose checksums are then verified)."""
    folder = Path(folder)
    return open_reference(folder) if reference else RunStore(folder.parent, reference_root="").get(folder.name)
