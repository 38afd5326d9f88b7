"""``python -m resnet_lab bench train --preset assignment [--seeds 3] [overrides]``: timed training runs.

Prints one JSON line: seconds per run (first batch → final test accuracy, the trainer's own clock), steady
seconds per epoch (median without the first), images/s, final accuracy (mean and per seed) and the device.
On CUDA an untimed one-epoch warm-up run comes first (cuDNN autotuning, torch.compile), unless --warmup 0.
Runs are written to a temporary folder and removed, unless --keep-runs.
CPU smoke figure: ``bench train --preset assignment --epochs 1 --subset 512 --test-subset 200``.
"""

from __future__ import annotations

from resnet_lab import training
from resnet_lab.cli.common import fail_error, non_negative_int, positive_int, print_json
from resnet_lab.cli.train import add_train_args, config_from_args
from resnet_lab.config import resolve_device
from resnet_lab.data import DataError, load_dataset
from resnet_lab.runs import RunError, RunStore
from resnet_lab.settings import flags


def add_parser(subparsers):
    p = subparsers.add_parser("bench", help="benchmarks (bench train: timed training runs, one JSON line)",
                              description="Timed training runs of a preset over several seeds; one JSON line.")
    p.add_argument("what", choices=["train"], help="what to benchmark")
    add_train_args(p, default_preset="assignment")
    p.add_argument("--seeds", type=positive_int, default=1,
                   help="number of runs, seeds --seed, --seed+1, ... (default 1)")
    p.add_argument("--warmup", type=non_negative_int, default=None,
                   help="untimed 1-epoch runs first (default: 1 on CUDA, 0 on CPU)")
    p.add_argument("--keep-runs", action="store_true", help="keep the runs in $RESNET_LAB_RUNS")
    p.add_argument("--sync-debug", action="store_true",
                   help="CUDA only: one extra 1-epoch run counting host<->GPU synchronisations per step "
                        "(torch.cuda.set_sync_debug_mode); the fast path should stay near 0")
    p.add_argument("--json", action="store_true", help="accepted for symmetry: the output is always one JSON line")
    return p


def run(args) -> int:
    import dataclasses
    import statistics
    import sys
    import tempfile

    import torch

    config = config_from_args(args)
    device = resolve_device(config.device)
    warmup = args.warmup if args.warmup is not None else (1 if device.type == "cuda" else 0)
    tmp = None if args.keep_runs else tempfile.TemporaryDirectory(prefix="resnet_lab-bench-")
    store = RunStore() if args.keep_runs else RunStore(tmp.name)
    results = []
    try:
        data = load_dataset(config.data)  # decoded once, outside the timed runs
        for i in range(warmup):
            cfg = dataclasses.replace(config, epochs=1, peak_epoch=0.5, seed=config.seed + 1000 + i)
            training.train(cfg, data=data, store=store)
            sys.stderr.write(f"warm-up run {i + 1}/{warmup} done\n")
        for i in range(args.seeds):
            cfg = dataclasses.replace(config, seed=config.seed + i)
            run_ = training.train(cfg, data=data, store=store)
            m = run_.metrics
            results.append({"seed": cfg.seed, "accuracy": m["top1"], "seconds_total": m["seconds_total"],
                            "seconds_per_epoch_steady": m["seconds_per_epoch_steady"],
                            "images_per_s": m["images_per_s"], "run_id": run_.id if args.keep_runs else None})
            sys.stderr.write(f"seed {cfg.seed}: {m['top1']:.2%} in {m['seconds_total']:.2f} s\n")
        syncs = _count_syncs(config, data, store) if args.sync_debug and device.type == "cuda" else None
    except (training.TrainingError, DataError, RunError) as exc:
        fail_error(exc, flags(training.TrainConfig))
    finally:
        if tmp is not None:
            tmp.cleanup()

    def mean(key):
        values = [r[key] for r in results if r[key] is not None]
        return statistics.fmean(values) if values else None

    accs = [r["accuracy"] for r in results]
    print_json({
        "bench": "train", "preset": config.preset, "model": config.model, "epochs": config.epochs,
        "batch_size": config.batch_size, "subset": config.subset, "test_subset": config.test_subset,
        "pipeline": training.choose_pipeline(config, device), "compile": config.compile and device.type == "cuda",
        "device": training.device_name(device), "torch": torch.__version__, "seeds": len(results),
        "warmup_runs": warmup,
        "seconds_total": mean("seconds_total"), "seconds_per_epoch_steady": mean("seconds_per_epoch_steady"),
        "images_per_s": mean("images_per_s"),
        "accuracy_mean": statistics.fmean(accs), "accuracy_std": statistics.pstdev(accs) if len(accs) > 1 else 0.0,
        "per_seed": results, "syncs_per_step": syncs,
    })
    return 0


def _count_syncs(config, data, store) -> float:
    """Synchronisations per training step of a 1-epoch run, as torch's sync debug mode reports them."""
    import dataclasses
    import warnings

    import torch

    cfg = dataclasses.replace(config, epochs=1, peak_epoch=0.5, log_every=10**9)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run_ = training.train(cfg, data=data, store=store)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = sum("synchroniz" in str(w.message).lower() for w in caught)
    return syncs / max(run_.metrics["steps_done"], 1)
