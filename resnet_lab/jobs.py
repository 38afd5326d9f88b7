"""Background jobs that outlive a Streamlit script run (training, LR test, experiments), each in its own process.

The contract for anyone adding a job::

    job = registry.start("my_kind", my_module.my_task, owner=owner, title="…", device="auto", epochs=3, source=src)

- ``fn`` is a **module-level function** of an importable module (not a lambda, closure or page-script function)
  and every keyword argument is picklable (plain values, dicts, dataclasses). ``start`` checks this at once and
  raises ``TypeError`` saying what could not be sent. Pass data *sources* (strings), not loaded datasets: the worker
  loads what it needs (the decoded cache makes that a fraction of a second).
- ``fn(job, **kwargs)`` runs in a fresh worker process (``spawn``). There ``job.emit(event)`` (also usable as a
  trainer callback, ``job(event)``), ``job.stop_event.is_set()`` and ``job.set_progress(fraction, message)`` work as
  before; its return value (picklable) becomes ``job.result`` in the app. An exception marks the job ``failed`` with
  the message in ``job.error``.
- In the app: ``job.events(type_, since)``, ``job.snapshot()``, ``job.stop()``, ``job.wait()``, ``job.status``
  (pending → running → done | stopped | failed | cancelled; "stopping" in between),
  ``registry.get/for_owner/active``,
  ``registry.position(job)`` (place in the queue while pending).

Why processes (docs/architecture.md has the long version): torch.fx tracing patches ``nn.Module.__call__``
process-wide, hooks, seeds, cudnn flags and the intra-op thread count are process-wide, and a polling UI shares the
GIL with a job in a thread. A worker process shares none of that; a crash or OOM kills one job, not the server;
Stop can always end it (cooperative flag first, terminate after a grace period); its GPU memory is returned when it
exits. Events come back through a ``multiprocessing`` queue read by one thread per job in the app process.

At most ``jobs_per_device`` jobs run at once per device (CPU: one pool; each GPU: its own); the rest wait FIFO.
Each worker gets ``max(1, cores // running jobs)`` intra-op threads, set before torch is imported.

Short page computations (an attribution map, the sanity check, the initialisation view, a first decode) run in
their own **quick lane** (``start(..., lane="quick")``): at most ``jobs_per_device`` of them at once, one thread
each, beside whatever trains, so a page never waits minutes behind a training for a few seconds of work.
:class:`SharedResults` computes each such result once per input for every session.
"""

from __future__ import annotations

import atexit
# Imported before _terminate_all is registered with atexit, on purpose: multiprocessing registers its own exit hook
# (join every non-daemon child) when multiprocessing.util is first imported, and atexit runs hooks last-in first-out.
# Imported lazily, its hook came later, ran first and waited forever on the warm spare (blocked on its inbox), so a
# script that used the runtime hung at exit; now our hook ends the spare and the jobs before that join.
import multiprocessing.util  # noqa: F401
import os
import pickle
import queue as queue_mod
import signal
import threading
import time
import traceback
import uuid
import weakref
from typing import Any, Callable

from resnet_lab.config import class_settings, cpu_cores
from resnet_lab.workers import become_worker, spawn_context, start_without_main

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
        channel.put(("error", _friendly(exc), traceback.format_exc()))
    finally:
        channel.close()
        channel.join_thread()  # everything put above reaches the app before the process exits


# --------------------------------------------------------------------------------------------- the app side

_REGISTRIES: "weakref.WeakSet[JobRegistry]" = weakref.WeakSet()


@atexit.register
def _terminate_all() -> None:
    for registry in list(_REGISTRIES):
        registry.shutdown()


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return 0


class JobRegistry:
    """Thread-safe registry and FIFO queue of jobs, shared by every browser session of one app process.

    ``jobs_per_device`` (default: the ``jobs_per_device`` setting, 1) jobs run at once on the CPU and on each GPU;
    ``threads`` fixes every worker's intra-op thread count (default: cores ÷ running jobs, at least 1);
    ``stop_grace_s`` is how long a stopped job may take before it is terminated.
    """

    def __init__(self, jobs_per_device: int | None = None, threads: int | None = None,
                 stop_grace_s: float | None = None, cores: int | None = None, warm: bool = False) -> None:
        settings = class_settings()
        self.jobs_per_device = int(jobs_per_device or settings["jobs_per_device"])
        self.stop_grace_s = float(stop_grace_s if stop_grace_s is not None else settings["stop_grace_s"])
        self.fixed_threads = threads or settings["job_threads"]
        self.cores = cores or cpu_cores()
        self._gpus: int | None = None
        self._jobs: dict[str, Job] = {}
        self._queue: list[Job] = []  # pending jobs, FIFO
        self._lock = threading.RLock()
        # warm=True keeps one spare worker that has already imported torch (seconds on a busy machine), so the
        # next job starts at once; the app uses it, tests and scripts need not.
        self.warm = warm
        self._spare: list = [None]
        weakref.finalize(self, _end_spare, self._spare)
        _REGISTRIES.add(self)

    # -- starting -------------------------------------------------------------
    def start(self, kind: str, fn: Callable[..., Any], owner: str = "default", title: str = "",
              device: str = "auto", owner_name: str = "", lane: str | None = None, **kwargs) -> Job:
        """Queue ``fn(job, **kwargs)`` to run in a worker process; returns at once (never waits for a slot).
        ``lane="quick"``: a short CPU computation for a page, queued apart from training (see the module doc)."""
        if lane not in (None, QUICK):
            raise ValueError(f"lane must be None or {QUICK!r}, not {lane!r}")
        payload = self._pack(fn, kwargs)
        job = Job(kind, owner, title, device=QUICK if lane == QUICK else self._pool(device))
        job._payload, job._registry, job.owner_name = payload, self, owner_name
        with self._lock:
            self._jobs[job.id] = job
            self._queue.append(job)
        self._schedule()
        return job

    @staticmethod
    def _pack(fn, kwargs: dict) -> bytes:
        name = getattr(fn, "__qualname__", repr(fn))
        if "<lambda>" in name or "<locals>" in name or getattr(fn, "__module__", None) in (None, "__main__"):
            raise TypeError(f"job function {name} must be a module-level function of an importable module: it runs "
                            "in a worker process, which imports it by name (lambdas, closures and functions defined "
                            "in a page script cannot be sent)")
        try:
            return pickle.dumps((fn, kwargs))
        except Exception as exc:
            bad = [k for k, v in kwargs.items() if not _picklable(v)]
            raise TypeError(f"job arguments must be picklable to reach the worker process; cannot send "
                            f"{', '.join(bad) or name} ({exc}). Pass plain values (e.g. a data source string, "
                            "a config dict), not loaded datasets, models or open files.") from exc

    def _pool(self, device: str | None) -> str:
        if device in (None, "", "auto"):
            if self._gpus is None:
                self._gpus = _gpu_count()
            return "cuda" if self._gpus else "cpu"
        return "cuda" if str(device).startswith("cuda") else "cpu"

    def _capacity(self, pool: str) -> int:
        if pool == "cuda":
            if self._gpus is None:
                self._gpus = _gpu_count()
            return self.jobs_per_device * max(self._gpus, 1)
        return self.jobs_per_device

    def _running(self, pool: str | None = None) -> list[Job]:
        return [j for j in self._jobs.values() if j._proc is not None and j.status in ("running", "stopping")
                and (pool is None or j.device == pool)]

    def _schedule(self) -> None:
        """Start queued jobs while their device has a free slot (FIFO per device)."""
        with self._lock:
            for job in list(self._queue):
                if job.status != "pending":
                    self._queue.remove(job)
                    continue
                if len(self._running(job.device)) < self._capacity(job.device):
                    self._queue.remove(job)
                    self._launch(job)

    def _launch(self, job: Job) -> None:
        # Quick-lane jobs take one thread and are not counted here: they last seconds, and a training that started
        # beside one would otherwise keep half the cores for its whole run.
        running = len([j for j in self._running() if j.device != QUICK]) + 1
        job.threads = 1 if job.device == QUICK else self.fixed_threads or max(1, self.cores // running)
        cuda_visible = None
        if job.device == "cuda":
            busy = [j._gpu for j in self._running("cuda")]
            gpu = min(range(max(self._gpus or 1, 1)), key=busy.count)
            job._gpu = gpu
            listed = os.environ.get("CUDA_VISIBLE_DEVICES")
            ids = [s for s in listed.split(",") if s.strip()] if listed else None
            cuda_visible = ids[gpu] if ids and gpu < len(ids) else str(gpu)
        import sys

        meta = {"id": job.id, "kind": job.kind, "owner": job.owner, "owner_name": getattr(job, "owner_name", ""),
                "title": job.title, "threads": job.threads, "cuda_visible": cuda_visible, "cwd": os.getcwd(),
                "env": {k: v for k, v in os.environ.items() if k.startswith("RESNET_LAB_")},
                "sys_path": list(sys.path)}
        spare = self._take_spare()
        if spare is not None:
            proc, inbox, channel, event = spare
            if job.stop_event.is_set():
                event.set()
            job.stop_event = event  # the spare's flag (it was handed to that process when it started)
            # Kept alive with the job: a queue's semaphores are unlinked when the object is collected, and a spare
            # still starting up would then fail to open them.
            job._inbox = inbox
        else:
            ctx = _mp()
            channel = ctx.Queue()
            proc = ctx.Process(target=_worker_main, args=(job._payload, meta, channel, job.stop_event, os.getpid()),
                               name=f"resnet_lab-{job.kind}-{job.id}", daemon=False)
        job._proc = proc
        with job._lock:
            job.status = "stopping" if job.stop_event.is_set() else "running"
            job.started = time.time()
        try:
            if spare is not None:
                inbox.put((job._payload, meta))
            else:
                start_without_main(proc)
        except Exception as exc:
            job._proc = None
            job._finish("failed", f"could not start a worker process: {exc}", traceback.format_exc())
            return
        self._make_spare()
        job.pid = proc.pid
        threading.Thread(target=self._pump, args=(job, channel), name=f"resnet_lab-pump-{job.id}",
                         daemon=True).start()

    def _take_spare(self):
        spare, self._spare[0] = self._spare[0], None
        if spare is not None and spare[0].is_alive():
            return spare
        return None

    def _make_spare(self) -> None:
        if not self.warm or self._spare[0] is not None:
            return
        ctx = _mp()
        inbox, channel, event = ctx.Queue(), ctx.Queue(), ctx.Event()
        proc = ctx.Process(target=_worker_main, args=(None, None, channel, event, os.getpid(), inbox),
                           name="resnet_lab-spare", daemon=False)
        try:
            start_without_main(proc)
        except Exception:
            return  # no spare: the next job starts cold
        self._spare[0] = (proc, inbox, channel, event)

    def prewarm(self) -> None:
        """Start the warm spare now (the app calls this once), so even the first job starts without waiting."""
        with self._lock:
            self._make_spare()

    # -- one thread per running job: messages in, grace period, exit ------------------------------------------
    def _pump(self, job: Job, channel) -> None:
        proc = job._proc
        final = None
        while final is None:
            try:
                msg = channel.get(timeout=0.25)
            except (EOFError, OSError):  # the pipe broke: the worker is gone
                final = ("crashed",)
                continue
            except queue_mod.Empty:
                if not proc.is_alive():
                    final = self._drain(job, channel) or ("crashed",)
                else:
                    self._enforce_grace(job)
                continue
            final = self._handle(job, msg)
        proc.join(KILL_AFTER_TERMINATE_S)
        if proc.is_alive():
            proc.kill()
            proc.join()
        job.exitcode = proc.exitcode
        self._conclude(job, final)
        try:
            channel.close()
        except Exception:
            pass
        job._payload = b""
        self._schedule()

    def _drain(self, job: Job, channel):
        while True:
            try:
                msg = channel.get(timeout=0.2)
            except (queue_mod.Empty, EOFError, OSError):
                return None
            final = self._handle(job, msg)
            if final is not None:
                return final

    @staticmethod
    def _handle(job: Job, msg):
        kind = msg[0]
        if kind == "event":
            job.emit(msg[1])
        elif kind == "progress":
            job.set_progress(msg[1], msg[2])
        elif kind in ("result", "error"):
            return msg
        return None

    def _enforce_grace(self, job: Job) -> None:
        asked = job._stop_requested
        if asked is not None and time.time() - asked > self.stop_grace_s and job._proc.is_alive():
            job._proc.terminate()
            job._stop_requested = float("inf")  # once

    def _conclude(self, job: Job, final) -> None:
        if final[0] == "result":
            try:
                job.result = pickle.loads(final[2])
            except Exception as exc:  # e.g. a class the app cannot import
                job.emit({"type": "log", "message": f"result could not be read: {exc}"})
            job._finish(final[1])
        elif final[0] == "error":
            job._finish("failed", final[1], final[2])
        elif job._stop_requested is not None:
            job._finish("stopped", None)
            job.message = f"ended by Stop (terminated after {self.stop_grace_s:g} s)"
        else:
            job._finish("failed", f"the job's worker process ended unexpectedly ({_exit_reason(job.exitcode)}); "
                                  "what it had saved (e.g. the run's history and last checkpoint) is kept")

    def _stop(self, job: Job) -> None:
        with self._lock:
            if job.status == "pending":
                if job in self._queue:
                    self._queue.remove(job)
                job._finish("cancelled")
                job.message = "cancelled while waiting in the queue"
                return
            with job._lock:
                if job.status == "running":
                    job.status = "stopping"
            if job._stop_requested is None and job.status == "stopping":
                job._stop_requested = time.time()

    # -- reading ----------------------------------------------------------------
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

    def position(self, job: Job) -> int | None:
        """1-based place of a pending job among the jobs waiting for the same device; None once it runs."""
        with self._lock:
            waiting = [j for j in self._queue if j.device == job.device and j.status == "pending"]
            return waiting.index(job) + 1 if job in waiting else None

    def wait_estimate(self, job: Job) -> float | None:
        """Seconds until a pending job should start: the running jobs' own ETAs (from their events) plus, for each
        job ahead in the queue, the mean duration of finished jobs of its kind. None when nothing is known yet."""
        pos = self.position(job)
        if pos is None:
            return None
        with self._lock:
            running = self._running(job.device)
            ahead = [j for j in self._queue if j.device == job.device and j.status == "pending"][: pos - 1]
            finished = [j for j in self._jobs.values() if j.status == "done" and j.started and j.finished]
        etas = []
        for j in running:
            recent = j.events(since=max(0, j.n_events - 50))
            last = next((e for e in reversed(recent) if isinstance(e.get("eta_s"), (int, float))), None)
            if last is not None:
                etas.append(float(last["eta_s"]))
            elif j.progress > 0.02 and j.started:  # no ETA in its events: extrapolate its progress
                elapsed = time.time() - j.started
                etas.append(elapsed * (1 - j.progress) / j.progress)
            else:
                return None
        for j in ahead:
            same = [f.finished - f.started for f in finished if f.kind == j.kind]
            if not same:
                return None
            etas.append(sum(same) / len(same))
        slots = self._capacity(job.device)
        return sum(etas) / max(slots, 1) if etas else 0.0

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop every job now (the app is exiting): queued ones are cancelled, running ones terminated."""
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            if job.status == "pending":
                self._stop(job)
            proc = job._proc
            if proc is not None and proc.is_alive():
                job.stop_event.set()
                job._stop_requested = job._stop_requested or time.time()
                proc.terminate()
        _end_spare(self._spare)
        for job in jobs:
            if job._proc is not None:
                job._proc.join(timeout)


def _end_spare(box: list) -> None:
    spare, box[0] = box[0], None
    if spare is not None and spare[0].is_alive():
        try:
            spare[1].put(None)  # asks it to exit
            spare[0].join(2.0)
        except Exception:
            pass
        if spare[0].is_alive():
            spare[0].terminate()


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:200]


def _picklable(value) -> bool:
    try:
        pickle.dumps(value)
        return True
    except Exception:
        return False


class SharedResults:
    """Results of short page computations, each computed once per input in a quick-lane job and shared by every
    session of the app process (the app keeps one; see ``app/lab_ui.computed``).

    ``get(kind, fn, owner=…, **kwargs)`` returns ``(result, None)`` when the result is known, else ``(None, job)``:
    the job computing it — started by this call, or the one another session started for the same input, so two
    students on the same image share one computation. A failed, stopped or cancelled job stays the answer until
    ``retry`` forgets it (a page shows the error and a button, instead of starting the same failing job on every
    rerun). At most ``max_entries`` results are kept, least recently used dropped first.

    Hand-written rather than st.cache_data: Streamlit's caches run the function in the script thread that asked
    (the work this class exists to keep out of it), and any browser can clear them for the whole server.
    """

    def __init__(self, registry: JobRegistry, max_entries: int = 128) -> None:
        from collections import OrderedDict

        self.registry = registry
        self.max_entries = max_entries
        self._results: "OrderedDict[str, Any]" = OrderedDict()
        self._jobs: dict[str, str] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(kind: str, fn: Callable[..., Any], kwargs: dict, identity: Any = None) -> str:
        """One input's identity: the kind, the function's name, the pickled arguments (sorted by name) and
        ``identity`` (what the arguments do not show, e.g. the checkpoint's modification time)."""
        import hashlib

        name = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"
        blob = pickle.dumps((kind, name, sorted(kwargs.items()), identity), protocol=4)
        return hashlib.sha256(blob).hexdigest()[:32]

    def get(self, kind: str, fn: Callable[..., Any], owner: str = "default", title: str = "", owner_name: str = "",
            identity: Any = None, **kwargs) -> tuple[Any, Job | None]:
        key = self.key(kind, fn, kwargs, identity)
        with self._lock:
            if key in self._results:
                self._results.move_to_end(key)
                return self._results[key], None
            job = self.registry.get(self._jobs.get(key))
            if job is not None and job.status == "done":
                del self._jobs[key]
                self._keep(key, job.result)
                return job.result, None
            if job is None:
                job = self.registry.start(kind, fn, owner=owner, title=title, owner_name=owner_name, lane=QUICK,
                                          **kwargs)
                job.shared_key = key
                self._jobs[key] = job.id
            return None, job

    def retry(self, job: Job) -> None:
        """Forget ``job`` (failed, stopped or cancelled): the next ``get`` for its input starts a new one."""
        with self._lock:
            key = getattr(job, "shared_key", None)
            if key is not None and self._jobs.get(key) == job.id and not job.active:
                del self._jobs[key]

    def forget(self, kind: str, fn: Callable[..., Any], **kwargs) -> None:
        """Drop the stored result for this input (e.g. an error answer that a fixed input should not keep)."""
        key = self.key(kind, fn, kwargs)
        with self._lock:
            self._results.pop(key, None)

    def known(self, kind: str, fn: Callable[..., Any], **kwargs) -> bool:
        """True when the result for this input is already computed (nothing is started)."""
        key = self.key(kind, fn, kwargs)
        with self._lock:
            if key in self._results:
                return True
            job = self.registry.get(self._jobs.get(key))
            return job is not None and job.status == "done"

    def _keep(self, key: str, result: Any) -> None:
        self._results[key] = result
        while len(self._results) > self.max_entries:
            self._results.popitem(last=False)
