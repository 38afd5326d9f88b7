"""Time the Grad-CAM page's explanations and the Activations page's channel examples on the CPU: one JSON line.

    python benchmarks/bench_attributions.py                      # resnet20 (target: all seven methods ≤ 5 s)
    python benchmarks/bench_attributions.py --model custom_resnet
    python benchmarks/bench_attributions.py --threads 2 --sanity --channels 10000
    python benchmarks/bench_attributions.py --threads 1 --road 10     # ROAD of every method on 10 images

``methods_s``: ``resnet_lab.attributions.attribute`` for one image and one class, all seven methods (Grad-CAM,
Guided Grad-CAM, Guided Backprop, Saliency, Gradient × Input, Integrated Gradients with 32 steps, Occlusion 8 px /
stride 4), the best of
``--repeat`` calls after one warm-up call; the page computes this twice (predicted and true class).
``sanity_s`` (with --sanity): the cascading randomisation check, all methods, top-level steps.
``road_s`` (with --road N): ROAD's 9 + 9 removal steps for every method's maps of N images (the page's *sample*
and ``explain --faithfulness``), the maps given.
``channels_s`` (with --channels N): one pass over N random images for the channel examples at the last stage.
Weights are untrained: the cost does not depend on them. On a shared machine, report the load with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--sanity", action="store_true")
    p.add_argument("--channels", type=int, default=0, metavar="N")
    p.add_argument("--road", type=int, default=0, metavar="N")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from resnet_lab import attributions as A
    from resnet_lab import channels as C
    from resnet_lab import faithfulness as F
    from resnet_lab import inspect as I
    from resnet_lab.models import build

    torch.manual_seed(0)
    model = build(args.model).eval()
    layer = I.stages(model)[-1]
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    A.attribute(model, image, None, layer, mean=mean, std=std)  # warm-up: captum import, allocator
    runs = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        out = A.attribute(model, image, None, layer, mean=mean, std=std)
        runs.append((time.perf_counter() - t0, {m: round(a.seconds, 3) for m, a in out.items()}))
    best = min(runs, key=lambda r: r[0])
    result = {"model": args.model, "layer": layer, "threads": args.threads, "methods_s": round(best[0], 3),
              "per_method_s": best[1], "target_s": 5.0, "load_1min": round(os.getloadavg()[0], 2)}
    if args.sanity:
        t0 = time.perf_counter()
        check = A.sanity_check(model, image, None, layer, mean=mean, std=std)
        result["sanity_s"] = round(time.perf_counter() - t0, 2)
        result["sanity_steps"] = check.steps
    if args.road:
        images = list(np.random.default_rng(2).integers(0, 256, (args.road, 32, 32, 3), dtype=np.uint8))
        maps = {m: [a.map] * args.road for m, a in out.items()}
        t0 = time.perf_counter()
        F.road_curves(model, images, [0] * args.road, maps, mean=mean, std=std)
        result["road_s"] = round(time.perf_counter() - t0, 2)
        result["road_images"] = args.road
    if args.channels:
        images = np.random.default_rng(1).integers(0, 256, (args.channels, 32, 32, 3), dtype=np.uint8)
        t0 = time.perf_counter()
        C.channel_examples(model, images, layer, mean=mean, std=std)
        result["channels_s"] = round(time.perf_counter() - t0, 2)
        result["channels_images"] = args.channels
    result["load_1min_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
