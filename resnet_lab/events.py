"""Progress events, and how a callback steers the loop that sends them.

The trainer, the LR finder and the experiments report through ``callback(event)``; the CLI progress bar, the app's
live curves, the job transport and the tests all read the same stream. An event is a dict with a ``type``; the
TypedDicts below name the keys of each kind (they stay dicts, so they cross process boundaries as JSON).

A callback returns None to observe, or steers the loop (fastai's callbacks raise ``CancelFitException`` and
friends for this; a return value keeps the control flow visible in the loop that obeys it):
- ``STOP``: end after the current step; the run is evaluated and kept as *stopped* (the Stop button, pruning);
- ``SKIP_EPOCH``: end this epoch now and go on to its evaluation (trainer only).
"""

from __future__ import annotations

import enum
from typing import Any, Callable, Literal, Optional, TypedDict


class Steer(enum.Enum):
    SKIP_EPOCH = 1
    STOP = 2  # the stronger: when callbacks disagree, the larger value wins


STOP, SKIP_EPOCH = Steer.STOP, Steer.SKIP_EPOCH
Callback = Callable[[dict], Optional[Steer]]


# -- the trainer's events (resnet_lab.training.train) -------------------------------------------------------
class StartEvent(TypedDict):
    type: Literal["start"]
    run_id: str
    run_path: str
    epochs: int
    steps_per_epoch: int
    total_steps: int
    n_train: int
    n_test: int
    device: str
    pipeline: str
    progress: float


class BatchEvent(TypedDict):
    """One logging window of training steps (every step on a CPU, every 10 on CUDA by default)."""

    type: Literal["batch"]
    epoch: int
    step: int
    steps_per_epoch: int
    total_steps: int
    loss: float           # mean over the window's images
    acc: float
    lr: float
    momentum: float
    images_per_s: float   # since the first step
    eta_s: float
    progress: float


class EpochEvent(TypedDict, total=False):
    type: Literal["epoch"]
    epoch: int
    train_loss: float
    train_acc: float
    lr: float
    images: int
    partial: bool         # stopped or skipped before the epoch's last step
    test_loss: float      # only in evaluated epochs (eval_every)
    test_acc: float
    seconds: float
    total_epochs: int
    progress: float


class EndEvent(TypedDict, total=False):
    type: Literal["end"]
    run_id: str
    status: str           # done | stopped | failed
    top1: float
    top3: float
    top5: float
    seconds: float
    error: str            # when failed
    progress: float


class LogEvent(TypedDict, total=False):
    type: Literal["log"]
    message: str
    progress: float
    note: bool  # something the student must read (a teaching note), shown even where progress is not


# -- the LR range test's events (resnet_lab.lr_finder.find_lr) -----------------------------------------------
class SweepStartEvent(TypedDict):
    type: Literal["start"]
    total: int
    device: str
    model: str
    optimizer: str
    batch_size: int
    n_train: int
    progress: float


class SweepBatchEvent(TypedDict):
    type: Literal["batch"]
    step: int
    total: int
    lr: float
    loss: float           # smoothed, as torch-lr-finder records it
    raw_loss: float
    progress: float
    images_per_s: float


def emit(callback: Callback | None, type_: str, **fields: Any) -> Steer | None:
    """Send one event; returns what the callback asked for (None: carry on)."""
    if callback is None:
        return None
    return callback({"type": type_, **fields})


def chain(*callbacks: Callback | None) -> Callback | None:
    """One callback from several: each sees every event in order; the strongest request wins."""
    parts = [c for c in callbacks if c is not None]
    if len(parts) <= 1:
        return parts[0] if parts else None

    def both(event: dict) -> Steer | None:
        asks = [c(event) for c in parts]
        return max((a for a in asks if isinstance(a, Steer)), key=lambda s: s.value, default=None)

    return both


def stop_when(flag) -> Callback | None:
    """The Stop button as a callback: once ``flag.is_set()`` (a threading.Event, a job's stop flag), ask to stop."""
    if flag is None:
        return None
    return lambda event: STOP if flag.is_set() else None


class Hook:
    """A callback that needs the model, not only numbers (fastai hands its callbacks the Learner for this). The
    trainer calls each method at that point of a run, hooks in the order given; every method is optional."""

    def before_fit(self, model) -> None:
        """The model as built, before the first step (its running statistics untouched)."""

    def after_epoch(self, model, epoch: int, last: bool) -> None:
        """After the epoch's evaluation and ``epoch`` event."""

    def after_fit(self, model, epochs_done: int) -> None:
        """The final model (stopped runs too), before the predictions and metrics are saved."""

    def on_fault(self) -> None:
        """The run failed: release what the hook holds; what it saved so far stays."""


class Collector:
    """A callback that keeps every event; handy in notebooks and tests."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def __call__(self, event: dict) -> None:
        self.events.append(event)

    def of(self, type_: str) -> list[dict]:
        return [e for e in self.events if e.get("type") == type_]
