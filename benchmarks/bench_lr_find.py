"""Time the LR range test: prints one JSON line (seconds, iterations, device, images/s).

    python benchmarks/bench_lr_find.py                       # GPU: custom_resnet, batch 512, 100 steps (target ≤ 3 s on an H100)
    python benchmarks/bench_lr_find.py --device cpu          # CPU: the page's CPU default (quick-cpu's run: resnet20, SGD, batch 128, 80 steps, 4,000 images)
    python benchmarks/bench_lr_find.py --device cpu --iters 10   # a quick smoke run
    python benchmarks/bench_lr_find.py --data ../shared/data/cifar10-jpeg.tar.gz   # real images instead of random ones

The data are random uint8 images unless --data is given (the range test's cost does not depend on what the pixels
are; decoding the archive is not part of the test). One short warm-up run first (CUDA context, cuDNN autotuning,
allocator), then the timed run of the full sweep; `first_call_s` is the cold run for reference. Divergence is
switched off (only a NaN ends the sweep) so every run does all its steps.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def random_dataset(n: int, seed: int = 0):
    from resnet_lab.data import CLASSES, Dataset

    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    y = np.arange(n, dtype=np.int64) % 10
    return Dataset(x, y, x[:10], y[:10], list(CLASSES), f"random uint8 ({n:,} images)")


def main() -> None:
    from resnet_lab.config import device_description, resolve_device
    from resnet_lab.lr_finder import LRFindConfig, default_config, find_lr

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--model", default=None)
    p.add_argument("--optimizer", default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--images", type=int, default=None,
                   help="random images to sample from (default 50,000 on a GPU, 1,000 on a CPU)")
    p.add_argument("--data", default=None, help="a real data source instead of random images")
    args = p.parse_args()

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    defaults = default_config(cuda=cuda)
    model = args.model or defaults.model
    batch = args.batch_size or defaults.batch_size
    iters = args.iters or defaults.iterations
    optimizer = args.optimizer or defaults.optimizer
    if args.data:
        from resnet_lab.data import load_dataset

        data = load_dataset(args.data)
    else:
        data = random_dataset(args.images or defaults.subset or 50_000)
    config = LRFindConfig(**{**defaults.to_dict(), "model": model, "optimizer": optimizer, "batch_size": batch,
                             "iterations": iters, "subset": defaults.subset if args.data else None, "diverge": 1e12,
                             "device": str(device), "augment": True,
                             "nesterov": defaults.nesterov and optimizer == "sgd"})

    t0 = time.perf_counter()
    find_lr(LRFindConfig(**{**config.to_dict(), "iterations": min(iters, 5)}), data=data)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = find_lr(config, data=data)
    total = time.perf_counter() - t0
    print(json.dumps({
        "benchmark": "lr_find", "model": model, "optimizer": optimizer, "batch_size": batch,
        "iterations": result.iterations, "seconds": round(total, 3), "sweep_seconds": round(result.seconds, 3),
        "images_per_s": round(result.iterations * batch / total, 1), "device": device_description()["device"],
        "first_call_s": round(first, 3), "data": data.source, "target_s": 3.0 if cuda else None,
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
