"""Background jobs that outlive a Streamlit script run (training, LR test, experiments).

A job is a plain object: a worker thread, a stop flag, a progress fraction, the events it emitted, its
result or error. It never touches the UI; the app keeps one ``JobRegistry`` (in ``st.cache_resource``) and
polls jobs from a fragment, so widget clicks, reruns and page switches neither kill nor restart them.
"""

from __future__ import annotations

import threading
import time
import traceback
import uuid
from typing import Any, Callable

ACTIVE = ("pending", "running", "stopping")
MAX_EVENTS = 20000  # batch events of a long run; older batch events are dropped first


class Job:
    def __init__(self, kind: str, owner: str, title: str = "") -> None:
        self.id = uuid.uuid4().hex[:12]
        self.kind = kind
        self.owner = owner
        self.title = title or kind
        self.status = "pending"
        self.progress = 0.0
        self.message = ""
        self.result: Any = None
        self.error: str | None = None
        self.error_detail: str | None = None
        self.created = time.time()
        self.finished: float | None = None
        self.stop_event = threading.Event()
        self._events: list[dict] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # -- used by the worker -------------------------------------------------
    def emit(self, event: dict) -> None:
        """Record one event; usable directly as a trainer/LR-finder callback."""
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

    def __call__(self, event: dict) -> None:
        self.emit(event)

    def set_progress(self, fraction: float, message: str | None = None) -> None:
        with self._lock:
            self.progress = max(0.0, min(1.0, float(fraction)))
            if message is not None:
                self.message = message

    # -- used by the UI -----------------------------------------------------
    def stop(self) -> None:
        self.stop_event.set()
        with self._lock:
            if self.status in ("pending", "running"):
                self.status = "stopping"

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def events(self, type_: str | None = None, since: int = 0) -> list[dict]:
        with self._lock:
            evs = list(self._events[since:])
        return [e for e in evs if type_ is None or e.get("type") == type_]

    def snapshot(self) -> dict:
        with self._lock:
            return {"id": self.id, "kind": self.kind, "title": self.title, "status": self.status,
                    "progress": self.progress, "message": self.message, "error": self.error,
                    "created": self.created, "finished": self.finished, "n_events": len(self._events)}

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the worker ends (tests, CLI). True if it ended."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.active

    # -- internals ------------------------------------------------------------
    def _run(self, fn: Callable[["Job"], Any]) -> None:
        with self._lock:
            if self.status == "pending":
                self.status = "running"
        try:
            result = fn(self)
            with self._lock:
                self.result = result
                self.status = "stopped" if self.stop_event.is_set() else "done"
                if self.status == "done":
                    self.progress = 1.0
        except BaseException as exc:  # a crashed job must report, not vanish
            with self._lock:
                self.error = _friendly(exc)
                self.error_detail = traceback.format_exc()
                self.status = "failed"
        finally:
            self.finished = time.time()
            _release_gpu_memory()


def _friendly(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if "out of memory" in text.lower():
        return ("The GPU ran out of memory. Try a smaller batch size or a smaller model; "
                "everything saved so far is kept. (" + text.splitlines()[0] + ")")
    return text


def _release_gpu_memory() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:
        pass


class JobRegistry:
    """Thread-safe registry of jobs, shared by every browser session of one app process."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def start(self, kind: str, fn: Callable[[Job], Any], owner: str = "default", title: str = "") -> Job:
        job = Job(kind, owner, title)
        thread = threading.Thread(target=job._run, args=(fn,), name=f"resnet_lab-{kind}-{job.id}", daemon=True)
        job._thread = thread
        with self._lock:
            self._jobs[job.id] = job
        thread.start()
        return job

    def get(self, job_id: str | None) -> Job | None:
        if not job_id:
            return None
        with self._lock:
            return self._jobs.get(job_id)

    def for_owner(self, owner: str, kind: str | None = None) -> list[Job]:
        with self._lock:
            jobs = [j for j in self._jobs.values() if j.owner == owner and (kind is None or j.kind == kind)]
        return sorted(jobs, key=lambda j: j.created, reverse=True)

    def active(self, owner: str, kind: str | None = None) -> Job | None:
        for job in self.for_owner(owner, kind):
            if job.active:
                return job
        return None

    def all(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.created, reverse=True)
