"""Train a preset with several seeds and store what it measured, for the Train page's preset note
(``resnet_lab.train.notes``): top-1 and wall time per run, the machine, the command.

    python benchmarks/bench_presets.py --preset quick-cpu --seeds 0 1 2 --data ../shared/data/cifar10-jpeg.tar.gz
    python benchmarks/bench_presets.py --preset assignment --seeds 0 --device cuda --data DATA  # on a GPU

Writes ``assets/presets/<preset>.json`` (``--output`` elsewhere) and prints it as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def hardware(device) -> str:
    if device.type == "cuda":
        import torch

        return f"GPU: {torch.cuda.get_device_name(device)}"
    import torch

    cpu = platform.processor() or platform.machine()
    try:  # the CPU's model name, where Linux says it
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU: {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}"


def main() -> None:
    from resnet_lab.config import resolve_device
    from resnet_lab.data import load_dataset
    from resnet_lab.train.notes import FORMAT, MEASURED_DIR
    from resnet_lab.training import PRESETS, preset, train

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", required=True, choices=list(PRESETS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--data", default=None, help="data source (default: $RESNET_LAB_DATA or cifar10)")
    p.add_argument("--device", default="auto")
    p.add_argument("--output", default=None, help="default: assets/presets/<preset>.json")
    args = p.parse_args()

    data = load_dataset(args.data)
    device = resolve_device(args.device)
    runs = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        run = train(preset(args.preset, seed=seed, device=str(device), data=args.data), data=data)
        runs.append({"seed": seed, "top1": run.metrics.get("top1"), "seconds": round(time.perf_counter() - t0, 1),
                     "run": run.id, "status": run.status})
    source = str(data.path or data.source)
    out = {"format": FORMAT, "preset": args.preset, "runs": runs, "hardware": hardware(device),
           "date": time.strftime("%Y-%m-%d"),
           "command": f"python benchmarks/bench_presets.py --preset {args.preset} --seeds "
                      + " ".join(map(str, args.seeds)) + (f" --device {args.device}" if args.device != "auto" else ""),
           "data": f"data: {Path(source).name}"}
    path = Path(args.output) if args.output else MEASURED_DIR / f"{args.preset}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
