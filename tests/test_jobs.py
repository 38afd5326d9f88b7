"""The job runtime (resnet_lab/jobs.py): worker processes, isolation from tracing, Stop, crashes, the FIFO queue,
the thread budget and the job-function contract.

Job functions must be module-level functions of an importable module: the ones below are (the worker process
imports this test module by name; pytest's sys.path travels with it).
"""

from __future__ import annotations

import os
import time

import pytest

from resnet_lab.jobs import JobRegistry


# ------------------------------------------------------------------------------------ job functions (workers)

def count(job, n: int, pause: float = 0.05):
    for i in range(n):
        job.emit({"type": "tick", "i": i, "progress": (i + 1) / n})
        time.sleep(pause)
    return {"n": n, "pid": os.getpid()}


def wait_for_stop(job, honour: bool = True):
    """Runs until Stop (honour=True), or ignores Stop entirely (a job stuck in a long torch call)."""
    job.emit({"type": "log", "message": "waiting"})
    while not (honour and job.stop_event.is_set()):
        time.sleep(0.05)
    return "stopped cleanly"


def die(job):
    job.emit({"type": "log", "message": "about to be killed"})
    time.sleep(1.0)  # events travel through a feeder thread: give this one its moment, as a real job has
    os.kill(os.getpid(), 9)


def fail(job):
    raise ValueError("the settings were wrong")


def report_threads(job):
    import torch

    return {"torch": torch.get_num_threads(), "omp": os.environ.get("OMP_NUM_THREADS"),
            "owner": os.environ.get("RESNET_LAB_OWNER")}


def train_tiny(job, source: str):
    from resnet_lab import training

    cfg = training.preset("quick-cpu", model="resnet20", epochs=2, peak_epoch=0.5, batch_size=50, subset=200,
                          test_subset=100, pipeline="torch", data=source, seed=3)
    run = training.train(cfg, callback=job.emit, stop_event=job.stop_event)
    return {"top1": run.metrics["top1"], "test_loss": run.metrics["test_loss"],
            "train_loss": [h["train_loss"] for h in run.history], "status": run.status}


def trace_receptive_fields(job, rounds: int = 1000):
    """What the Receptive Field page does, over and over: fx-trace models (uncached) and back-propagate the
    effective RF. In one process with a training thread this broke the training (torch.fx patches
    nn.Module.__call__ process-wide while it traces)."""
    import torch

    from resnet_lab import receptive_field as rf

    done = 0
    net = rf.load_model("resnet20", device="cpu")
    images = torch.randn(2, 3, 32, 32)
    while done < rounds and not job.stop_event.is_set():
        for name in ("torchvision:vgg16", "custom_resnet", "resnet20"):
            rf.receptive_fields(rf.load_model(name, device="meta"), 32, name=name)  # a module: not cached
        table = rf.receptive_fields(net, 32)
        rf.effective_rf(net, images, table.final.name, table=table)
        done += 1
        job.emit({"type": "log", "message": f"round {done}", "rounds": done})
    return done


# -------------------------------------------------------------------------------------------------- tests

def test_jobs_run_in_their_own_process_and_report_back():
    registry = JobRegistry(jobs_per_device=2, threads=1)
    job = registry.start("count", count, owner="a", title="counting", n=5)
    assert job.wait(120), job.snapshot()
    assert job.status == "done", job.error
    assert job.result["n"] == 5 and job.result["pid"] != os.getpid()  # another process did the work
    assert [e["i"] for e in job.events("tick")] == list(range(5)) and job.progress == 1.0
    assert job.events(since=3) == job.events()[3:]
    assert registry.for_owner("a") == [job] and registry.for_owner("b") == [] and registry.active("a") is None


def test_the_job_function_contract_is_checked_at_start():
    registry = JobRegistry()
    with pytest.raises(TypeError, match="module-level function"):
        registry.start("x", lambda job: None)

    def local(job):
        return None

    with pytest.raises(TypeError, match="module-level function"):
        registry.start("x", local)
    with pytest.raises(TypeError, match="picklable.*lock"):
        import threading

        registry.start("x", count, n=1, lock=threading.Lock())
    assert registry.all() == []


def test_an_exception_and_a_killed_worker_mark_the_job_failed():
    registry = JobRegistry(jobs_per_device=2, threads=1)
    raised = registry.start("x", fail, owner="a")
    killed = registry.start("x", die, owner="a")
    assert raised.wait(120) and killed.wait(120)
    assert raised.status == "failed" and raised.error == "the settings were wrong"
    assert "ValueError" in raised.error_detail
    assert killed.status == "failed" and "SIGKILL" in killed.error and "kept" in killed.error
    assert killed.events("log")[0]["message"] == "about to be killed"  # what it sent before dying is kept


def test_stop_is_cooperative_first_then_terminates_after_the_grace_period():
    registry = JobRegistry(jobs_per_device=2, threads=1, stop_grace_s=1.0)
    polite = registry.start("x", wait_for_stop, owner="a", honour=True)
    stuck = registry.start("x", wait_for_stop, owner="a", honour=False)
    for job in (polite, stuck):  # both are running (their first event arrived)
        deadline = time.monotonic() + 120
        while not job.events("log") and time.monotonic() < deadline:
            time.sleep(0.1)
    polite.stop()
    stuck.stop()
    assert polite.status == "stopping" and stuck.status == "stopping"
    assert polite.wait(60) and stuck.wait(60)
    assert polite.status == "stopped" and polite.result == "stopped cleanly"
    assert stuck.status == "stopped" and "terminated" in stuck.message and stuck.exitcode != 0


def test_the_queue_is_fifo_per_device_with_positions_and_cancel():
    registry = JobRegistry(jobs_per_device=1, threads=1)
    first = registry.start("x", wait_for_stop, owner="a")
    second = registry.start("x", count, owner="b", n=2)
    third = registry.start("x", count, owner="c", n=2)
    assert first.status == "running" and second.status == "pending" and third.status == "pending"
    assert registry.position(second) == 1 and registry.position(third) == 2
    assert second.snapshot()["position"] == 1
    second.stop()  # cancel while waiting: it never runs
    assert second.status == "cancelled" and not second.active and registry.position(third) == 1
    first.stop()
    assert third.wait(120) and third.status == "done"
    assert first.status == "stopped" and second.started is None
    assert third.started >= first.finished  # one at a time on this device


def test_each_worker_gets_its_thread_budget_and_owner(monkeypatch):
    monkeypatch.delenv("RESNET_LAB_JOB_THREADS", raising=False)  # the suite's fixed count (conftest) off
    registry = JobRegistry(jobs_per_device=2, cores=4)
    blocker = registry.start("x", wait_for_stop, owner="a")
    probe = registry.start("x", report_threads, owner="student-7")
    assert probe.wait(120) and probe.status == "done", probe.error
    blocker.stop()
    assert blocker.threads == 4  # alone: all 4 cores
    assert probe.threads == 2 and probe.result == {"torch": 2, "omp": "2", "owner": "student-7"}  # 4 cores ÷ 2 jobs
    blocker.wait(60)


def square(job, x: int):
    job.set_progress(0.5, "squaring")
    return {"x2": x * x, "pid": os.getpid()}


def test_quick_computations_run_beside_a_training_with_one_thread(monkeypatch):
    """A page's few seconds of work must not wait behind a training: the quick lane has its own slot, takes one
    thread, and does not shrink the thread budget of a training started beside it."""
    monkeypatch.delenv("RESNET_LAB_JOB_THREADS", raising=False)
    registry = JobRegistry(jobs_per_device=1, cores=4)
    training = registry.start("train", wait_for_stop, owner="a")
    waiting = registry.start("train", count, owner="b", n=1)
    quick = registry.start("maps", report_threads, owner="c", lane="quick")
    assert training.status == "running" and waiting.status == "pending"
    assert quick.device == "quick" and quick.wait(120) and quick.status == "done", quick.error
    assert quick.threads == 1 and quick.result["torch"] == 1
    assert training.threads == 4
    with pytest.raises(ValueError, match="lane"):
        registry.start("maps", count, owner="c", lane="fast", n=1)
    training.stop()
    assert waiting.wait(120) and waiting.threads == 4  # the quick job did not count against it
    training.wait(60)


def test_shared_results_compute_each_input_once_for_everyone():
    from resnet_lab.jobs import SharedResults

    registry = JobRegistry(jobs_per_device=1, threads=1)
    shared = SharedResults(registry, max_entries=2)
    result, job = shared.get("sq", square, owner="alice", x=3)
    assert result is None and job.device == "quick" and job.owner == "alice"
    again, same = shared.get("sq", square, owner="bob", x=3)  # another student, the same input: the same job
    assert again is None and same is job
    assert job.wait(120) and job.status == "done", job.error
    assert shared.get("sq", square, owner="bob", x=3) == ({"x2": 9, "pid": job.result["pid"]}, None)
    assert shared.known("sq", square, x=3) and not shared.known("sq", square, x=4)
    assert len([j for j in registry.all() if j.kind == "sq"]) == 1
    # another input, and the identity that the arguments do not show, are other results
    _, other = shared.get("sq", square, owner="bob", x=3, identity=("run", 2))
    assert other is not None and other is not job
    other.wait(120)
    # a failure stays the answer (no new job per rerun) until retry
    _, bad = shared.get("bad", fail, owner="alice")
    assert bad.wait(120) and bad.status == "failed"
    assert shared.get("bad", fail, owner="alice") == (None, bad)
    shared.retry(bad)
    _, fresh = shared.get("bad", fail, owner="alice")
    assert fresh is not bad
    fresh.wait(120)
    # least recently used results are dropped beyond max_entries
    for x in (5, 6):
        _, j = shared.get("sq", square, owner="a", x=x)
        j.wait(120)
        shared.get("sq", square, owner="a", x=x)
    assert not shared.known("sq", square, x=3)


def test_training_survives_receptive_fields_traced_next_to_it(tiny_data_env, runs_dir):
    """Done-means of issue 9: a training job ends `done`, with the same numbers as alone, while receptive fields
    (torchvision:vgg16, custom_resnet) and the effective RF are computed over and over in another job and in the
    app's own process."""
    from resnet_lab import receptive_field as rf

    source = str(tiny_data_env)
    registry = JobRegistry(jobs_per_device=2, threads=1)
    alone = registry.start("train", train_tiny, owner="a", source=source)
    assert alone.wait(300) and alone.status == "done", alone.error

    tracer = registry.start("rf", trace_receptive_fields, owner="b")
    busy = registry.start("train", train_tiny, owner="a", source=source)
    traced_here = 0
    while busy.active:  # the app process traces too, as the Receptive Field page would
        rf.receptive_fields(rf.load_model("custom_resnet", device="meta"), 32)
        traced_here += 1
    tracer.stop()
    assert tracer.wait(60) and tracer.status == "stopped", tracer.error
    assert busy.status == "done", busy.error
    assert busy.result == alone.result and busy.result["status"] == "done"
    rounds = [e["rounds"] for e in tracer.events("log")]
    assert rounds and traced_here > 0
    assert tracer.started < busy.finished and tracer.finished > busy.finished  # they overlapped


def test_receptive_field_tables_of_named_models_are_cached():
    from resnet_lab import receptive_field as rf

    first = rf.receptive_fields("resnet20", 32)
    first.layers[0].name = "edited by a caller"
    again = rf.receptive_fields("resnet20", 32)
    assert again.layers[0].name != "edited by a caller"  # a copy each time
    assert [r.rf_max for r in again.layers] == [r.rf_max for r in first.layers]
    assert (("resnet20", (32, 32), 3, "resnet20") in rf._TABLES)


def report_env(job):
    return {"runs": os.environ.get("RESNET_LAB_RUNS"), "pid": os.getpid(), "threads": job.threads}


def test_a_warm_spare_takes_the_next_job_with_the_apps_current_settings(monkeypatch, tmp_path):
    registry = JobRegistry(jobs_per_device=1, threads=1, warm=True)
    registry.prewarm()
    spare_pid = registry._spare[0][0].pid
    monkeypatch.setenv("RESNET_LAB_RUNS", str(tmp_path / "later"))  # changed after the spare started
    job = registry.start("x", report_env, owner="a")
    assert job.wait(120) and job.status == "done", job.error
    assert job.result == {"runs": str(tmp_path / "later"), "pid": spare_pid, "threads": 1}
    assert registry._spare[0] is not None and registry._spare[0][0].pid != spare_pid  # a new spare waits
    registry.shutdown()
    assert registry._spare[0] is None


EXIT_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from resnet_lab.jobs import JobRegistry
from test_jobs import count
registry = JobRegistry(warm=True)
registry.prewarm()
job = registry.start("count", count, owner="t", title="count", n=3, pause=0.01)
assert job.wait(120), job.status
print("result", job.result, flush=True)
"""


def test_a_script_that_used_the_runtime_with_a_warm_spare_exits_by_itself(tmp_path):
    """Issue 20's hang: multiprocessing's exit hook joined the warm spare (blocked on its inbox) before the
    runtime's own hook could end it, so the script never returned. The limit bounds a hang, it times nothing."""
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "uses_runtime.py"
    script.write_text(EXIT_SCRIPT.format(tests=str(Path(__file__).parent)))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the script did not exit (it printed {out!r}); stderr: {err[-2000:]}")
    assert proc.returncode == 0, err[-2000:]
    assert "result" in out


# ------------------------------------------------------------------- the shared worker mechanics (resnet_lab.workers)

def orphan_child(pid_file: str) -> None:
    from resnet_lab.workers import become_worker

    become_worker(every_s=0.2)
    with open(pid_file, "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(120)


ORPHAN_PARENT = """
import os, sys, time
sys.path[:0] = {paths!r}
from resnet_lab.workers import spawn_context, start_without_main
from test_jobs import orphan_child
proc = spawn_context().Process(target=orphan_child, args=({pid_file!r},))
start_without_main(proc)
while not os.path.exists({pid_file!r}) or not open({pid_file!r}).read():
    time.sleep(0.1)
os._exit(0)   # the parent dies without ending its worker (as a server killed with SIGKILL would)
"""


def test_a_worker_exits_when_its_parent_is_gone_and_ignores_ctrl_c(tmp_path):
    """Both runtimes' workers (jobs and the degradation pool) start with workers.become_worker."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    pid_file = tmp_path / "child.pid"
    here = str(Path(__file__).resolve().parent)
    code = ORPHAN_PARENT.format(paths=[here, str(Path(here).parent)], pid_file=str(pid_file))
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        try:
            os.kill(pid, signal.SIGINT)  # ignored: only the parent's going away ends it
        except ProcessLookupError:
            return
        time.sleep(0.3)
    os.kill(pid, signal.SIGKILL)
    pytest.fail("the orphaned worker was still running 30 s after its parent died")


def test_mirror_sets_the_workers_flag_from_the_callers():
    import threading

    from resnet_lab.workers import mirror

    source, target, until = threading.Event(), threading.Event(), threading.Event()
    thread = mirror(source, target, until, every_s=0.02)
    time.sleep(0.1)
    assert not target.is_set()
    source.set()
    thread.join(5)
    assert target.is_set() and not thread.is_alive()
    quiet_target, stop_watching = threading.Event(), threading.Event()
    quiet = mirror(None, quiet_target, stop_watching, every_s=0.02)
    stop_watching.set()
    quiet.join(5)
    assert not quiet.is_alive() and not quiet_target.is_set()


def test_the_gpu_lease_checks_pass_on_the_cpu_and_say_when_cuda_is_missing(tiny_data_env, runs_dir):
    """benchmarks/gpu_checks.py is the first thing a GPU lease runs (no pytest there): its CPU form must pass all
    four checks (a job through the runtime ends done, a stopped one keeps its run, the checkpoint reloads), so a
    failure on the lease is the device's, not the script's; asked for CUDA where there is none, it says so."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    import torch

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_checks.py"
    base = [sys.executable, str(script), "--data", str(tiny_data_env), "--subset", "200", "--test-subset", "100",
            "--batch-size", "64", "--timeout", "240"]
    done = subprocess.run(base + ["--device", "cpu"], capture_output=True, text=True, timeout=400)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0 and out["ok"], (out, done.stderr[-2000:])
    assert out["job_done"]["status"] == "done" and out["job_done"]["epochs_seen"] == [1, 2]
    assert out["job_stopped"]["run_status"] == "stopped" and len(out["job_stopped"]["epochs_seen"]) < 5
    assert out["job_done"]["run_id"] in {p.name for p in runs_dir.iterdir()}  # the runs land in the store asked for
    if not torch.cuda.is_available():
        missing = subprocess.run(base, capture_output=True, text=True, timeout=120)
        assert missing.returncode == 2 and "no CUDA device here" in json.loads(missing.stdout)["error"]
