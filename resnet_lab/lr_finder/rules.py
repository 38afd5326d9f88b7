"""Reading a curve: the six rules that suggest an LR (steepest descent, minimum, torch-lr-finder's, fastai's valley,
minimum/10 and slide) as pure functions on lists, the result they belong to, and which rule suits which optimizer.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from resnet_lab.lr_finder.config import NO_DESCENT, RECOMMENDED

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

    def position(self, lr: float) -> dict:
        """Where ``lr`` lies on this (non-empty) curve: the nearest step on a log scale, its smoothed loss, and
        whether it is past the lowest loss (a one-cycle peak there will likely diverge)."""
        at = min(range(len(self.lrs)), key=lambda i: abs(np.log10(self.lrs[i]) - np.log10(lr)))
        lowest = int(np.argmin(self.losses))
        return {"index": at, "lr": self.lrs[at], "loss": self.losses[at], "past_minimum": at > lowest}

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


@contextlib.contextmanager
def _quiet():
    """torch-lr-finder draws its own tqdm bar and prints "See the graph with ..." on every test; our progress
    goes out as events (the CLI draws its bar on the stream it took before this, the app a widget). Its output is
    captured while it runs. The redirect is process-wide: the app runs each LR test in a job process of its own,
    and a notebook or the CLI run one thing at a time."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield
