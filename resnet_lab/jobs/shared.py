"""``SharedResults``: a short computation computed once per input for every session (the job is shared while it runs,
the result kept LRU, a failure kept until it is tried again).
"""

from __future__ import annotations

import pickle
import threading
from typing import Any, Callable

from resnet_lab.jobs.job import Job, QUICK
from resnet_lab.jobs.registry import JobRegistry


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
