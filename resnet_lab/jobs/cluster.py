"""Jobs on a Ray cluster: the job runtime's second backend, chosen by the ``ray_address`` setting
(``RESNET_LAB_RAY_ADDRESS``: ``auto`` or the head's ``host:port``). Unset, nothing here is imported and
no Ray process starts.

How a job travels (the app never links Ray itself):

- The app's registry keeps its own fair queue, exactly as with local workers. When the cluster has room it starts
  the usual local worker process, whose payload is :func:`run_on_cluster`: that process is the job's Ray *driver*.
  A crash of Ray's client code (a head that went away) ends that one process, not the app; the next job's driver
  connects to whatever head is there then.
- The driver submits :func:`_node_job` as a Ray task sized by what the job needs (``num_cpus`` = its threads, plus
  ``num_gpus=1`` for a GPU job), with ``max_retries=0`` (a job is never silently run twice) and ``max_calls=1`` (a
  fresh process per job, for the reasons the local runtime uses processes: torch.fx patches, hooks, seeds and
  thread counts are process-wide). Ray places it on a node with a free device.
- The task is a Ray *streaming generator*: it yields the node it runs on, then every event/progress message of
  the job as it happens (the same messages a local worker puts on its queue), the run folder's changed files after
  the ``start``, each ``epoch`` and the end, and finally the result or the error. The driver relays the messages
  into the app, writes the files atomically into the app's runs store and rewrites node-side paths to app-side
  ones, so a page cannot tell the job ran elsewhere (except for the ``node`` event that says where).
- Inputs that are files on the app machine (the data archive, a student's model file) travel through Ray's object
  store: the app's one detached *service* actor keeps each file's bytes once per file version, and each node keeps
  a copy in its temp folder, so a file crosses the network at most once per node. A node that can already read the
  same file (a shared file system) uses it in place.
- Stop: the driver raises the job's flag in the service actor, which the task polls and turns into the usual
  cooperative ``stop_event``; if the job has not ended near the end of the grace period, the driver cancels the
  task (``ray.cancel(force=True)``) and the job ends as stopped. Should the driver itself hang, the app terminates
  it, and Ray ends the task with its owner (fate-sharing).
- A node lost mid-job: the driver's next read fails; the job fails with the node named, and what the run had sent
  (config, history, the last shipped checkpoint) stays in the store, its status.json saying ``failed``.

Hand-written glue, not a Ray library: Ray Jobs/Serve/Tune each bring their own queue and UI, while the app must
keep its per-student fair queue, its Stop and its event stream; the parts Ray does well (placement by resources,
the object store, streaming results, cancel with fate-sharing) are Ray's.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import queue as queue_mod
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from resnet_lab.config import runs_dir
from resnet_lab.jobs.job import execute
from resnet_lab.runs import RunStore
from resnet_lab.runs.files import atomic_write, atomic_write_json

NAMESPACE = "resnet_lab"
SERVICE = "resnet_lab-service"
SHIP_ON = ("start", "epoch", "end")   # after these events the run folder's changed files travel to the app
POLL_S = 0.5                          # how often a task asks whether it was stopped
MAX_INPUT_BYTES = 2 << 30             # a file argument larger than this is not shipped (a node must read it itself)
KEEP_FILES = 16                       # input file versions the service keeps (a data archive, students' model files)
PACKAGE = Path(__file__).resolve().parents[1]


class RemoteJobError(RuntimeError):
    """A job that failed on a cluster node: its message, and ``detail`` (the node's traceback)."""

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail


def resources_needed(device: str, threads: int, jobs_per_device: int = 1) -> dict:
    """Ray resources of one job: its CPU threads, and a GPU share on the ``cuda`` pool."""
    return {"num_cpus": max(1, int(threads)), "num_gpus": (1.0 / max(1, jobs_per_device)) if device == "cuda" else 0}


def slots(totals: dict | None, pool: str, threads: int, jobs_per_device: int = 1) -> int | None:
    """How many jobs of ``pool`` the cluster runs at once (None: not known yet). GPU jobs take one CPU each too, so
    CPU jobs get what is left after one CPU per GPU.

    From the cluster's *total* resources, not ``ray.available_resources()``: the app's own running jobs are what
    uses them (a cluster for the class), and the available view lags a submission by up to a second, so a queue
    sized by it would send two jobs for one free GPU and show a student "running" while Ray still holds the task."""
    if totals is None:
        return None
    gpus = int(totals.get("GPU", 0))
    if pool == "cuda":
        return gpus * max(1, jobs_per_device)
    return max(0, int((totals.get("CPU", 0) - gpus) // max(1, threads)))


# ----------------------------------------------------------------------------------------- the service actor

class _Service:
    """One per cluster (named, detached): the bytes of each input file, once per file version, and the stop flags.
    Lives in the object store's world, so data put here outlives the driver that sent it."""

    def __init__(self) -> None:
        self._files: dict[str, bytes] = {}
        self._stopped: dict[str, float] = {}

    def has(self, key: str) -> bool:
        return key in self._files

    def put(self, key: str, blob: bytes) -> int:
        self._files[key] = blob
        while len(self._files) > KEEP_FILES:  # older versions of edited files go first (dicts keep insertion order)
            del self._files[next(iter(self._files))]
        return len(blob)

    def get(self, key: str) -> bytes:
        return self._files[key]

    def stop(self, job_id: str) -> None:
        self._stopped[job_id] = time.time()
        cutoff = time.time() - 86400  # old flags go; a job id is never reused
        self._stopped = {k: v for k, v in self._stopped.items() if v > cutoff}

    def stopped(self, job_id: str) -> bool:
        return job_id in self._stopped


def _service(ray):
    # On the head node: it lives as long as the cluster does, and a worker node that dies takes no one's data or
    # stop flags with it.
    actor = ray.remote(num_cpus=0, max_restarts=0, resources={"node:__internal_head__": 0.001})(_Service)
    return actor.options(name=SERVICE, namespace=NAMESPACE, lifetime="detached", get_if_exists=True).remote()


# ----------------------------------------------------------------------------------------- paths and files

def _file_key(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:24]


def _strings(obj: Any):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _strings(v)


def input_files(kwargs: dict, env: dict) -> list[str]:
    """The files on this machine a job's arguments name (a data archive, ``file.py`` of ``file.py:Class``) and the
    data settings: what must travel with it to a node that cannot read them."""
    found = []
    names = list(_strings(kwargs)) + [env.get(k, "") for k in ("RESNET_LAB_LOCK_DATA", "RESNET_LAB_DATA")]
    for text in names:
        for candidate in (text, text.rsplit(":", 1)[0] if ":" in text else None):
            if not candidate or len(candidate) > 4096 or candidate in found:
                continue
            try:
                path = Path(candidate)
                if path.is_file() and path.stat().st_size <= MAX_INPUT_BYTES:
                    found.append(candidate)
            except (OSError, ValueError):
                continue
    return found


def input_runs(fn, kwargs: dict) -> dict[str, dict[str, bytes]]:
    """The run folders a job reads from the app's store (``run_id`` / ``run_ids``, as arguments or in a
    ``functools.partial``, e.g. the loss landscape's), file by file: they travel to the node with the job."""
    given = {**(getattr(fn, "keywords", None) or {}), **kwargs}
    ids = given.get("run_ids") or ([given["run_id"]] if given.get("run_id") else [])
    out = {}
    store = RunStore()
    for run_id in ids if isinstance(ids, (list, tuple)) else []:
        try:
            run = store.get(str(run_id))
        except Exception:  # the job itself says what is wrong with the run, on the node
            continue
        if run is not None and run.path.is_dir():
            out[run.id] = {p.relative_to(run.path).as_posix(): p.read_bytes()
                           for p in sorted(run.path.rglob("*")) if p.is_file() and not p.name.startswith(".")}
    return out


def remap(obj: Any, mapping: dict[str, str]) -> Any:
    """``obj`` with every string that is a key of ``mapping``, or starts with one followed by ``/`` or ``:``,
    rewritten (dicts, lists, tuples, Paths and objects' attributes, in place for objects)."""
    if not mapping:
        return obj
    if isinstance(obj, str):
        for old, new in mapping.items():
            if obj == old:
                return new
            if obj.startswith(old) and obj[len(old)] in "/:":
                return new + obj[len(old):]
        return obj
    if isinstance(obj, Path):
        moved = remap(str(obj), mapping)
        return Path(moved) if moved != str(obj) else obj
    if isinstance(obj, dict):
        return {k: remap(v, mapping) for k, v in obj.items()}
    if isinstance(obj, list):
        return [remap(v, mapping) for v in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(remap(v, mapping) for v in obj)
    if hasattr(obj, "__dict__") and not isinstance(obj, type) and type(obj).__module__.startswith("resnet_lab"):
        for name, value in vars(obj).items():  # our result objects (a Run): their paths name the node's folder
            moved = remap(value, mapping)
            if moved is not value:
                setattr(obj, name, moved)
    return obj


class _Snapshot:
    """The files of a folder that changed since the last call (size or modification time)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._seen: dict[str, tuple[int, int]] = {}

    def changed(self) -> dict[str, bytes]:
        out = {}
        if not self.root.is_dir():
            return out
        for path in sorted(self.root.rglob("*")):
            if not path.is_file() or path.name.startswith("."):  # .tmp files of an atomic write in progress
                continue
            rel = path.relative_to(self.root).as_posix()
            try:
                st = path.stat()
                sig = (st.st_size, st.st_mtime_ns)
                if self._seen.get(rel) != sig:
                    out[rel] = path.read_bytes()
                    self._seen[rel] = sig
            except OSError:
                continue  # removed while we looked: the next call sees its successor
        return out


# ----------------------------------------------------------------------------------------- on the node

class _Channel:
    def __init__(self) -> None:
        self.queue: queue_mod.Queue = queue_mod.Queue()

    def put(self, message) -> None:
        self.queue.put(message)


def _materialise(files: dict[str, dict], service, ray) -> dict[str, str]:
    """For each input file of the app (path -> key, size), a path this node can read: the same path if it holds
    the same bytes (a shared file system), else a copy in the node's temp folder, fetched once per node."""
    mapping = {}
    for app_path, info in files.items():
        here = Path(app_path)
        try:
            if here.is_file() and here.stat().st_size == info["size"]:
                continue
        except OSError:
            pass
        local = Path(tempfile.gettempdir()) / "resnet_lab-inputs" / info["key"] / here.name
        if not local.is_file():
            blob = ray.get(service.get.remote(info["key"]))
            atomic_write(local, lambda fh, b=blob: fh.write(b))
        mapping[app_path] = str(local)
    return mapping


def _node_job(payload: bytes, meta: dict, files: dict, service, runs_in: dict | None = None):
    """The Ray task (a streaming generator) that runs one job on a cluster node; see the module doc."""
    import ray

    work = Path(tempfile.mkdtemp(prefix="resnet_lab-job-"))
    node_runs = work / "runs"
    node_runs.mkdir()
    ctx = ray.get_runtime_context()
    yield ("node", {"node_id": ctx.get_node_id(), "ip": ray.util.get_node_ip_address(),
                    "host": os.uname().nodename, "pid": os.getpid(), "runs": str(node_runs)})
    try:
        mapping = _materialise(files, service, ray)
        env = remap(dict(meta.get("env") or {}), mapping)
        env["RESNET_LAB_RUNS"] = str(node_runs)  # runs are written here, then travel to the app's store
        cache = env.get("RESNET_LAB_CACHE")
        if not cache or not os.access(cache, os.W_OK):
            env["RESNET_LAB_CACHE"] = str(Path(tempfile.gettempdir()) / "resnet_lab-cache")
        for key in [k for k in os.environ if k.startswith("RESNET_LAB_")]:
            del os.environ[key]
        threads = str(meta["threads"])
        os.environ.update(env, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, RESNET_LAB_OWNER=meta["owner"],
                          RESNET_LAB_OWNER_NAME=meta.get("owner_name") or "", RESNET_LAB_JOB=meta["id"])
        fn, kwargs = pickle.loads(payload)
        payload = pickle.dumps((fn, remap(kwargs, mapping)))
        for run_id, run_files in (runs_in or {}).items():  # the runs it reads, as regular runs of the node's store
            for rel, blob in run_files.items():
                atomic_write(node_runs / run_id / rel, lambda fh, b=blob: fh.write(b))
        snapshot = _Snapshot(node_runs)
        snapshot.changed()  # what arrived is not sent back unless the job changes it
        channel, stop = _Channel(), threading.Event()
        worker = threading.Thread(target=execute, args=(payload, meta, channel, stop), daemon=True,
                                  name="resnet_lab-node-job")
        worker.start()
        final, asked = None, 0.0
        while final is None:
            if not stop.is_set() and time.time() - asked > POLL_S:
                asked = time.time()
                try:
                    if ray.get(service.stopped.remote(meta["id"]), timeout=10):
                        stop.set()
                except ray.exceptions.RayError:
                    pass  # asked again next time; the app can still end the job (terminate after the grace period)
            try:
                message = channel.queue.get(timeout=0.1)
            except queue_mod.Empty:
                continue
            if message[0] in ("result", "error"):
                final = message
                continue
            yield message
            if message[0] == "event" and isinstance(message[1], dict) and message[1].get("type") in SHIP_ON:
                changed = snapshot.changed()
                if changed:
                    yield ("files", changed)
        worker.join(5.0)
        changed = snapshot.changed()
        if changed:
            yield ("files", changed)
        yield final
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ----------------------------------------------------------------------------------------- the driver (app side)

def _check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Fail fast when nothing listens at ``host:port``: ray.init would wait for minutes for a head that is not
    there. ``auto`` (a cluster started on this machine) is Ray's own check, which fails at once."""
    import socket

    if address == "auto":
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        # The address is not in the message: students see it, and a Ray head takes code from anyone who reaches it.
        raise RemoteJobError(f"no Ray head answers at the address in the ray_address setting "
                             f"({exc.strerror or type(exc).__name__}); start it with `ray start --head`, or fix "
                             "the setting") from None


def _connect(address: str):
    import ray

    if not ray.is_initialized():
        _check_reachable(address)
        # The package travels with the job (py_modules), so every node runs the app's version of the code; the
        # nodes need the same third-party packages (requirements.txt) installed.
        ray.init(address=address, namespace=NAMESPACE, logging_level=logging.ERROR, log_to_driver=False,
                 runtime_env={"py_modules": [str(PACKAGE)]})
    return ray


def probe(job, address: str) -> dict:
    """A quick job: the cluster's total resources (``{"CPU": 16.0, "GPU": 4.0, ...}``), for the app's queue."""
    ray = _connect(address)
    return {k: float(v) for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}


def _node_name(node: dict | None) -> str:
    if not node:
        return "the cluster node it was placed on"
    return f"cluster node {node['host']} (node id {node['node_id'][:8]})"


def _ship(files: dict[str, bytes], root: Path, shipped: set[str]) -> None:
    for rel, blob in files.items():
        target = (root / rel).resolve()
        if root.resolve() not in target.parents:
            continue  # a name that climbs out of the runs folder is not written
        atomic_write(target, lambda fh, b=blob: fh.write(b))
        parts = Path(rel).parts
        if len(parts) > 1:
            shipped.add(parts[0])


def _mark_failed(root: Path, run_ids: set[str], message: str) -> None:
    """The shipped runs whose status.json still says running: failed, with why (the node is gone)."""
    import json

    for run_id in run_ids:
        path = root / run_id / "status.json"
        try:
            status = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(status, dict) and status.get("status") == "running":
            status.update(status="failed", error=message, updated=time.time())
            atomic_write_json(path, status)


def run_on_cluster(job, address: str, payload: bytes, meta: dict, need: dict, grace_s: float = 30.0):
    """The payload of a cluster job's local worker process: submit the job to Ray, relay what it sends, return its
    result (or raise its error). ``meta``: what the node's worker needs (id, owner, threads, RESNET_LAB_* env).
    ``grace_s``: after Stop, how long the job may take before its task is cancelled (``ray.cancel(force=True)``,
    a little before the app would end this driver, which would end the task too)."""
    ray = _connect(address)
    totals = {k: float(v) for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}
    job.emit({"type": "cluster", "resources": totals})
    if need.get("num_gpus") and not totals.get("GPU"):
        raise RemoteJobError("the Ray cluster has no GPU; start the job on the CPU, or add a GPU node")
    service = _service(ray)
    fn, kwargs = pickle.loads(payload)
    files = {}
    for name in input_files(kwargs, meta.get("env") or {}):
        path = Path(name)
        key = _file_key(path)
        if not ray.get(service.has.remote(key)):
            ray.get(service.put.remote(key, path.read_bytes()))
        files[name] = {"key": key, "size": path.stat().st_size}
    task = ray.remote(max_calls=1)(_node_job).options(num_returns="streaming", max_retries=0,
                                                      name=f"resnet_lab-{meta['kind']}-{meta['id']}", **need)
    stream = task.remote(payload, meta, files, service, input_runs(fn, kwargs))
    root = runs_dir()
    node, mapping, shipped, stop_sent, cancelled = None, {}, set(), None, False
    while True:
        if job.stop_event.is_set() and stop_sent is None:
            service.stop.remote(meta["id"])
            stop_sent = time.time()
        if stop_sent is not None and not cancelled and time.time() - stop_sent > 0.8 * grace_s:
            ray.cancel(stream, force=True)  # it ignored the flag (e.g. stuck in a long call): end its process
            cancelled = True
        try:
            ready, _ = ray.wait([stream], timeout=0.25)
            if not ready:
                continue
            message = ray.get(next(stream))
        except StopIteration:
            raise RemoteJobError(f"the job on {_node_name(node)} ended without a result") from None
        except ray.exceptions.RayError as exc:
            if cancelled:
                job.emit({"type": "log", "message": f"ended by Stop (cancelled after {0.8 * grace_s:g} s)"})
                return None  # stopped; what the run had sent is kept
            why = (f"{_node_name(node)} was lost while it ran the job, or its worker process died "
                   f"({type(exc).__name__}); what the job had sent — its run's history and last checkpoint — is "
                   "kept")
            _mark_failed(root, shipped, why)
            raise RemoteJobError(why, str(exc)[:4000]) from None
        kind = message[0]
        if kind == "node":
            node = message[1]
            mapping = {node["runs"]: str(root.resolve())}
            job.emit({"type": "node", "node_id": node["node_id"], "ip": node["ip"], "host": node["host"],
                      "message": f"running on {_node_name(node)}"})
        elif kind == "event":
            job.emit(remap(message[1], mapping))
        elif kind == "progress":
            job.set_progress(message[1], message[2])
        elif kind == "files":
            _ship(message[1], root, shipped)
        elif kind == "result":
            return remap(pickle.loads(message[2]), mapping)
        elif kind == "error":
            raise RemoteJobError(message[1], f"on {_node_name(node)}:\n{message[2]}")
