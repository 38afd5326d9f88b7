"""The speed preset side by side with the public CIFAR-10 speed record, on the same GPU and data: one JSON line.

    python benchmarks/bench_speed.py --data ../shared/data/cifar10-jpeg.tar.gz            # 5 runs each
    python benchmarks/bench_speed.py --data ../shared/data/cifar10-jpeg.tar.gz --ablate \\
        --out assets/speed/ablation.json                                                   # + what each trick buys

The record is airbench94 from the `airbench` package on PyPI (Keller Jordan; `pip install airbench`), run
unchanged on the same decoded images (written once to its `train.pt`/`test.pt` format, shuffled so that its
first-5,000-image whitening sample spans every class). Both sides are timed by their own clocks with the same
definition: GPU-synchronised seconds from the first training step (whitening included) to the final
test-time-augmented accuracy, data already on the GPU, per-epoch evaluation excluded. The first run of each side
is an untimed warm-up (cuDNN autotuning, CUDA libraries). Target: ours ≥ the record's mean accuracy in ≤ 1.25x its
mean time.

--ablate turns each trick of the speed preset off in turn and trains with 10, 15 and 20 epochs (stopping at
the first that reaches the target: the full recipe's mean accuracy minus 0.3 points), so each row gives
"accuracy at the same budget" and "time to the target accuracy". The result is the shipped asset the app's
"What buys speed" page reads (written with the command, GPU name and date).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# (name, what it is, overrides that turn it off)
TRICKS = [
    ("whitening", "first layer set from the data's 2x2-patch covariance and frozen", {"model_options": {"whiten": False}}),
    ("lookahead", "weights pulled to a slow moving average every 5 steps", {"lookahead": False}),
    ("label smoothing", "0.2 of each target spread over the other classes", {"label_smoothing": 0.0}),
    ("alternating flips", "every image shown both ways over two epochs (vs a coin per image)", {"flip": "random"}),
    ("flip + shift TTA", "test logits averaged over mirror and two 1-px shifts", {"tta": False, "tta_shift": False}),
    ("shift TTA", "only the two 1-px shifts (mirror averaging stays on)", {"tta_shift": False}),
    ("BN LR x64", "batch-norm shifts learn 64x faster", {"bias_lr_scale": 1.0}),
    ("fp16", "fp16 autocast with a static loss scale instead of bf16", {"amp_dtype": "bf16"}),
]
LADDER = (10, 15, 20)


def _ours(data, n: int, store, device: str, **overrides) -> list[dict]:
    from resnet_lab import training

    out = []
    for seed in range(n):
        cfg = training.preset("speed", seed=seed, device=device, **overrides)
        run = training.train(cfg, data=data, store=store)
        out.append({"seed": seed, "accuracy": run.metrics["top1"], "seconds": run.metrics["seconds_total"],
                    "epochs": cfg.epochs})
    return out


def _write_record_data(data, folder: Path) -> None:
    import numpy as np
    import torch

    (folder / "cifar10").mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(0).permutation(len(data.train_y))
    for name, x, y in (("train.pt", data.train_x[order], data.train_y[order]), ("test.pt", data.test_x, data.test_y)):
        torch.save({"images": torch.from_numpy(np.ascontiguousarray(x)), "labels": torch.from_numpy(y.astype(np.int64)),
                    "classes": list(data.classes)}, folder / "cifar10" / name)


def _record(data, n: int) -> dict:
    """airbench94 as published; its own printed clock and TTA accuracy, parsed from its table."""
    try:
        import airbench
        from airbench import lib_airbench94
    except ImportError as exc:
        return {"error": f"the record needs the airbench package (pip install airbench): {exc}"}
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="airbench-") as tmp:
        _write_record_data(data, Path(tmp))
        os.chdir(tmp)  # airbench reads ./cifar10/{train,test}.pt
        try:
            hyp = lib_airbench94.hyp
            loader = airbench.CifarLoader("cifar10", train=True, batch_size=hyp["opt"]["batch_size"], aug=hyp["aug"],
                                          altflip=True)
            runs = []
            for i in range(n + 1):  # run 0: warm-up
                buf = io.StringIO()
                with contextlib.redirect_stdout(buf):
                    airbench.train94(train_loader=loader, run=i)
                if i > 0:
                    runs.append({"seed": i, **_parse_record_table(buf.getvalue())})
        finally:
            os.chdir(cwd)
    return {"name": "airbench94 (pip airbench " + getattr(airbench, "__version__", "0.1.8") + ")", "runs": runs,
            **_summary(runs)}


def _parse_record_table(text: str) -> dict:
    """airbench prints '|  run  |  epoch  | ... |  tta_val_acc  |  total_time_seconds  |'; the 'eval' row is final."""
    rows = [line.split("|") for line in text.splitlines() if line.startswith("|")]
    final = [r for r in rows if len(r) > 7 and r[2].strip() == "eval"][-1]
    return {"accuracy": float(final[6]), "seconds": float(final[7])}


def _summary(runs: list[dict]) -> dict:
    accs = [r["accuracy"] for r in runs]
    secs = [r["seconds"] for r in runs]
    return {"accuracy_mean": statistics.fmean(accs), "accuracy_std": statistics.pstdev(accs) if len(accs) > 1 else 0.0,
            "seconds_mean": statistics.fmean(secs), "seconds_min": min(secs)}


def _ablate(data, store, device: str, target: float, full: dict) -> list[dict]:
    rows = []
    for name, what, off in TRICKS:
        ladder = []
        for epochs in LADDER:
            peak = round(2.3 * epochs / 10, 3)
            r = _ours(data, 1, store, device, epochs=epochs, peak_epoch=peak, **off)[0]
            ladder.append({"epochs": epochs, "accuracy": r["accuracy"], "seconds": r["seconds"]})
            if r["accuracy"] >= target:
                break
        reached = [x for x in ladder if x["accuracy"] >= target]
        rows.append({"trick": name, "what": what, "off": off, "ladder": ladder,
                     "same_budget_accuracy": ladder[0]["accuracy"], "same_budget_seconds": ladder[0]["seconds"],
                     "accuracy_lost": full["accuracy_mean"] - ladder[0]["accuracy"],
                     "time_to_target_s": reached[0]["seconds"] if reached else None,
                     "epochs_to_target": reached[0]["epochs"] if reached else None})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="data source (default: $RESNET_LAB_DATA or cifar10)")
    p.add_argument("--runs", type=int, default=5, help="timed runs of each side (default 5)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--no-record", action="store_true", help="skip the airbench94 side")
    p.add_argument("--ablate", action="store_true", help="also measure each trick off (writes --out)")
    p.add_argument("--out", default="assets/speed/ablation.json", help="where --ablate writes its result")
    args = p.parse_args()

    import torch

    from resnet_lab.config import resolve_data_source
    from resnet_lab.data import load_dataset
    from resnet_lab.runs import RunStore
    from resnet_lab.training import device_name

    data = load_dataset(resolve_data_source(args.data))
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory(prefix="bench-speed-") as tmp:
        store = RunStore(tmp)
        _ours(data, 1, store, args.device)  # warm-up
        ours_runs = _ours(data, args.runs, store, args.device)
        ours = {"name": "resnet_lab speed preset", "runs": ours_runs, **_summary(ours_runs)}
        record = None if args.no_record else _record(data, args.runs)
        result = {"bench": "speed", "device": device_name(device), "torch": torch.__version__, "data": data.source,
                  "ours": ours, "record": record}
        if record and "accuracy_mean" in record:
            result["time_ratio"] = ours["seconds_mean"] / record["seconds_mean"]
            result["accuracy_diff_points"] = 100 * (ours["accuracy_mean"] - record["accuracy_mean"])
            result["within_target"] = (ours["accuracy_mean"] >= record["accuracy_mean"]
                                       and result["time_ratio"] <= 1.25)
        if args.ablate:
            target = ours["accuracy_mean"] - 0.003
            rows = _ablate(data, store, args.device, target, ours)
            asset = {"title": "What buys speed: each trick of the speed preset turned off in turn",
                     "command": "python benchmarks/bench_speed.py " + " ".join(sys.argv[1:]),
                     "hardware": result["device"], "torch": torch.__version__, "date": date.today().isoformat(),
                     "data": data.source, "target_accuracy": target, "full": ours, "record": record,
                     "ladder_epochs": list(LADDER), "tricks": rows}
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(asset, indent=1))
            result["ablation"] = str(out)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
