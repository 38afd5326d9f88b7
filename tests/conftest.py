"""Shared fixtures.

Pages
  home_pages() / app_pages()  (functions) Home's PAGES as (path, title, icon); app_pages() only those that exist.

Data and paths
  tiny_data_dir     (session) a small class-folder PNG dataset (10 classes, 20 train / 10 test per class).
  tiny_data_env     RESNET_LAB_DATA -> tiny_data_dir, RESNET_LAB_CACHE -> a fresh tmp dir; returns the data dir.
  load_with_own_cache(data_dir, cache)  (a function, `from conftest import load_with_own_cache`) load_dataset with
                    RESNET_LAB_CACHE -> cache for the call: for module-scoped fixtures, which have no monkeypatch.
  shared_archive    the full CIFAR-10 archive from RESNET_LAB_DATA (`make test` sets it), or a skip saying why.
  runs_dir          a tmp dir set as RESNET_LAB_RUNS; returns it.
  one_thread        torch at one intra-op thread for the test (tiny batches); single_thread() is the same as a
                    context manager (`from conftest import single_thread`) for module-scoped fixtures.
  (autouse)         Streamlit's st.cache_resource / st.cache_data are cleared around every test, so one AppTest
                    never sees another's cached data or jobs.

Browser (tests marked `browser`; all skip with the reason when Chromium or Playwright is missing)
  app_server        (session) `streamlit run app/Home.py` on a free port with the tiny data, its own cache and
                    its own runs dir. Attributes: url, port, data_dir, cache_dir, runs_dir, env, log_path.
                    Write runs into app_server.runs_dir to have the app find them.
  browser           (session) headless Debian Chromium driven by Playwright (no browser download).
  browser_page      a fresh 1400x900 page; console errors are collected in browser_page.console_errors.
  goto_page         goto_page("data_models") opens that page (url path = the page file's name, "" for Home),
                    waits until the script has finished and images have loaded, and returns the Playwright page.
  screenshot        screenshot("data_models") saves the whole page (not only the viewport) to
                    test-artifacts/screenshots/data_models.png and returns the path.
  wait_for_script(page)      (a function: `from conftest import wait_for_script`) after a click, waits for the
                             rerun to finish and images to load. On a busy machine a rerun can start after its
                             short pause: when a click must change something, wait for that change first
                             (locator.wait_for / page.wait_for_function), then call it.
  assert_no_exception(page)  (a function, same import) fails with the text of any Streamlit exception box.
  show_everyones_runs(page)  (a function, same import) turns on the Everyone's runs switch (clicks until it takes).
  streamlit_server(env, log_path, extra_args, port)  (a context manager, same import) another app server, e.g.
                             with a secrets file (tests/test_signin.py); app_server uses it.

A page test then reads:

    from conftest import assert_no_exception, wait_for_script

    @pytest.mark.browser
    def test_my_page(goto_page, screenshot):
        page = goto_page("my_page")
        assert_no_exception(page)
        page.get_by_role("button", name="Start").click()
        wait_for_script(page)
        screenshot("my_page-after-start")
"""

from __future__ import annotations

import ast
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

# Threads are set deliberately: the suite must pass on a machine busy with other work, where every extra OpenMP
# thread only adds contention. Before torch is imported (here and, through the environment, in job workers).
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RESNET_LAB_JOB_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("RESNET_LAB_WARM_SPARE", "0")  # no idle torch process per test (tests/test_jobs.py covers it)

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TINY_TRAIN_PER_CLASS = 20
TINY_TEST_PER_CLASS = 10


# --------------------------------------------------------------------------------------------------- the pages

def home_pages() -> list[tuple[str, str, str]]:
    """app/Home.py's PAGES, (path, title, icon), read from the source (importing Home.py would run the app)."""
    tree = ast.parse((ROOT / "app" / "Home.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "PAGES" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("app/Home.py has no PAGES list")


def app_pages() -> list[tuple[str, str, str]]:
    """The pages of PAGES whose files exist (the app shows only those)."""
    return [p for p in home_pages() if (ROOT / p[0]).exists()]


# ---------------------------------------------------------------------------------------------- data and paths

@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    from resnet_lab.data import make_class_folder_dataset

    root = tmp_path_factory.mktemp("tiny-cifar")
    return make_class_folder_dataset(root, TINY_TRAIN_PER_CLASS, TINY_TEST_PER_CLASS, size=32, fmt="png", seed=0)


@pytest.fixture
def tiny_data_env(tiny_data_dir, tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("RESNET_LAB_DATA", str(tiny_data_dir))
    monkeypatch.setenv("RESNET_LAB_CACHE", str(tmp_path / "cache"))
    return tiny_data_dir


def load_with_own_cache(data_dir: Path, cache: Path):
    """``load_dataset(data_dir)`` with RESNET_LAB_CACHE at ``cache`` while it decodes, so a module's data lands in
    (and comes from) its own folder, never the developer's cache."""
    from resnet_lab.data import load_dataset

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RESNET_LAB_CACHE", str(cache))
        return load_dataset(str(data_dir))


@pytest.fixture
def shared_archive() -> Path:
    value = os.environ.get("RESNET_LAB_DATA", "").strip()
    if not value:
        pytest.skip("RESNET_LAB_DATA is not set; point it at ../shared/data/cifar10-jpeg.tar.gz (make test does)")
    path = Path(value)
    if not path.is_file():
        pytest.skip(f"RESNET_LAB_DATA={value} is not an existing archive file")
    return path.resolve()


@contextlib.contextmanager
def single_thread():
    """One intra-op thread for tiny batches: a second gains nothing, and on a busy machine two spin-wait on each
    other (a descheduled OpenMP thread can hold a barrier for tens of ms)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    """Files of tiny runs use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    with single_thread():
        yield


@pytest.fixture
def runs_dir(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "runs"
    path.mkdir()
    monkeypatch.setenv("RESNET_LAB_RUNS", str(path))
    return path


def _clear_streamlit_caches() -> None:
    if "streamlit" in sys.modules:  # only tests that used streamlit have anything to clear
        import streamlit as st

        st.cache_resource.clear()
        st.cache_data.clear()
    if "lab_ui" in sys.modules:  # the app's server-wide state (job registry, memos, password back-off)
        sys.modules["lab_ui"].reset_server_state()


def settle(at, timeout_s: float = 300, run_timeout: float = 90):
    """Run an AppTest page until the short computations it started in worker processes (the quick lane: maps, the
    sanity check, the initialisation view, a first decode) are done and the page shows their results. Returns
    ``at``. Each computation runs exactly once: a rerun finds its result in the server's shared results."""
    if str(ROOT / "app") not in sys.path:
        sys.path.insert(0, str(ROOT / "app"))
    import lab_ui

    deadline = time.monotonic() + timeout_s
    at.run(timeout=run_timeout)
    for _ in range(10):
        busy = [j for j in lab_ui.job_registry().all() if j.active and j.device == "quick"]
        if not busy:
            return at
        for job in busy:
            assert job.wait(max(1.0, deadline - time.monotonic())), f"{job.title} did not finish in {timeout_s} s"
        at.run(timeout=run_timeout)
    return at


@pytest.fixture(autouse=True)
def no_shipped_reference_runs(monkeypatch):
    """The runs store also lists the reference runs shipped in assets/reference; tests see only the runs they make
    unless they point RESNET_LAB_REFERENCE somewhere themselves (tests/test_reference.py does)."""
    monkeypatch.setenv("RESNET_LAB_REFERENCE", "none")


@pytest.fixture(autouse=True)
def clear_streamlit_caches():
    _clear_streamlit_caches()
    yield
    _clear_streamlit_caches()


@pytest.fixture(autouse=True)
def model_files_may_run():
    """A class-server AppTest forbids model files in this process (as the app's own process must); the next test
    starts where a single-user process does."""
    from resnet_lab.models import files

    yield
    files._FORBIDDEN.clear()


# ------------------------------------------------------------------------------------------------------ browser

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    def __init__(self, url, port, data_dir, cache_dir, runs_dir, env, log_path, process):
        self.url, self.port = url, port
        self.data_dir, self.cache_dir, self.runs_dir = data_dir, cache_dir, runs_dir
        self.env, self.log_path, self.process = env, log_path, process

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _require_browser() -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (scripts/setup.sh test does)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("the playwright Python package is not installed (pip install -r requirements.txt)")


@contextlib.contextmanager
def streamlit_server(env: dict, log_path: Path, extra_args: tuple = (), port: int | None = None):
    """``streamlit run app/Home.py`` on localhost with ``env``, until it answers /_stcore/health; yields
    (url, port, process) and ends it afterwards. ``port``: given when the caller needs it first (a redirect URI)."""
    port = port or _free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app" / "Home.py"),
           "--server.headless", "true", "--server.port", str(port), "--server.address", "127.0.0.1",
           "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none", *extra_args]
    ARTIFACTS.mkdir(exist_ok=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited with {proc.returncode}:\n{log_path.read_text(errors='replace')[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("streamlit did not answer /_stcore/health within 60 s:\n"
                            + log_path.read_text(errors="replace")[-3000:])
            time.sleep(0.3)
        yield url, port, proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def app_server(tiny_data_dir, tmp_path_factory):
    _require_browser()
    base = tmp_path_factory.mktemp("app-server")
    env = dict(os.environ, RESNET_LAB_DATA=str(tiny_data_dir), RESNET_LAB_CACHE=str(base / "cache"),
               RESNET_LAB_RUNS=str(base / "runs"), RESNET_LAB_REFERENCE="none", PYTHONUNBUFFERED="1")
    (base / "runs").mkdir()
    log_path = ARTIFACTS / "streamlit-server.log"
    with streamlit_server(env, log_path) as (url, port, proc):
        yield AppServer(url, port, tiny_data_dir, base / "cache", base / "runs", env, log_path, proc)


@pytest.fixture(scope="session")
def browser():
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def browser_page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.console_errors = []
    page.on("console", lambda msg: page.console_errors.append(msg.text) if msg.type == "error" else None)
    yield page
    context.close()


SCRIPT_DONE = "[data-testid='stApp'][data-test-script-state='notRunning']"


def wait_for_script(page, timeout_s: float = 90) -> None:
    """Wait until the script run has finished and every image on the page has loaded."""
    # The state can still read notRunning for a moment before a new run starts.
    page.wait_for_timeout(600)
    page.wait_for_selector(SCRIPT_DONE, timeout=timeout_s * 1000)
    page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=timeout_s * 1000)
    page.wait_for_timeout(300)  # charts draw just after the script ends


def wait_for_count(page, selector: str, n: int, timeout_s: float = 60) -> int:
    """Wait until at least ``n`` elements match: Streamlit mounts charts and images lazily, a moment after the
    script run ends, later still on a loaded machine. Returns the count (the caller asserts on it)."""
    try:
        page.wait_for_function("([sel, n]) => document.querySelectorAll(sel).length >= n", arg=[selector, n],
                               timeout=timeout_s * 1000)
    except Exception:
        pass  # the caller's assertion reports the count it saw
    return page.locator(selector).count()


def show_everyones_runs(page) -> None:
    """Turn on the *Everyone's runs* switch; a click that lands during a rerun can be swallowed, so click until the
    "none of yours" note is gone."""
    for _ in range(4):
        if page.get_by_text("No saved runs of yours yet").count() == 0:
            return
        page.get_by_text("Everyone's runs").first.click()
        try:
            page.get_by_text("No saved runs of yours yet").first.wait_for(state="detached", timeout=60_000)
        except Exception:
            pass
        wait_for_script(page)


def assert_no_exception(page) -> None:
    boxes = page.locator("[data-testid='stException']")
    if boxes.count():
        pytest.fail("the page shows an exception:\n" + "\n---\n".join(boxes.all_inner_texts()))


@pytest.fixture
def goto_page(app_server, browser_page):
    def goto(url_path: str = "", timeout_s: float = 90):
        browser_page.goto(f"{app_server.url}/{url_path.lstrip('/')}")
        wait_for_script(browser_page, timeout_s)
        return browser_page

    return goto


@pytest.fixture
def screenshot(browser_page):
    def shot(name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        page = browser_page
        # Streamlit scrolls inside its own container, so a "full page" screenshot would stop at the viewport:
        # grow the viewport to the content's height first.
        height = page.evaluate(
            """() => Math.max(...['[data-testid="stMain"]', '[data-testid="stAppViewContainer"]',
                                  '[data-testid="stSidebarContent"]', 'body']
                 .map(s => document.querySelector(s)).filter(Boolean).map(e => e.scrollHeight))"""
        )
        size = page.viewport_size
        page.mouse.move(0, 0)  # no hover tooltip in the picture
        page.set_viewport_size({"width": size["width"], "height": min(max(int(height) + 40, size["height"]), 12000)})
        page.wait_for_timeout(400)
        page.screenshot(path=str(path), full_page=True)
        page.set_viewport_size(size)
        return path

    return shot



# ---------------------------------------------------------------------------------------------- shared test models

def resnet20_with_bn_stats(seed: int = 0):
    """An untrained resnet20 in eval mode with non-trivial BN statistics, as a trained network has (explanations
    and sanity checks then see more than the identity)."""
    import torch
    from torch import nn

    from resnet_lab.models import build

    torch.manual_seed(seed)
    model = build("resnet20").eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
    return model


def random_image(seed: int = 0):
    import numpy as np

    return np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)


def save_untrained_run(data):
    """A real resnet20 (untrained, seed 0) and its real predictions on ``data``, saved as the trainer saves a run
    (in RESNET_LAB_RUNS). Returns (run, probs)."""
    import torch

    from resnet_lab.models import build
    from resnet_lab.runs import RunStore
    from resnet_lab.training import predict

    torch.manual_seed(0)
    model = build("resnet20").eval()
    probs = predict(model, data.test_x, data.mean, data.std, torch.device("cpu"))
    store = RunStore()
    run = store.create({"model": "resnet20", "classes": data.classes, "mean": list(data.mean), "std": list(data.std),
                        "data": None, "data_source": data.source})
    store.save_checkpoint(run, model.state_dict())
    store.save_predictions(run, probs, data.test_y, data.test_index)
    store.set_status(run, "done")
    return run, probs
