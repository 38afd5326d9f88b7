"""Take the README's three screenshots from the real app (docs/img/*.png): LR Finder after a range test, Grad-CAM's
methods side by side on the shipped reference run, and Depth Degradation's initialisation view.

    python scripts/readme_screenshots.py --data ../shared/data/cifar10-jpeg.tar.gz

It starts `streamlit run app/Home.py` on a free localhost port as a class server locked to --data (a fresh runs
folder; the decode cache of RESNET_LAB_CACHE, default .cache), drives headless Debian Chromium through each page as a
student would (the LR test and the maps run as the app's own jobs: a few minutes on 2 CPU cores), and writes each
viewport at 1400×900, scaled to 1000 px wide and reduced to a 256-colour palette (tens of KB each).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "img"
NAMES = ["lr-finder", "gradcam", "degradation"]
DONE = "[data-testid='stApp'][data-test-script-state='notRunning']"


def _save(page, name: str) -> None:
    from PIL import Image

    raw = OUT / f"{name}.raw.png"
    page.screenshot(path=str(raw))
    img = Image.open(raw).convert("RGB")
    img = img.resize((1000, round(img.height * 1000 / img.width)), Image.LANCZOS)
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(OUT / f"{name}.png", optimize=True)
    raw.unlink()


def _to_top(page, text: str) -> None:
    """Scroll so that the first element with ``text`` is at the top of the viewport."""
    page.get_by_text(text).first.evaluate("e => e.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(1000)


def _settle(page, timeout_ms: int = 600_000) -> None:
    page.wait_for_timeout(600)
    page.wait_for_selector(DONE, timeout=timeout_ms)
    page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=timeout_ms)
    page.wait_for_timeout(800)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--only", nargs="+", choices=NAMES, default=NAMES, help="retake only these screenshots")
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="readme-shots-"))
    (tmp / "runs").mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, RESNET_LAB_LOCK_DATA=str(Path(args.data).resolve()), RESNET_LAB_RUNS=str(tmp / "runs"),
               RESNET_LAB_CACHE=os.environ.get("RESNET_LAB_CACHE", str(ROOT / ".cache")))
    env.pop("RESNET_LAB_DATA", None)
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app" / "Home.py"),
                               "--server.headless", "true", "--server.port", str(port), "--server.address",
                               "127.0.0.1", "--browser.gatherUsageStats", "false"], cwd=ROOT, env=env,
                              stdout=open(tmp / "streamlit.log", "w"), stderr=subprocess.STDOUT)
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, headless=True, args=["--no-sandbox"])
            page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()

            if "lr-finder" in args.only:
                page.goto(f"{url}/lr_finder")
                _settle(page)
                page.get_by_role("button", name="Start", exact=True).click()
                page.get_by_role("button", name="Use for training").wait_for(timeout=900_000)
                _settle(page)
                _to_top(page, "2 · Read the curve")
                _save(page, "lr-finder")

            # Pages that compute in a worker on their own: wait for a text of the result, then frame a heading.
            for name, done, heading in (("gradcam", "All maps together took", "ways to explain one prediction"),
                                        ("degradation", "Gradient norm per layer", "The mechanism at initialisation")):
                if name in args.only:
                    page.goto(f"{url}/{name}")
                    _settle(page)
                    page.get_by_text(done).first.wait_for(timeout=600_000)
                    _settle(page)
                    _to_top(page, heading)
                    _save(page, name)
            browser.close()
    finally:
        server.terminate()
        server.wait(20)
    for name in args.only:
        print(f"{OUT / name}.png {(OUT / f'{name}.png').stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
