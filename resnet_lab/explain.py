"""Explanations of a run's predictions, measured: every attribution method's map, both sanity checks of Adebayo et
al. (2018) and ROAD faithfulness, on one or more test images. ``python -m resnet_lab explain`` and the Grad-CAM
page's jobs both call ``explain``, so the page and the CLI show the same numbers for the same image.

The data-randomisation test needs a network of the same architecture trained on shuffled labels; the app ships one
for the reference run's ResNet-20 (``assets/reference/shuffled-labels``, its command in its about.json).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from torch import nn

from resnet_lab import attributions as A
from resnet_lab import faithfulness as F
from resnet_lab import inspect as I
from resnet_lab.runs import Run, RunError, RunStore

SHUFFLED_RUN = "shuffled-labels"  # the shipped ResNet-20 trained on shuffled labels (data-randomisation test)
SAMPLE_SEED = 0                   # --sample K: the same class-balanced test images every time
RANDOM_ORDER = "random order"     # ROAD's baseline: a map that ranks the pixels at random
# What `scripts/explain_asset.py` measured on the reference run (the command inside): the pages quote it
MEASURED = Path(__file__).resolve().parents[1] / "assets" / "explain" / "reference.json"


def measured(path: Path = MEASURED) -> dict | None:
    """The stored measurement ({"command", "date", "hardware", "result": explain JSON}); None when absent or
    unreadable (the page then shows only what it computes)."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) and isinstance(value.get("result"), dict) else None


def shuffled_run(model_name: str | None, store: RunStore | None = None) -> Run:
    """The shipped shuffled-label network, when it has ``model_name``'s architecture; RunError says why not."""
    try:
        run = (store or RunStore()).get(SHUFFLED_RUN)
    except RunError as exc:
        if "no run" not in str(exc):
            raise  # a modified or damaged shipped folder: its own message says which file
        raise RunError(f"the data-randomisation test needs the shipped network trained on shuffled labels "
                       f"(assets/reference/{SHUFFLED_RUN}), and this installation has none") from None
    if run.config.get("model") != model_name:
        raise RunError(f"the data-randomisation test needs a {model_name} trained on shuffled labels; the app ships "
                       f"one {run.config.get('model')} ({SHUFFLED_RUN}), so this test is only offered for "
                       f"{run.config.get('model')} runs. Train one: python -m resnet_lab train --model {model_name} "
                       "--shuffle-labels --no-augment ...")
    return run


def pick_images(data, images: Sequence[int] | None = None, sample: int | None = None) -> list[int]:
    """Test-split indices: ``images`` as given (checked), or a class-balanced ``sample`` (the same every time)."""
    if sample is not None:
        if sample < 1:
            raise I.InspectError(f"the sample needs at least one image, got {sample}")
        return [int(i) for i in data.subset(test=min(sample, data.n_test), seed=SAMPLE_SEED).test_index]
    picked = [int(i) for i in (images or [])]
    if not picked:
        raise I.InspectError("choose at least one test image")
    bad = [i for i in picked if not 0 <= i < data.n_test]
    if bad:
        raise I.InspectError(f"test image {bad[0]} does not exist: choose 0 to {data.n_test - 1} (the test split of "
                             f"{data.source})")
    return list(dict.fromkeys(picked))


@dataclass
class Explanation:
    images: list                       # test-split indices
    targets: list                      # the explained class of each image
    layer: str
    methods: list
    maps: list = field(default_factory=list)       # per image: {method: (32, 32) magnitude}
    sanity: dict | None = None
    data: dict | None = None
    faithfulness: dict | None = None
    seconds: float = 0.0

    def to_json(self) -> dict:
        """Everything but the maps, as plain JSON values (NaN, an undefined correlation, as null)."""
        return _clean({"images": self.images, "targets": self.targets, "layer": self.layer, "methods": self.methods,
                       "sanity": self.sanity, "data_randomisation": self.data, "faithfulness": self.faithfulness,
                       "seconds": round(self.seconds, 2)})


def _clean(value):
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _mean(rows: list[list[float]]) -> list[float]:
    """Mean per column over images, skipping undefined (NaN: a constant map) values."""
    arr = np.array(rows, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        counts = np.isfinite(arr).sum(0)
        sums = np.where(np.isfinite(arr), arr, 0).sum(0)
    return [float(s / c) if c else float("nan") for s, c in zip(sums, counts)]


def sanity_summary(checks: list) -> dict:
    """Several images' ``SanityCheck``s: each method's rho per step per image, the mean over images, how many
    were undefined (a constant map) and the verdict on the mean after the last step."""
    methods = list(checks[0].correlations)
    per_image = {m: [c.correlations[m] for c in checks] for m in methods}
    mean = {m: _mean(per_image[m]) for m in methods}
    undefined = {m: int(np.sum(~np.isfinite(np.array(per_image[m], dtype=float)))) for m in methods}
    verdict = A.sanity_verdict(A.SanityCheck(checks[0].steps, mean), methods)
    first = {m: mean[m][1] for m in methods} if len(checks[0].steps) > 1 else {}
    return {"steps": checks[0].steps, "per_image": per_image, "mean": mean, "undefined": undefined,
            "after_first_step": first, "verdict": verdict, "seed": None}


def faithfulness_summary(per_image: list[dict]) -> dict:
    """Per-image ROAD curves averaged over images (one ``Curves`` per method), with the ranking."""
    methods = list(per_image[0])
    mean = {}
    for m in methods:
        curves = [p[m] for p in per_image]
        mean[m] = F.Curves(m, curves[0].fractions, list(np.mean([c.morf for c in curves], 0)),
                           list(np.mean([c.lerf for c in curves], 0)), float(np.mean([c.original for c in curves])),
                           len(curves))
    ranking = F.rank_methods({m: c for m, c in mean.items()})
    return {"fractions": list(F.FRACTIONS), "mean": {m: c.as_dict() for m, c in mean.items()},
            "per_image": {m: [p[m].road for p in per_image] for m in methods}, "ranking": ranking.order,
            "text": F.faithfulness_text(mean)}


def explain(model: nn.Module, images: Sequence[np.ndarray], indices: Sequence[int], targets: Sequence[int | None],
            layer: str, methods: Sequence[str] = A.METHODS, *, mean: Sequence[float], std: Sequence[float],
            sanity: bool = False, faithfulness: bool = False, shuffled: tuple | None = None, seed: int = 0,
            progress: Callable[[float, str], None] | None = None) -> Explanation:
    """The maps of every method for each image (class ``targets[i]``, None: predicted), and on request the
    model-randomisation check (``sanity``), the data-randomisation test (``shuffled`` = (model, mean, std) of
    the shuffled-label network) and ROAD faithfulness with a random-order baseline (``faithfulness``)."""
    methods = list(A._check_methods(methods))
    t0 = time.perf_counter()
    say = progress or (lambda fraction, message: None)
    out = Explanation(list(indices), [], layer, methods)
    checks, data_rows, road_rows, maps = [], [], [], {m: [] for m in methods}
    for i, (image, target) in enumerate(zip(images, targets)):
        say(i / len(images), f"image {i + 1} of {len(images)}: {len(methods)} methods")
        got = A.attribute(model, image, target, layer, methods, mean=mean, std=std)
        target = next(iter(got.values())).target
        out.targets.append(target)
        out.maps.append({m: a.magnitude for m, a in got.items()})
        for m in methods:
            maps[m].append(got[m].map)
        if sanity:
            say((i + 0.3) / len(images), f"image {i + 1}: model-randomisation check")
            checks.append(A.sanity_check(model, image, target, layer, methods, mean=mean, std=std, seed=seed))
        if shuffled is not None:
            s_model, s_mean, s_std = shuffled
            data_rows.append(A.data_randomisation(model, s_model, image, target, layer, methods, mean=mean, std=std,
                                                  shuffled_mean=s_mean, shuffled_std=s_std).correlations)
        if faithfulness:
            say((i + 0.6) / len(images), f"image {i + 1}: ROAD")
            ranked = {m: [got[m].map] for m in methods}
            # seeded by the image's place in the list: the page's one image and the CLI's --image N get the same order
            ranked[RANDOM_ORDER] = [np.random.default_rng([seed, i]).random(image.shape[:2])]
            road_rows.append(F.road_curves(model, [image], [target], ranked, mean=mean, std=std, seed=seed))
    if checks:
        out.sanity = {**sanity_summary(checks), "seed": seed}
    if data_rows:
        per = {m: [r[m] for r in data_rows] for m in methods}
        means = {m: _mean([[v] for v in per[m]])[0] for m in methods}
        out.data = {"per_image": per, "mean": means, "verdict": A.data_verdict(means)}
    if road_rows:
        out.faithfulness = faithfulness_summary(road_rows)
    out.seconds = time.perf_counter() - t0
    say(1.0, "done")
    return out
