"""``python -m resnet_lab train --preset NAME [overrides] [--json]``: one training run, saved in the runs store.

A tqdm bar per epoch (on stderr) is fed by the trainer's events, one line per finished epoch, and the last line of
stdout is always one JSON object: run id, status, test accuracy, seconds. Ctrl-C asks the trainer to stop after
the current batch: the run is evaluated, saved and marked ``stopped`` (a second Ctrl-C aborts at once).
Only torch, numpy and tqdm are needed (albumentations only with ``--pipeline albumentations`` or ``auto`` on a CPU).
"""

from __future__ import annotations

import argparse

from resnet_lab.cli.common import add_data_args, device_arg, fail, print_json, seed_int

# option -> TrainConfig field, for the plain overrides (None = keep the preset's value)
OVERRIDES = ("model", "epochs", "peak_epoch", "batch_size", "lr_max", "lr_min", "optimizer", "weight_decay",
             "label_smoothing", "momentum_max", "momentum_min", "seed", "pipeline", "cutout", "device", "data",
             "subset", "test_subset", "eval_every", "log_every", "lr_end", "crop_pad", "flip", "bias_lr_scale",
             "amp_dtype", "checkpoint_every")
FLAGS = ("annihilation", "nesterov", "augment", "compile", "tta", "amp", "tta_shift", "lookahead", "channels_last")


def add_parser(subparsers):
    p = subparsers.add_parser(
        "train", help="train a model with the one-cycle policy (runs are saved in runs/)",
        description="Train one model with the one-cycle LR policy. Start from a preset and override what you like; "
                    "invalid values are reported with what to change. The run is saved in $RESNET_LAB_RUNS (./runs).",
        epilog="examples:\n"
               "  python -m resnet_lab train --preset quick-cpu\n"
               "  python -m resnet_lab train --preset assignment --lr-max 0.03 --lr-min 0.003 --seed 1\n"
               "  python -m resnet_lab train --preset paper-resnet20 --epochs 10 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_args(p)
    p.add_argument("--json", action="store_true", help="no progress output; only the final JSON line")
    return p


def add_train_args(p, default_preset: str | None = None) -> None:
    """The preset and every hyperparameter override (shared with ``bench train``)."""
    p.add_argument("--preset", default=default_preset,
                   help="assignment | speed | quick-cpu | paper-resnet20 "
                        "(default: assignment on a GPU, quick-cpu on a CPU)")
    g = p.add_argument_group("hyperparameters (override the preset)")
    g.add_argument("--model", help="a registry name (python -m resnet_lab models)")
    g.add_argument("--epochs", type=int)
    g.add_argument("--peak-epoch", type=float, help="epoch at which the LR reaches --lr-max (moves with --epochs)")
    g.add_argument("--lr-max", type=float)
    g.add_argument("--lr-min", type=float, help="start LR, and the final LR without annihilation")
    g.add_argument("--annihilation", action=argparse.BooleanOptionalAction, default=None,
                   help="decay below --lr-min (to lr_min/1000) at the end")
    g.add_argument("--optimizer", help="adam | adamw | sgd")
    g.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=None, help="Nesterov momentum (SGD)")
    g.add_argument("--momentum-max", type=float, help="SGD momentum / Adam beta1 at the ends of the cycle")
    g.add_argument("--momentum-min", type=float, help="... and at the LR peak")
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--label-smoothing", type=float)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--seed", type=seed_int, help="0 ... 2**63-1")
    g.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="crop + flip + cutout (--no-augment: none)")
    g.add_argument("--cutout", type=int, help="cutout hole size in pixels (0 = none)")
    g.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="test-time augmentation: average each test image with its mirror image")
    g.add_argument("--tta-shift", action=argparse.BooleanOptionalAction, default=None,
                   help="with --tta: also average over the image shifted 1 px up-left and down-right")
    g.add_argument("--lr-end", type=float, help="LR at the last step (default: --lr-min, or lr_min/1000 with annihilation)")
    g.add_argument("--crop-pad", type=int, help="random crops come from the image padded by this many pixels (default 4)")
    g.add_argument("--flip", help="random | alternate | none (alternate: every image both ways over two epochs)")
    g.add_argument("--lookahead", action=argparse.BooleanOptionalAction, default=None,
                   help="every 5 steps pull the weights towards a slow moving average")
    g.add_argument("--bias-lr-scale", type=float, help="LR multiplier for batch-norm parameters (default 1)")
    r = p.add_argument_group("data and hardware")
    add_data_args(r)
    r.add_argument("--device", type=device_arg, help="auto | cpu | cuda[:N]")
    r.add_argument("--pipeline", help="auto | torch | albumentations (auto: torch on a GPU, albumentations on a CPU)")
    r.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="torch.compile the model")
    r.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="mixed-precision autocast on CUDA")
    r.add_argument("--amp-dtype", help="bf16 | fp16 (fp16 uses a static loss scale)")
    r.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC memory layout on CUDA (default on)")
    r.add_argument("--checkpoint-every", type=int, help="epochs between checkpoints (0 = only at the end)")
    r.add_argument("--eval-every", type=int, help="epochs between test evaluations (0 = only at the end)")
    r.add_argument("--log-every", type=int, help="steps between batch events (0 = auto)")


def config_from_args(args):
    """TrainConfig from the preset and overrides; invalid values → CLIError naming each option and the fix."""
    from resnet_lab import training

    name = args.preset or training.default_preset()
    overrides = {k: getattr(args, k, None) for k in OVERRIDES + FLAGS}
    try:
        config = training.preset(name, **overrides)
    except training.TrainingError as exc:
        fail(str(exc))
    problems = config.validate()
    if problems:
        fail("invalid settings:\n" + "\n".join(f"  --{k.replace('_', '-')}: {v}" for k, v in problems.items()))
    return config


class ProgressPrinter:
    """Turns trainer events into a tqdm bar per epoch (stderr) and a line per finished epoch (stdout)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.bar = None
        self.epochs = 0

    def __call__(self, event: dict) -> None:
        if self.quiet:
            return
        import sys

        from tqdm import tqdm

        kind = event["type"]
        if kind == "log":
            tqdm.write(event.get("message", ""), file=sys.stderr)
        elif kind == "start":
            self.epochs = event["epochs"]
            print(f"run {event['run_id']}: {event['n_train']:,} train / {event['n_test']:,} test images, "
                  f"{event['steps_per_epoch']} steps per epoch, {event['device']}, pipeline {event['pipeline']}",
                  flush=True)
        elif kind == "batch":
            if self.bar is None:
                self.bar = tqdm(total=event["steps_per_epoch"], desc=f"epoch {event['epoch']}/{self.epochs}",
                                unit="step", leave=False, file=sys.stderr, dynamic_ncols=True)
            done = event["step"] - (event["epoch"] - 1) * event["steps_per_epoch"]
            self.bar.update(done - self.bar.n)
            self.bar.set_postfix(loss=f"{event['loss']:.3f}", acc=f"{event['acc']:.1%}", lr=f"{event['lr']:.2e}",
                                 img_s=f"{event['images_per_s']:.0f}", eta=_clock(event["eta_s"]), refresh=False)
        elif kind == "epoch":
            self._close()
            test = (f"  test loss {event['test_loss']:.3f} acc {event['test_acc']:.2%}"
                    if "test_acc" in event else "")
            note = "  (stopped mid-epoch)" if event.get("partial") else ""
            print(f"epoch {event['epoch']:>3}/{self.epochs}  train loss {event['train_loss']:.3f} "
                  f"acc {event['train_acc']:.2%}{test}  lr {event['lr']:.2e}  {event['seconds']:.1f}s{note}",
                  flush=True)
        elif kind == "end":
            self._close()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds < 3600 else f"{seconds // 3600}h{seconds // 60 % 60:02d}"


class CooperativeStop:
    """While active, the first Ctrl-C sets the stop flag (the trainer ends after the batch); the second aborts."""

    def __init__(self, quiet: bool = False) -> None:
        import threading

        self.event = threading.Event()
        self.quiet = quiet
        self._previous = None

    def __enter__(self):
        import signal

        self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame):
        import sys

        if self.event.is_set():
            raise KeyboardInterrupt
        self.event.set()
        sys.stderr.write("\nstopping after this batch (the run is evaluated and kept); Ctrl-C again to abort\n")
        sys.stderr.flush()

    def __exit__(self, *exc):
        import signal

        signal.signal(signal.SIGINT, self._previous)
        return False


def run(args) -> int:
    from resnet_lab import training
    from resnet_lab.data import DataError
    from resnet_lab.runs import RunError

    config = config_from_args(args)
    printer = ProgressPrinter(quiet=args.json)
    try:
        with CooperativeStop() as stop:
            run_ = training.train(config, callback=printer, stop_event=stop.event)
    except (training.TrainingError, DataError, RunError) as exc:
        printer._close()
        fail(str(exc))
    met = run_.metrics
    result = {"run_id": run_.id, "status": run_.status, "model": config.model, "preset": config.preset,
              "test_acc": met.get("top1"), "top3": met.get("top3"), "top5": met.get("top5"),
              "test_loss": met.get("test_loss"), "epochs": met.get("epochs_done"),
              "seconds": met.get("seconds_total"), "seconds_per_epoch_steady": met.get("seconds_per_epoch_steady"),
              "images_per_s": met.get("images_per_s"), "device": met.get("device"), "path": str(run_.path)}
    if not args.json:
        print(f"{run_.status}: test accuracy {met['top1']:.2%} (top-3 {met['top3']:.2%}, top-5 {met['top5']:.2%}) "
              f"in {met['seconds_total']:.1f} s; saved to {run_.path}", flush=True)
    print_json(result)
    return 130 if run_.status == "stopped" else 0
