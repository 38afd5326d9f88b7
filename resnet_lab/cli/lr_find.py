"""``python -m resnet_lab lr-find``: the LR range test from the command line.

A tqdm bar (stderr) follows the sweep; then the curve's four suggested LRs, one line each with its reason.
With ``--json`` the last stdout line is one object: the curve (``lrs``, ``losses``, ``raw_losses``), the named
suggestions and how the test ended.
"""

from __future__ import annotations

import argparse
import sys

from resnet_lab.cli.common import (
    add_command,
    device_arg,
    fail,
    fail_error,
    fail_invalid,
    positive_float,
    positive_int,
    print_json,
    seed_int,
)
from resnet_lab.config import resolve_device
from resnet_lab.data import DataError
from resnet_lab.lr_finder import default_config, find_lr, LRFindConfig, LRFinderError, run_settings, train_command
from resnet_lab.settings import add_arguments, flags, values_from_args


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = add_command(
        subparsers, "lr-find", "LR range test: sweep the learning rate up and suggest a maximum",
        "Train for a few steps while the learning rate grows from --start-lr to --end-lr; the model is restored "
        "afterwards. Prints six suggestions (steepest: the seed's rule; minimum: Smith's one-cycle bound; "
        "torch-lr-finder's own; fastai's valley, minimum/10 and slide, exactly as fastai computes them) and marks "
        "the one recommended for the optimizer (steepest for Adam, minimum for SGD). Defaults: the sweep of the "
        "default preset's run — on a GPU the assignment (custom_resnet, Adam, batch 512, 100 steps), on a CPU "
        "quick-cpu (resnet20, SGD with Nesterov, weight decay 5e-4, batch 128, crop + flip + cutout, 4,000 images, "
        "80 steps from 1e-5: 10,240 images through forward and backward).")
    add_arguments(p, LRFindConfig, types={"seed": seed_int, "device": device_arg, "start_lr": positive_float,
                                          "end_lr": positive_float, "batch_size": positive_int})
    return p


def config_from_args(args):
    try:
        cuda = resolve_device(args.device).type == "cuda"
    except ValueError as exc:
        fail(str(exc))
    try:
        config = default_config(cuda=cuda, **values_from_args(args, LRFindConfig))
    except (TypeError, LRFinderError) as exc:
        fail(str(exc))
    fail_invalid(config.validate(), flags(LRFindConfig))
    return config


class _Bar:
    """tqdm on stderr, fed by the finder's batch events."""

    def __init__(self, quiet: bool) -> None:
        self.quiet, self.bar = quiet, None

    def __call__(self, event: dict) -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        if event["type"] == "start":
            self.bar = tqdm(total=event["total"], desc=f"LR test {event['model']} on {event['device']}",
                            unit="step", file=sys.stderr)
        elif event["type"] == "batch" and self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(lr=f"{event['lr']:.2e}", loss=f"{event['loss']:.3f}")
        elif event["type"] == "end" and self.bar is not None:
            self.bar.close()
            self.bar = None
        elif event["type"] == "log":
            tqdm.write(event.get("message", ""), file=sys.stderr)


def run(args) -> int:
    config = config_from_args(args)
    bar = _Bar(quiet=False)
    try:
        result = find_lr(config, callback=bar)
    except (LRFinderError, DataError) as exc:
        fail_error(exc, flags(LRFindConfig))  # e.g. --batch-size larger than the training images
    finally:
        if bar.bar is not None:
            bar.bar.close()
    if not args.json or sys.stdout.isatty():
        _print_human(result)
    if args.json:
        print_json(result.to_dict())  # strict JSON: a diverged last step's NaN loss becomes null
    return 0


def _print_human(result) -> None:
    print(f"{result.label}: {result.iterations} steps from LR {result.lrs[0]:.2e} to {result.lrs[-1]:.2e} "
          f"in {result.seconds:.1f} s on {result.device} ({result.images_per_s:,.0f} images/s, "
          f"{result.n_train:,} training images)")
    if result.message:
        print(result.message)
    if result.suggestions:
        print(f"{'rule':<15} {'LR':>9} {'loss':>7}  why")
        for s in result.suggestions:
            print(f"{s.name:<15} {s.lr:>9.2e} {s.loss:>7.3f}  {s.reason}")
        best = result.suggestion()
        if best is None:
            return
        c = result.config
        print(f"\nOne-cycle range (rule '{best.name}', the one recommended for {c['optimizer']}): LR max "
              f"{best.lr:.3g}, LR min {best.lr / 10:.3g}; the run this curve was swept for:\n"
              f"  {train_command(run_settings(c, best.lr))}")
