"""The app's suggested path, measured: LR range test with the page defaults → the pre-selected pick → train the preset
it was swept for. Prints one JSON line: the sweep (seconds, curve minimum), then per rule the LR max it picked and
the test accuracy that pick trained to.

    python benchmarks/bench_lr_handover.py --data ../shared/data/cifar10-jpeg.tar.gz                 # CPU: quick-cpu
    python benchmarks/bench_lr_handover.py --data ../shared/data/cifar10-jpeg.tar.gz --rules minimum steepest
    python benchmarks/bench_lr_handover.py --data ../shared/data/cifar10-jpeg.tar.gz --seed 1 --threads 2

The sweep is ``lr_finder.default_config`` (on a CPU: ``for_training(preset("quick-cpu"))``) and each training is
the same preset with ``lr_max`` = the rule's LR rounded as the LR Finder page rounds it (3 significant digits) and
``lr_min`` = a tenth of it — exactly what *Use for training* → *Start* runs. ``--rules`` defaults to the rule the
page pre-selects for the sweep's optimizer (``lr_finder.recommended``) plus ``steepest`` for comparison.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    import torch

    from resnet_lab import lr_finder as lrf
    from resnet_lab.config import resolve_device
    from resnet_lab.data import load_dataset
    from resnet_lab.training import preset, train

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="data source (default: $RESNET_LAB_DATA or cifar10)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0, help="seed of the sweep and of every training")
    p.add_argument("--rules", nargs="*", default=None, choices=lrf.SUGGESTION_NAMES)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = resolve_device(args.device)
    sweep = lrf.default_config(cuda=device.type == "cuda", data=args.data, device=str(device), seed=args.seed)
    data = load_dataset(args.data)
    t0 = time.perf_counter()
    result = lrf.find_lr(sweep, data=data)
    sweep_s = time.perf_counter() - t0
    chosen = lrf.recommended(sweep.optimizer)
    rules = args.rules or list(dict.fromkeys([chosen, "steepest"]))
    out = {"device": str(device), "torch_threads": torch.get_num_threads(), "preset": sweep.preset,
           "sweep": {"model": sweep.model, "optimizer": sweep.optimizer, "batch_size": sweep.batch_size,
                     "iterations": result.iterations, "seconds": round(sweep_s, 1),
                     "min_loss_lr": result.suggestion("minimum").lr if result.suggestion("minimum") else None},
           "preselected_rule": chosen, "runs": []}
    for rule in rules:
        s = result.suggestion(rule)
        if s is None:
            out["runs"].append({"rule": rule, "lr_max": None, "note": "no suggestion on this curve"})
            continue
        lr_max = float(f"{s.lr:.3g}")
        cfg = preset(sweep.preset, data=args.data, device=str(device), seed=args.seed, lr_max=lr_max,
                     lr_min=lr_max / 10)
        t1 = time.perf_counter()
        run = train(cfg, data=data, store=None)
        out["runs"].append({"rule": rule, "lr_max": lr_max, "test_acc": round(float(run.metrics["top1"]), 4),
                            "train_s": round(time.perf_counter() - t1, 1)})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
