"""``run_suite``: trains every net of a suite (in worker processes with one thread each on a CPU, one after another on
a GPU), as events, stoppable, the result saved as it grows.
"""

from __future__ import annotations

import time
from pathlib import Path

from resnet_lab.config import resolve_data_source, resolve_device
from resnet_lab.data import load_dataset
from resnet_lab.events import Callback, emit
from resnet_lab.experiments.degradation.results import effect, pct
from resnet_lab.experiments.degradation.stats import _LayerStats, _stats_batch
from resnet_lab.experiments.degradation.suite import (
    DegradationError,
    depth_of,
    FORMAT,
    get_suite,
    net_label,
    RECIPE,
    results_dir,
    Suite,
    suite_configs,
)
from resnet_lab.runs import atomic_write_json, recording, RunStore
from resnet_lab.training import train, TrainingError
from resnet_lab.workers import become_worker, mirror, spawn_context, spawn_without_main


def run_suite(suite: str | Suite = "cpu", *, data: str | None = None, dataset=None, epochs: int | None = None,
              subset: int | None = None, test_subset: int | None = None, batch_size: int | None = None,
              depths=None, include_110: bool = False, device: str = "auto", callback: Callback | None = None,
              stop_event=None, store=None, out_dir: str | Path | None = None, command: str | None = None,
              stats_images: int | None = None, seed: int = 0, zero_init: bool | None = None,
              workers: int | None = None) -> dict:
    """Train every net of the suite and return the suite result (also saved as JSON).

    ``dataset`` (a loaded ``Dataset``, full or not) saves decoding it again; the suite's subset is cut from
    it by the trainer. Events: the trainer's own (each with ``net``, ``net_index``, ``nets`` added and
    ``progress`` for the whole suite) and ``log`` events between nets. ``stop_event`` ends the nets in
    progress after their current batch (their runs are kept, marked stopped) and skips the rest. A net that
    fails (e.g. its loss turns NaN) is recorded as failed and the suite goes on.

    On a CPU every net trains with one intra-op thread, so a result does not depend on how many threads or
    workers produced it; ``workers`` nets train at once in worker processes (default: torch's thread count,
    i.e. the cores this process may use). On a GPU the nets train one after another, here.
    """
    import torch

    s = get_suite(suite)
    source = resolve_data_source(data) if dataset is None or data is not None else str(dataset.path or dataset.source)
    configs = suite_configs(s, epochs=epochs, subset=subset, test_subset=test_subset, batch_size=batch_size,
                            depths=depths, include_110=include_110, device=device, data=source, seed=seed,
                            zero_init=zero_init)
    stats_images = s.stats_images if stats_images is None else stats_images
    try:
        dev = resolve_device(device)
    except ValueError as exc:
        raise DegradationError(str(exc)) from exc
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
        raise DegradationError("workers must be a whole number ≥ 1")
    workers = 1 if dev.type != "cpu" else max(1, min(len(configs), workers or torch.get_num_threads()))
    if dataset is None:
        emit(callback, "log", message=f"loading {source}")
        dataset = load_dataset(data)
    store = store or RunStore()
    store.check_writable()
    result = _new_result(s, configs, dev, command, dataset.source, stats_images,
                         s.zero_init if zero_init is None else bool(zero_init), workers)
    path = results_dir(out_dir) / f"{result['id']}.json"
    emit(callback, "log", message=f"{s.label}: {len(configs)} nets" + (f", {workers} at a time" if workers > 1 else ""),
         suite_id=result["id"], nets=[c.model for c in configs], progress=0.0)
    atomic_write_json(path, result)
    suite_run = _SuiteProgress(result, configs, path, callback)
    try:
        with recording(path, result, stop_event, finish=lambda r: r.update(effect=effect(r))):
            if workers > 1:
                _train_in_workers(suite_run, dataset, stats_images, store, stop_event, workers)
            else:
                _train_here(suite_run, dataset, dev, stats_images, store, stop_event)
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    result["path"] = str(path)
    end = {"progress": 1.0} if result["status"] == "done" else {}
    emit(callback, "log", message=f"suite {result['status']} in {result['seconds_total']:.0f} s",
         suite_id=result["id"], path=str(path), **end)
    return result


def _new_result(s: Suite, configs, dev, command, data_source, stats_images, zero_init, workers) -> dict:
    first = configs[0]
    return {
        "format": FORMAT, "id": f"{time.strftime('%Y%m%d-%H%M%S')}-{s.name}-{_token()}", "suite": s.name,
        "label": s.label, "note": s.note, "status": "running", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "device": describe_device(dev, workers), "command": command, "data_source": data_source,
        "settings": {"depths": sorted({depth_of(c.model) for c in configs}),
                     "epochs": first.epochs, "batch_size": first.batch_size, "lr_max": first.lr_max,
                     "lr_min": first.lr_min, "peak_epoch": first.peak_epoch, "subset": first.subset,
                     "test_subset": first.test_subset, "stats_images": stats_images, "width": s.width,
                     "zero_init": zero_init, **{k: first.to_dict()[k] for k in RECIPE}},
        "nets": [], "seconds_total": None, "effect": None,
    }


class _SuiteProgress:
    """The suite result as the nets' events arrive: history rows, messages, suite-wide progress, and the
    JSON file rewritten after every net (so a stop or a crash keeps what finished)."""

    def __init__(self, result: dict, configs, path: Path, callback) -> None:
        self.result, self.configs, self.path, self.callback = result, configs, path, callback
        self.n = len(configs)
        self.nets: dict[int, dict] = {}
        self.ended: set[int] = set()
        self.fraction = [0.0] * self.n

    def begin(self, i: int) -> dict:
        if i in self.nets:  # already begun (its events or result overtook the "begins" message)
            return self.nets[i]
        cfg = self.configs[i]
        net = {"model": cfg.model, "label": net_label(cfg.model),
               "family": "plain" if cfg.model.startswith("plain") else "resnet", "depth": depth_of(cfg.model),
               "run_id": None, "status": "running", "history": [], "final_train_error": None,
               "final_test_error": None, "seconds": None, "error": None, "params": None, "stats": {}}
        self.nets[i] = net
        self.result["nets"] = [self.nets[k] for k in sorted(self.nets)]  # suite order, whatever ran first
        self.log(i, "measuring the initial network")
        return net

    def log(self, i: int, text: str, **extra) -> None:
        emit(self.callback, "log", message=f"{net_label(self.configs[i].model)} ({i + 1}/{self.n}): {text}",
             net=self.configs[i].model, net_index=i, nets=self.n, progress=sum(self.fraction) / self.n, **extra)

    def event(self, i: int, event: dict) -> None:
        """A trainer event of net ``i``: recorded, labelled, and passed on."""
        if i not in self.nets:
            self.begin(i)
        cfg, net = self.configs[i], self.nets[i]
        e = dict(event, net=cfg.model, net_index=i, nets=self.n)
        if i in self.ended:  # a worker's last events can arrive after its result: recorded already
            e.pop("progress", None)
            if self.callback is not None:
                self.callback(e)
            return
        if "progress" in e:
            self.fraction[i] = float(e["progress"])
            e["progress"] = sum(self.fraction) / self.n
        if e["type"] == "epoch":
            row = _history_row(e)
            net["history"].append(row)
            e["message"] = (f"{net['label']} ({i + 1}/{self.n}) epoch {e['epoch']}/{cfg.epochs}: train error "
                            f"{row['train_error']:.1%}" + (f", test error {row['test_error']:.1%}"
                                                            if "test_error" in row else ""))
        elif e["type"] == "start":
            net["run_id"] = e.get("run_id")
            e["message"] = f"{net['label']} ({i + 1}/{self.n}): training"
        if self.callback is not None:
            self.callback(e)

    def end(self, i: int, outcome: dict) -> None:
        """Net ``i`` ended (``outcome``: what ``_train_net`` returned); save the suite."""

        if i not in self.nets:  # its "begins" message is still in the queue
            self.begin(i)
        self.ended.add(i)
        net = self.nets[i]
        net.update({k: v for k, v in outcome.items() if k != "history"})
        if outcome.get("history"):
            net["history"] = outcome["history"]
        self.fraction[i] = 1.0
        atomic_write_json(self.path, self.result)
        if net["status"] == "failed":
            self.log(i, f"failed: {net['error']}")
        else:
            self.log(i, f"{net['status']}: final train error {pct(net['final_train_error'])}, test error "
                        f"{pct(net['final_test_error'])}")


def _history_row(event: dict) -> dict:
    row = {"epoch": event["epoch"], "train_error": 1 - event["train_acc"], "train_loss": event["train_loss"],
           "seconds": event["seconds"]}
    if "test_acc" in event:
        row.update(test_error=1 - event["test_acc"], test_loss=event["test_loss"])
    return row


def _train_net(cfg, dataset, dev, stats_images: int, store, stop_event, on_event) -> dict:
    """One net of a suite: training, with per-layer statistics at initialisation and after training.
    Returns what the suite records of it; ``on_event`` receives the trainer's events."""

    history: list[dict] = []

    def record(event):
        if event["type"] == "epoch":
            history.append(_history_row(event))
        on_event(event)

    stats = _LayerStats(*_stats_batch(dataset, cfg, dev, stats_images))
    t_net = time.perf_counter()
    try:
        run = train(cfg, data=dataset, callback=record, stop_event=stop_event, store=store, hooks=(stats,))
    except TrainingError as exc:
        return dict(params=stats.params, stats=stats.stats, status="failed", error=str(exc),
                    seconds=time.perf_counter() - t_net, history=history)
    out = dict(params=stats.params, stats=stats.stats, seconds=time.perf_counter() - t_net, run_id=run.id,
               status=run.status, history=history)
    if history:
        out["final_train_error"] = history[-1]["train_error"]
        out["final_test_error"] = 1 - run.metrics["top1"] if "top1" in run.metrics else None
    return out


def _train_here(progress: _SuiteProgress, dataset, dev, stats_images, store, stop_event) -> None:
    """The nets one after another in this process (a GPU, or one CPU worker)."""
    import torch

    threads = torch.get_num_threads()
    if dev.type == "cpu":
        torch.set_num_threads(1)  # one thread per net on a CPU: the same numbers as the worker processes give
    try:
        for i, cfg in enumerate(progress.configs):
            if stop_event is not None and stop_event.is_set():
                break
            progress.begin(i)
            outcome = _train_net(cfg, dataset, dev, stats_images, store, stop_event,
                                 lambda e, i=i: progress.event(i, e))
            progress.end(i, outcome)
            if outcome["status"] == "stopped":
                break
    finally:
        torch.set_num_threads(threads)


# Worker processes of a CPU suite. Why by hand: each net must train in a process of its own with one thread
# (torch's thread count is per process), report every event live and obey Stop; a process pool gives the
# processes, a queue the events, an Event the stop.
_WORKER: dict = {}


def _worker_init(events, stop, dataset, source) -> None:
    import torch

    # Ctrl-C is the parent's to turn into Stop; a killed suite (job cancelled, SIGKILL) leaves no worker behind
    become_worker(every_s=1.0, code=1)
    torch.set_num_threads(1)
    if dataset is None:
        dataset = load_dataset(source)  # from the decoded cache the parent just filled: a second or two
    _WORKER.update(events=events, stop=stop, dataset=dataset)


def _worker_net(i: int, cfg, stats_images: int, store) -> dict | None:
    import torch

    events, stop = _WORKER["events"], _WORKER["stop"]
    if stop.is_set():
        return None  # stopped before this net began: skipped, as in a serial suite
    events.put((i, None))  # begins
    return _train_net(cfg, _WORKER["dataset"], torch.device("cpu"), stats_images, store, stop,
                      lambda e: events.put((i, e)))


def _train_in_workers(progress: _SuiteProgress, dataset, stats_images, store, stop_event, workers: int) -> None:
    """The nets in ``workers`` processes at once, deepest first (the longest jobs first balance the load)."""
    import queue as queue_mod
    import threading
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = spawn_context()
    events, stop = ctx.Queue(), ctx.Event()
    order = sorted(range(progress.n), key=lambda k: (-depth_of(progress.configs[k].model), k))
    shipped = None if dataset.path else dataset  # a dataset read from disk is read again there, from the cache
    done_watching = threading.Event()
    mirror(stop_event, stop, until=done_watching)  # the caller's stop flag -> the workers' Event

    def drain(timeout: float) -> None:
        try:
            while True:
                i, e = events.get(timeout=timeout)
                timeout = 0
                if e is None:
                    progress.begin(i)
                else:
                    progress.event(i, e)
        except queue_mod.Empty:
            pass

    try:
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init,
                                 initargs=(events, stop, shipped, dataset.path)) as pool:
            with spawn_without_main():  # the workers start on these submits (spawn: one per submit, up to workers)
                pending = {pool.submit(_worker_net, i, progress.configs[i], stats_images, store): i for i in order}
            while pending:
                finished, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                drain(0.05)
                for future in finished:
                    i = pending.pop(future)
                    outcome = future.result()  # a worker's unexpected error ends the suite, as it would serially
                    if outcome is not None:
                        drain(0.05)  # this net's last events before its end
                        progress.end(i, outcome)
    finally:
        done_watching.set()
        stop.set()
        drain(0)


def describe_device(dev, workers: int | None = None) -> str:
    """What a result was measured on: 'NVIDIA H100 80GB HBM3', 'cpu (2 cores, 2 threads)', or for a suite
    'cpu (2 cores, 2 nets at a time, 1 thread each)'."""
    import os

    import torch

    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    if workers is None:
        return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    return f"cpu ({os.cpu_count()} cores, {workers} net{'s' if workers > 1 else ''} at a time, 1 thread each)"


def _token() -> str:
    import secrets

    return secrets.token_hex(2)
