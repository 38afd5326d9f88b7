"""The learning-rate range test (Smith 2015; fastai's lr_find), on torch-lr-finder's ``LRFinder``.

Train for a few hundred steps while the LR grows from ``start_lr`` to ``end_lr`` (exponentially or linearly),
record the smoothed loss, stop when it blows up, put model and optimizer back exactly as they were. Then read
a maximum LR off the curve. Six rules, side by side, each with a one-line reason:

* ``steepest``        — the seed's rule: the middle of the sharpest fall, its slope taken over several steps and
  only before the minimum (so it differs from torch-lr-finder's, which is the next one),
* ``minimum``         — Smith's bound for one-cycle: the LR where the smoothed loss stops falling (its minimum),
* ``torch-lr-finder`` — that library's own suggestion (``LRFinder.plot(suggest_lr=True)``, called as it is),
* ``valley``          — fastai: the longest descending stretch, a point ~40 % of the way along it,
* ``minimum/10``      — fastai: a tenth of the LR at the lowest loss,
* ``slide``           — fastai: walk back from the end until the slope over 15 steps stops changing.

The fastai rules are written out here (fastai is not a dependency: it would pull in its whole training stack)
and give exactly fastai's answers on the same arrays, window included (``fastai_window``); tests/test_lr_finder.py
checks them against a line-by-line transcription of fastai's published ``callback/schedule.py``.

Data: the uint8 images live on the training device and each batch is augmented there by
``resnet_lab.transforms`` (the trainer's fast path; on a CPU, on a class-balanced subset). torch-lr-finder is
an optional heavy import (it pulls in matplotlib): it is imported inside the functions that need it.
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import torch

from resnet_lab import models
from resnet_lab.config import device_problem, resolve_device
from resnet_lab.data import load_dataset
from resnet_lab.events import Callback, chain, emit, STOP, stop_when
from resnet_lab.models import list_models
from resnet_lab.settings import flags, invalid, MAX_SEED, setting, Settings
from resnet_lab.settings import check as check_settings
from resnet_lab.train.batches import _TorchBatches
from resnet_lab.train.config import default_preset, FLIPS, OPTIMIZERS, preset, PRESETS, TrainConfig
from resnet_lab.train.optim import make_optimizer

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
        if self.model not in list_models():
            err["model"] = f"unknown model '{self.model}'"
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


# --------------------------------------------------------------------------------------------------------------------
# Results


@dataclass
class Suggestion:
    name: str
    lr: float
    loss: float
    reason: str
    index: int | None = None  # position on the curve (None when interpolated, e.g. minimum/10)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LRFindResult:
    lrs: list[float]
    losses: list[float]            # smoothed, what the rules read
    raw_losses: list[float]
    suggestions: list[Suggestion]
    message: str = ""              # why there are no (or fewer) suggestions, or how the test ended
    diverged: bool = False
    stopped: bool = False
    descended: bool = True
    config: dict = field(default_factory=dict)
    device: str = "cpu"
    seconds: float = 0.0
    images_per_s: float = 0.0
    n_train: int = 0

    @property
    def iterations(self) -> int:
        return len(self.lrs)

    def suggestion(self, name: str | None = None) -> Suggestion | None:
        """The rule ``name``'s suggestion; by default the one ``recommended`` for the sweep's optimizer."""
        name = name or recommended(self.config.get("optimizer"))
        return next((s for s in self.suggestions if s.name == name), None)

    @property
    def label(self) -> str:
        c = self.config
        return f"{c.get('model')} · {c.get('optimizer')} · batch {c.get('batch_size')}"

    def to_dict(self) -> dict:
        out = asdict(self)
        out["suggestions"] = [s.to_dict() for s in self.suggestions]
        out["iterations"] = self.iterations
        out["label"] = self.label
        return out

    @classmethod
    def from_dict(cls, values: dict) -> "LRFindResult":
        values = dict(values)
        values.pop("iterations", None)
        values.pop("label", None)
        values["suggestions"] = [Suggestion(**s) for s in values.get("suggestions", [])]
        return cls(**values)


# --------------------------------------------------------------------------------------------------------------------
# Suggestions (pure functions on a curve: unit-tested on synthetic curves)

MIN_POINTS = 10
DESCENT_FRACTION = 0.02  # the curve must dip at least 2% below where the window starts to count as descending
SLIDE_INTERVAL, SLIDE_THRESHOLD = 15, 0.005  # fastai's slide defaults (lr_diff, thresh)
TLF_SKIP_START, TLF_SKIP_END = 10, 5         # torch-lr-finder's plot() defaults


def fastai_window(lrs: np.ndarray, losses: np.ndarray, num_it: int | None = None) -> tuple[int, int]:
    """The stretch fastai's ``lr_find`` hands to its rules: ``[num_it // 10 : -5]`` of the recorded points
    (``num_it`` is the number of iterations asked for, not recorded), cut at the first NaN inside it.
    Returns (start, stop) indices into the arrays."""
    n = len(losses)
    num_it = n if num_it is None else int(num_it)
    a, b = min(num_it // 10, n), max(n - 5, 0)
    if b <= a:
        return a, a
    bad = np.flatnonzero(~np.isfinite(np.asarray(losses[a:b], dtype=np.float64)))
    return a, (a + int(bad[0]) if len(bad) else b)


def fastai_valley_index(losses: np.ndarray) -> int:
    """fastai's ``valley`` on a window: the longest decreasing subsequence (O(n²) dynamic programme), then the
    point ``max_start + int(s) + int(s / 2)`` with ``s = (max_end - max_start) / 3``.

    fastai's details are kept: ``max_start = max_end - lds`` is one *before* the run's first point (so a run
    starting at index 0 gives -1, which wraps around as Python indexing does), ties keep the earliest end, and a
    curve that never decreases gives index 0."""
    losses = np.asarray(losses, dtype=np.float64)
    n = len(losses)
    lds = np.ones(n, dtype=np.int64)
    max_start, max_end = 0, 0
    for i in range(1, n):
        longer = lds[:i][losses[i] < losses[:i]]
        lds[i] = longer.max() + 1 if len(longer) else 1
        if lds[i] > lds[max_end]:  # strictly longer: ties keep the earlier end, as fastai's loop does
            max_end, max_start = i, i - int(lds[i])
    sections = (max_end - max_start) / 3
    idx = max_start + int(sections) + int(sections / 2)
    return idx % n if n else 0


def fastai_slide_index(losses: np.ndarray, lr_diff: int = SLIDE_INTERVAL, thresh: float = SLIDE_THRESHOLD) -> int | None:
    """fastai's ``slide`` on a window: with ``g = np.gradient(losses)``, start with an interval of ``lr_diff``
    points at the right end and move it left while ``|g[right] - g[left]| > thresh``; the answer is the left end
    where that stops (or the first point). None when the window is shorter than the interval (fastai fails)."""
    losses = np.asarray(losses, dtype=np.float64)
    n = len(losses)
    if n < lr_diff + 1 or n < 2:
        return None
    g = np.gradient(losses)
    right = np.arange(n - 1, lr_diff - 1, -1)          # r = n-1, n-2, ...; l = r - lr_diff >= 0
    settled = np.abs(g[right] - g[right - lr_diff]) <= thresh
    steps = int(np.argmax(settled)) if settled.any() else len(right)
    # the last interval that still moved is 'steps - 1' (its left end was recorded); none moved: the first one
    return int(right[max(steps - 1, 0)] - lr_diff)


def torch_lr_finder_suggestion(lrs: Sequence[float], losses: Sequence[float]) -> tuple[int, float] | None:
    """torch-lr-finder's own answer: its ``LRFinder.plot(suggest_lr=True)`` (skip the first 10 and last 5
    points, take the most negative ``np.gradient`` of the loss per *step*). Computed by calling that method on
    these arrays (drawn into an off-screen figure), so it is the library's code, not a copy. Returns (index into
    the arrays, lr), or None with fewer than 17 points (the library refuses)."""
    from types import SimpleNamespace

    from matplotlib.figure import Figure

    from torch_lr_finder import LRFinder

    lrs, losses = [float(v) for v in lrs], [float(v) for v in losses]
    if len(lrs) < TLF_SKIP_START + TLF_SKIP_END + 2:
        return None
    ax = Figure().subplots()
    with _quiet():
        _, lr = LRFinder.plot(SimpleNamespace(history={"lr": lrs, "loss": losses}), skip_start=TLF_SKIP_START,
                              skip_end=TLF_SKIP_END, ax=ax, suggest_lr=True)
    window = lrs[TLF_SKIP_START:-TLF_SKIP_END]
    return TLF_SKIP_START + window.index(lr), float(lr)


def _interp_loss(lr: float, lrs: np.ndarray, losses: np.ndarray) -> float:
    return float(np.interp(np.log10(lr), np.log10(lrs), losses))


def _slope(x: np.ndarray, y: np.ndarray, h: int) -> np.ndarray:
    """dy/dx by central differences over ±h points (one-sided, shorter, at the ends)."""
    n = len(y)
    idx = np.arange(n)
    left, right = np.maximum(idx - h, 0), np.minimum(idx + h, n - 1)
    dx = x[right] - x[left]
    with np.errstate(divide="ignore", invalid="ignore"):
        g = (y[right] - y[left]) / dx
    return np.where(dx > 0, g, 0.0)


def suggest(lrs: Sequence[float], losses: Sequence[float], num_it: int | None = None) -> tuple[list[Suggestion], str]:
    """The six suggestions for one curve, or none with the reason why (too short, never descends).

    ``losses`` should already be smoothed (as ``LRFinder`` records them); ``num_it`` is the number of steps the
    test was asked for (fastai windows with it; default: the points given). "valley", "minimum/10" and "slide"
    are fastai's rules on fastai's window, "torch-lr-finder" is that library's own answer, "steepest" is the
    seed's rule (see its reason for how it differs).
    """
    lr_all = np.asarray(lrs, dtype=np.float64)
    loss_all = np.asarray(losses, dtype=np.float64)
    finite = np.isfinite(loss_all) & np.isfinite(lr_all) & (lr_all > 0)
    n_finite = int(np.argmin(finite)) if not finite.all() else len(loss_all)
    if n_finite < MIN_POINTS:
        return [], (f"Only {n_finite} usable step{'s' if n_finite != 1 else ''} — too few to read an LR from "
                    f"(need {MIN_POINTS}). Start from a lower LR or run more iterations.")
    a, b = fastai_window(lr_all, loss_all, num_it)
    b = min(b, n_finite)
    if b - a < 3:
        return [], (f"Only {max(b - a, 0)} points are left after fastai's window (skip the first tenth and the "
                    "last 5): run more iterations.")
    lr, loss = lr_all[a:b], loss_all[a:b]
    x = np.log10(lr)
    lo = int(np.argmin(loss))
    drop = loss[0] - loss[lo]
    if drop <= DESCENT_FRACTION * max(abs(loss[0]), 1e-8) or lo == 0:
        return [], (f"{NO_DESCENT}: it starts at {loss[0]:.3f} and its lowest is {loss[lo]:.3f} "
                    f"(at LR {lr[lo]:.2g}), so there is no downward slope to pick an LR from. Start the sweep "
                    f"lower (e.g. {lr_all[0] / 100:.0e}), run more iterations, or check the data and labels.")
    out: list[Suggestion] = []

    # steepest (the seed's rule): d(loss)/d(log10 lr) as a central difference over ±h steps, searched only up to
    # the minimum. torch-lr-finder differentiates step to step over its whole window and fastai's 'steep' takes
    # a one-step forward difference, so one lucky batch or a wiggle past the minimum can win there, not here.
    grad = _slope(x, loss, max(1, round(len(loss) / 16)))
    i = int(np.argmin(grad[: lo + 1]))
    out.append(Suggestion("steepest", float(lr[i]), float(loss[i]),
                          f"the seed's rule: middle of the sharpest fall ({grad[i]:.2f} per decade of LR), slope "
                          f"taken over ±{max(1, round(len(loss) / 16))} steps and only before the minimum — unlike "
                          "torch-lr-finder's step-to-step gradient", a + i))

    out.append(Suggestion("minimum", float(lr[lo]), float(loss[lo]),
                          "Smith's one-cycle bound: the LR where the smoothed loss stops falling (its minimum); "
                          "one-cycle spends most of its steps well below its peak", a + lo))

    tlf = torch_lr_finder_suggestion(lr_all[:n_finite], loss_all[:n_finite])
    if tlf is not None:
        k, lr_k = tlf
        out.append(Suggestion("torch-lr-finder", lr_k, float(loss_all[k]),
                              "torch-lr-finder's own plot(suggest_lr=True): the most negative step-to-step "
                              "gradient, skipping the first 10 and last 5 points", k))

    j = fastai_valley_index(loss)
    out.append(Suggestion("valley", float(lr[j]), float(loss[j]),
                          "fastai's valley: the longest descending stretch of the curve, a point about 40% of the "
                          "way down it", a + j))

    lr_min10 = float(lr[lo] / 10)
    out.append(Suggestion("minimum/10", lr_min10, _interp_loss(lr_min10, lr, loss),
                          f"fastai's minimum: the lowest loss is at LR {lr[lo]:.2g}; a tenth of it stays on the "
                          "descending side"))

    f = fastai_slide_index(loss)
    if f is not None:
        out.append(Suggestion("slide", float(lr[f]), _interp_loss(float(lr[f]), lr, loss),
                              f"fastai's slide: walking back from the end, where the slope over {SLIDE_INTERVAL} "
                              f"steps stops changing (|Δ slope| ≤ {SLIDE_THRESHOLD})", a + f))
    return out, ""


# --------------------------------------------------------------------------------------------------------------------
# The test


@contextlib.contextmanager
def _quiet():
    """torch-lr-finder draws its own tqdm bar and prints "See the graph with ..." on every test; our progress
    goes out as events (the CLI draws its bar on the stream it took before this, the app a widget). Its output is
    captured while it runs. The redirect is process-wide: the app runs each LR test in a job process of its own,
    and a notebook or the CLI run one thing at a time."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


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


def recommended(optimizer: str | None) -> str:
    """The rule whose LR the page and the CLI pre-select, by optimizer. Adam/AdamW: ``steepest`` (the seed's rule;
    Adam diverges soon after the loss minimum). SGD: ``minimum``, Smith's one-cycle bound. Measured on quick-cpu
    (ResNet-20, SGD, batch 128, 4,000 JPEG images, 5 epochs, seed 0; ``benchmarks/bench_lr_handover.py``, see
    docs/benchmarks.md): the default sweep's steepest point, LR 0.0155, trained to 37.8 % test accuracy and its
    minimum, LR 0.089, to 45.0 % (the preset's own 0.2: 42-45 %)."""
    return "minimum" if optimizer == "sgd" else RECOMMENDED


def lr_pair(lr_max: float) -> dict:
    """The seed's rule for the one-cycle range: LR min = LR max / 10."""
    return {"lr_max": float(lr_max), "lr_min": float(lr_max) / 10}
