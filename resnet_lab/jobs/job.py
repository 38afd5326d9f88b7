"""One job as each side sees it: ``Job`` in the app (status, events, progress, stop, wait) and ``WorkerJob`` in the
worker process (emit, stop flag, progress), plus the worker's main function that runs the job's function and sends
its result back.
"""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time
import traceback
import uuid
from typing import Any

from resnet_lab.workers import become_worker, spawn_context

ACTIVE = ("pending", "running", "stopping")
QUICK = "quick"  # the lane (and pool) of short page computations
FINAL = ("done", "stopped", "failed", "cancelled")
MAX_EVENTS = 20000  # batch events of a long run; older batch events are dropped first
KILL_AFTER_TERMINATE_S = 5.0


def _mp():
    return spawn_context()  # CUDA needs spawn; fork would copy the app's threads and locks


class _EventLog:
    """Events plus progress/message, shared by the app-side Job and the worker-side WorkerJob."""

    def _init_log(self) -> None:
        self.progress = 0.0
        self.message = ""
        self._events: list[dict] = []
        self._lock = threading.Lock()

    def _record(self, event: dict) -> None:
        with self._lock:
            self._events.append(event)
            if len(self._events) > MAX_EVENTS:
                # keep every epoch/start/end event, thin out the oldest batch events
                keep = [e for e in self._events[: MAX_EVENTS // 2] if e.get("type") != "batch"]
                self._events = keep + self._events[MAX_EVENTS // 2:]
            if "progress" in event:
                self.progress = float(event["progress"])
            if "message" in event:
                self.message = str(event["message"])

    def _set_progress(self, fraction: float, message: str | None = None) -> None:
        with self._lock:
            self.progress = max(0.0, min(1.0, float(fraction)))
            if message is not None:
                self.message = message

    def events(self, type_: str | None = None, since: int = 0) -> list[dict]:
        """Events from index ``since`` on (of all events, before filtering by ``type_``)."""
        with self._lock:
            evs = self._events[since:]
        return [e for e in evs if type_ is None or e.get("type") == type_]

    @property
    def n_events(self) -> int:
        with self._lock:
            return len(self._events)


class Job(_EventLog):
    """The app-side view of one job: status, progress, events and result, filled in from its worker's messages."""

    def __init__(self, kind: str, owner: str, title: str = "", device: str = "cpu") -> None:
        self._init_log()
        self.id = uuid.uuid4().hex[:12]
        self.kind = kind
        self.owner = owner
        self.title = title or kind
        self.device = device  # the pool it queues for: "cpu", "cuda" or "quick" (short page computations)
        self.status = "pending"
        self.result: Any = None
        self.error: str | None = None
        self.error_detail: str | None = None
        self.created = time.time()
        self.started: float | None = None
        self.finished: float | None = None
        self.threads: int | None = None
        self.pid: int | None = None
        self.exitcode: int | None = None
        self.stop_event = _mp().Event()  # also seen by the worker
        self._stop_requested: float | None = None
        self._ended = threading.Event()
        self._registry = None
        self._payload: bytes = b""
        self._proc = None
        self._gpu: int | None = None
        self.owner_name = ""

    # -- called by the app --------------------------------------------------
    def emit(self, event: dict) -> None:
        """Record an event in the app process (the worker's events arrive through here too)."""
        self._record(event)

    def __call__(self, event: dict) -> None:
        self.emit(event)

    def set_progress(self, fraction: float, message: str | None = None) -> None:
        self._set_progress(fraction, message)

    def stop(self) -> None:
        """A queued job is cancelled; a running one is asked to stop, and terminated if it has not ended after
        the grace period (``stop_grace_s``). Safe to call any number of times."""
        self.stop_event.set()
        registry = self._registry
        if registry is not None:
            registry._stop(self)
        else:
            with self._lock:
                if self.status in ("pending", "running"):
                    self.status = "stopping"

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def snapshot(self) -> dict:
        registry = self._registry
        position = registry.position(self) if registry is not None and self.status == "pending" else None
        with self._lock:
            return {"id": self.id, "kind": self.kind, "title": self.title, "owner": self.owner,
                    "status": self.status, "progress": self.progress, "message": self.message, "error": self.error,
                    "created": self.created, "started": self.started, "finished": self.finished,
                    "n_events": len(self._events), "device": self.device, "threads": self.threads,
                    "position": position}

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has ended (tests, CLI, benchmarks). True if it ended."""
        self._ended.wait(timeout)
        return not self.active

    def _finish(self, status: str, error: str | None = None, detail: str | None = None) -> None:
        with self._lock:
            if self.status in FINAL:
                return
            self.status = status
            if error is not None:
                self.error, self.error_detail = error, detail
            if status == "done":
                self.progress = 1.0
            self.finished = time.time()
        self._ended.set()


class WorkerJob(_EventLog):
    """What ``fn`` receives in the worker process: the same emit / stop_event / set_progress as before."""

    def __init__(self, meta: dict, channel, stop_event) -> None:
        self._init_log()
        self.id, self.kind, self.owner, self.title = meta["id"], meta["kind"], meta["owner"], meta["title"]
        self.threads = meta["threads"]
        self.stop_event = stop_event
        self._channel = channel

    def emit(self, event: dict) -> None:
        # The queue pickles in a background feeder thread: an event that cannot be pickled would be dropped there,
        # its traceback on the worker's stderr and nothing in the app. Pickled here instead, so the job fails with
        # the event named (the trainer turns the error into its own message and marks the run failed).
        try:
            pickle.dumps(event)
        except Exception as exc:
            kind = event.get("type", "?") if isinstance(event, dict) else type(event).__name__
            bad = [k for k, v in event.items() if not _picklable(v)] if isinstance(event, dict) else []
            raise TypeError(f"the job's '{kind}' event cannot be sent to the app"
                            + (f": {', '.join(map(repr, bad))} holds a value that cannot be pickled" if bad else "")
                            + f" ({_first_line(exc)}); events must hold plain values (numbers, text, lists, "
                            "dicts)") from exc
        self._record(event)
        self._channel.put(("event", event))

    def __call__(self, event: dict) -> None:
        self.emit(event)

    def set_progress(self, fraction: float, message: str | None = None) -> None:
        self._set_progress(fraction, message)
        self._channel.put(("progress", self.progress, message))

    @property
    def status(self) -> str:
        return "stopping" if self.stop_event.is_set() else "running"

    @property
    def active(self) -> bool:
        return True


def _friendly(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if "out of memory" in text.lower():
        return ("The GPU ran out of memory. Try a smaller batch size or a smaller model; "
                "everything saved so far is kept. (" + text.splitlines()[0] + ")")
    return text


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " — often the machine ran out of memory" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exit code {code}"


# --------------------------------------------------------------------------------------------- the worker process

def _adopt(meta: dict) -> None:
    """The app's settings as of the job's start (a warm spare was started earlier): its RESNET_LAB_* environment,
    working directory and import path."""
    import sys

    env = meta.get("env") or {}
    for key in [k for k in os.environ if k.startswith("RESNET_LAB_") and k not in env]:
        del os.environ[key]
    os.environ.update(env)
    if meta.get("sys_path"):
        sys.path[:] = meta["sys_path"]
    if meta.get("cwd"):
        try:
            os.chdir(meta["cwd"])
        except OSError:
            pass


def _worker_main(payload: bytes | None, meta: dict | None, channel, stop_event, parent_pid: int,
                 inbox=None) -> None:
    become_worker(parent_pid)  # Ctrl-C on the server: the app ends its workers itself; gone with the app
    if payload is None:  # a warm spare: pay for `import torch` now, then wait for a job (or None: exit)
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        import torch  # noqa: F401

        message = inbox.get()
        if message is None:
            return
        payload, meta = message
    _adopt(meta)
    # The thread count and the visible GPU are set before torch is imported (cold start: when the payload's
    # module is unpickled below) or, in a warm spare, before CUDA is initialised and any parallel work runs.
    threads = str(meta["threads"])
    os.environ.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, RESNET_LAB_OWNER=meta["owner"],
                      RESNET_LAB_OWNER_NAME=meta.get("owner_name") or "", RESNET_LAB_JOB=meta["id"])
    if meta.get("cuda_visible") is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = meta["cuda_visible"]
    try:
        execute(payload, meta, channel, stop_event)
    finally:
        channel.close()
        channel.join_thread()  # everything put above reaches the app before the process exits


def execute(payload: bytes, meta: dict, channel, stop_event) -> None:
    """Run one job's payload here and put its messages on ``channel`` (anything with ``put``): events and progress
    while it runs, then exactly one ``("result", status, blob)`` or ``("error", message, detail)``. Shared by the
    local worker process and a cluster node's task (``resnet_lab.jobs.cluster``)."""
    try:
        import torch

        torch.set_num_threads(meta["threads"])
        fn, kwargs = pickle.loads(payload)
        job = WorkerJob(meta, channel, stop_event)
        result = fn(job, **kwargs)
        try:
            blob = pickle.dumps(result)
        except Exception as exc:  # the work is done; only the return value cannot travel
            blob = pickle.dumps(None)
            channel.put(("event", {"type": "log", "message": f"result not sent back: {exc}"}))
        channel.put(("result", "stopped" if stop_event.is_set() else "done", blob))
    except BaseException as exc:  # a crashed job must report, not vanish
        # An error that already carries its details (a job that failed on a cluster node) keeps them.
        channel.put(("error", _friendly(exc), getattr(exc, "detail", None) or traceback.format_exc()))


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:200]


def _picklable(value) -> bool:
    try:
        pickle.dumps(value)
        return True
    except Exception:
        return False
