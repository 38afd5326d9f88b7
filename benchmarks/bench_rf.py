"""Time the analytic receptive-field table: prints one JSON line.

    python benchmarks/bench_rf.py                          # torchvision resnet152 at 224 px (target ≤ 1 s on a CPU)
    python benchmarks/bench_rf.py --model torchvision:vgg16 --input-size 224

`seconds` is the median over --repeat runs of `receptive_fields(model, size)` on an already built model with real
weights (what the page and a user's notebook do); `seconds_by_name` also builds the architecture from its name (on
the meta device: no weights allocated). Building real weights is not part of the table's cost and is reported
separately as `build_s`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402


def main() -> None:
    from resnet_lab.config import device_description
    from resnet_lab.receptive_field import load_model, receptive_fields

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="torchvision:resnet152")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()

    receptive_fields(args.model, args.input_size)  # imports and first-call caches out of the way
    t0 = time.perf_counter()
    model = load_model(args.model)
    build = time.perf_counter() - t0
    runs, by_name = [], []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        table = receptive_fields(model, args.input_size)
        runs.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        receptive_fields(args.model, args.input_size)
        by_name.append(time.perf_counter() - t0)
    final = table.final
    print(json.dumps({
        "benchmark": "rf", "model": args.model, "input_size": args.input_size, "layers": len(table.layers),
        "seconds": round(statistics.median(runs), 3), "seconds_max": round(max(runs), 3),
        "seconds_by_name": round(statistics.median(by_name), 3), "build_s": round(build, 3),
        "final_layer": final.name, "rf_max": final.rf_max[0], "rf_min": final.rf_min[0], "jump": final.jump[0],
        "device": "cpu", "cpu_threads": torch.get_num_threads(), "host": device_description()["device"],
        "target_s": 1.0,
    }))


if __name__ == "__main__":
    main()
