"""The one home of worker-process mechanics, shared by the job runtime (``resnet_lab.jobs``: one process per job)
and the depth-degradation suite's pool (``experiments.degradation``: several nets at once):

- ``spawn_context()`` — multiprocessing's ``spawn``: CUDA cannot be forked, and a fork would copy the caller's
  threads and locks (the app's) mid-state;
- ``spawn_without_main()`` — children started inside it do not re-run the parent's ``__main__`` (a Streamlit page
  script, or a script without a ``__main__`` guard);
- ``become_worker(parent_pid)`` — what every worker does first: leave Ctrl-C to the parent (which turns it into
  Stop and ends its workers itself) and exit when the parent is gone (a server killed with SIGKILL must not leave
  workers training on);
- ``mirror(source, target)`` — a thread that sets ``target`` once ``source.is_set()`` (a caller's stop flag, thread
  or process Event, into the workers' own Event).

Written by hand: multiprocessing has no switch for "don't re-import __main__" nor a parent-death signal on every
platform, and ``concurrent.futures`` pools can neither stop a running task cooperatively nor outlive a page rerun.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

_SPAWN_LOCK = threading.Lock()


def spawn_context():
    import multiprocessing

    return multiprocessing.get_context("spawn")


@contextlib.contextmanager
def spawn_without_main():
    """Spawn processes started inside this block do not re-run the parent's main script. By default spawn
    re-imports ``__main__`` in the child; under Streamlit that is the page script being run (it would draw the
    whole app in the worker, or fail to import the page's helpers), under a script without a ``__main__`` guard
    it would start jobs recursively. Worker functions live in importable modules, so the child needs only
    ``sys.path``, which is kept."""
    from multiprocessing import spawn

    with _SPAWN_LOCK:
        original = spawn.get_preparation_data

        def without_main(name):
            data = original(name)
            data.pop("init_main_from_path", None)
            data.pop("init_main_from_name", None)
            return data

        spawn.get_preparation_data = without_main  # the stdlib has no switch for this; restored right after
        try:
            yield
        finally:
            spawn.get_preparation_data = original


def start_without_main(proc) -> None:
    with spawn_without_main():
        proc.start()


def _exit_when_orphaned(parent_pid: int, every_s: float, code: int) -> None:
    while True:
        time.sleep(every_s)
        if os.getppid() != parent_pid:
            os._exit(code)


def become_worker(parent_pid: int | None = None, every_s: float = 2.0, code: int = 3) -> None:
    """Ignore Ctrl-C (the parent's to turn into Stop) and exit with ``code`` once ``parent_pid`` (default: the
    current parent) is no longer this process's parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid() if parent_pid is None else parent_pid
    threading.Thread(target=_exit_when_orphaned, args=(parent, every_s, code), daemon=True,
                     name="resnet_lab-parent-watch").start()


def mirror(source, target, until: threading.Event, every_s: float = 0.1) -> threading.Thread:
    """Set ``target`` as soon as ``source.is_set()`` (checked every ``every_s``), until ``until`` is set. ``source``
    may be None (nothing to mirror). Returns the started daemon thread."""
    def run() -> None:
        while not until.wait(every_s):
            if source is not None and source.is_set():
                target.set()
                return

    thread = threading.Thread(target=run, daemon=True, name="resnet_lab-stop-mirror")
    thread.start()
    return thread
