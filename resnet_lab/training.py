"""One trainer for every registry model: one-cycle LR, cyclic momentum, events, cooperative stop, runs store.

Two input pipelines feed it:
- ``torch``: the uint8 images live on the training device and are augmented there a whole batch at a
  time (``resnet_lab.transforms.sample_params`` + ``augment_batch``) — the fast path on a GPU: no
  DataLoader, no host copies, random numbers drawn by a generator on the GPU.
- ``albumentations``: the course's per-image CPU pipeline (pad-crop-flip-cutout-normalize), chosen by
  ``auto`` on a CPU when albumentations is installed. It is imported only when chosen, so training needs
  nothing beyond torch + torchvision + numpy.
On CUDA the trainer also uses bf16 autocast, channels_last, cudnn.benchmark and fused optimizers, and
never waits for the GPU inside an epoch: batch statistics come back through pinned memory and CUDA
events, checkpoints are written by a background thread. ``compile=True`` adds ``torch.compile``.
Progress goes out as events (see ``resnet_lab.events``); nothing is printed.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from resnet_lab.events import STOP, Callback, Hook, chain, emit, stop_when
from resnet_lab.metrics import classification_metrics
from resnet_lab.settings import check as check_settings
from resnet_lab.settings import MAX_SEED, Settings, invalid, setting

OPTIMIZERS = ("adam", "adamw", "sgd")
# Validated before anything is allocated (the LR/momentum schedule holds one float per step).
MAX_EPOCHS = 10_000
MAX_STEPS = 10_000_000
PIPELINES = ("auto", "torch", "albumentations")
FLIPS = ("random", "alternate", "none")
AMP_DTYPES = ("bf16", "fp16")
LOOKAHEAD_EVERY = 5  # steps between lookahead syncs (the speed recipe's choice)
SUBSET_SEED = 0  # subsets are cut with a fixed seed: runs with different training seeds see the same images



class TrainingError(Exception):
    """A run that could not start or ended in a fault; the message says what to change."""


# Sections group the settings on the CLI's --help, the Train page and docs/settings.md.
SECTIONS = {"model": "model and schedule", "optimizer": "optimizer and regularisation",
            "augment": "augmentation and evaluation", "data": "data and batches", "hardware": "hardware and logging"}


@dataclass
class TrainConfig(Settings):
    """Every setting of a run. Each field's metadata (resnet_lab.settings) drives the CLI flags, the Train page,
    the range checks and docs/settings.md; :meth:`validate` adds the checks that relate two fields."""

    WHAT, ERROR = "training", TrainingError

    model: str = setting("custom_resnet", section="model", help="a registry model (python -m resnet_lab models)")
    model_options: dict = setting(factory=dict, section="model", flag="model-option",
                                  help="a model option, e.g. shortcut=B or width=8 (the Data & Models page lists "
                                       "each model's)")
    epochs: int = setting(24, section="model", lo=1, hi=MAX_EPOCHS, help="passes over the training images")
    peak_epoch: float = setting(5.0, section="model", lo=0, lo_open=True, step=0.5,
                                help="epoch at whose end the LR reaches LR max (fractions allowed; moves with "
                                     "--epochs when only that is given)")
    lr_max: float = setting(0.02, section="model", label="LR max", lo=0, hi=10, lo_open=True, step=0.001,
                            hint="larger LRs make training diverge; try 0.001–1", help="the learning rate at the peak")
    lr_min: float = setting(0.002, section="model", label="LR min", lo=0, lo_open=True, step=0.0001,
                            help="the starting LR, and the final one when annihilation is off")
    annihilation: bool = setting(False, section="model",
                                 help="end far below LR min (LR min / 1000) instead of at LR min")
    lr_end: float | None = setting(None, section="model", label="final LR", lo=0, lo_open=True, step=0.0001,
                                   empty="LR min, or LR min / 1000 with annihilation", help="the LR at the last step")
    optimizer: str = setting("adam", section="optimizer", choices=OPTIMIZERS,
                             help="adam / adamw: beta1 follows the momentum cycle; sgd: the momentum does")
    momentum_max: float = setting(0.95, section="optimizer", label="momentum max", lo=0, hi=1, hi_open=True,
                                  step=0.01, help="SGD momentum / Adam beta1 at the start and the end")
    momentum_min: float = setting(0.85, section="optimizer", label="momentum min", lo=0, hi=1, hi_open=True,
                                  step=0.01, help="... and at the LR peak (Smith's cyclic momentum); equal = constant")
    nesterov: bool = setting(False, section="optimizer", help="Nesterov momentum (SGD only)")
    weight_decay: float = setting(0.0, section="optimizer", lo=0, hi=0.1, step=0.0001,
                                  hint="typical: 1e-4 to 5e-4", help="L2 penalty on the weights")
    label_smoothing: float = setting(0.0, section="optimizer", lo=0, hi=1, hi_open=True, step=0.05,
                                     help="share of each target spread over the other classes (0 = plain "
                                          "cross-entropy, the assignment)")
    lookahead: bool = setting(False, section="optimizer",
                              help="every 5 steps pull the weights towards a slow moving average of themselves")
    bias_lr_scale: float = setting(1.0, section="optimizer", label="batch-norm LR scale", lo=0, hi=1000,
                                   lo_open=True, step=1.0,
                                   help="LR multiplier for batch-norm parameters (their weight decay is divided "
                                        "by it)")
    augment: bool = setting(True, section="augment",
                            help="pad + random crop + flip + one cutout hole (p=0.5); off: plain images")
    cutout: int = setting(8, section="augment", label="cutout size", lo=0, hi=32, unit="px", step=1,
                          help="side of the cutout hole (0 = none)")
    crop_pad: int = setting(4, section="augment", label="crop padding", lo=0, hi=16, unit="px", step=1,
                            help="random crops come from the image padded (reflection) by this many pixels")
    flip: str = setting("random", section="augment", choices=FLIPS,
                        help="random: each image p=0.5 every epoch; alternate: random once, then every image "
                             "flips every 2nd epoch")
    tta: bool = setting(False, section="augment", label="test-time flip averaging",
                        help="average each test image's prediction with its mirror image's")
    tta_shift: bool = setting(False, section="augment", label="test-time shift averaging",
                              help="with tta: also average over the image shifted 1 px up-left and down-right")
    batch_size: int = setting(512, section="data", label="batch size", lo=2, step=32,
                              hint="batch norm needs 2 images", help="images per step")
    seed: int = setting(0, section="data", lo=0, hi=MAX_SEED, step=1,
                        help="same seed and settings: the same run on the same hardware")
    subset: int | None = setting(None, section="data", label="training images", lo=10, step=500,
                                 hint="one per class at least", empty="all", help="a class-balanced subset, the "
                                                                                  "same images for every seed")
    test_subset: int | None = setting(None, section="data", label="test images", lo=10, step=500,
                                      hint="one per class at least", empty="all",
                                      help="a class-balanced subset of the test images")
    data: str | None = setting(None, section="data", label="data source", empty="$RESNET_LAB_DATA or cifar10",
                               help="cifar10 (downloaded once), or a class-folder directory / .tar.gz")
    pipeline: str = setting("auto", section="hardware", label="input pipeline", choices=PIPELINES,
                            help="auto: batched torch ops on a GPU, albumentations per image on a CPU")
    device: str = setting("auto", section="hardware", help="auto | cpu | cuda[:N]")
    amp: bool = setting(True, section="hardware", label="mixed precision",
                        help="autocast to 16-bit floats on CUDA (ignored on a CPU)")
    amp_dtype: str = setting("bf16", section="hardware", label="16-bit type", choices=AMP_DTYPES,
                             help="bf16, or fp16 with a static loss scale of the batch size")
    channels_last: bool = setting(True, section="hardware", label="channels last",
                                  help="NHWC memory layout on CUDA")
    compile: bool = setting(False, section="hardware", label="compile with torch.compile",
                            help="compile the model first (slow start, faster epochs); GPU only (ignored on a CPU)")
    log_every: int = setting(0, section="hardware", label="log every", lo=0, unit="steps", step=1,
                             help="steps between batch events (0 = every step on a CPU, every 10 on CUDA)")
    checkpoint_every: int = setting(1, section="hardware", label="checkpoint every", lo=0, unit="epochs", step=1,
                                    help="epochs between checkpoints (0 = only at the end)")
    eval_every: int = setting(1, section="hardware", label="evaluate every", lo=0, unit="epochs", step=1,
                              help="epochs between test evaluations (0 = only at the end)")
    preset: str | None = setting(None, section="model",
                                 help="the preset the other values start from: assignment | speed | quick-cpu | "
                                      "paper-resnet20 (default: assignment on a GPU, quick-cpu on a CPU)")

    def validate(self, n_train: int | None = None) -> dict[str, str]:
        """Field name -> what is wrong with it, in words a student understands. Empty when valid."""
        err = check_settings(self)
        self._check_model(err)
        self._check_schedule(err)
        self._check_run(err, n_train)
        return err

    def _check_model(self, err: dict) -> None:
        from resnet_lab.models import list_models, model_info

        if self.model not in list_models():
            err["model"] = f"unknown model '{self.model}'"
        elif not isinstance(self.model_options, dict):
            err["model_options"] = "model options must be a mapping of option name to value"
        else:
            allowed = model_info(self.model)["options"]
            for key, value in self.model_options.items():
                if key not in allowed:
                    err["model_options"] = (f"{self.model} has no option '{key}'"
                                            + (f" (it has: {', '.join(allowed)})" if allowed else ""))
                elif value not in allowed[key]["choices"]:
                    err["model_options"] = f"{key} must be one of {allowed[key]['choices']}"

    def _check_schedule(self, err: dict) -> None:
        """The relations of the one-cycle schedule and the optimizer (each field's own range is checked already)."""
        if not err.keys() & {"epochs", "peak_epoch"} and self.peak_epoch >= self.epochs:
            err["peak_epoch"] = (f"the peak ({self.peak_epoch:g}) must come before the end of training "
                                 f"(epoch {self.epochs}); fractions like 0.5 are fine")
        if not err.keys() & {"lr_max", "lr_min"} and self.lr_min >= self.lr_max:
            err["lr_min"] = f"LR min ({self.lr_min:g}) must be below LR max ({self.lr_max:g})"
        if not err.keys() & {"momentum_max", "momentum_min"} and self.momentum_min > self.momentum_max:
            err["momentum_min"] = "momentum min must not exceed momentum max"
        if self.nesterov and self.optimizer != "sgd":
            err["nesterov"] = "Nesterov momentum applies to SGD only"
        elif self.nesterov and "momentum_min" not in err and self.momentum_min <= 0:
            err["nesterov"] = "Nesterov needs a momentum > 0"
        if self.lr_end is not None and not err.keys() & {"lr_end", "lr_max"} and self.lr_end > self.lr_max:
            err["lr_end"] = f"the final LR ({self.lr_end:g}) must not exceed LR max ({self.lr_max:g})"

    def _check_run(self, err: dict, n_train: int | None) -> None:
        """Batches against the data, augmentation options that need each other, and the device."""
        if "batch_size" not in err and n_train is not None:
            if self.batch_size > n_train:
                err["batch_size"] = f"batch size {self.batch_size} is larger than the {n_train:,} training images"
            elif "epochs" not in err and self.epochs * steps_per_epoch(n_train, self.batch_size) > MAX_STEPS:
                err["epochs"] = (f"{self.epochs:,} epochs of {steps_per_epoch(n_train, self.batch_size):,} steps "
                                 f"is over the limit of {MAX_STEPS:,} training steps; use fewer epochs or bigger "
                                 "batches")
        if self.flip == "alternate" and self.pipeline == "albumentations":
            err["flip"] = "alternating flips need the torch pipeline (albumentations flips each image at random)"
        if self.tta_shift and not self.tta:
            err["tta_shift"] = "shift averaging extends mirror averaging: turn on test-time flip averaging too"
        from resnet_lab.config import device_problem

        if device_problem(self.device):
            err["device"] = device_problem(self.device)


PRESETS: dict[str, dict[str, Any]] = {
    # The course assignment: custom ResNet, 24 epochs, peak at 5, no annihilation, batch 512, Adam, plain CE,
    # crop+flip+cutout 8x8. LR max/min are placeholders for what the LR range test finds (the LR Finder page
    # hands its pick over); 0.02/0.002 is where the range test of this net (Adam, batch 512) is steepest.
    "assignment": dict(model="custom_resnet", epochs=24, peak_epoch=5, lr_max=0.02, lr_min=0.002,
                       annihilation=False, optimizer="adam", batch_size=512, weight_decay=0.0,
                       label_smoothing=0.0, momentum_max=0.95, momentum_min=0.85, augment=True, cutout=8),
    # A demo that ends within 3 minutes on 2 CPU cores: the paper's smallest ResNet on a class-balanced subset
    # (figures measured in PRESET_NOTES).
    "quick-cpu": dict(model="resnet20", epochs=5, peak_epoch=1, lr_max=0.2, lr_min=0.02, annihilation=True,
                      optimizer="sgd", nesterov=True, momentum_max=0.95, momentum_min=0.85, weight_decay=5e-4,
                      batch_size=128, subset=4000, test_subset=1000, augment=True, cutout=8),
    # He et al. 2015's CIFAR recipe for ResNet-20 (SGD 0.1, momentum 0.9, wd 1e-4, batch 128, no cutout), with a
    # one-cycle schedule over a short budget instead of 64k iterations with step decays.
    "paper-resnet20": dict(model="resnet20", epochs=30, peak_epoch=6, lr_max=0.1, lr_min=0.01, annihilation=True,
                           optimizer="sgd", momentum_max=0.9, momentum_min=0.9, weight_decay=1e-4,
                           batch_size=128, augment=True, cutout=0),
}

# The speed preset: the public CIFAR-10 speed record's ideas (airbench94, Jordan 2024) in this trainer's terms.
# Its hyperparameters are the record's, converted from its summed loss to the mean loss used here: LR 11.5 per
# 1024 images with Nesterov momentum 0.85 is 1.5 at the peak, starting at 0.2x and ending at 0.07x of it,
# peaking 23% into the run; weight decay 0.0153 per 1024 images is 0.00133 as torch's coupled decay at that
# LR; batch-norm shifts learn 64x faster with the same decay per step. benchmarks/bench_speed.py --ablate
# measures what each switch buys.
SPEED = dict(model="speednet", epochs=10, peak_epoch=2.3, lr_max=1.5, lr_min=0.3, lr_end=0.105, annihilation=False,
             optimizer="sgd", nesterov=True, momentum_max=0.85, momentum_min=0.85, weight_decay=0.0153 / 11.5,
             bias_lr_scale=64.0, label_smoothing=0.2, batch_size=1024, augment=True, crop_pad=2, flip="alternate",
             cutout=0, tta=True, tta_shift=True, lookahead=True, amp_dtype="fp16", pipeline="torch",
             eval_every=0, checkpoint_every=0)
PRESETS["speed"] = SPEED

PRESET_NOTES = {
    "assignment": "The course assignment: custom ResNet (6.6 M parameters), 24 epochs, LR peak at epoch 5, "
                  "no annihilation, Adam, batch 512, crop + flip + 8×8 cutout. Seconds to minutes on a GPU; "
                  "hours on a CPU.",
    "quick-cpu": "DEMO, not a real result: ResNet-20 on 4,000 training / 1,000 test images for 5 epochs. Measured "
                 "on 2 CPU cores (shared with other jobs): 1.5–10 minutes, 42–45% test accuracy (42.4%, 43.1% and "
                 "44.6% in three runs: seeded, but CPU float sums vary with the thread count; the assignment "
                 "preset on a GPU aims at ~90%).",
    "speed": "Seconds to ~90% on a GPU: a small whitened net and every trick of the public speed record "
             "(label smoothing, lookahead, alternating flips, flip+shift test-time averaging, fp16). Made for a GPU; "
             "on a CPU use quick-cpu.",
    "paper-resnet20": "He et al.'s CIFAR recipe for ResNet-20 (SGD 0.1, momentum 0.9, weight decay 1e-4, batch 128) "
                      "with a one-cycle schedule over 30 epochs (the paper: ~180 epochs, 91.3%).",
}


def preset(name: str, **overrides) -> TrainConfig:
    """A preset's config with overrides (None = keep). Overriding ``epochs`` alone moves the LR peak with it,
    to the same fraction of the run (24 epochs peaking at 5 → 12 epochs peaking at 2.5)."""
    if name not in PRESETS:
        raise invalid(TrainingError, {"preset": f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}"})
    base = PRESETS[name]
    values = {**base, "preset": name}
    given = {k: v for k, v in overrides.items() if v is not None}
    values.update(given)
    epochs = given.get("epochs")
    if ("peak_epoch" not in given and isinstance(epochs, int) and not isinstance(epochs, bool) and epochs >= 1
            and epochs != base["epochs"]):
        values["peak_epoch"] = round(base["peak_epoch"] * epochs / base["epochs"], 4)
    return TrainConfig.from_dict(values)


def default_preset(cuda: bool | None = None) -> str:
    if cuda is None:
        cuda = torch.cuda.is_available()
    return "assignment" if cuda else "quick-cpu"


# -- schedule ------------------------------------------------------------------------------------------


def one_cycle(config: TrainConfig, steps_per_epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """The one-cycle policy, step by step: LR from lr_min up to lr_max at the end of epoch ``peak_epoch``, then
    linearly down to lr_min (annihilation off) or lr_min/1000 (on); momentum moves the opposite way,
    momentum_max → momentum_min at the peak → momentum_max.

    The same formula as ``torch.optim.lr_scheduler.OneCycleLR(anneal_strategy="linear", three_phase=False)``
    (the tests check they agree), computed here because OneCycleLR divides by zero when the peak falls on the
    first step — which a 1-epoch demo on a few hundred images does.
    """
    total = max(1, int(config.epochs) * int(steps_per_epoch))
    lr_min, lr_max = float(config.lr_min), float(config.lr_max)
    lr_end = lr_min / 1000.0 if config.annihilation else lr_min
    if config.lr_end is not None:
        lr_end = float(config.lr_end)
    m_hi, m_lo = float(config.momentum_max), float(config.momentum_min)
    peak = min(max(float(config.peak_epoch) * steps_per_epoch - 1.0, 0.0), total - 1.0)  # OneCycleLR's peak step
    i = np.arange(total, dtype=np.float64)
    up = np.clip(i / peak, 0.0, 1.0) if peak > 0 else np.ones(total)
    down = np.clip((i - peak) / (total - 1.0 - peak), 0.0, 1.0) if total - 1.0 > peak else np.zeros(total)
    rising = i <= peak
    lrs = np.where(rising, lr_min + (lr_max - lr_min) * up, lr_max + (lr_end - lr_max) * down)
    moms = np.where(rising, m_hi + (m_lo - m_hi) * up, m_lo + (m_hi - m_lo) * down)
    return lrs, moms


def schedule(config: TrainConfig, steps_per_epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """LR and momentum at every optimizer step — the exact values ``train`` sets before each step."""
    return one_cycle(config, steps_per_epoch)


def _set_lr_momentum(optimizer, lr: float, momentum: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
        if "betas" in group:
            group["betas"] = (momentum, group["betas"][1])
        else:
            group["momentum"] = momentum


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    return max(1, n_train // batch_size)  # drop the ragged last batch: a size-1 batch breaks batch norm


def _param_groups(config: TrainConfig, model: torch.nn.Module) -> list[dict]:
    """One group, or with ``bias_lr_scale`` != 1 two: batch-norm parameters get LR x scale and weight decay
    / scale, so their decay per step (LR x decay) stays that of the other weights while they move faster."""
    params = list(model.parameters())  # frozen ones too: a model may unfreeze (or freeze) some per epoch
    if config.bias_lr_scale == 1.0:
        return [{"params": params}]
    norm_ids = {id(p) for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                for p in m.parameters(recurse=False)}
    norm = [p for p in params if id(p) in norm_ids]
    rest = [p for p in params if id(p) not in norm_ids]
    scale = float(config.bias_lr_scale)
    return [{"params": rest, "lr_scale": 1.0},
            {"params": norm, "lr_scale": scale, "weight_decay": config.weight_decay / scale}]


def _make_optimizer(config: TrainConfig, params, fused: bool = False):
    # the LR and momentum given here are overwritten before every step by the one-cycle plan
    mom = config.momentum_max
    extra = {"fused": True} if fused else {}  # one kernel for all parameters instead of several per tensor
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr_min, momentum=mom, nesterov=config.nesterov,
                               weight_decay=config.weight_decay, **extra)
    cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=config.lr_min, betas=(mom, 0.999), weight_decay=config.weight_decay, **extra)


def _current_lr_momentum(optimizer) -> tuple[float, float]:
    group = optimizer.param_groups[0]
    mom = group["betas"][0] if "betas" in group else group.get("momentum", 0.0)
    return float(group["lr"]), float(mom)


# -- input pipelines -----------------------------------------------------------------------------------


def choose_pipeline(config: TrainConfig, device: torch.device) -> str:
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
    """Device-resident uint8 data, augmented per batch on the device (airbench style)."""

    def __init__(self, data, config: TrainConfig, device, seed: int):
        from resnet_lab import transforms as T

        self.T, self.config, self.device = T, config, device
        # the generator lives on the training device, so sampling crops/flips/holes never syncs with the host
        self.gen = torch.Generator(device=device).manual_seed(seed)
        self.x = torch.from_numpy(data.train_x).to(device)  # (N,32,32,3) uint8 — 150 MB for CIFAR-10
        self.y = torch.from_numpy(data.train_y).to(device)
        self.mean, self.std = tuple(data.mean), tuple(data.std)
        self.cl = config.channels_last and device.type == "cuda"
        self.epochs_done = 0
        # Alternating flips: each image gets one random orientation, then the whole set flips every other
        # epoch, so any two consecutive epochs show every image both ways (random flips repeat one side half
        # the time).
        self.base_flip = (torch.rand(self.x.shape[0], generator=self.gen, device=device) < 0.5
                          if config.flip == "alternate" else None)

    def epoch(self, steps: int, batch_size: int):
        perm = torch.randperm(self.x.shape[0], generator=self.gen, device=self.device)
        odd = self.epochs_done % 2 == 1
        self.epochs_done += 1
        cfg = self.config
        for s in range(steps):
            idx = perm[s * batch_size:(s + 1) * batch_size]
            xb = self.x[idx]
            if cfg.augment:
                params = self.T.sample_params(len(idx), generator=self.gen, pad=cfg.crop_pad, cutout=cfg.cutout,
                                              device=self.device, flip_p=0.0 if cfg.flip == "none" else 0.5)
                if self.base_flip is not None:
                    params.flip = self.base_flip[idx] ^ odd
                xb = self.T.augment_batch(xb, params, self.mean, self.std, pad=cfg.crop_pad, cutout=cfg.cutout,
                                          channels_last=self.cl)
            else:
                xb = self.T.normalize_batch(xb, self.mean, self.std, channels_last=self.cl)
            yield xb, self.y[idx]


class _AlbumentationsBatches:
    """The course's per-image albumentations pipeline, batched on the CPU."""

    def __init__(self, data, config: TrainConfig, device, seed: int):
        from resnet_lab import transforms as T

        self.data, self.device = data, device
        self.gen = torch.Generator().manual_seed(seed)
        try:
            self.aug = (T.albumentations_train(data.mean, data.std, pad=config.crop_pad, cutout=config.cutout,
                                               flip_p=0.0 if config.flip == "none" else 0.5)
                        if config.augment else T.albumentations_test(data.mean, data.std))
        except ImportError as exc:
            raise TrainingError(f"the albumentations pipeline needs the albumentations package ({exc}); "
                                "pip install albumentations, or choose the torch pipeline") from exc
        if hasattr(self.aug, "set_random_seed"):  # albumentations draws from its own RNG (2.x can seed it)
            self.aug.set_random_seed(seed)
        self.pin = device.type == "cuda"

    def epoch(self, steps: int, batch_size: int):
        perm = torch.randperm(len(self.data.train_y), generator=self.gen).numpy()
        for s in range(steps):
            idx = perm[s * batch_size:(s + 1) * batch_size]
            xb = torch.stack([torch.as_tensor(self.aug(image=self.data.train_x[i])["image"]) for i in idx]).float()
            if xb.shape[-1] == 3:  # HWC -> CHW for a pipeline without ToTensorV2
                xb = xb.permute(0, 3, 1, 2)
            yb = torch.from_numpy(self.data.train_y[idx])
            if self.pin:
                xb, yb = xb.contiguous().pin_memory(), yb.pin_memory()
            yield (xb.contiguous().to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True))


# -- evaluation ----------------------------------------------------------------------------------------


def _mirror_logits(model, xb: torch.Tensor) -> torch.Tensor:
    return (model(xb).float() + model(xb.flip(3)).float()) / 2


@torch.no_grad()
def _predict_tensor(model, x_uint8: torch.Tensor, mean, std, batch_size: int, amp: bool, channels_last: bool,
                    tta: bool = False, tta_shift: bool = False, amp_dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Softmax probabilities (N, C) float32 on x's device; no host sync.

    ``tta``: logits averaged with the mirror image's (as likely as the original under the training flips);
    ``tta_shift``: half of that weight moves to the image shifted by 1 px up-left and 1 px down-right
    (reflection padding) — views the random crops made familiar."""
    from resnet_lab import transforms as T

    was_training = model.training
    model.eval()
    out = []
    device = x_uint8.device
    for i in range(0, len(x_uint8), batch_size):
        xb = T.normalize_batch(x_uint8[i:i + batch_size], mean, std, channels_last=channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
            if not tta:
                logits = model(xb).float()
            else:
                logits = _mirror_logits(model, xb)
                if tta_shift:
                    h, w = xb.shape[-2:]
                    padded = torch.nn.functional.pad(xb, (1, 1, 1, 1), mode="reflect")
                    shifted = [_mirror_logits(model, padded[:, :, dy:dy + h, dx:dx + w]) for dy, dx in ((0, 0), (2, 2))]
                    logits = 0.5 * logits + 0.25 * (shifted[0] + shifted[1])
        out.append(torch.softmax(logits, 1))
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros((0, 0), device=device)


def predict(model, x_uint8: np.ndarray, mean, std, device, batch_size: int = 500, amp: bool = False,
            channels_last: bool = False, tta: bool = False) -> np.ndarray:
    """Softmax probabilities for uint8 NHWC images (no augmentation), as a float32 numpy array."""
    device = torch.device(device)
    x = torch.from_numpy(np.ascontiguousarray(x_uint8)).to(device)
    probs = _predict_tensor(model, x, mean, std, batch_size, amp and device.type == "cuda", channels_last, tta)
    return probs.cpu().numpy().astype(np.float32)


# -- GPU-friendly bookkeeping --------------------------------------------------------------------------


class _HostStats:
    """Small device tensors brought to the host without stalling the GPU.

    On CUDA each ``push`` starts a non-blocking copy into pinned memory and records an event; ``ready``
    returns the copies whose event has completed (``wait=True``: all). A ``.item()`` per logged step instead
    would drain the GPU's queue and leave it idle while Python launches the next kernels.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.pending: list = []

    def push(self, values: torch.Tensor, meta: dict) -> None:
        if not self.cuda:
            self.pending.append((values.tolist(), None, meta))
            return
        host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
        host.copy_(values, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self.pending.append((host, event, meta))

    def ready(self, wait: bool = False) -> list[tuple[list, dict]]:
        out = []
        while self.pending:
            host, event, meta = self.pending[0]
            if event is not None:
                if not (wait or event.query()):
                    break
                event.synchronize()
                host = host.tolist()
            out.append((host, meta))
            self.pending.pop(0)
        return out


class _Lookahead:
    """Lookahead (Zhang et al. 2019) as the speed recipe uses it: every ``LOOKAHEAD_EVERY`` steps the slow
    copy moves towards the fast weights, ``slow = d*slow + (1-d)*fast``, and the fast weights restart from it.
    ``d`` grows as (step/total)^3 (at most 0.95^5): no averaging early, when the weights must move, and a
    long average at the end, where it acts like weight averaging. The run ends on the slow weights."""

    def __init__(self, model: torch.nn.Module, total_steps: int) -> None:
        self.tensors = [t for t in model.state_dict().values() if t.is_floating_point()]  # BN statistics too
        self.slow = [t.detach().clone() for t in self.tensors]
        self.total = max(1, total_steps)

    @torch.no_grad()
    def step(self, step: int) -> None:
        if step % LOOKAHEAD_EVERY == 0:
            self._sync(0.95 ** 5 * (step / self.total) ** 3)

    @torch.no_grad()
    def finish(self) -> None:
        self._sync(1.0)

    def _sync(self, decay: float) -> None:
        torch._foreach_lerp_(self.slow, self.tensors, 1.0 - decay)
        torch._foreach_copy_(self.tensors, self.slow)


class _Checkpoints(Hook):
    """The run's weights, as a fit hook: every ``every`` epochs and at the end, written by a background thread
    (the device-to-host copy is taken at once, the disk write is not). ``saved_epoch`` is the epoch of the newest
    checkpoint known to be on disk (0: none yet)."""

    def __init__(self, store, run, every: int) -> None:
        self.store, self.run, self.every = store, run, every
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="resnet_lab-ckpt")
        self.futures: list = []
        self.saved_epoch = 0

    def save(self, model: torch.nn.Module, epoch: int = 0) -> None:
        self._raise_finished()
        state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        self.futures.append((epoch, self.pool.submit(self.store.save_checkpoint, self.run, state)))

    def _settle(self, epoch: int, fut) -> BaseException | None:
        exc = fut.exception()
        if exc is None:
            self.saved_epoch = max(self.saved_epoch, epoch)
        return exc

    def _raise_finished(self) -> None:
        for item in [f for f in self.futures if f[1].done()]:
            self.futures.remove(item)
            exc = self._settle(*item)
            if exc is not None:
                raise exc  # a failed write (disk full, folder gone) surfaces here

    def close(self, raise_errors: bool = True) -> None:
        try:
            for item in self.futures:
                exc = self._settle(*item)
                if exc is not None and raise_errors:
                    raise exc
        finally:
            self.futures.clear()
            self.pool.shutdown(wait=True)

    def after_epoch(self, model, epoch: int, last: bool) -> None:
        if self.every and epoch % self.every == 0 and not last:
            self.save(model, epoch)

    def after_fit(self, model, epochs_done: int) -> None:
        self.save(model, epochs_done)
        self.close()

    def on_fault(self) -> None:
        self.close(raise_errors=False)  # the last complete epoch's checkpoint is kept


# -- the trainer ---------------------------------------------------------------------------------------


def _invalid(problems: dict[str, str]) -> TrainingError:
    return invalid(TrainingError, problems)  # the CLI shows each under its option (--batch-size)


def train(config: TrainConfig | dict, data=None, callback: Callback | None = None, stop_event=None,
          store=None, hooks: tuple[Hook, ...] = ()):
    """Train one model; returns the finished (or stopped) ``Run`` from the runs store.

    ``data`` is a ``resnet_lab.data.Dataset`` (loaded from ``config.data`` when None); ``config.subset`` /
    ``test_subset`` are cut from it either way (class-balanced, seed ``SUBSET_SEED``). ``callback(event)``
    receives start/log/batch/epoch/end events and may steer: return ``events.STOP`` to end the run after the
    current batch (evaluated, saved with its history, marked ``stopped``) or ``events.SKIP_EPOCH`` to end the
    epoch early. ``stop_event`` (anything with ``is_set()``, e.g. a Stop button's flag) is such a callback.
    ``hooks`` (``events.Hook``) see the model before training, after each epoch and at the end: the run's
    checkpoints are one, the depth experiment's per-layer statistics another. A fault (CUDA out of memory, a
    diverging loss, a full disk) marks the run ``failed``, keeps the history and the last epoch's checkpoint,
    and raises ``TrainingError`` with a message that says what to change.
    """
    fit = _Fit.start(config, data, callback, stop_event, store, hooks)  # settings, data, model, run folder
    try:
        fit.init_from_data()
        for epoch in range(1, fit.config.epochs + 1):
            row = fit.train_epoch(epoch)
            last = epoch == fit.config.epochs or fit.stopped
            fit.end_epoch(row, last)
            if last:
                break
        return fit.finish()
    except BaseException as exc:
        fit.fail(exc)  # marks the run, keeps what it had, raises
        raise
    finally:
        fit.release()


class _Fit:
    """One training run's state and steps; ``train`` above is its table of contents."""

    def __init__(self, config: TrainConfig, data, device, store, callback, stop_event, hooks=()) -> None:
        from resnet_lab.models import build_seeded

        self.config, self.data, self.device, self.store = config, data, device, store
        # The Stop button is one more callback: every callback may steer (resnet_lab.events.Steer).
        self.callback = chain(callback, stop_when(stop_event))
        self.steer = None  # what the callbacks asked for (STOP, SKIP_EPOCH) and the loop has not yet obeyed
        self.hooks = list(hooks)  # the run's checkpoints join them in create_run
        self.cuda = device.type == "cuda"
        self.n_train, self.n_test = len(data.train_y), len(data.test_y)
        self.num_classes = len(data.classes)
        model = build_seeded(config.model, config.seed, num_classes=self.num_classes, **(config.model_options or {}))
        model = model.to(device)
        self.channels_last = self.cuda and config.channels_last
        if self.cuda:
            torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels once
            if self.channels_last:
                model = model.to(memory_format=torch.channels_last)  # NHWC is what tensor cores want
        self.model = model
        # GPU only, like autocast and channels_last: on a CPU torch.compile spent over 240 s compiling ResNet-20
        # before the first step, for no gain, so there it is ignored and the callbacks are told (the CLI prints it)
        self.fwd = torch.compile(model) if config.compile and self.cuda else model
        if config.compile and not self.cuda:
            self.emit("log", message="compile with torch.compile (--compile) is GPU only: ignored on the CPU, "
                                     "where compiling takes minutes and makes no step faster")
        self.amp = config.amp and self.cuda
        self.amp_dtype = torch.float16 if config.amp_dtype == "fp16" else torch.bfloat16
        # fp16 has a narrow exponent: small gradients would flush to zero, so the loss is scaled up by a constant
        # (the batch size: the summed loss) and the gradients scaled back before the step. No dynamic
        # GradScaler: its overflow check would sync with the host every step.
        self.loss_scale = float(config.batch_size) if self.amp and self.amp_dtype == torch.float16 else 1.0
        self.steps = steps_per_epoch(self.n_train, config.batch_size)
        self.total_steps = config.epochs * self.steps
        self.optimizer = _make_optimizer(config, _param_groups(config, model), fused=self.cuda)
        self.params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.lr_plan, self.momentum_plan = one_cycle(config, self.steps)
        self.criterion = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.pipeline = choose_pipeline(config, device)
        self.batches = (_TorchBatches if self.pipeline == "torch" else _AlbumentationsBatches)(
            data, config, device, config.seed)
        self.log_every = config.log_every or (10 if self.cuda else 1)
        self.test_x = torch.from_numpy(data.test_x).to(device)
        self.test_y = torch.from_numpy(data.test_y).to(device)
        self.mean, self.std = tuple(data.mean), tuple(data.std)
        self.lookahead = _Lookahead(model, self.total_steps) if config.lookahead else None
        self.history: list[dict] = []
        self.epoch_times: list[float] = []
        self.step, self.stopped, self.probs = 0, False, None

    @classmethod
    def start(cls, config, data, callback, stop_event, store, hooks=()) -> "_Fit":
        """Validate, load and cut the data, build everything, create the run and announce it (``start``)."""
        from resnet_lab.config import resolve_device
        from resnet_lab.runs import RunStore

        if isinstance(config, dict):
            config = TrainConfig.from_dict(config)
        problems = config.validate()
        if problems:
            raise _invalid(problems)
        device = resolve_device(config.device)
        store = store or RunStore()
        store.check_writable()  # before minutes of data loading, not after
        if data is None:
            from resnet_lab.data import load_dataset

            emit(callback, "log", message="loading data")
            data = load_dataset(config.data)
        data = data.subset(train=config.subset, test=config.test_subset, seed=SUBSET_SEED)
        problems = config.validate(n_train=len(data.train_y))
        if problems:
            raise _invalid(problems)
        fit = cls(config, data, device, store, callback, stop_event, hooks)
        fit.create_run()
        return fit

    def create_run(self) -> None:
        c, data = self.config, self.data
        self.run_config = {**c.to_dict(), "classes": list(data.classes), "n_train": self.n_train,
                           "n_test": self.n_test, "pipeline": self.pipeline, "device_name": device_name(self.device),
                           "data_source": data.source, "data_path": data.path, "mean": list(self.mean),
                           "std": list(self.std), "steps_per_epoch": self.steps, "total_steps": self.total_steps,
                           "torch": torch.__version__}
        self.run = self.store.create(self.run_config)
        self.checkpoints = _Checkpoints(self.store, self.run, c.checkpoint_every)
        self.hooks.insert(0, self.checkpoints)
        self.stats = _HostStats(self.device)
        self.call_hooks("before_fit", self.model)  # before the clock starts: a hook's work is not training time
        self.emit("start", run_id=self.run.id, run_path=str(self.run.path), epochs=c.epochs,
                  steps_per_epoch=self.steps, total_steps=self.total_steps, n_train=self.n_train, n_test=self.n_test,
                  device=self.run_config["device_name"], pipeline=self.pipeline, progress=0.0)
        self.t_start = time.perf_counter()

    def call_hooks(self, name: str, *args) -> None:
        for hook in self.hooks:
            getattr(hook, name)(*args)

    def emit(self, type_: str, **fields) -> None:
        """An event to the callbacks; a request to steer is kept until the loop obeys it (STOP over SKIP_EPOCH)."""
        asked = emit(self.callback, type_, **fields)
        if asked is not None and (self.steer is None or asked.value > self.steer.value):
            self.steer = asked

    def init_from_data(self) -> None:
        """A model that sets a layer from the data (speednet's whitening) does it here, inside the timed run."""
        if not hasattr(self.model, "init_from_data"):
            return
        from resnet_lab import transforms as T

        every = max(1, self.n_train // 5000)  # spread over the set: the images may be stored class by class
        sample = torch.from_numpy(np.ascontiguousarray(self.data.train_x[::every][:5000])).to(self.device)
        self.model.init_from_data(T.normalize_batch(sample, self.mean, self.std))

    def train_epoch(self, epoch: int) -> dict:
        """One pass over the training batches (fewer after a stop); returns the epoch's history row so far."""
        self.model.train()
        if hasattr(self.model, "epoch_start"):
            self.model.epoch_start(epoch)
        self.t_epoch = time.perf_counter()
        zero = torch.zeros((), device=self.device)
        loss_sum, correct, seen = zero.clone(), zero.clone(), 0
        win_loss, win_correct, win_seen = zero.clone(), zero.clone(), 0
        for xb, yb in self.batches.epoch(self.steps, self.config.batch_size):
            lr, mom, logits, loss = self.train_step(xb, yb)
            # running sums stay on the device; they reach the host through _HostStats
            with torch.no_grad():
                hits = (logits.argmax(1) == yb).sum()
                batch_loss = loss.detach() * len(yb)
                loss_sum += batch_loss
                correct += hits
                win_loss += batch_loss
                win_correct += hits
            seen += len(yb)
            win_seen += len(yb)
            if self.step % self.log_every == 0 or self.steer is not None or self.step == epoch * self.steps:
                self.stats.push(torch.stack([win_loss, win_correct, torch.full_like(win_loss, win_seen),
                                             loss.detach().float()]),
                                {"epoch": epoch, "step": self.step, "lr": lr, "momentum": mom})
                win_loss, win_correct, win_seen = zero.clone(), zero.clone(), 0
            self.emit_batches()
            if self.steer is not None:  # a callback asked for it with this step's (or an earlier) event
                break
        self.emit_batches(wait=True)
        partial, self.stopped = self.steer is not None, self.steer is STOP
        if not self.stopped:
            self.steer = None  # a skipped epoch is over; the next one runs in full
        train_loss, train_correct = torch.stack([loss_sum, correct]).tolist()
        train_loss /= max(seen, 1)
        if not math.isfinite(train_loss):
            raise TrainingError(f"the loss became {train_loss} in epoch {epoch}: training diverged — lower LR max")
        return {"epoch": epoch, "train_loss": train_loss, "train_acc": train_correct / max(seen, 1),
                "lr": _current_lr_momentum(self.optimizer)[0], "images": seen, "partial": partial}

    def train_step(self, xb, yb):
        lr, mom = float(self.lr_plan[self.step]), float(self.momentum_plan[self.step])
        _set_lr_momentum(self.optimizer, lr, mom)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            logits = self.fwd(xb)
            loss = self.criterion(logits.float(), yb)
        self.optimizer.zero_grad(set_to_none=True)
        if self.loss_scale != 1.0:
            (loss * self.loss_scale).backward()
            torch._foreach_mul_([p.grad for p in self.params if p.grad is not None], 1.0 / self.loss_scale)
        else:
            loss.backward()
        self.optimizer.step()
        self.step += 1
        if self.lookahead is not None:
            self.lookahead.step(self.step)
        return lr, mom, logits, loss

    def emit_batches(self, wait: bool = False) -> None:
        """``batch`` events for the windows whose sums have reached the host (see _HostStats)."""
        c = self.config
        for (loss_sum, hits, seen, last_loss), meta in self.stats.ready(wait):
            if not math.isfinite(last_loss) or not math.isfinite(loss_sum):
                raise TrainingError(f"the loss became {last_loss} at step {meta['step']} (LR {meta['lr']:.3g}): "
                                    "training diverged — lower LR max (or the weight decay) and start again")
            elapsed = time.perf_counter() - self.t_start
            step = meta["step"]
            self.emit("batch", epoch=meta["epoch"], step=step, steps_per_epoch=self.steps,
                 total_steps=self.total_steps, loss=loss_sum / seen, acc=hits / seen, lr=meta["lr"],
                 momentum=meta["momentum"], images_per_s=step * c.batch_size / max(elapsed, 1e-9),
                 eta_s=(self.total_steps - step) * elapsed / step, progress=step / self.total_steps)

    def evaluate(self) -> tuple[float, float]:
        """Test loss and accuracy; keeps the predictions (``probs``) for the run's files."""
        c = self.config
        self.probs = _predict_tensor(self.fwd, self.test_x, self.mean, self.std, 1000 if self.cuda else 250,
                                     self.amp, self.channels_last, c.tta, c.tta_shift, self.amp_dtype)
        picked = self.probs[torch.arange(len(self.test_y), device=self.device), self.test_y]
        scores = torch.stack([-(picked + 1e-12).log().mean(), (self.probs.argmax(1) == self.test_y).float().mean()])
        loss, acc = scores.tolist()  # the one sync of an epoch
        return loss, acc

    def end_epoch(self, row: dict, last: bool) -> None:
        """Evaluate when due, record the row (``epoch`` event, history file), checkpoint when due."""
        c, epoch = self.config, row["epoch"]
        if last and self.lookahead is not None:
            self.lookahead.finish()  # evaluate and save the averaged weights
        if last or (c.eval_every and epoch % c.eval_every == 0):
            test_loss, test_acc = self.evaluate()
            row.update(test_loss=test_loss, test_acc=test_acc)
        row["seconds"] = time.perf_counter() - self.t_epoch
        self.epoch_times.append(row["seconds"])
        self.history.append(row)
        self.emit("epoch", **row, total_epochs=c.epochs, progress=self.step / self.total_steps)
        self.store.save_history(self.run, self.history)
        self.call_hooks("after_epoch", self.model, epoch, last)

    def finish(self):
        """Weights, predictions, metrics and status to the run folder; the ``end`` event."""
        c, run = self.config, self.run
        seconds_total = time.perf_counter() - self.t_start  # first batch → final accuracy
        status = "stopped" if self.stopped else "done"
        probs_np = self.probs.float().cpu().numpy()
        met = classification_metrics(probs_np, self.data.test_y, self.num_classes)
        metrics = {**met, "status": status, "seconds_total": seconds_total,
                   "seconds_per_epoch_steady": _steady(self.epoch_times), "epoch_seconds": self.epoch_times,
                   "images_per_s": self.step * c.batch_size / max(seconds_total, 1e-9),
                   "device": self.run_config["device_name"], "epochs_done": len(self.history),
                   "steps_done": self.step, "train_loss": self.history[-1]["train_loss"],
                   "train_acc": self.history[-1]["train_acc"]}
        self.call_hooks("after_fit", self.model, len(self.history))  # the final checkpoint among them
        self.store.save_predictions(run, probs_np, self.data.test_y, self.data.test_index)
        self.store.save_metrics(run, metrics)
        self.store.set_status(run, status)
        emit(self.callback, "end", run_id=run.id, status=status, top1=met["top1"], top3=met["top3"],
             top5=met["top5"], seconds=seconds_total,
             progress=1.0 if not self.stopped else self.step / self.total_steps)
        return run

    def fail(self, exc: BaseException) -> None:
        """A fault: keep the history and the last complete checkpoint, mark the run, raise a TrainingError
        that says what to change (Ctrl-C, SystemExit and TrainingError propagate as they are)."""
        from resnet_lab.runs import disk_full_message, is_disk_full

        interrupted = isinstance(exc, KeyboardInterrupt)
        msg = "interrupted (Ctrl-C)" if interrupted else _fault_message(exc)
        for hook in self.hooks:
            try:
                hook.on_fault()
            except Exception:
                pass  # the fault being reported matters more than a hook's trouble cleaning up
        if is_disk_full(exc):
            saved = self.checkpoints.saved_epoch
            kept = f"the run kept its last checkpoint at epoch {saved}" if saved else "no checkpoint had been saved yet"
            msg = f"{disk_full_message(self.store.root.resolve(), exc)}; {kept}"
        try:
            self.store.save_history(self.run, self.history)
            self.store.set_status(self.run, "stopped" if interrupted else "failed", msg)
        except Exception:
            pass  # the runs folder itself may be what failed; the error below says so
        emit(self.callback, "end", run_id=self.run.id, status="stopped" if interrupted else "failed", error=msg,
             progress=self.step / max(self.total_steps, 1))
        if not isinstance(exc, (KeyboardInterrupt, SystemExit, TrainingError)):
            raise TrainingError(msg) from exc

    def release(self) -> None:
        # drop the device copies of the data now; the caller (jobs.py) empties the CUDA cache once the
        # model and optimizer are gone too
        self.batches = self.test_x = self.test_y = None


def _fault_message(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in text.lower():
        return ("the GPU ran out of memory — try a smaller batch size (e.g. half of it) or a smaller model; "
                "the history and the last epoch's checkpoint of this run are kept")
    if isinstance(exc, OSError):
        return f"could not write the run to disk: {text.splitlines()[0]}"
    return text.splitlines()[0]


def _steady(times: list[float]) -> float | None:
    """Median epoch time excluding the first (cuDNN autotuning, compilation, warm caches)."""
    if not times:
        return None
    rest = times[1:] or times
    return float(np.median(rest))


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import os

    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
