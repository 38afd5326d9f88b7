"""``JobRegistry``: starts jobs in worker processes, one FIFO pool per device (and the quick lane), with a deliberate
thread budget per worker, a warm spare process, stop and terminate, and the end of every worker when the app exits.
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
import threading
import time
import traceback
import weakref
from typing import Any, Callable

from resnet_lab.config import class_settings, cpu_cores
from resnet_lab.jobs import cluster
from resnet_lab.jobs.job import _exit_reason, _mp, _picklable, _worker_main, Job, KILL_AFTER_TERMINATE_S, QUICK
from resnet_lab.workers import start_without_main

# --------------------------------------------------------------------------------------------- the app side

_REGISTRIES: "weakref.WeakSet[JobRegistry]" = weakref.WeakSet()
PROBE_RETRY_S = 30.0  # a failed probe of the Ray cluster is tried again at most this often


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
                 stop_grace_s: float | None = None, cores: int | None = None, warm: bool = False,
                 cluster: str | None = None) -> None:
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
        # ray_address set: jobs other than the quick lane run on that Ray cluster (resnet_lab.jobs.cluster); the
        # queue stays here, sized by the cluster's resources once a probe (or a job's driver) has reported them.
        self.cluster = cluster or settings.get("ray_address")
        self._cluster_totals: dict | None = None
        self._probe: Job | None = None
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
        if device in (None, "", "auto") and self.cluster:
            totals = self.cluster_resources(wait_s=10.0)  # the app asked at start (prewarm): normally known
            return "cuda" if (totals or {}).get("GPU") else "cpu"
        if device in (None, "", "auto"):
            if self._gpus is None:
                self._gpus = _gpu_count()
            return "cuda" if self._gpus else "cpu"
        return "cuda" if str(device).startswith("cuda") else "cpu"

    def _capacity(self, pool: str) -> int:
        if self.cluster and pool != QUICK:
            known = cluster.slots(self._cluster_totals, pool, self._cluster_threads(), self.jobs_per_device)
            return 1 if known is None else max(known, 1)  # none of that kind: the job's driver says so and fails
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

    def _cluster_threads(self) -> int:
        return int(self.fixed_threads or 1)

    def cluster_resources(self, wait_s: float = 0.0) -> dict | None:
        """The Ray cluster's total CPUs and GPUs (None: no cluster, or not known yet). The first call starts a quick
        probe job; ``wait_s`` waits for it."""
        if not self.cluster:
            return None
        with self._lock:
            probe = self._probe
            retry = probe is None or (probe.status != "done" and not probe.active
                                      and time.time() - (probe.finished or 0) > PROBE_RETRY_S)
            if self._cluster_totals is None and retry:
                self._probe = self.start("cluster-probe", cluster.probe, title="Ray cluster resources",
                                         lane=QUICK, address=self.cluster)
        probe = self._probe
        if self._cluster_totals is None and probe is not None and wait_s > 0:
            probe.wait(wait_s)
            if probe.status == "done" and isinstance(probe.result, dict):
                self._cluster_totals = probe.result
        return self._cluster_totals

    def cluster_problem(self) -> str | None:
        """Why the cluster's resources are not known (its probe failed: e.g. no Ray head at the address), or None."""
        probe = self._probe
        if self._cluster_totals is None and probe is not None and probe.status == "failed":
            return probe.error
        return None

    def _cluster_payload(self, job: Job, meta: dict) -> tuple[bytes, dict]:
        """A cluster job: the local worker becomes its Ray driver (one thread), the job itself runs on a node."""
        # On the node the job is an ordinary job: without the setting, nothing it starts goes to the cluster again.
        env = {k: v for k, v in meta["env"].items() if k != "RESNET_LAB_RAY_ADDRESS"}
        node_meta = dict(meta, threads=self._cluster_threads(), cuda_visible=None, sys_path=None, cwd=None, env=env)
        need = cluster.resources_needed(job.device, node_meta["threads"], self.jobs_per_device)
        payload = pickle.dumps((cluster.run_on_cluster, {"address": self.cluster, "payload": job._payload,
                                                         "meta": node_meta, "need": need,
                                                         "grace_s": self.stop_grace_s}))
        return payload, dict(meta, threads=1)

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
        payload = job._payload
        if self.cluster and job.device != QUICK:
            payload, meta = self._cluster_payload(job, meta)
            job.threads = self._cluster_threads()
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
            proc = ctx.Process(target=_worker_main, args=(payload, meta, channel, job.stop_event, os.getpid()),
                               name=f"resnet_lab-{job.kind}-{job.id}", daemon=False)
        job._proc = proc
        with job._lock:
            job.status = "stopping" if job.stop_event.is_set() else "running"
            job.started = time.time()
        try:
            if spare is not None:
                inbox.put((payload, meta))
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
        """Start the warm spare now (the app calls this once), so even the first job starts without waiting; with
        a Ray cluster, also ask it for its resources."""
        with self._lock:
            self._make_spare()
        self.cluster_resources()

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

    def _handle(self, job: Job, msg):
        kind = msg[0]
        if kind == "event":
            event = msg[1]
            if isinstance(event, dict) and event.get("type") == "cluster" and isinstance(event.get("resources"), dict):
                self._cluster_totals = event["resources"]  # a driver's fresh view (a node may have joined or left)
            job.emit(event)
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
            if job is self._probe and isinstance(job.result, dict):
                self._cluster_totals = job.result
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
