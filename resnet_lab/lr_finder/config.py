"""What a range test sweeps (``LRFindConfig``) and which run it is for: ``for_training`` makes the sweep of a training
run, ``run_settings``/``train_command`` hand the pick back to that run, ``not_swept`` names what a sweep cannot
reproduce.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from resnet_lab.config import device_problem
from resnet_lab.models import model_problem
from resnet_lab.settings import check as check_settings
from resnet_lab.settings import flags, MAX_SEED, setting, Settings
from resnet_lab.train.config import default_preset, FLIPS, OPTIMIZERS, preset, PRESETS, TrainConfig

MODES = ("exp", "linear")
SUGGESTION_NAMES = ("steepest", "minimum", "torch-lr-finder", "valley", "minimum/10", "slide")
RECOMMENDED = "steepest"  # the seed's rule; pre-selected for Adam/AdamW (see recommended())
CPU_SUBSET = 1000
MIN_LR, MAX_LR = 1e-12, 1e4  # the range a sweep may cover (see LRFindConfig.start_lr)
NO_DESCENT = "The loss never went down"  # how suggest() says there is nothing to suggest from


class LRFinderError(ValueError):
    """The test cannot run or gave nothing usable (bad settings, NaN loss from the first step)."""


@dataclass
class LRFindConfig(Settings):
    """A range test's settings; each field's metadata (resnet_lab.settings) drives the CLI flags and the range
    checks. Defaults here are the GPU's; :func:`default_config` picks the CPU's."""

    WHAT, ERROR = "LR finder", LRFinderError

    model: str = setting("custom_resnet", help="a registry model (python -m resnet_lab models)")
    optimizer: str = setting("adam", choices=OPTIMIZERS, help="the optimizer the real run will use")
    # Bounded: the sweep's LRs are float32 inside the optimizer. Below MIN_LR a step changes no weight (and 1e-320,
    # a sub-normal, made the second LR of an exp sweep inf); above MAX_LR the loss has long diverged, and 1e300
    # overflowed float32 in the optimizer (a RuntimeError after the data had loaded).
    start_lr: float = setting(1e-7, label="start LR", lo=MIN_LR, hi=MAX_LR, hi_open=True,
                              hint="sweeps usually start at 1e-7 or 1e-6", help="first LR of the sweep")
    end_lr: float = setting(10.0, label="end LR", lo=MIN_LR, lo_open=True, hi=MAX_LR,
                            hint="the loss diverges long before; sweeps usually end at 10", help="last LR of the sweep")
    iterations: int = setting(100, lo=2, flag="iters", hint="a curve needs 2 steps at least; 100 is typical",
                              help="steps of the sweep (default 100 on a GPU, 80 on a CPU)")
    mode: str = setting("exp", choices=MODES, help="exp: even steps on a log scale; linear: even steps")
    batch_size: int = setting(512, label="batch size", lo=2, unit="images", hint="batch norm needs 2 images",
                              help="images per step")
    subset: int | None = setting(None, label="training images", lo=10, hint="one per class at least", empty="all",
                                 help="a class-balanced subset (default: all on a GPU, 1,000 on a CPU)")
    smooth: float = setting(0.05, label="smoothing", lo=0, hi=1, hi_open=True,
                            hint="0 = raw loss, 0.05 = torch-lr-finder's default",
                            help="torch-lr-finder's smooth_f: weight of the newest loss in the running average")
    diverge: float = setting(5.0, label="divergence threshold", lo=1, lo_open=True, hint="5 is usual",
                             help="stop once the smoothed loss exceeds this × its best value")
    momentum: float = setting(0.9, lo=0, hi=1, hi_open=True, help="SGD momentum / Adam beta1")
    weight_decay: float = setting(0.0, label="weight decay", lo=0, hi=0.1, help="L2 penalty on the weights")
    nesterov: bool = setting(False, help="Nesterov momentum (SGD only), as the real run will use")
    augment: bool = setting(True, help="the training augmentation (crop + flip + cutout), as the real run will see")
    crop_pad: int = setting(4, label="crop padding", lo=0, hi=16, unit="px",
                            help="pixels of padding before the random 32×32 crop (with augment)")
    cutout: int = setting(8, lo=0, hi=32, unit="px", help="side of the cutout hole, 0 = none (with augment)")
    flip: str = setting("random", choices=FLIPS, help="horizontal flips as the run makes them (with augment): random "
                        "per image, alternate (each image flips every 2nd pass over the data) or none")
    preset: str | None = setting(None, empty="none",
                                 help="the Train preset whose run this sweep matches (for_training sets it)")
    data: str | None = setting(None, label="data source", empty="$RESNET_LAB_DATA or cifar10",
                               help="cifar10 (downloaded once), or a class-folder directory / .tar.gz")
    device: str = setting("auto", help="auto | cpu | cuda[:N]")
    seed: int = setting(0, lo=0, hi=MAX_SEED, help="seeds the model's initialisation and the batches")
    amp: bool = setting(True, label="mixed precision", help="bf16 autocast on CUDA (ignored on a CPU)")
    channels_last: bool = setting(True, label="channels last", help="NHWC memory layout on CUDA")

    def validate(self, n_train: int | None = None) -> dict[str, str]:
        """Field -> what is wrong, in words a student understands. Empty when the test can start."""

        err = check_settings(self)
        problem = model_problem(self.model)
        if problem:
            err["model"] = problem
        if not err.keys() & {"start_lr", "end_lr"} and self.start_lr >= self.end_lr:
            err["end_lr"] = (f"the end LR ({self.end_lr:g}) must be larger than the start LR ({self.start_lr:g}): "
                             "the test sweeps upwards")
        if "batch_size" not in err:
            if self.subset is not None and "subset" not in err and self.batch_size > self.subset:
                err["batch_size"] = f"batch size {self.batch_size} is larger than the subset ({self.subset:,} images)"
            elif n_train is not None and self.batch_size > n_train:
                err["batch_size"] = f"batch size {self.batch_size} is larger than the {n_train:,} training images"
        if device_problem(self.device):
            err["device"] = device_problem(self.device)
        if self.nesterov and self.optimizer != "sgd":
            err["nesterov"] = "Nesterov momentum applies to SGD only"
        if self.preset is not None and self.preset not in PRESETS:
            err["preset"] = f"unknown preset '{self.preset}'; choose one of {', '.join(PRESETS)}"
        return err


# The sweep sweeps what the run it hands its LR to will use: the same model, optimizer (Nesterov too), batch size,
# weight decay and augmentation, and the momentum in force at the LR peak (one-cycle lowers momentum while it
# raises the LR, so at LR max it is momentum_min). A class once clicked an Adam/batch-32 curve and trained the SGD/
# batch-128 preset with it: 30.1 % instead of the preset's 42-45 %. Only the sweep's own range and length differ.
SWEEP = {"GPU": dict(iterations=100, start_lr=1e-7, end_lr=10.0),
         "CPU": dict(iterations=80, start_lr=1e-5, end_lr=10.0)}


def for_training(train, **overrides) -> LRFindConfig:
    """The range test of the run ``train`` (a TrainConfig or its dict) will make. On a CPU (``train.subset`` unset
    there means all 50,000 images) the sweep keeps the run's subset, else ``CPU_SUBSET`` images."""
    t = train if isinstance(train, TrainConfig) else TrainConfig.from_dict(dict(train))
    values = dict(model=t.model, optimizer=t.optimizer, nesterov=bool(t.nesterov and t.optimizer == "sgd"),
                  batch_size=t.batch_size, momentum=t.momentum_min, weight_decay=t.weight_decay, augment=t.augment,
                  crop_pad=t.crop_pad, cutout=t.cutout, flip=t.flip, subset=t.subset, data=t.data, seed=t.seed,
                  preset=t.preset if t.preset in PRESETS else None)
    return LRFindConfig(**{**values, **overrides})


def not_swept(train) -> list[str]:
    """What of the run ``train`` (a TrainConfig, its dict or a preset name) the range test does not reproduce, in
    words; [] when the sweep is that run's. The LR Finder refuses to hand its pick to such a run: the best LR moves
    with each of these."""
    t = train if isinstance(train, TrainConfig) else preset(train) if isinstance(train, str) else \
        TrainConfig.from_dict(dict(train))
    out = []
    if t.label_smoothing:
        out.append(f"label smoothing {t.label_smoothing:g}")
    if t.lookahead:
        out.append("lookahead")
    if t.bias_lr_scale != 1:
        out.append(f"batch-norm parameters at {t.bias_lr_scale:g}× the LR")
    if t.model_options:
        out.append("model options " + ", ".join(f"{k}={v}" for k, v in t.model_options.items()))
    return out


# What the sweep shares with the run it is for: TrainConfig field <- LRFindConfig field.
HANDED_OVER = {"model": "model", "optimizer": "optimizer", "nesterov": "nesterov", "batch_size": "batch_size",
               "weight_decay": "weight_decay", "momentum_min": "momentum", "augment": "augment",
               "crop_pad": "crop_pad", "cutout": "cutout", "flip": "flip"}


def run_settings(sweep: dict, lr_max: float, lr_min: float | None = None) -> dict:
    """The TrainConfig values of the run a sweep (its config dict) was made for, with the picked LRs: the sweep's
    preset, every setting it shares with the run (HANDED_OVER), and ``momentum_max``: the preset's, or the swept
    momentum when that is higher (the sweep runs at the momentum of the LR peak, where one-cycle's momentum is
    lowest, so the cycle may not start below it). The CLI prints it as a command; the app hands it to Train."""
    out = {"preset": sweep.get("preset") if sweep.get("preset") in PRESETS else None, "lr_max": float(lr_max),
           "lr_min": float(lr_max) / 10 if lr_min is None else float(lr_min)}
    for train_field, sweep_field in HANDED_OVER.items():
        if sweep_field in sweep:
            out[train_field] = sweep[sweep_field]
    out["nesterov"] = bool(out.get("nesterov") and out.get("optimizer") == "sgd")
    top = PRESETS[out["preset"] or default_preset()]["momentum_max"]
    out["momentum_max"] = max(top, float(out.get("momentum_min", top)))
    return out


def train_command(settings: dict) -> str:
    """``python -m resnet_lab train ...`` for :func:`run_settings` (the flags from TrainConfig's settings; the
    cycle's top momentum only where it is not the preset's, the augmentation details only with augmentation)."""
    flag = flags(TrainConfig)
    top = PRESETS[settings.get("preset") or default_preset()]["momentum_max"]
    skip = {"preset"} | ({"momentum_max"} if settings.get("momentum_max") == top else set()) | \
        ({"crop_pad", "cutout", "flip"} if not settings.get("augment", True) else set())
    parts = [f"--preset {settings['preset']}"] if settings.get("preset") else []
    for name in ("model", "optimizer", "batch_size", "weight_decay", "momentum_min", "momentum_max", "nesterov",
                 "augment", "crop_pad", "cutout", "flip", "lr_max", "lr_min"):
        value = settings.get(name)
        if name in skip or value is None or (name, value) in (("flip", "random"), ("augment", True)):
            continue
        if isinstance(value, bool):
            parts.append(flag[name] if value else "--no-" + flag[name][2:])
        else:
            parts.append(f"{flag[name]} {value:.3g}" if name.startswith("lr_") else
                         f"{flag[name]} {value:g}" if isinstance(value, float) else f"{flag[name]} {value}")
    return "python -m resnet_lab train " + " ".join(parts)


def _defaults(machine: str) -> dict:
    cfg = for_training(preset(default_preset(machine == "GPU")))
    values = {k: v for k, v in cfg.to_dict().items() if k in ("model", "optimizer", "batch_size", "subset",
                                                              "momentum", "weight_decay", "nesterov", "preset")}
    if machine == "CPU" and values["subset"] is None:
        values["subset"] = CPU_SUBSET
    return {**values, **SWEEP[machine]}


# What default_config sets per machine (docs/settings.md shows them beside each field): the default preset's run.
DEFAULTS = {"GPU": _defaults("GPU"), "CPU": _defaults("CPU")}


def default_config(cuda: bool | None = None, **overrides) -> LRFindConfig:
    """The page's and CLI's defaults: the sweep of the default preset's run (``for_training``). On a GPU the
    assignment (custom_resnet, Adam, batch 512, 100 steps over all images); on a CPU quick-cpu's (ResNet-20, SGD
    with Nesterov momentum 0.85, weight decay 5e-4, batch 128, crop + flip + cutout, its 4,000 images), 80 steps
    from 1e-5 to 10 — about 30 s on 2 free cores.

    With SGD the batch-normed ResNet-20 never diverges inside the sweep (the smoothed loss rises to only ~1.2x its
    best by LR 10), so this curve ends without the blow-up an Adam curve shows; it still has a clear minimum, and
    that is the LR ``recommended`` reads for SGD."""
    if cuda is None:
        cuda = torch.cuda.is_available()
    return LRFindConfig(**{**DEFAULTS["GPU" if cuda else "CPU"], **overrides})


def sweep_cost(config: LRFindConfig | dict, n_train: int | None = None) -> dict:
    """What a sweep costs before it runs: images pushed through forward + backward, and passes over the data."""
    c = config if isinstance(config, dict) else config.to_dict()
    images = int(c["iterations"]) * int(c["batch_size"])
    n = n_train if n_train is not None else c.get("subset")
    return {"steps": int(c["iterations"]), "images": images, "passes": images / n if n else None,
            "n_train": n}
