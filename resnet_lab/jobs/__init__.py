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

from resnet_lab.jobs.job import ACTIVE, FINAL, Job, KILL_AFTER_TERMINATE_S, MAX_EVENTS, QUICK, WorkerJob
from resnet_lab.jobs.registry import JobRegistry
from resnet_lab.jobs.shared import SharedResults

__all__ = [
    "ACTIVE",
    "FINAL",
    "Job",
    "JobRegistry",
    "KILL_AFTER_TERMINATE_S",
    "MAX_EVENTS",
    "QUICK",
    "SharedResults",
    "WorkerJob",
]
