"""Misclassified page with 10,000 stored predictions: seconds per interaction, one JSON line.

    python benchmarks/bench_misclassified.py          # target: median ≤ 1 s per interaction (AppTest, 2 CPU cores)

Builds a 10,000-image class-folder test split (generated patterns, as the tests use) and a run holding 10,000
predictions drawn around the true labels (timing only: the page's cost depends on the count, not on which images
are wrong), then drives the real page script with Streamlit's AppTest through the workbench controls and times each
rerun. AppTest's own overhead is included, so a browser is not slower than this.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    import numpy as np
    from streamlit.testing.v1 import AppTest

    from resnet_lab.data import load_dataset, make_class_folder_dataset
    from resnet_lab.runs import RunStore

    base = Path(tempfile.mkdtemp(prefix="bench-misclassified-"))
    root = make_class_folder_dataset(base / "data", 1, 1000, size=32, fmt="png", seed=3)
    os.environ.update(RESNET_LAB_DATA=str(root), RESNET_LAB_CACHE=str(base / "cache"), RESNET_LAB_RUNS=str(base / "runs"),
                      RESNET_LAB_REFERENCE="none")
    data = load_dataset(str(root))
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(len(data.test_y), 10)) + 2.5 * np.eye(10)[data.test_y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    store = RunStore(base / "runs")
    run = store.create({"model": "resnet20", "classes": data.classes, "mean": list(data.mean), "std": list(data.std),
                        "data": str(root)}, prefix="bench-10k")
    store.save_predictions(run, probs, data.test_y, data.test_index)
    store.set_status(run, "done")

    at = AppTest.from_file(str(ROOT / "app" / "Home.py"), default_timeout=120)
    t0 = time.perf_counter()
    at.run()
    at.switch_page("../pages/misclassified.py").run()
    first = time.perf_counter() - t0
    steps = [
        lambda: at.selectbox(key="filter_true").set_value(data.classes[3]),
        lambda: at.selectbox(key="sort").set_value("confidence"),
        lambda: at.selectbox(key="page_size").set_value(48),
        lambda: at.number_input(key="gallery_page").set_value(3),
        lambda: at.toggle(key="only_wrong").set_value(False),
        lambda: at.selectbox(key="filter_pred").set_value(data.classes[5]),
        lambda: at.radio(key="cm_mode").set_value("% of each true class"),
    ]
    seconds = []
    for step in steps:
        step()
        t0 = time.perf_counter()
        at.run()
        seconds.append(time.perf_counter() - t0)
        if at.exception:
            raise SystemExit(f"the page raised: {at.exception[0].value}")
    print(json.dumps({"benchmark": "misclassified", "predictions": len(probs), "first_view_s": round(first, 3),
                      "median_s": round(statistics.median(seconds), 3), "max_s": round(max(seconds), 3),
                      "per_step_s": [round(s, 3) for s in seconds], "target_median_s": 1.0,
                      "cpus": os.cpu_count(), "load_avg": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
