"""``find_lr``: torch-lr-finder's ``range_test`` on the trainer's own batches and optimizer, observed step by step as
events, stopped on request or on NaN; the caller's model and optimizer come back exactly as they were.
"""

from __future__ import annotations

import math
import time

import torch

from resnet_lab import models
from resnet_lab.config import resolve_device
from resnet_lab.data import load_dataset
from resnet_lab.events import Callback, chain, emit, STOP, stop_when
from resnet_lab.lr_finder.config import default_config, LRFindConfig, LRFinderError, NO_DESCENT
from resnet_lab.lr_finder.rules import _quiet, LRFindResult, suggest
from resnet_lab.settings import invalid
from resnet_lab.train.batches import _TorchBatches
from resnet_lab.train.optim import make_optimizer

# --------------------------------------------------------------------------------------------------------------------
# The test



class _Stop(Exception):
    """Raised from inside range_test (by the batch source) to end the sweep early."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class _RecordingLoss(torch.nn.Module):
    """Cross-entropy that keeps each step's raw (unsmoothed) loss; LRFinder only keeps the smoothed one."""

    def __init__(self) -> None:
        super().__init__()
        self.ce = torch.nn.CrossEntropyLoss()
        self.raw: list[torch.Tensor] = []

    def forward(self, outputs, labels):
        loss = self.ce(outputs.float(), labels)
        self.raw.append(loss.detach().clone())
        return loss


def _observed_iter(batches, observer: "_Observer"):
    """LRFinder.range_test has no callback. It does accept a ``TrainDataLoaderIter`` and asks it for one batch
    at the start of every step, after appending the previous step's (lr, smoothed loss) to ``history``. So
    the batch source is where we observe: report the finished steps as events, stop on NaN or on the user's
    stop request (by raising out of range_test), then hand over the next batch."""
    from torch_lr_finder import TrainDataLoaderIter

    class ObservedBatches(TrainDataLoaderIter):
        def __init__(self):
            super().__init__(batches)

        def __next__(self):
            observer.step()
            return next(batches)

    return ObservedBatches()


class _Observer:
    """Turns LRFinder's history into batch events as it grows; a callback's STOP (the Stop button is one) ends
    the sweep before the next step."""

    def __init__(self, finder, loss: _RecordingLoss, total: int, batch_size: int, callback, stop_event) -> None:
        self.finder, self.loss, self.total, self.batch_size = finder, loss, total, batch_size
        self.callback = chain(callback, stop_when(stop_event))
        self.sent, self.stop = 0, False
        self.t0 = time.perf_counter()

    def flush(self) -> None:
        history = self.finder.history
        while self.sent < len(history["loss"]):
            i = self.sent
            loss = float(history["loss"][i])
            raw = float(self.loss.raw[i]) if i < len(self.loss.raw) else loss
            self.sent += 1
            elapsed = max(time.perf_counter() - self.t0, 1e-9)
            asked = emit(self.callback, "batch", step=i, total=self.total, lr=float(history["lr"][i]), loss=loss,
                         raw_loss=raw, progress=(i + 1) / self.total,
                         images_per_s=(i + 1) * self.batch_size / elapsed)
            self.stop = self.stop or asked is STOP
            if not math.isfinite(loss):
                raise _Stop("nan_first" if i == 0 else "nan")

    def step(self) -> None:
        self.flush()
        if self.stop:
            raise _Stop("user")


def _snapshot_extras(model: torch.nn.Module, optimizer) -> dict:
    """What LRFinder.reset() does not restore: .grad of each parameter, train/eval flags, a scheduler's
    'initial_lr' (LRFinder refuses an optimizer that has one, so it is lifted off for the test)."""
    grads = [(p, None if p.grad is None else p.grad.detach().clone()) for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]
    initial = [g.pop("initial_lr") if "initial_lr" in g else None for g in optimizer.param_groups]
    return {"grads": grads, "modes": modes, "initial_lr": initial}


def _restore_extras(optimizer, saved: dict) -> None:
    for p, g in saved["grads"]:
        p.grad = g
    for m, mode in saved["modes"]:
        m.training = mode
    for group, value in zip(optimizer.param_groups, saved["initial_lr"]):
        if value is not None:
            group["initial_lr"] = value


def _amp_kwargs(enabled: bool, device: torch.device) -> dict:
    """LRFinder's mixed-precision settings: bf16 autocast (as the trainer uses on CUDA)."""
    if not enabled:
        return {}
    # bf16 needs no loss scaling, but LRFinder insists on a scaler with torch amp: give it a disabled one
    # (scale() then returns the loss unchanged and step() is a plain optimizer.step()).
    return {"amp_backend": "torch", "amp_config": {"device_type": device.type, "dtype": torch.bfloat16},
            "grad_scaler": torch.amp.GradScaler(device.type, enabled=False)}


def find_lr(config: LRFindConfig | dict | None = None, *, data=None, model: torch.nn.Module | None = None,
            optimizer=None, callback: Callback | None = None, stop_event=None, **overrides) -> LRFindResult:
    """Run the LR range test and return the curve with the four suggestions.

    ``config`` (or keyword ``overrides`` of its fields) says what to test; ``data`` is a loaded
    ``resnet_lab.data.Dataset`` (loaded from ``config.data`` when None; ``config.subset`` is cut from it,
    class-balanced). Pass ``model``/``optimizer`` to test your own: both come back exactly as they were
    (weights, BN running statistics, optimizer state and hyper-parameters, grads, train/eval flags).
    ``callback(event)`` receives start / batch / end events; ``stop_event.is_set()`` ends the sweep after
    the current step (the partial curve is returned, ``stopped=True``).
    Raises ``LRFinderError`` for invalid settings and for a loss that is NaN from the very first step.
    """

    config = _checked_config(config, overrides, model)
    device = resolve_device(config.device)
    cuda = device.type == "cuda"
    if data is None:
        emit(callback, "log", message="loading data")
        data = load_dataset(config.data)
    data = data.subset(train=config.subset, seed=0)
    problems = config.validate(n_train=len(data.train_y))
    if "batch_size" in problems:
        raise invalid(LRFinderError, {"batch_size": problems["batch_size"]}, "LR finder settings")
    own_model = model is None
    if own_model:
        model = models.build_seeded(config.model, config.seed, num_classes=len(data.classes)).to(device)
    channels_last = cuda and config.channels_last and own_model  # never change the layout of a caller's model
    if cuda:
        torch.backends.cudnn.benchmark = True  # fixed shapes: cuDNN picks the fastest kernels once
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
    if optimizer is None:
        optimizer = make_optimizer(config.optimizer, model.parameters(), config.start_lr, config.momentum,
                                   config.weight_decay, fused=cuda, nesterov=config.nesterov)
    history, raw, why, seconds = _sweep(config, data, model, optimizer, device, channels_last, callback, stop_event)
    result = _result(config, history, raw, why, seconds, device, len(data.train_y))
    emit(callback, "end", iterations=result.iterations, seconds=seconds, message=result.message,
         suggestions=[s.to_dict() for s in result.suggestions], progress=1.0)
    return result


def _checked_config(config, overrides: dict, model) -> LRFindConfig:
    """A validated copy of the settings (the caller's config is never changed); a caller's own model may have
    a name the registry does not know."""
    if config is None:
        config = default_config()
    elif isinstance(config, dict):
        config = LRFindConfig.from_dict(config)
    config = LRFindConfig(**{**config.to_dict(), **overrides})
    if model is not None and "model" in config.validate():
        config.model = getattr(model, "registry_name", config.model)
    problems = {k: v for k, v in config.validate().items() if not (model is not None and k == "model")}
    if problems:
        raise invalid(LRFinderError, problems, "LR finder settings")
    return config


def _sweep(config: LRFindConfig, data, model, optimizer, device, channels_last: bool, callback, stop_event):
    """torch-lr-finder's ``range_test`` on our batches, observed step by step; the model and optimizer are given
    back as they were. Returns (its history, the raw per-step losses, why it ended early or "", seconds)."""
    from torch_lr_finder import LRFinder

    cuda = device.type == "cuda"
    criterion = _RecordingLoss()
    why, finder, batches = "", None, None
    # Every change to the caller's model and optimizer comes after this line, so the finally below undoes all
    # of it whatever fails (an out-of-memory while LRFinder copies the weights included).
    extras = _snapshot_extras(model, optimizer)
    try:
        finder = LRFinder(model, optimizer, criterion, device=device, memory_cache=True,
                          **_amp_kwargs(config.amp and cuda, device))
        batches = _TorchBatches(data, config, device, config.seed, channels_last=channels_last).forever(
            config.batch_size)
        observer = _Observer(finder, criterion, config.iterations, config.batch_size, callback, stop_event)
        emit(callback, "start", total=config.iterations, device=str(device), model=config.model,
             optimizer=config.optimizer, batch_size=config.batch_size, n_train=len(data.train_y), progress=0.0)
        t0 = time.perf_counter()
        try:
            with _quiet():
                finder.range_test(_observed_iter(batches, observer), start_lr=config.start_lr,
                                  end_lr=config.end_lr, num_iter=config.iterations, step_mode=config.mode,
                                  smooth_f=config.smooth, diverge_th=config.diverge)
            observer.flush()
        except _Stop as stop:
            why = stop.why
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    finally:
        if finder is not None:
            finder.reset()  # weights, BN statistics and optimizer state, from its memory cache
        _restore_extras(optimizer, extras)  # what reset() does not restore (its docs): grads, modes, initial_lr
        del batches
    return finder.history, [float(v) for v in criterion.raw], why, seconds


def _result(config: LRFindConfig, history: dict, raw: list, why: str, seconds: float, device, n_train: int):
    """The curve (cut at a NaN), the suggestions and the notes that explain how the sweep ended."""
    lrs = [float(v) for v in history["lr"]]
    losses = [float(v) for v in history["loss"]]
    raw = raw[: len(losses)]
    if why == "nan_first" or (losses and not math.isfinite(losses[0])):
        raise LRFinderError(
            f"The loss was NaN from the very first step (LR {config.start_lr:g}): the network cannot train at "
            "all, whatever the LR. Check the data (are the images normalised?) and the model, or start the "
            "sweep lower.")
    diverged = why == "nan" or (not why and len(losses) < config.iterations)
    if why == "nan":  # drop the NaN point itself; the curve up to it is real
        cut = next(i for i, v in enumerate(losses) if not math.isfinite(v))
        lrs, losses, raw = lrs[:cut], losses[:cut], raw[:cut]
    suggestions, message = suggest(lrs, losses, num_it=config.iterations)
    notes = []
    if why == "user":
        notes.append(f"Stopped by you after {len(losses)} of {config.iterations} steps.")
    elif why == "nan":
        notes.append(f"The loss became NaN at LR {history['lr'][len(losses)]:.2g}: diverged; "
                     "the curve ends at the last finite step.")
    elif diverged:
        notes.append(f"Stopped at LR {lrs[-1]:.2g} after {len(losses)} of {config.iterations} steps: the smoothed "
                     f"loss passed {config.diverge:g}× its best value (it diverged, as intended).")
    if message:
        notes.append(message)
    return LRFindResult(
        lrs=lrs, losses=losses, raw_losses=raw, suggestions=suggestions, message=" ".join(notes),
        diverged=diverged, stopped=why == "user", descended=not message.startswith(NO_DESCENT),
        config=config.to_dict(), device=str(device), seconds=seconds,
        images_per_s=len(losses) * config.batch_size / max(seconds, 1e-9), n_train=n_train,
    )
