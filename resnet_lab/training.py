"""One trainer for every registry model: one-cycle LR, cyclic momentum, events, cooperative stop, runs store.

Two input pipelines feed it:
- ``torch``: the data lives on the training device as uint8 and is augmented there in batches
  (``resnet_lab.transforms.augment_batch``) — the fast path on a GPU, no DataLoader, no host copies.
- ``albumentations``: the assignment's per-image CPU pipeline (pad-crop-flip-cutout-normalize), chosen by
  ``auto`` on a CPU when albumentations is installed. It is imported only when chosen, so training needs
  nothing beyond torch + torchvision + numpy.
On CUDA the fast path also uses bf16 autocast, channels_last and cudnn.benchmark; ``compile=True`` adds
``torch.compile``. Progress goes out as events (see ``resnet_lab.events``); nothing is printed.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from resnet_lab.events import Callback, emit

OPTIMIZERS = ("adam", "adamw", "sgd")
PIPELINES = ("auto", "torch", "albumentations")


class TrainingError(Exception):
    """A run that could not start or ended in a fault; the message says what to change."""


@dataclass
class TrainConfig:
    model: str = "custom_resnet"
    model_options: dict = field(default_factory=dict)
    epochs: int = 24
    peak_epoch: float = 5.0  # epoch at which the LR reaches lr_max (the assignment: 5 of 24)
    lr_max: float = 0.02
    lr_min: float = 0.002  # start LR, and the end LR when annihilation is off (seed rule: max/10)
    annihilation: bool = False  # on: the last phase decays below lr_min down to lr_min / 1000
    optimizer: str = "adam"
    momentum_max: float = 0.95  # SGD momentum / Adam beta1, high while the LR is low ...
    momentum_min: float = 0.85  # ... and low at the LR peak (Smith's cyclic momentum); equal = constant
    nesterov: bool = False
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    batch_size: int = 512
    seed: int = 0
    augment: bool = True  # pad 4 + random crop 32 + flip + one 8x8 cutout hole
    cutout: int = 8
    pipeline: str = "auto"
    data: str | None = None
    subset: int | None = None
    test_subset: int | None = None
    device: str = "auto"
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    channels_last: bool = True  # on CUDA
    compile: bool = False
    log_every: int = 0  # batch events every N steps; 0 = every step on CPU, every 10 on CUDA (a sync each)
    checkpoint_every: int = 1  # epochs between checkpoints; 0 = only at the end
    eval_every: int = 1  # epochs between test evaluations; 0 = only at the end
    preset: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise TrainingError(f"unknown training settings: {', '.join(sorted(unknown))}")
        return cls(**data)

    def validate(self, n_train: int | None = None) -> dict[str, str]:
        """Field name -> what is wrong with it, in words a student understands. Empty when valid."""
        from resnet_lab.models import list_models

        err: dict[str, str] = {}

        def num(name):
            value = getattr(self, name)
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        if self.model not in list_models():
            err["model"] = f"unknown model '{self.model}'"
        if not isinstance(self.epochs, int) or self.epochs < 1:
            err["epochs"] = "epochs must be a whole number ≥ 1"
        if not num("peak_epoch") or self.peak_epoch <= 0:
            err["peak_epoch"] = "the peak epoch must be > 0"
        elif isinstance(self.epochs, int) and self.epochs >= 1 and self.peak_epoch >= self.epochs:
            err["peak_epoch"] = f"the peak ({self.peak_epoch}) must come before the last epoch ({self.epochs})"
        if not num("lr_max") or self.lr_max <= 0:
            err["lr_max"] = "LR max must be a number > 0"
        if not num("lr_min") or self.lr_min <= 0:
            err["lr_min"] = "LR min must be a number > 0"
        elif "lr_max" not in err and self.lr_min >= self.lr_max:
            err["lr_min"] = f"LR min ({self.lr_min:g}) must be below LR max ({self.lr_max:g})"
        if self.optimizer not in OPTIMIZERS:
            err["optimizer"] = f"optimizer must be one of {', '.join(OPTIMIZERS)}"
        for name in ("momentum_max", "momentum_min"):
            if not num(name) or not 0 <= getattr(self, name) < 1:
                err[name] = "momentum must be in [0, 1)"
        if "momentum_max" not in err and "momentum_min" not in err and self.momentum_min > self.momentum_max:
            err["momentum_min"] = "momentum min must not exceed momentum max"
        if self.nesterov and self.optimizer != "sgd":
            err["nesterov"] = "Nesterov momentum applies to SGD only"
        if not num("weight_decay") or self.weight_decay < 0:
            err["weight_decay"] = "weight decay must be ≥ 0"
        if not num("label_smoothing") or not 0 <= self.label_smoothing < 1:
            err["label_smoothing"] = "label smoothing must be in [0, 1)"
        if not isinstance(self.batch_size, int) or self.batch_size < 2:
            err["batch_size"] = "batch size must be a whole number ≥ 2 (batch norm needs 2 images)"
        elif n_train is not None and self.batch_size > n_train:
            err["batch_size"] = f"batch size {self.batch_size} is larger than the {n_train} training images"
        if self.pipeline not in PIPELINES:
            err["pipeline"] = f"pipeline must be one of {', '.join(PIPELINES)}"
        for name in ("subset", "test_subset"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 10):
                err[name] = "a subset needs at least 10 images (one per class)"
        if not isinstance(self.cutout, int) or not 0 <= self.cutout <= 32:
            err["cutout"] = "cutout size must be between 0 and 32 pixels"
        return err


PRESETS: dict[str, dict[str, Any]] = {
    # The seed assignment: custom ResNet, 24 epochs, peak at 5, no annihilation, batch 512, Adam,
    # crop+flip+cutout. LR max 0.02 is where the range test of this net (batch 512, Adam) is steepest;
    # the LR Finder page replaces it with the user's pick.
    "assignment": dict(model="custom_resnet", epochs=24, peak_epoch=5, lr_max=0.02, lr_min=0.002,
                       annihilation=False, optimizer="adam", batch_size=512, weight_decay=0.0,
                       momentum_max=0.95, momentum_min=0.85, augment=True),
    # A demo that finishes in under 3 minutes on 2 CPU cores: a small net on a small class-balanced subset.
    "quick-cpu": dict(model="resnet20", epochs=4, peak_epoch=1, lr_max=0.2, lr_min=0.02, annihilation=True,
                      optimizer="sgd", nesterov=True, momentum_max=0.95, momentum_min=0.85, weight_decay=5e-4,
                      batch_size=128, subset=2000, test_subset=1000, augment=True),
    # He et al. 2015's CIFAR recipe for ResNet-20 (SGD 0.1, momentum 0.9, wd 1e-4, batch 128), with a
    # one-cycle schedule over a shorter budget instead of 64k iterations with step decays.
    "paper-resnet20": dict(model="resnet20", epochs=30, peak_epoch=6, lr_max=0.1, lr_min=0.01, annihilation=True,
                           optimizer="sgd", momentum_max=0.9, momentum_min=0.9, weight_decay=1e-4,
                           batch_size=128, augment=True, cutout=0),
}

PRESET_NOTES = {
    "assignment": "The course assignment exactly: custom ResNet, 24 epochs, LR peak at epoch 5, Adam, batch 512. "
                  "Minutes on a GPU; hours on a CPU.",
    "quick-cpu": "DEMO: ResNet-20 on 2,000 training / 1,000 test images for 4 epochs, so it ends in about "
                 "2 minutes on 2 CPU cores. Expect ~40–50% accuracy, not 90%.",
    "paper-resnet20": "He et al.'s CIFAR recipe for ResNet-20 (SGD 0.1, momentum 0.9, weight decay 1e-4, batch 128) "
                      "with a one-cycle schedule over 30 epochs (the paper: ~180).",
}


def preset(name: str, **overrides) -> TrainConfig:
    if name not in PRESETS:
        raise TrainingError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    values = {**PRESETS[name], "preset": name}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(values)


# -- schedule ------------------------------------------------------------------------------------------


def _make_scheduler(config: TrainConfig, optimizer, total_steps: int):
    cycle = config.momentum_max > config.momentum_min
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=config.lr_max,
        total_steps=total_steps,
        pct_start=min(max(config.peak_epoch / config.epochs, 1e-6), 1 - 1e-6),
        anneal_strategy="linear",  # the assignment's triangle; linear ramps also read best on the preview
        cycle_momentum=cycle,
        base_momentum=config.momentum_min,
        max_momentum=config.momentum_max,
        div_factor=config.lr_max / config.lr_min,
        final_div_factor=1000.0 if config.annihilation else 1.0,  # off: the run ends exactly at lr_min
    )


def schedule(config: TrainConfig, steps_per_epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """LR and momentum at every optimizer step — the exact values the run will use (same scheduler)."""
    total = config.epochs * steps_per_epoch
    param = torch.nn.Parameter(torch.zeros(1))
    opt = _make_optimizer(config, [param])
    sched = _make_scheduler(config, opt, total)
    lrs, moms = np.empty(total), np.empty(total)
    for i in range(total):
        lrs[i], moms[i] = _current_lr_momentum(opt)
        if i < total - 1:
            opt.step()
            sched.step()
    return lrs, moms


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    return max(1, n_train // batch_size)  # drop the ragged last batch: a size-1 batch breaks batch norm


def _make_optimizer(config: TrainConfig, params):
    mom = config.momentum_max
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr_min, momentum=mom, nesterov=config.nesterov,
                               weight_decay=config.weight_decay)
    cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=config.lr_min, betas=(mom, 0.999), weight_decay=config.weight_decay)


def _current_lr_momentum(optimizer) -> tuple[float, float]:
    group = optimizer.param_groups[0]
    mom = group["betas"][0] if "betas" in group else group.get("momentum", 0.0)
    return float(group["lr"]), float(mom)


# -- input pipelines -----------------------------------------------------------------------------------


def _choose_pipeline(config: TrainConfig, device: torch.device) -> str:
    if config.pipeline != "auto":
        return config.pipeline
    if device.type == "cuda":
        return "torch"
    try:
        import albumentations  # noqa: F401
    except ImportError:
        return "torch"
    return "albumentations"


class _TorchBatches:
    """GPU-resident uint8 data, augmented per batch on the device (airbench style)."""

    def __init__(self, data, config: TrainConfig, device, generator: torch.Generator):
        from resnet_lab import transforms as T

        self.T, self.config, self.device, self.gen = T, config, device, generator
        self.x = torch.from_numpy(data.train_x).to(device)  # (N,32,32,3) uint8 — ~150 MB for CIFAR
        self.y = torch.from_numpy(data.train_y).to(device)
        self.mean, self.std = data.mean, data.std
        self.cl = config.channels_last and device.type == "cuda"

    def epoch(self, steps: int, batch_size: int):
        n = self.x.shape[0]
        perm = torch.randperm(n, generator=self.gen).to(self.device)
        for s in range(steps):
            idx = perm[s * batch_size:(s + 1) * batch_size]
            xb = self.x[idx]
            if self.config.augment:
                params = self.T.sample_params(len(idx), generator=self.gen, cutout=self.config.cutout, device="cpu")
                params = params.to(self.device) if hasattr(params, "to") else params
                xb = self.T.augment_batch(xb, params, self.mean, self.std, cutout=self.config.cutout,
                                          channels_last=self.cl)
            else:
                xb = self.T.normalize_batch(xb, self.mean, self.std)
                if self.cl:
                    xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, self.y[idx]


class _AlbumentationsBatches:
    """The assignment's per-image albumentations pipeline, batched on the CPU."""

    def __init__(self, data, config: TrainConfig, device, generator: torch.Generator):
        from resnet_lab import transforms as T

        self.data, self.device, self.gen = data, device, generator
        self.aug = (T.albumentations_train(data.mean, data.std, cutout=config.cutout) if config.augment
                    else T.albumentations_test(data.mean, data.std))
        self.seeded = False
        self.seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))

    def epoch(self, steps: int, batch_size: int):
        if not self.seeded:  # albumentations draws from its own RNG; seed it once for reproducible runs
            if hasattr(self.aug, "set_random_seed"):
                self.aug.set_random_seed(self.seed)
            self.seeded = True
        n = len(self.data.train_y)
        perm = torch.randperm(n, generator=self.gen).numpy()
        for s in range(steps):
            idx = perm[s * batch_size:(s + 1) * batch_size]
            imgs = [self.aug(image=self.data.train_x[i])["image"] for i in idx]
            xb = torch.stack([torch.as_tensor(im) for im in imgs]).float()
            if xb.shape[-1] == 3:  # HWC -> CHW when the pipeline has no ToTensorV2
                xb = xb.permute(0, 3, 1, 2)
            yield xb.contiguous().to(self.device), torch.from_numpy(self.data.train_y[idx]).to(self.device)


# -- evaluation ----------------------------------------------------------------------------------------


@torch.no_grad()
def predict(model, x_uint8: np.ndarray, mean, std, device, batch_size: int = 500, amp: bool = False,
            channels_last: bool = False) -> np.ndarray:
    """Softmax probabilities for uint8 NHWC images (no augmentation), as a float32 numpy array."""
    from resnet_lab import transforms as T

    model.eval()
    out = []
    for i in range(0, len(x_uint8), batch_size):
        xb = torch.from_numpy(x_uint8[i:i + batch_size]).to(device)
        xb = T.normalize_batch(xb, mean, std)
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(xb)
        out.append(torch.softmax(logits.float(), 1).cpu())
    return torch.cat(out).numpy().astype(np.float32) if out else np.zeros((0, 0), np.float32)


def classification_metrics(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """top-1/3/5 accuracy, per-class accuracy and the confusion matrix (rows true, columns predicted)."""
    labels = np.asarray(labels)
    order = np.argsort(-probs, axis=1)
    preds = order[:, 0]
    out = {}
    for k in (1, 3, 5):
        kk = min(k, probs.shape[1])
        out[f"top{k}"] = float((order[:, :kk] == labels[:, None]).any(1).mean()) if len(labels) else 0.0
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, preds), 1)
    totals = confusion.sum(1)
    out["per_class_acc"] = [float(confusion[c, c] / totals[c]) if totals[c] else None for c in range(num_classes)]
    out["confusion"] = confusion.tolist()
    eps = 1e-12
    out["test_loss"] = float(-np.log(probs[np.arange(len(labels)), labels] + eps).mean()) if len(labels) else 0.0
    return out


# -- the trainer ---------------------------------------------------------------------------------------


def train(config: TrainConfig | dict, data=None, callback: Callback | None = None, stop_event=None,
          store=None):
    """Train one model; returns the finished (or stopped) ``Run`` from the runs store.

    ``data`` is a ``resnet_lab.data.Dataset`` (loaded from ``config.data`` when None; ``config.subset``/
    ``test_subset`` are applied either way). ``callback(event)`` receives start/batch/epoch/end events.
    ``stop_event`` (anything with ``is_set()``) ends the run after the current batch; the run keeps its
    history and weights and is marked ``stopped``. A crash marks it ``failed``, keeping what was saved.
    """
    from resnet_lab.config import resolve_device
    from resnet_lab.models import build
    from resnet_lab.runs import RunStore

    if isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    problems = config.validate()
    if problems:
        raise TrainingError("invalid settings: " + "; ".join(f"{k}: {v}" for k, v in problems.items()))
    try:
        device = resolve_device(config.device)
    except ValueError as exc:
        raise TrainingError(str(exc)) from exc

    if data is None:
        from resnet_lab.data import load_dataset

        emit(callback, "log", message="loading data")
        data = load_dataset(config.data, subset=config.subset, test_subset=config.test_subset, seed=config.seed)
    elif config.subset or config.test_subset:
        data = data.subset(train=config.subset, test=config.test_subset, seed=config.seed)
    n_train, n_test = len(data.train_y), len(data.test_y)
    problems = config.validate(n_train=n_train)
    if problems:
        raise TrainingError("invalid settings: " + "; ".join(f"{k}: {v}" for k, v in problems.items()))

    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    store = store or RunStore()
    num_classes = len(data.classes)
    model = build(config.model, num_classes=num_classes, **(config.model_options or {})).to(device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels once
        if config.channels_last:
            model = model.to(memory_format=torch.channels_last)  # NHWC is what tensor cores want
    fwd = torch.compile(model) if config.compile else model
    amp = config.amp and cuda

    steps = steps_per_epoch(n_train, config.batch_size)
    total_steps = config.epochs * steps
    optimizer = _make_optimizer(config, model.parameters())
    scheduler = _make_scheduler(config, optimizer, total_steps)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    pipeline = _choose_pipeline(config, device)
    batches = (_TorchBatches if pipeline == "torch" else _AlbumentationsBatches)(data, config, device, gen)
    log_every = config.log_every or (10 if cuda else 1)

    run_config = {**config.to_dict(), "classes": list(data.classes), "n_train": n_train, "n_test": n_test,
                  "pipeline": pipeline, "device_name": _device_name(device), "data_source": data.source,
                  "mean": [float(m) for m in data.mean], "std": [float(s) for s in data.std],
                  "steps_per_epoch": steps}
    run = store.create(run_config)
    history: list[dict] = []
    emit(callback, "start", run_id=run.id, epochs=config.epochs, steps_per_epoch=steps, total_steps=total_steps,
         n_train=n_train, n_test=n_test, device=run_config["device_name"], pipeline=pipeline)

    def stopping() -> bool:
        return stop_event is not None and stop_event.is_set()

    def evaluate() -> tuple[np.ndarray, dict]:
        probs = predict(fwd, data.test_x, data.mean, data.std, device, batch_size=1000 if cuda else 250,
                        amp=amp, channels_last=cuda and config.channels_last)
        return probs, classification_metrics(probs, data.test_y, num_classes)

    t_start = time.perf_counter()
    epoch_times: list[float] = []
    step = 0
    stopped = False
    status = "running"
    try:
        for epoch in range(1, config.epochs + 1):
            model.train()
            t_epoch = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            seen = 0
            win_loss = torch.zeros((), device=device)
            win_correct = torch.zeros((), device=device, dtype=torch.long)
            win_seen = 0
            for xb, yb in batches.epoch(steps, config.batch_size):
                lr, mom = _current_lr_momentum(optimizer)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    logits = fwd(xb)
                    loss = criterion(logits.float(), yb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if step < total_steps - 1:
                    scheduler.step()
                step += 1
                # keep the running sums on the device: a .item() per step would sync the GPU every batch
                hits = (logits.argmax(1) == yb).sum()
                bs = len(yb)
                loss_sum += loss.detach() * bs
                correct += hits
                seen += bs
                win_loss += loss.detach() * bs
                win_correct += hits
                win_seen += bs
                if step % log_every == 0 or stopping():
                    if not math.isfinite(float(loss)):
                        raise TrainingError(f"the loss became {float(loss)} at step {step} (LR {lr:.3g}): the "
                                            "learning rate is too high for this setup — lower LR max")
                    elapsed = time.perf_counter() - t_start
                    ips = step * config.batch_size / max(elapsed, 1e-9)
                    emit(callback, "batch", epoch=epoch, step=step, steps_per_epoch=steps, total_steps=total_steps,
                         loss=float(win_loss) / win_seen, acc=int(win_correct) / win_seen, lr=lr, momentum=mom,
                         images_per_s=ips, eta_s=(total_steps - step) * elapsed / step,
                         progress=step / total_steps)
                    win_loss.zero_()
                    win_correct.zero_()
                    win_seen = 0
                if stopping():
                    stopped = True
                    break
            train_loss = float(loss_sum) / max(seen, 1)
            if not math.isfinite(train_loss):
                raise TrainingError(f"the loss became {train_loss} in epoch {epoch}: lower LR max")
            row = {"epoch": epoch, "train_loss": train_loss, "train_acc": int(correct) / max(seen, 1),
                   "lr": _current_lr_momentum(optimizer)[0], "images": seen, "partial": stopped}
            last = epoch == config.epochs or stopped
            if last or (config.eval_every and epoch % config.eval_every == 0):
                probs, met = evaluate()
                row.update(test_loss=met["test_loss"], test_acc=met["top1"])
            train_seconds = time.perf_counter() - t_epoch
            epoch_times.append(train_seconds)
            row["seconds"] = train_seconds
            history.append(row)
            emit(callback, "epoch", **row, total_epochs=config.epochs, progress=step / total_steps)
            store.save_history(run, history)
            if config.checkpoint_every and (epoch % config.checkpoint_every == 0) and not last:
                store.save_checkpoint(run, model.state_dict())
            if last:
                break
        seconds_total = time.perf_counter() - t_start
        status = "stopped" if stopped else "done"
        metrics = {**met, "status": status, "seconds_total": seconds_total,
                   "seconds_per_epoch_steady": _steady(epoch_times), "images_per_s": step * config.batch_size
                   / max(seconds_total, 1e-9), "device": run_config["device_name"], "epochs_done": len(history),
                   "steps_done": step, "train_loss": history[-1]["train_loss"], "train_acc": history[-1]["train_acc"]}
        store.save_checkpoint(run, model.state_dict())
        store.save_predictions(run, probs, data.test_y, data.test_index)
        store.save_metrics(run, metrics)
        store.set_status(run, status)
        emit(callback, "end", run_id=run.id, status=status, top1=metrics["top1"], seconds=seconds_total,
             progress=1.0 if not stopped else step / total_steps)
        return run
    except BaseException as exc:
        msg = _fault_message(exc)
        try:
            store.save_history(run, history)
            store.set_status(run, "failed", msg)
        except Exception:
            pass
        emit(callback, "end", run_id=run.id, status="failed", error=msg)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        if isinstance(exc, TrainingError):
            raise
        raise TrainingError(msg) from exc
    finally:
        del batches
        if cuda:
            torch.cuda.empty_cache()


def _fault_message(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in text.lower():
        return ("the GPU ran out of memory — try a smaller batch size (e.g. half); the history and the last "
                "saved checkpoint of this run are kept")
    return text.splitlines()[0]


def _steady(times: list[float]) -> float | None:
    """Median epoch time excluding the first (cuDNN autotuning, compilation, warm caches)."""
    if not times:
        return None
    rest = times[1:] or times
    return float(np.median(rest))


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import os

    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
