"""Time one Grad-CAM of custom_resnet on the CPU, and the misclassification workbench on 10,000 predictions:
prints one JSON line.

    python benchmarks/bench_gradcam.py                     # custom_resnet, layer3 (target ≤ 100 ms on a CPU)
    python benchmarks/bench_gradcam.py --layer prep        # the first stage: backward through the whole network
    python benchmarks/bench_gradcam.py --threads 1         # one intra-op thread (steadier on busy shared cores)

One Grad-CAM = ``resnet_lab.inspect.gradcam(model, image, layer)`` for the predicted class, exactly what the page
calls: a no-grad forward pass for the prediction, then captum's LayerGradCam (forward + backward to the layer) and
LayerAttribution.interpolate to 32x32. Weights are untrained (the cost does not depend on them); the first calls
(captum import, allocator warm-up) are reported as ``first_call_ms`` and left out of the statistics.

``workbench_ms`` is the Misclassified page's arithmetic on 10,000 synthetic stored predictions: enrich (loss,
confidence), confusion matrix, top-1/3/5, most-confused pairs, and a filtered + sorted gallery list.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def workbench_ms(n: int = 10_000, repeat: int = 20) -> float:
    from resnet_lab import inspect as I
    from resnet_lab import metrics as M

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, n)
    logits = rng.normal(size=(n, 10)) + 2.5 * np.eye(10)[labels]
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    stored = {"probs": probs, "labels": labels, "indices": np.arange(n)}
    classes = [str(i) for i in range(10)]
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        pred = I.enrich(stored)
        cm = M.confusion_matrix(pred["labels"], pred["preds"], 10)
        M.topk_accuracy(pred["probs"], pred["labels"], (1, 3, 5))
        M.most_confused(cm, classes)
        I.filter_predictions(pred, true=3, predicted=None, only_wrong=True, sort="loss")
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def main() -> None:
    from resnet_lab import inspect as I
    from resnet_lab.models import build

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="custom_resnet")
    p.add_argument("--layer", default=None, help="default: the model's last stage (layer3, the sum x + F(x), for custom_resnet)")
    p.add_argument("--repeat", type=int, default=50)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = p.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build(args.model).eval()
    layer = args.layer or I.stages(model)[-1]
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

    t0 = time.perf_counter()
    first = I.gradcam(model, image, layer, mean=mean, std=std)
    first_ms = (time.perf_counter() - t0) * 1000
    for _ in range(3):
        I.gradcam(model, image, layer, mean=mean, std=std)
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        I.gradcam(model, image, layer, mean=mean, std=std)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    median = statistics.median(times)
    print(json.dumps({
        "benchmark": "gradcam", "model": args.model, "layer": layer, "grid": list(first.grid), "device": "cpu",
        "threads": torch.get_num_threads(), "cpu_cores": os.cpu_count(), "repeat": args.repeat,
        "median_ms": round(median, 1), "min_ms": round(times[0], 1),
        "p90_ms": round(times[int(0.9 * (len(times) - 1))], 1), "first_call_ms": round(first_ms, 1),
        "target_ms": 100, "meets_target": median <= 100,
        "workbench_10k_ms": round(workbench_ms(), 2),
        "load_avg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }))


if __name__ == "__main__":
    main()
