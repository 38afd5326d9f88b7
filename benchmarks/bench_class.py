"""A class on one app process, through the job runtime the pages use; prints one JSON line.

    python benchmarks/bench_class.py --students 4 [--iters 40] [--data PATH]

Two measurements:

1. **Watching is free.** The same LR range test runs alone, unwatched and watched, alternating (``--pairs`` times
   each). "Watched" means a thread in this (the app's) process does what a page's polling fragment does, once a
   second: read the new events, build the live plotly figure of the thinned points and serialise it to JSON (what
   Streamlit sends to the browser). Throughput is the job's own images/s (from its events). Reported: the ratio
   watched / unwatched (target ≥ 0.9).
2. **The afternoon path, K students at once.** K simulated students each start an LR test, then a short training,
   at the same moment, every one of them watched. The queue runs ``--jobs-per-device`` at once. Reported: job
   outcomes (failed must be 0), p50/p95 of click-to-first-progress (the student sees their job moving) and
   click-to-result (the job has ended), in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from resnet_lab import tasks  # noqa: E402
from resnet_lab.jobs import JobRegistry  # noqa: E402


def page_poll(job, stop: threading.Event, period: float = 1.0) -> int:
    """What the Train / LR Finder fragment does per tick, without Streamlit: new events, thinned figure, JSON."""
    import plotly.graph_objects as go

    seen, batches, ticks = 0, [], 0
    while not stop.is_set() and job.active:
        fresh = job.events(since=seen)
        seen += len(fresh)
        batches += [e for e in fresh if e.get("type") == "batch"]
        step = max(1, -(-len(batches) // 1500))
        pts = batches[::step]
        fig = go.Figure(go.Scatter(x=[e.get("lr", e.get("step")) for e in pts], y=[e["loss"] for e in pts],
                                   mode="lines+markers"))
        fig.to_json()
        ticks += 1
        stop.wait(period)
    return ticks


def images_per_s(job) -> float | None:
    """The job's own throughput: its last batch event's images/s (an average since its first step)."""
    batches = job.events("batch")
    return float(batches[-1]["images_per_s"]) if batches else None


def lr_config(args) -> dict:
    return {"model": args.model, "optimizer": "sgd", "batch_size": args.batch_size, "subset": args.subset,
            "iterations": args.iters, "start_lr": 1e-3, "augment": False}


def train_config(args) -> dict:
    from resnet_lab import training

    cfg = training.preset("quick-cpu", model=args.model, epochs=1, peak_epoch=0.5, batch_size=args.batch_size,
                          subset=args.subset, test_subset=200, pipeline="torch")
    return cfg.to_dict()


def run_watched(registry, args, watched: bool) -> dict:
    t0 = time.perf_counter()
    job = registry.start("lr_find", tasks.lr_find, owner="bench", config=lr_config(args), source=args.data)
    stop = threading.Event()
    watcher = threading.Thread(target=page_poll, args=(job, stop)) if watched else None
    if watcher:
        watcher.start()
    job.wait()
    stop.set()
    if watcher:
        watcher.join()
    return {"status": job.status, "images_per_s": images_per_s(job), "seconds": time.perf_counter() - t0,
            "error": job.error}


def student(registry, args, name: str, out: list) -> None:
    for kind, fn, config in (("lr_find", tasks.lr_find, lr_config(args)), ("train", tasks.train, train_config(args))):
        clicked = time.perf_counter()
        job = registry.start(kind, fn, owner=name, config=config, source=args.data)
        stop = threading.Event()
        watcher = threading.Thread(target=page_poll, args=(job, stop))
        watcher.start()
        first = None
        while job.active:
            if first is None and job.events("batch"):
                first = time.perf_counter() - clicked
            time.sleep(0.05)
        stop.set()
        watcher.join()
        out.append({"student": name, "kind": kind, "status": job.status, "error": job.error,
                    "first_progress_s": first, "result_s": time.perf_counter() - clicked})
        log(f"{name} {kind}: {out[-1]}")


def quick_cpu(args) -> int:
    """The Train page's CPU default with its page open: seconds from Start to the finished run."""
    from resnet_lab import training

    registry = JobRegistry(threads=args.job_threads, warm=True)
    registry.prewarm()
    time.sleep(10)  # the spare is ready, as in an app that has been up for a while
    clicked = time.perf_counter()
    job = registry.start("train", tasks.train, owner="bench", config=training.preset("quick-cpu").to_dict(),
                         source=args.data)
    stop = threading.Event()
    watcher = threading.Thread(target=page_poll, args=(job, stop))
    watcher.start()
    job.wait()
    stop.set()
    watcher.join()
    end = next(iter(job.events("end")), {})
    print(json.dumps({"benchmark": "class-quick-cpu", "status": job.status, "error": job.error,
                      "seconds_click_to_result": round(time.perf_counter() - clicked, 1),
                      "top1": end.get("top1"), "job_threads": job.threads,
                      "load_avg_1min": round(os.getloadavg()[0], 2)}))
    return 0 if job.status == "done" else 1


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float | None:
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    k = min(len(values) - 1, max(0, round(q * (len(values) - 1))))
    return round(values[k], 2)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--students", type=int, default=4)
    p.add_argument("--pairs", type=int, default=2, help="watched/unwatched repetitions")
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--subset", type=int, default=500)
    p.add_argument("--model", default="resnet20")
    p.add_argument("--data", default=os.environ.get("RESNET_LAB_DATA"))
    p.add_argument("--jobs-per-device", type=int, default=None)
    p.add_argument("--job-threads", type=int, default=None,
                   help="threads per job (default: the runtime's budget, cores ÷ running jobs)")
    p.add_argument("--quick-cpu", action="store_true",
                   help="instead: one watched `quick-cpu` training (the Train page's CPU default), its seconds")
    args = p.parse_args()
    if args.quick_cpu:
        return quick_cpu(args)

    # warm, as the app's registry (lab_ui.job_registry)
    registry = JobRegistry(jobs_per_device=args.jobs_per_device, threads=args.job_threads, warm=True)
    registry.prewarm()
    pairs = []
    for i in range(args.pairs):
        pairs.append((run_watched(registry, args, False), run_watched(registry, args, True)))
        log(f"pair {i + 1}/{args.pairs}: unwatched {pairs[-1][0]}, watched {pairs[-1][1]}")
    unwatched = [u["images_per_s"] for u, _ in pairs if u["images_per_s"]]
    watched = [w["images_per_s"] for _, w in pairs if w["images_per_s"]]

    results: list[dict] = []
    threads = [threading.Thread(target=student, args=(registry, args, f"student{i}", results))
               for i in range(args.students)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outcomes: dict[str, int] = {}
    for r in results:
        outcomes[r["status"]] = outcomes.get(r["status"], 0) + 1
    print(json.dumps({
        "benchmark": "class", "students": args.students, "jobs_per_device": registry.jobs_per_device,
        "cores": registry.cores, "job_threads": registry.fixed_threads or "cores/running", "model": args.model,
        "lr_test_steps": args.iters, "batch_size": args.batch_size,
        "watched_images_per_s": [round(v, 1) for v in watched],
        "unwatched_images_per_s": [round(v, 1) for v in unwatched],
        "watched_unwatched_ratio": round(statistics.median(watched) / statistics.median(unwatched), 3)
        if watched and unwatched else None,
        "job_outcomes": outcomes, "failed": outcomes.get("failed", 0),
        "errors": [r["error"] for r in results if r["error"]][:3],
        "first_progress_p50_s": pct([r["first_progress_s"] for r in results], 0.5),
        "first_progress_p95_s": pct([r["first_progress_s"] for r in results], 0.95),
        "click_to_result_p50_s": pct([r["result_s"] for r in results], 0.5),
        "click_to_result_p95_s": pct([r["result_s"] for r in results], 0.95),
        "afternoon_wall_s": round(time.perf_counter() - t0, 1),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }))
    return 0 if not outcomes.get("failed") else 1


if __name__ == "__main__":
    sys.exit(main())
