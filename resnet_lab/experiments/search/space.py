"""What a search searches: the ranges of the genes (LR, weight decay, momentum), the run each trial trains and the
checks on both (``SearchConfig``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from resnet_lab.settings import check as check_settings
from resnet_lab.settings import setting
from resnet_lab.training import preset, PRESETS

SETTINGS_ATTR = "resnet_lab_search"  # study user attr holding the SearchConfig the study was created with
DEFAULT_STUDY = "resnet-lab-search"
OWNER_ATTR, OWNER_NAME_ATTR = "owner", "owner_name"  # study user attrs: who started it in the app (like a run's)
CROSSOVERS = ("single-point", "uniform", "sbx", "blx")
CONNECT_TIMEOUT_S = 5
HEARTBEAT_S = 30  # a worker's trial is declared dead (FAIL) after 2 heartbeats without news


class SearchError(Exception):
    """A search that cannot start or continue; the message says what to change."""


class TrialStopped(Exception):
    """The user pressed Stop during this trial: Optuna records it as failed (its run did not finish), and the
    per-trial callback then ends the search with ``study.stop()``."""


# -- the search space and settings ----------------------------------------------------------------------


@dataclass
class Range:
    low: float
    high: float
    log: bool = False


def _default_space() -> dict:
    return {"lr_max": Range(1e-4, 1e-1, log=True), "weight_decay": Range(0.0, 0.1, log=False),
            "momentum": Range(0.8, 0.99, log=False)}


PARAM_TEXT = {
    "lr_max": "peak learning rate of the one-cycle schedule (LR min = the preset's fraction of it)",
    "weight_decay": "L2 weight decay",
    "momentum": "SGD momentum / Adam β1 at the low-LR ends of the cycle (the preset's dip at the peak is kept)",
}


@dataclass
class SearchConfig:
    """Everything that defines what a study optimises; stored in the study so joining workers agree."""

    preset: str = setting("quick-cpu", help="the training preset each trial runs (quick-cpu, paper-resnet20, "
                                            "assignment)")
    population: int = setting(10, lo=2, help="trials per generation (default 10 on a GPU, 6 on a CPU)")
    generations: int = setting(5, lo=1, help="generations (default 5 on a GPU, 3 on a CPU)")
    trials: int | None = setting(None, lo=1, empty="population × generations", help="total trials")
    epochs: int | None = setting(None, lo=1, empty="the preset's", help="epochs per trial")
    subset: int | None = setting(None, label="training images", lo=10, hint="one per class at least",
                                 empty="the preset's", help="class-balanced training images per trial")
    test_subset: int | None = setting(None, label="test images", lo=10, hint="one per class at least",
                                      empty="the preset's", help="class-balanced test images per trial")
    model: str | None = setting(None, empty="the preset's", help="the model each trial trains")
    batch_size: int | None = setting(None, label="batch size", lo=2, empty="the preset's", help="images per step")
    prune: bool = setting(False, help="stop trials whose test accuracy after an epoch is below the median of "
                                      "earlier trials")
    crossover: str = setting("single-point", choices=CROSSOVERS,
                             help="how two parents' genes mix (single-point is the seed's)")
    mutation_prob: float | None = setting(None, label="mutation probability", lo=0, hi=1,
                                          empty="1 / number of genes, Optuna's default",
                                          help="probability that each gene is redrawn")
    space: dict = setting(factory=_default_space, help="the genes and their ranges (--lr-range, --wd-range, "
                                                       "--wd-log, --momentum-range)")

    @property
    def n_trials(self) -> int:
        return self.trials if self.trials is not None else self.population * self.generations

    def to_dict(self) -> dict:
        d = asdict(self)
        d["space"] = {k: asdict(v) if isinstance(v, Range) else dict(v) for k, v in self.space.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SearchConfig":
        d = dict(d)
        space = {k: Range(**v) if isinstance(v, dict) else v for k, v in (d.pop("space", None) or {}).items()}
        known = {f for f in cls.__dataclass_fields__}
        cfg = cls(**{k: v for k, v in d.items() if k in known})
        if space:
            cfg.space = {**_default_space(), **space}
        return cfg

    def validate(self) -> dict[str, str]:
        """Setting -> what is wrong, in words a student understands. Empty when valid."""

        err = check_settings(self)
        if self.preset not in PRESETS:
            err["preset"] = f"unknown preset '{self.preset}'; choose one of {', '.join(PRESETS)}"
        for name in ("lr_max", "weight_decay", "momentum"):
            r = self.space.get(name)
            if r is None:
                err[name] = "missing from the search space"
                continue
            problem = _range_problem(name, r)
            if problem:
                err[name] = problem
        return err


def default_config(cuda: bool | None = None) -> SearchConfig:
    """The seed's GA (population 10, 5 generations) on a GPU; a small version that ends in minutes on a CPU."""
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    if cuda:
        return SearchConfig(preset="paper-resnet20", population=10, generations=5, epochs=5)
    # ResNet-20, 2 epochs on 2,000 images in batches of 64 (62 steps: enough to rank LRs): 18 trials in a few minutes.
    return SearchConfig(preset="quick-cpu", population=6, generations=3, epochs=2, subset=2000, test_subset=500,
                        batch_size=64)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _range_problem(name: str, r: Range) -> str | None:
    if not (_finite(r.low) and _finite(r.high)):
        return "both ends of the range must be numbers"
    if r.low > r.high:
        return f"the range is inverted: low ({r.low:g}) is above high ({r.high:g}); swap them"
    if r.low == r.high:
        return (f"the range is empty (low = high = {r.low:g}): give it some width, or fix the value in the "
                "preset instead of searching it")
    if r.log and r.low <= 0:
        return (f"a log scale needs a low bound > 0 (log of {r.low:g} is undefined): a log scale spreads trials "
                "evenly over orders of magnitude (1e-5, 1e-4, 1e-3 ... equally often), and there are infinitely "
                "many orders of magnitude above 0. Use e.g. 1e-6 as the low bound, or a linear scale to include 0")
    if name == "lr_max" and r.low <= 0:
        return "learning rates must be > 0"
    if name == "weight_decay" and r.low < 0:
        return "weight decay must be ≥ 0"
    if name == "momentum" and not (0 <= r.low and r.high < 1):
        return "momentum must lie in [0, 1)"
    return None



def trial_config(config: SearchConfig, params: dict, device: str = "auto", data: str | None = None):
    """The TrainConfig of one trial: the preset, shortened as asked, with the trial's genes."""

    base = PRESETS[config.preset]
    epochs = config.epochs or base.get("epochs", 24)
    peak = base.get("peak_epoch", 5.0) * epochs / base.get("epochs", 24)  # keep the warm-up fraction
    lr_ratio = base.get("lr_min", 0.002) / base.get("lr_max", 0.02)
    spread = max(0.0, base.get("momentum_max", 0.95) - base.get("momentum_min", 0.85))
    mom = float(params["momentum"])
    return preset(config.preset, model=config.model, epochs=epochs, peak_epoch=round(max(peak, 1e-3), 4),
                  lr_max=float(params["lr_max"]), lr_min=float(params["lr_max"]) * lr_ratio,
                  weight_decay=float(params["weight_decay"]), momentum_max=mom,
                  momentum_min=max(0.0, mom - spread), subset=config.subset, test_subset=config.test_subset,
                  batch_size=config.batch_size, device=device, data=data, eval_every=1, checkpoint_every=0)
