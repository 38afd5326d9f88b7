"""The job runtime on a real Ray cluster (resnet_lab/jobs/cluster.py): a head and a second node started on localhost
by the test (tests/ray_cluster.py), one CPU each. Two training jobs run at once, one on each node; events stream
back; runs land in the app's store; Stop, the app's queue and Cancel work as with local workers; a killed node
fails its job with the node named and keeps what the run had sent. Without the setting nothing of Ray is used.

Job functions here are module-level (the nodes import this module: the cluster's PYTHONPATH has tests/).
"""

from __future__ import annotations

import json
import os
import re
import sys
import tarfile
import time
from importlib.util import find_spec
from pathlib import Path

import pytest

from ray_cluster import RayCluster
from resnet_lab.jobs import cluster as C
from resnet_lab.jobs import JobRegistry
from resnet_lab import tasks, training
from resnet_lab.runs import Run, RunStore

# Not importorskip: importing ray here would put it in every worker that imports this module.
pytestmark = pytest.mark.skipif(find_spec("ray") is None, reason="ray is in requirements.txt; pip install -r "
                                "requirements.txt")


from test_jobs import count  # noqa: E402  (a job function the nodes import too)


def modules_loaded(job):
    return {"ray": "ray" in sys.modules, "pid": os.getpid()}


def _read_elsewhere(files, service):
    import ray

    mapping = C._materialise(files, service, ray)
    return {app: (here, Path(here).read_bytes()) for app, here in mapping.items()}


def fetch_through_the_object_store(job, address: str, path: str):
    """Ships ``path`` as the app does and has a node materialise it under a name no node can read."""
    ray = C._connect(address)
    service = C._service(ray)
    p = Path(path)
    key = C._file_key(p)
    if not ray.get(service.has.remote(key)):
        ray.get(service.put.remote(key, p.read_bytes()))
    files = {"/nowhere/on/any/node/" + p.name: {"key": key, "size": p.stat().st_size}}
    return ray.get(ray.remote(num_cpus=0)(_read_elsewhere).remote(files, service))


def read_a_run(job, run_ids):
    """Like the loss landscape: reads runs of the app's store by id and writes its result under the runs folder."""
    from resnet_lab.config import runs_dir
    from resnet_lab.runs import atomic_write_json

    run = RunStore().get(run_ids[0])
    out = runs_dir() / "notes" / f"{run.id}.json"
    atomic_write_json(out, {"classes": run.classes, "has_checkpoint": run.has_checkpoint})
    return {"run": run.id, "path": str(out), "model": run.load_model("cpu").__class__.__name__,
            "ray_address": os.environ.get("RESNET_LAB_RAY_ADDRESS")}


def _config(epochs: int, **overrides) -> dict:
    cfg = training.preset("quick-cpu", model="resnet20", epochs=epochs, peak_epoch=0.5, batch_size=50, subset=200,
                          test_subset=100, pipeline="torch", seed=3, **overrides)
    return cfg.to_dict()


def _node(job) -> dict | None:
    return next((e for e in job.events("node")), None)


def _wait_for(predicate, timeout_s: float, what: str):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


# ------------------------------------------------------------------------------------------ without the setting

def test_without_the_setting_no_ray_is_used(monkeypatch):
    monkeypatch.delenv("RESNET_LAB_RAY_ADDRESS", raising=False)
    registry = JobRegistry(threads=1)
    assert registry.cluster is None and registry.cluster_resources() is None
    job = registry.start("probe", modules_loaded, owner="a")
    assert job.wait(120) and job.status == "done", job.error
    assert job.result["ray"] is False and "ray" not in sys.modules
    assert not [e for e in job.events() if e.get("type") in ("node", "cluster")]


def test_a_malformed_address_stops_the_app(monkeypatch):
    from resnet_lab.config import class_settings, SettingsError

    for bad in ("ray://head:10001", "headnode", "host:99999", "http://x/y:1"):
        with pytest.raises(SettingsError, match="ray_address"):
            class_settings(environ={"RESNET_LAB_RAY_ADDRESS": bad})
    for good in ("auto", "10.0.0.5:6379", "head.example.org:6379"):
        assert class_settings(environ={"RESNET_LAB_RAY_ADDRESS": good})["ray_address"] == good


def test_paths_are_rewritten_and_input_files_found(tmp_path):
    data = tmp_path / "data.tar.gz"
    data.write_bytes(b"x")
    model = tmp_path / "net.py"
    model.write_text("pass")
    kwargs = {"config": {"data": str(data), "model": f"{model}:Net", "epochs": 3}, "source": None, "n": "cifar10"}
    assert C.input_files(kwargs, {"RESNET_LAB_LOCK_DATA": str(data)}) == [str(data), str(model)]
    moved = C.remap(kwargs, {str(data): "/node/data.tar.gz", str(model): "/node/net.py"})
    assert moved["config"] == {"data": "/node/data.tar.gz", "model": "/node/net.py:Net", "epochs": 3}
    assert C.remap(Run("r1", Path("/node/runs/r1")), {"/node/runs": "/app/runs"}).path == Path("/app/runs/r1")
    assert C.remap("/node/runsX", {"/node/runs": "/app/runs"}) == "/node/runsX"  # a prefix, not a folder: kept
    assert C.slots({"CPU": 16.0, "GPU": 4.0}, "cuda", 1) == 4 and C.slots({"CPU": 16.0, "GPU": 4.0}, "cpu", 2) == 6
    assert C.slots(None, "cpu", 1) is None


# ------------------------------------------------------------------------------------------ on a real cluster

@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    c = RayCluster(tmp_path_factory.mktemp("ray"), nodes=2, cpus=1)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def archive(tiny_data_dir, tmp_path_factory) -> Path:
    """The tiny class-folder data as an archive: a file, so it travels with the job like the class's archive."""
    path = tmp_path_factory.mktemp("archive") / "tiny.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(tiny_data_dir, arcname="tiny")
    return path


@pytest.fixture
def on_cluster(ray_cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_LAB_RAY_ADDRESS", ray_cluster.address)
    monkeypatch.setenv("RESNET_LAB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("RESNET_LAB_CACHE", str(tmp_path / "cache"))
    registry = JobRegistry(threads=1, stop_grace_s=20)
    yield registry
    registry.shutdown()


def test_two_jobs_run_at_once_one_per_node_and_their_runs_land_in_the_apps_store(on_cluster, archive, tmp_path):
    registry = on_cluster
    assert registry.cluster_resources(wait_s=120) == {"CPU": 2.0}
    jobs = [registry.start("train", tasks.train, owner=owner, config=_config(3), source=str(archive))
            for owner in ("ana", "ben")]
    third = registry.start("train", tasks.train, owner="cai", config=_config(3), source=str(archive))
    assert registry.position(third) == 1 and third.status == "pending"  # two CPUs: the app's queue holds it
    third.stop()
    assert third.status == "cancelled"
    for job in jobs:
        assert job.wait(600), job.snapshot()
        assert job.status == "done", (job.error, job.error_detail)
    nodes = [_node(job) for job in jobs]
    assert all(nodes) and nodes[0]["node_id"] != nodes[1]["node_id"], nodes  # one job on each node
    assert all("running on cluster node" in n["message"] for n in nodes)
    # at once: each started before the other ended
    assert jobs[0].started < jobs[1].finished and jobs[1].started < jobs[0].finished
    # events streamed back with the local shape; paths in them name the app's store
    epochs = jobs[0].events("epoch")
    assert [e["epoch"] for e in epochs] == [1, 2, 3] and {"train_loss", "test_acc"} <= set(epochs[0]), epochs[0]
    root = (tmp_path / "runs").resolve()
    assert Path(jobs[0].events("start")[0]["run_path"]).parent == root
    store = RunStore(tmp_path / "runs")
    runs = {run.id: run for run in store.list()}
    results = [job.result for job in jobs]
    assert all(r.path.parent == root and r.id in runs for r in results), (results, list(runs))
    for r in results:
        landed = store.get(r.id)
        assert landed.status == "done" and len(landed.history) == 3 and landed.has_checkpoint
        assert landed.load_model("cpu") is not None


def test_inputs_travel_through_the_object_store_to_a_node_that_cannot_read_them(on_cluster, archive, ray_cluster):
    job = on_cluster.start("fetch", fetch_through_the_object_store, owner="a", lane="quick",
                           address=ray_cluster.address, path=str(archive))
    assert job.wait(300) and job.status == "done", (job.error, job.error_detail)
    (app_path, (node_path, blob)), = job.result.items()
    assert app_path.startswith("/nowhere/") and node_path != app_path and blob == archive.read_bytes()


def test_a_job_that_ignores_stop_is_cancelled_on_its_node_after_the_grace_period(ray_cluster, tmp_path,
                                                                                 monkeypatch):
    from test_jobs import wait_for_stop

    monkeypatch.setenv("RESNET_LAB_RAY_ADDRESS", ray_cluster.address)
    monkeypatch.setenv("RESNET_LAB_RUNS", str(tmp_path / "runs"))
    registry = JobRegistry(threads=1, stop_grace_s=6)
    try:
        stuck = registry.start("stuck", wait_for_stop, owner="ana", honour=False)
        _wait_for(lambda: stuck.events("log"), 120, "the job to run on its node")
        asked = time.time()
        stuck.stop()
        assert stuck.wait(60) and stuck.status == "stopped", (stuck.status, stuck.error)
        assert time.time() - asked < 30
        assert any("cancelled after" in e.get("message", "") for e in stuck.events("log"))
        # its CPU is free again: two jobs now run at once on the two nodes
        again = [registry.start("count", count, owner=o, n=20, pause=0.1) for o in ("a", "b")]
        _wait_for(lambda: all(j.events("node") for j in again), 120, "both jobs placed")
        assert all(j.wait(120) and j.status == "done" for j in again)
    finally:
        registry.shutdown()


def test_a_job_that_reads_the_apps_runs_gets_them_on_its_node(on_cluster, tiny_data_dir, tmp_path):
    import functools

    from conftest import save_untrained_run
    from resnet_lab.data import load_dataset

    run, _ = save_untrained_run(load_dataset(str(tiny_data_dir)))
    before = {p.name: p.stat().st_mtime_ns for p in run.path.iterdir()}
    fn = functools.partial(read_a_run, run_ids=[run.id])  # as the Depth Degradation page starts a landscape
    job = on_cluster.start("landscape", fn, owner="ana")
    assert job.wait(300) and job.status == "done", (job.error, job.error_detail)
    assert _node(job) is not None and job.result["run"] == run.id and job.result["model"] == "CifarResNet"
    assert job.result["ray_address"] is None  # on the node it is an ordinary job: nothing it starts goes to Ray
    out = Path(job.result["path"])
    assert out.parent == (tmp_path / "runs" / "notes").resolve()
    assert json.loads(out.read_text()) == {"classes": run.classes, "has_checkpoint": True}
    assert {p.name: p.stat().st_mtime_ns for p in run.path.iterdir()} == before  # not sent back: unchanged


def test_stop_ends_a_cluster_job_as_stopped_and_keeps_its_run(on_cluster, archive, tmp_path):
    job = on_cluster.start("train", tasks.train, owner="ana", config=_config(60), source=str(archive))
    _wait_for(lambda: job.events("epoch"), 300, "the first epoch on the cluster")
    job.stop()
    assert job.wait(120) and job.status == "stopped", (job.status, job.error)
    run = RunStore(tmp_path / "runs").get(job.result.id)
    assert run.status == "stopped" and 1 <= len(run.history) < 60 and run.has_checkpoint


@pytest.mark.browser
def test_the_train_page_runs_a_job_on_the_cluster_with_live_curves_stop_and_the_run_listed(
        ray_cluster, archive, browser, tmp_path):
    from conftest import ARTIFACTS, assert_no_exception, SCREENSHOTS, streamlit_server, wait_for_script

    env = dict(os.environ, RESNET_LAB_DATA=str(archive), RESNET_LAB_CACHE=str(tmp_path / "cache"),
               RESNET_LAB_RUNS=str(tmp_path / "runs"), RESNET_LAB_REFERENCE="none", PYTHONUNBUFFERED="1",
               RESNET_LAB_RAY_ADDRESS=ray_cluster.address, RESNET_LAB_JOB_THREADS="1")
    (tmp_path / "runs").mkdir()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with streamlit_server(env, ARTIFACTS / "streamlit-cluster.log") as (url, _, _):
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        try:
            page.goto(f"{url}/train")
            wait_for_script(page)
            assert page.get_by_text("Jobs run on a Ray cluster").count()  # the size comes with a later rerun
            for label, value in (("Epochs", "40"), ("Batch size", "20")):
                box = page.get_by_label(label, exact=True)
                box.fill(value)
                box.press("Tab")
                wait_for_script(page)
            start = page.get_by_role("button", name="Start training")
            page.wait_for_function("b => !b.disabled", arg=start.element_handle(), timeout=120_000)
            start.click()
            page.get_by_text(re.compile(r"Epoch \d+/40 · step")).first.wait_for(timeout=180_000)
            page.get_by_text(re.compile(r"of cluster node \S+ \([0-9a-f]{8}\)")).first.wait_for(timeout=60_000)
            page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 2",
                                   timeout=120_000)
            page.wait_for_timeout(3000)  # a few more points on the live curves
            assert_no_exception(page)
            page.screenshot(path=str(SCREENSHOTS / "cluster-train-mid.png"), full_page=True)
            page.get_by_role("button", name="Stop").click()
            page.get_by_text("Top-1 accuracy").first.wait_for(timeout=180_000)
            wait_for_script(page)
            assert_no_exception(page)
            assert page.get_by_text("Stopped on request").count()
            assert page.get_by_text("Jobs run on a Ray cluster · 2 CPUs · 0 GPUs").count()
            page.screenshot(path=str(SCREENSHOTS / "cluster-train-after.png"), full_page=True)
        finally:
            context.close()
    runs = RunStore(tmp_path / "runs").list()
    assert len(runs) == 1 and runs[0].status == "stopped" and runs[0].history, runs


def test_home_says_jobs_run_on_the_cluster_and_what_it_has(ray_cluster, tiny_data_env, runs_dir, monkeypatch):
    from streamlit.testing.v1 import AppTest

    lab_ui = _lab_ui()
    monkeypatch.setenv("RESNET_LAB_RAY_ADDRESS", ray_cluster.address)
    lab_ui.reset_server_state()
    try:
        AppTest.from_file("../app/Home.py", default_timeout=60).run()
        probe = lab_ui.job_registry()._probe
        assert probe.wait(120) and probe.status == "done", probe.error
        at = AppTest.from_file("../app/Home.py", default_timeout=60).run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        assert "Jobs run on a Ray cluster · 2 CPUs · 0 GPUs" in "\n".join(c.value for c in at.caption)
        assert "Jobs run on a Ray cluster without GPUs" in "\n".join(i.value for i in at.info)
        assert lab_ui.has_cuda() is False and lab_ui.cluster_gpus() == 0
    finally:
        lab_ui.job_registry().shutdown()
        lab_ui.reset_server_state()


def _lab_ui():
    from conftest import ROOT

    if str(ROOT / "app") not in sys.path:
        sys.path.insert(0, str(ROOT / "app"))
    import lab_ui

    return lab_ui


def test_a_killed_node_fails_its_job_with_the_node_named_and_keeps_what_was_sent(on_cluster, archive, ray_cluster,
                                                                                  tmp_path):
    """Last in this module: it leaves the cluster with one node."""
    jobs = [on_cluster.start("train", tasks.train, owner=o, config=_config(80), source=str(archive))
            for o in ("ana", "ben")]
    _wait_for(lambda: all(j.events("epoch") for j in jobs), 300, "an epoch of both jobs")
    ids = ray_cluster.node_ids()
    victim = next(j for j in jobs if _node(j)["node_id"] == ids["node_b"])
    other = next(j for j in jobs if j is not victim)
    run_id = victim.events("start")[0]["run_id"]
    store = RunStore(tmp_path / "runs")
    _wait_for(lambda: (tmp_path / "runs" / run_id / "history.json").exists(), 120, "the first shipped epoch")
    ray_cluster.nodes[1].kill()
    assert victim.wait(180), victim.snapshot()
    assert victim.status == "failed"
    assert re.search(rf"cluster node .*node id {ids['node_b'][:8]}\) was lost", victim.error), victim.error
    assert "kept" in victim.error
    kept = store.get(run_id)
    assert kept.status == "failed" and "was lost" in (kept.error or "") and len(kept.history) >= 1
    assert json.loads((tmp_path / "runs" / run_id / "config.json").read_text())
    other.stop()  # the head's job is unharmed; it ends as stopped
    assert other.wait(120) and other.status == "stopped", (other.status, other.error)


def test_an_unreachable_cluster_fails_fast_with_a_message(tmp_path, monkeypatch, archive):
    from ray_cluster import free_port

    monkeypatch.setenv("RESNET_LAB_RAY_ADDRESS", f"127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("RESNET_LAB_RUNS", str(tmp_path / "runs"))
    registry = JobRegistry(threads=1)
    try:
        assert registry.cluster_resources(wait_s=120) is None
        problem = registry.cluster_problem()
        assert "no Ray head answers at the address in the ray_address setting" in problem
        assert "127.0.0.1" not in problem  # students see it: the head's address is not shown
        job = registry.start("train", tasks.train, owner="ana", config=_config(2), source=str(archive))
        assert job.wait(120) and job.status == "failed" and "no Ray head answers" in job.error, job.error
    finally:
        registry.shutdown()


def test_the_app_survives_a_head_restart_and_sends_new_jobs_to_the_new_head(tmp_path, monkeypatch, archive):
    """The head dies mid-job: that job fails with a message, the registry (the app) carries on, and the next job
    runs on a head started again."""
    first = RayCluster(tmp_path / "ray1", nodes=1, cpus=1)
    monkeypatch.setenv("RESNET_LAB_RAY_ADDRESS", first.address)
    monkeypatch.setenv("RESNET_LAB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("RESNET_LAB_CACHE", str(tmp_path / "cache"))
    registry = JobRegistry(threads=1, stop_grace_s=10)
    second = None
    try:
        job = registry.start("train", tasks.train, owner="ana", config=_config(80), source=str(archive))
        _wait_for(lambda: job.events("epoch"), 300, "the first epoch")
        first.close()
        assert job.wait(180) and job.status == "failed" and "was lost" in job.error, (job.status, job.error)
        second = RayCluster(tmp_path / "ray2", nodes=1, cpus=1, port=first.port)  # the same address again
        again = registry.start("train", tasks.train, owner="ana", config=_config(2), source=str(archive))
        assert again.wait(300) and again.status == "done", (again.error, again.error_detail)
        assert _node(again)["node_id"] != _node(job)["node_id"]
    finally:
        registry.shutdown()
        first.close()
        if second is not None:
            second.close()


def test_the_sidebar_names_the_cluster_or_says_it_cannot_be_reached_without_its_address(tiny_data_env, runs_dir,
                                                                                        monkeypatch):
    from streamlit.testing.v1 import AppTest

    from ray_cluster import free_port

    lab_ui = _lab_ui()

    monkeypatch.setenv("RESNET_LAB_RAY_ADDRESS", f"127.0.0.1:{free_port()}")
    lab_ui.reset_server_state()
    try:
        at = AppTest.from_file("../app/Home.py", default_timeout=60).run()
        assert not at.exception
        assert "Jobs run on a Ray cluster · asking it for its size" in "\n".join(c.value for c in at.caption)
        probe = lab_ui.job_registry()._probe
        assert probe.wait(120) and probe.status == "failed"
        at.run()
        shown = "\n".join(str(e.value) for e in at.error).replace("\\", "")  # markdown escapes
        assert "The Ray cluster cannot be reached" in shown and "ray_address" in shown, shown
        assert "127.0.0.1" not in shown
    finally:
        lab_ui.job_registry().shutdown()
        lab_ui.reset_server_state()
