"""Every page's first visit while a training runs: seconds until the page has drawn (its content, or the progress
panel of a computation it sent to a worker). Prints one JSON line.

    python benchmarks/bench_first_visit.py --data ../shared/data/cifar10-jpeg.tar.gz
    python benchmarks/bench_first_visit.py --data ../shared/data/cifar10-jpeg.tar.gz --no-training   # idle baseline

It starts `streamlit run app/Home.py` as a class server (RESNET_LAB_LOCK_DATA=<data>) on a free localhost port, with
a fresh runs folder and the decode cache of RESNET_LAB_CACHE (default: the repo's .cache, so run `make test` or open
the app once first if the archive was never decoded), and with the shipped reference run for the Look-inside
pages. Unless --no-training, a `python -m resnet_lab train --preset quick-cpu --epochs 30` process trains beside it
the whole time (2 threads: both cores busy). Each page is then opened in a fresh Chromium context — a new student,
nothing cached for that session — and timed from navigation to the end of its first script run (Streamlit's
`notRunning` state, images loaded). `background` says whether the page showed a computation running in a worker
("… in the background"). Issue 20's target: every page ≤ 10 s with one training running on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["", "data_models", "lr_finder", "receptive_field", "train", "activations", "gradcam", "misclassified",
         "degradation", "search"]
DONE = "[data-testid='stApp'][data-test-script-state='notRunning']"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"streamlit exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.3)
    raise SystemExit("streamlit did not answer within 120 s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="the data source the class server locks")
    p.add_argument("--no-training", action="store_true", help="measure on idle cores instead")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    args = p.parse_args()

    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="bench-first-visit-"))
    (tmp / "runs").mkdir()
    env = dict(os.environ, RESNET_LAB_LOCK_DATA=str(Path(args.data).resolve()), RESNET_LAB_RUNS=str(tmp / "runs"),
               RESNET_LAB_CACHE=os.environ.get("RESNET_LAB_CACHE", str(ROOT / ".cache")), PYTHONUNBUFFERED="1")
    env.pop("RESNET_LAB_DATA", None)
    port = _port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp / "streamlit.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app" / "Home.py"),
                               "--server.headless", "true", "--server.port", str(port), "--server.address",
                               "127.0.0.1", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    trainer = None
    out = {"training_beside": not args.no_training, "pages": {}}
    try:
        _wait_healthy(url, server)
        if not args.no_training:
            trainer = subprocess.Popen([sys.executable, "-m", "resnet_lab", "--threads", "2", "train", "--preset",
                                        "quick-cpu", "--epochs", "30", "--json", "--data", str(args.data)],
                                       cwd=ROOT, env=dict(env, RESNET_LAB_DATA=str(args.data)),
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(15)  # past its imports and data loading: training steps from here on
        out["load_at_start"] = round(os.getloadavg()[0], 2)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, headless=True,
                                         args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            for name in PAGES:
                context = browser.new_context(viewport={"width": 1400, "height": 900})
                page = context.new_page()
                t0 = time.monotonic()
                page.goto(f"{url}/{name}")
                page.wait_for_timeout(500)
                page.wait_for_selector(DONE, timeout=600_000)
                page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=600_000)
                seconds = time.monotonic() - t0
                body = page.inner_text("body")
                out["pages"][name or "home"] = {"seconds": round(seconds, 2),
                                                "background": "in the background" in body,
                                                "exception": page.locator("[data-testid='stException']").count() > 0}
                context.close()
            browser.close()
        out["load_at_end"] = round(os.getloadavg()[0], 2)
        out["worst_s"] = max(v["seconds"] for v in out["pages"].values())
        if trainer is not None:
            out["training_still_running"] = trainer.poll() is None
    finally:
        for proc in (trainer, server):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        log.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
