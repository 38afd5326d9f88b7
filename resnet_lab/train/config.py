"""The trainer's settings: ``TrainConfig`` (one definition per field, resnet_lab.settings), its checks, and the
presets (the assignment, speed, quick-cpu, paper-resnet20)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from resnet_lab.config import device_problem
from resnet_lab.models import is_model_file, list_models, model_info, model_problem, output_kind
from resnet_lab.settings import check as check_settings
from resnet_lab.settings import invalid, MAX_SEED, setting, Settings

OPTIMIZERS = ("adam", "adamw", "sgd")
LOSSES = ("cross_entropy", "nll")
NLL_ON_LOGITS = ("NLL loss needs (log-)probabilities, and this network returns scores (logits); keep cross-entropy, "
                 "which applies the log-softmax itself")
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
    loss: str = setting("cross_entropy", section="optimizer", choices=LOSSES,
                        help="cross_entropy: the network returns scores (logits); nll: it ends in softmax or "
                             "log_softmax, so its outputs are (log-)probabilities and NLL loss is taken on their log")
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
    shuffle_labels: bool = setting(False, section="data", label="shuffle the training labels",
                                   help="permute the training labels (seeded): the network can only memorise "
                                        "them; test accuracy falls to chance (Zhang et al. 2017)")
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
        if not isinstance(self.model_options, dict):
            err["model_options"] = "model options must be a mapping of option name to value"
        elif is_model_file(self.model):  # a student's file: its constructor checks its own arguments
            problem = model_problem(self.model, options=self.model_options)
            if problem:
                err["model"] = problem
            elif self.loss == "nll" and output_kind(self.model, self.model_options) == "logits":
                err["loss"] = NLL_ON_LOGITS
        elif self.model not in list_models():
            err["model"] = f"unknown model '{self.model}'"
        elif self.loss == "nll":
            err["loss"] = NLL_ON_LOGITS
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
    # (what it measured: resnet_lab.train.notes, from assets/presets/quick-cpu.json).
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


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    return max(1, n_train // batch_size)  # drop the ragged last batch: a size-1 batch breaks batch norm
