"""Time a depth-degradation suite and check that it shows the effect: prints one JSON line.

    python benchmarks/bench_degradation.py --data ../shared/data/cifar10-jpeg.tar.gz
        # the quick suite on the GPU: plain/resnet 20 and 56, all 50,000 images, 12 epochs
        # target: ≤ 180 s on one H100, plain-56 train error > plain-20's, resnet-56's ≤ resnet-20's
    python benchmarks/bench_degradation.py --suite cpu --device cpu --data ../shared/data/cifar10-jpeg.tar.gz
        # the CPU demo (target: ≤ 180 s on 2 idle cores, both halves shown)
    python benchmarks/bench_degradation.py --init --data ../shared/data/cifar10-jpeg.tar.gz
        # the page's first view: 20/56/110-layer plain and residual nets at initialisation, 3 seeds, 16 images
        # (target: ≤ 10 s on 2 cores)

``seconds`` is the suite itself (all nets: training, per-epoch test evaluation, per-layer statistics at
initialisation and after training, saving the runs) — what a class waits for after pressing Start. Decoding the
archive is not part of it (the app decodes once per process; the first load here is reported as ``load_s``).
The result JSON goes to a temporary runs folder unless --runs is given. Nothing is warmed up: cuDNN autotuning
of the first net is part of the wait, as it is in class.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TARGET_S = {"quick": 180.0, "cpu": 180.0, "mini": 300.0}
INIT_TARGET_S = 10.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="quick", help="cpu | quick | paper | mini")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--zero-init", action="store_true")
    p.add_argument("--init", action="store_true", help="time the initialisation view instead of a suite")
    p.add_argument("--device", default="auto")
    p.add_argument("--data", default=None, help="data source (default: $RESNET_LAB_DATA or cifar10)")
    p.add_argument("--epochs", type=int, default=None, help="override the suite's epochs")
    p.add_argument("--runs", default=None, help="runs folder (default: a temporary one)")
    args = p.parse_args()
    if args.runs:
        os.environ["RESNET_LAB_RUNS"] = args.runs
    else:
        os.environ.setdefault("RESNET_LAB_RUNS", tempfile.mkdtemp(prefix="bench-degradation-"))

    import torch

    from resnet_lab.config import resolve_data_source
    from resnet_lab.data import load_dataset
    from resnet_lab.experiments import degradation as D

    source = resolve_data_source(args.data)
    t0 = time.perf_counter()
    data = load_dataset(source)
    load_s = time.perf_counter() - t0
    if args.init:
        x, y = D.init_batch(data, D.INIT_IMAGES)
        prof = D.init_profile(x, y)
        print(json.dumps({"what": "init_profile", "torch_threads": torch.get_num_threads(),
                          "images": prof["images"], "seeds": prof["seeds"], "depths": prof["depths"],
                          "seconds": round(prof["seconds"], 2), "target_s": INIT_TARGET_S,
                          "within_target": prof["seconds"] <= INIT_TARGET_S,
                          "grad_first_over_last": {n["model"]: n["grad_first_over_last"] for n in prof["nets"]}}))
        return
    t0 = time.perf_counter()
    result = D.run_suite(args.suite, dataset=data, device=args.device, epochs=args.epochs, seed=args.seed,
                         zero_init=args.zero_init or None,
                         command=" ".join(["python", "benchmarks/bench_degradation.py", *sys.argv[1:]]))
    seconds = time.perf_counter() - t0
    errors = D.final_errors(result)
    eff = D.effect(result)
    target = TARGET_S.get(args.suite) if args.epochs is None else None  # the targets are for the suites as shipped
    print(json.dumps({
        "suite": args.suite, "device": result["device"], "torch": torch.__version__, "status": result["status"],
        "final_train_error": {m: e["train_error"] for m, e in errors.items()},
        "final_test_error": {m: e["test_error"] for m, e in errors.items()},
        "net_seconds": {m: e["seconds"] for m, e in errors.items()},
        "plain_deeper_trains_worse": eff.get("plain_degrades"), "resnet_deeper_not_worse": eff.get("residual_ok"),
        "effect_shows": eff.get("shows"), "plain_gap": eff.get("plain_gap"),
        "residual_gap": eff.get("residual_gap"), "seconds": round(seconds, 1), "load_s": round(load_s, 1),
        "target_s": target, "within_target": None if target is None else seconds <= target,
        "epochs": result["settings"]["epochs"], "n_train": min(result["settings"]["subset"] or len(data.train_y), len(data.train_y)),
        "result": result["path"],
    }))


if __name__ == "__main__":
    main()
