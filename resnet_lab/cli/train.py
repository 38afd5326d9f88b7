"""``python -m resnet_lab train --preset NAME [overrides] [--json]``: one training run, saved in the runs store.

A tqdm bar per epoch (on stderr) is fed by the trainer's events, one line per finished epoch, and the last line of
stdout is always one JSON object: run id, status, test accuracy, seconds. Ctrl-C asks the trainer to stop after
the current batch: the run is evaluated, saved and marked ``stopped`` (a second Ctrl-C aborts at once).
Only torch, numpy and tqdm are needed (albumentations only with ``--pipeline albumentations`` or ``auto`` on a CPU).
"""

from __future__ import annotations

from dataclasses import replace

from resnet_lab import training
from resnet_lab.cli.common import add_command, device_arg, fail_error, fail_invalid, print_json, seed_int
from resnet_lab.data import DataError
from resnet_lab.runs import RunError
from resnet_lab.settings import add_arguments, flags, values_from_args
from resnet_lab.training import SECTIONS, TrainConfig


def add_parser(subparsers):
    p = add_command(
        subparsers, "train", "train a model with the one-cycle policy (runs are saved in runs/)",
        "Train one model with the one-cycle LR policy. Start from a preset and override what you like; invalid "
        "values are reported with what to change. The run is saved in $RESNET_LAB_RUNS (./runs).",
        json_help="no progress output; only the final JSON line",
        examples=("python -m resnet_lab train --preset quick-cpu",
                  "python -m resnet_lab train --preset assignment --lr-max 0.03 --lr-min 0.003 --seed 1",
                  "python -m resnet_lab train --preset quick-cpu --subset none --model-option shortcut=B",
                  "python -m resnet_lab train --preset paper-resnet20 --epochs 10 --json"))
    add_train_args(p)
    return p


def add_train_args(p, default_preset: str | None = None) -> None:
    """One option per TrainConfig field, generated from the fields' metadata (shared with ``bench train``);
    every one but ``--preset`` overrides the preset's value only when given."""

    add_arguments(p, TrainConfig, groups=SECTIONS, types={"seed": seed_int, "device": device_arg})
    p.set_defaults(preset=default_preset)


def config_from_args(args):
    """TrainConfig from the preset and overrides; invalid values → CLIError naming each option and the fix."""

    overrides = values_from_args(args, training.TrainConfig, skip=("preset",))
    try:
        config = training.preset(args.preset or training.default_preset(), **overrides)  # None = keep ...
    except training.TrainingError as exc:
        fail_error(exc, flags(training.TrainConfig))
    config = replace(config, **{k: None for k, v in overrides.items() if v is None})  # ... unless typed: --subset none
    fail_invalid(config.validate(), flags(training.TrainConfig))
    return config


class ProgressPrinter:
    """Turns trainer events into a tqdm bar per epoch (stderr) and a line per finished epoch (stdout)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.bar = None
        self.epochs = 0

    def __call__(self, event: dict) -> None:
        import sys

        if self.quiet:  # --json: stdout is the result alone; a note the student must read still goes to stderr
            if event["type"] == "log" and event.get("note"):
                sys.stderr.write(f"{event['message']}\n")
            return

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
    config = config_from_args(args)
    printer = ProgressPrinter(quiet=args.json)
    try:
        with CooperativeStop() as stop:
            run_ = training.train(config, callback=printer, stop_event=stop.event)
    except (training.TrainingError, DataError, RunError) as exc:
        printer._close()
        fail_error(exc, flags(training.TrainConfig))  # checks against the data: --batch-size, --epochs
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
