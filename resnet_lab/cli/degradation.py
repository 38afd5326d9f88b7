"""``python -m resnet_lab degradation --suite cpu|quick|paper|mini [...] [--json]``: plain vs residual nets by depth.

Trains every net of the suite (each one a normal run in the runs store), prints a line per epoch and the final
table, and saves the suite result JSON under ``<runs root>/degradation/``. With ``--json`` the last line of stdout
holds each net's final train/test error and the seconds taken. Ctrl-C stops after the current batch and keeps
what finished.
"""

from __future__ import annotations

import shlex

from resnet_lab.cli.common import (
    add_command,
    add_data_args,
    check_output,
    device_arg,
    fail,
    fail_error,
    positive_int,
    print_json,
    QUIET_JSON_HELP,
    seed_int,
)
from resnet_lab.cli.train import CooperativeStop
from resnet_lab.config import resolve_data_source
from resnet_lab.data import DataError
from resnet_lab.experiments import degradation as D
from resnet_lab.runs import atomic_write_json, RunError

# The TrainConfig fields this command sets, by its options (a suite's other settings are not the user's to fix).
FLAGS = {"epochs": "--epochs", "batch_size": "--batch-size", "subset": "--subset", "test_subset": "--test-subset",
         "seed": "--seed", "device": "--device", "data": "--data", "model": "--depths"}


def add_parser(subparsers):
    p = add_command(
        subparsers, "degradation", "plain vs residual networks of growing depth (He et al. 2015, Fig. 6)",
        "Train plain and residual CIFAR networks of several depths with one shared recipe and compare their "
        "training and test error per epoch: deeper plain nets train worse, residual ones don't.",
        json_help=QUIET_JSON_HELP,
        notes="suites:\n"
              "  cpu    plain/resnet 8 and 32, 8 filters wide, 1,000 images, 12 epochs (2 nets at a time on 2 cores)\n"
              "  quick  plain/resnet 20 and 56, all of CIFAR-10, 12 epochs (for a GPU)\n"
              "  paper  depths 20/32/44/56 (+110 with --with-110), 30 epochs (for a GPU)\n"
              "  mini   the old CPU demo: the nets of quick on 3,000 images for 4 epochs\n",
        examples=("python -m resnet_lab degradation --device cpu --json",
                  "python -m resnet_lab degradation --suite cpu --zero-init --seed 1",
                  "python -m resnet_lab degradation --suite quick --json"))
    p.add_argument("--suite", default=None, help="cpu | quick | paper | mini (default: quick on a GPU, cpu without)")
    p.add_argument("--epochs", type=positive_int, help="override the suite's epochs")
    p.add_argument("--batch-size", type=positive_int, help="override the suite's batch size")
    p.add_argument("--depths", help="comma-separated depths, e.g. 20,32 (default: the suite's)")
    p.add_argument("--with-110", action="store_true", help="add the 110-layer pair (paper suite)")
    p.add_argument("--seed", type=seed_int, default=0, help="initial weights, batch order, augmentation (default 0)")
    p.add_argument("--zero-init", action="store_true",
                   help="start the last BN of every residual branch at gamma = 0 (each block is the identity)")
    p.add_argument("--device", type=device_arg, default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="on a CPU: nets trained at once, each in its own process with one thread (default: "
                        "--threads, i.e. the cores). The numbers do not depend on it.")
    add_data_args(p)
    p.add_argument("--output", help="also write the suite result JSON to this path (e.g. assets/degradation/mini.json)")
    return p


def _command(args, suite: str, data: str) -> str:
    """The canonical command that reproduces this suite: every setting that matters, spelled out."""
    parts = ["python", "-m", "resnet_lab", "degradation", "--suite", suite]
    for flag, value in (("--epochs", args.epochs), ("--batch-size", args.batch_size), ("--depths", args.depths),
                        ("--subset", args.subset), ("--test-subset", args.test_subset)):
        if value is not None:
            parts += [flag, str(value)]
    if args.with_110:
        parts.append("--with-110")
    if args.seed:
        parts += ["--seed", str(args.seed)]
    if args.zero_init:
        parts.append("--zero-init")
    parts += ["--device", args.device]
    if args.data:  # the data setting ($RESNET_LAB_DATA) is recorded in the result, not spelled as a local path
        parts += ["--data", repo_relative(data)]
    if args.output:
        parts += ["--output", repo_relative(args.output)]
    return shlex.join(parts)


def repo_relative(path: str) -> str:
    """A data path inside the repository or the current folder, written relative to it (so a shipped
    command works on any checkout); anything else (``cifar10``, another disk) as given."""
    import os
    from pathlib import Path

    p = Path(path)
    if not p.is_absolute():
        return path
    for base in (Path(__file__).resolve().parents[2], Path.cwd()):
        if p.resolve().is_relative_to(base.resolve()):
            return os.path.relpath(p.resolve(), base.resolve())
    return path


def _printer(quiet: bool):
    def show(event: dict) -> None:
        if quiet:
            return
        kind = event.get("type")
        if kind == "epoch" or (kind == "log" and "message" in event):
            print(event.get("message", ""), flush=True)
    return show


def run(args) -> int:
    import torch

    suite = args.suite or ("quick" if torch.cuda.is_available() and args.device in ("auto", None)
                           or str(args.device).startswith("cuda") else "cpu")
    if args.seed < 0:
        fail("--seed must be a whole number ≥ 0")
    if suite not in D.SUITES:
        fail(f"unknown suite '{suite}'; choose one of {', '.join(D.SUITES)}")
    depths = None
    if args.depths:
        try:
            depths = [int(d) for d in args.depths.split(",") if d.strip()]
        except ValueError:
            fail(f"--depths must be comma-separated whole numbers, e.g. 20,56; got {args.depths!r}")
        if not depths:
            fail("--depths is empty")
    if args.output:
        check_output(args.output)  # before the nets train for minutes, not after
    data = resolve_data_source(args.data)
    command = _command(args, suite, data)
    try:
        D.suite_configs(suite, epochs=args.epochs, subset=args.subset, test_subset=args.test_subset,
                        batch_size=args.batch_size, depths=depths, include_110=args.with_110, device=args.device,
                        seed=args.seed, zero_init=args.zero_init or None)
    except D.DegradationError as exc:
        fail_error(exc, FLAGS)
    if not args.json:
        s = D.SUITES[suite]
        print(f"{s.label}\n{s.note}\ncommand: {command}", flush=True)
    try:
        with CooperativeStop() as stop:
            result = D.run_suite(suite, data=data, epochs=args.epochs, subset=args.subset,
                                 test_subset=args.test_subset, batch_size=args.batch_size, depths=depths,
                                 include_110=args.with_110, device=args.device, callback=_printer(args.json),
                                 stop_event=stop.event, command=command, seed=args.seed,
                                 zero_init=args.zero_init or None, workers=args.workers)
    except (D.DegradationError, DataError, RunError) as exc:
        fail_error(exc, FLAGS)
    if args.output:
        saved = {k: v for k, v in result.items() if k != "path"}
        atomic_write_json(args.output, saved)
    errors = D.final_errors(result)
    eff = D.effect(result)
    if not args.json:
        print(f"\n{'net':<11}{'train err':>10}{'test err':>10}{'seconds':>9}  status")
        for n in result["nets"]:
            e = errors[n["model"]]
            print(f"{n['label']:<11}{D.pct(e['train_error']):>10}{D.pct(e['test_error']):>10}"
                  f"{(e['seconds'] or 0):>9.1f}  {e['status']}")
        print("\n" + "\n".join(line.replace("**", "") for line in D.verdict(result)))
        print(f"{result['status']} in {result['seconds_total']:.0f} s; saved to {result['path']}"
              + (f" and {args.output}" if args.output else ""), flush=True)
    print_json({"suite": suite, "status": result["status"], "device": result["device"],
                "nets": errors, "effect": eff, "seconds": result["seconds_total"], "path": result["path"],
                "command": command})
    return 130 if result["status"] == "stopped" else 0
