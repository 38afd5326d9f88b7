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

from resnet_lab.lr_finder.config import (
    CPU_SUBSET,
    default_config,
    DEFAULTS,
    FLIPS,
    for_training,
    HANDED_OVER,
    LRFindConfig,
    LRFinderError,
    MAX_LR,
    MIN_LR,
    MODES,
    NO_DESCENT,
    not_swept,
    OPTIMIZERS,
    RECOMMENDED,
    run_settings,
    SUGGESTION_NAMES,
    SWEEP,
    sweep_cost,
    train_command,
)
from resnet_lab.lr_finder.rules import (
    DESCENT_FRACTION,
    fastai_slide_index,
    fastai_valley_index,
    fastai_window,
    lr_pair,
    LRFindResult,
    MIN_POINTS,
    recommended,
    SLIDE_INTERVAL,
    SLIDE_THRESHOLD,
    suggest,
    Suggestion,
    TLF_SKIP_END,
    TLF_SKIP_START,
    torch_lr_finder_suggestion,
)
from resnet_lab.lr_finder.sweep import find_lr

__all__ = [
    "CPU_SUBSET",
    "default_config",
    "DEFAULTS",
    "DESCENT_FRACTION",
    "fastai_slide_index",
    "fastai_valley_index",
    "fastai_window",
    "find_lr",
    "FLIPS",
    "for_training",
    "HANDED_OVER",
    "lr_pair",
    "LRFindConfig",
    "LRFinderError",
    "LRFindResult",
    "MAX_LR",
    "MIN_LR",
    "MIN_POINTS",
    "MODES",
    "NO_DESCENT",
    "not_swept",
    "OPTIMIZERS",
    "recommended",
    "RECOMMENDED",
    "run_settings",
    "SLIDE_INTERVAL",
    "SLIDE_THRESHOLD",
    "suggest",
    "Suggestion",
    "SUGGESTION_NAMES",
    "SWEEP",
    "sweep_cost",
    "TLF_SKIP_END",
    "TLF_SKIP_START",
    "torch_lr_finder_suggestion",
    "train_command",
]
