"""Where a training run's GPU time goes: one JSON line with the top kernels and the GPU's busy fraction.

    python benchmarks/profile_train.py --preset assignment --epochs 2 --data ../shared/data/cifar10-jpeg.tar.gz

Runs the preset for --epochs (the first includes cuDNN autotuning) under torch.profiler and reports, for the whole
run: wall seconds, the summed GPU kernel time (busy fraction = kernel time / wall time: well below 1 means the GPU
waits for Python or for the host), and the kernels that take the most GPU time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="assignment")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--data", default=None)
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args()

    import tempfile

    import torch
    from torch.profiler import ProfilerActivity, profile

    from resnet_lab import training
    from resnet_lab.config import resolve_data_source
    from resnet_lab.data import load_dataset
    from resnet_lab.runs import RunStore

    data = load_dataset(resolve_data_source(args.data))
    cfg = training.preset(args.preset, epochs=args.epochs, device="cuda")
    with tempfile.TemporaryDirectory() as tmp:
        training.train(training.preset(args.preset, epochs=1, device="cuda"), data=data, store=RunStore(tmp))  # warm-up
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            t0 = time.perf_counter()
            run = training.train(cfg, data=data, store=RunStore(tmp))
            torch.cuda.synchronize()
            wall = time.perf_counter() - t0

    def gpu_us(e):
        return getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0.0)

    events = [e for e in prof.key_averages() if gpu_us(e) > 0]
    kernel_us = sum(gpu_us(e) for e in events)
    top = sorted(events, key=gpu_us, reverse=True)[:args.top]
    print(json.dumps({
        "profile": args.preset, "epochs": args.epochs, "device": torch.cuda.get_device_name(),
        "wall_s": wall, "trainer_seconds_total": run.metrics["seconds_total"],
        "epoch_seconds": run.metrics["epoch_seconds"], "gpu_kernel_s": kernel_us / 1e6,
        "gpu_busy_fraction": kernel_us / 1e6 / wall,
        "top": [{"name": e.key[:90], "gpu_ms": gpu_us(e) / 1e3, "calls": e.count} for e in top],
    }))


if __name__ == "__main__":
    main()
