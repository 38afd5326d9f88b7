"""How faithful an attribution map is to the network: ROAD (Rong et al. 2022, "A Consistent and Efficient Evaluation
Strategy for Attribution Methods"), computed with pytorch-grad-cam's implementation (``pytorch_grad_cam.metrics.
road``), which this project uses rather than writing the imputation and the bookkeeping again.

A map *ranks* the pixels. Remove a fraction of them in that order and watch the class probability:

- **MoRF** (most relevant first, the "deletion" curve): remove the top-ranked pixels first. A faithful map finds
  the evidence, so the probability falls fast: the *lower* the area under this curve, the better.
- **LeRF** (least relevant first, the "insertion" view from the other side): remove the bottom-ranked pixels first,
  keeping the evidence. A faithful map keeps the probability up: the *higher* the area, the better.

Removed pixels are filled by ROAD's noisy linear imputation (each from its neighbours, plus a little noise), not
painted black: a black square is itself a strong, out-of-distribution feature, so the probability would also fall
for a random map (ROAD's reason to exist). The summary number is ROAD's combined score,
``(LeRF area - MoRF area) / 2``: positive when the map's order matters, about 0 for a random order.

Only the pixel *order* of a map matters to ROAD. Maps are passed as their ranks (ties broken by a fixed seeded
order), so the removed fraction is exactly the one asked for: pytorch-grad-cam thresholds at a percentile, and a
Grad-CAM map whose ReLU zeroed half the pixels would otherwise lose them all at once.

pytorch-grad-cam (and its scipy/opencv imports) is imported inside the functions: it is not needed to train. The
imputation's noise comes from torch's global RNG inside the library, so it runs under ``torch.random.fork_rng``
with a fixed seed: the scores are reproducible and a training job's RNG stream in the same process is untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from resnet_lab import inspect as I

FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # ROAD's default thresholds (10 % ... 90 % removed)
TIE_SEED = 0

ABOUT = {
    "MoRF": "class probability left after removing the map's most relevant pixels first, averaged over "
            "10–90 % removed: lower is better (the map found the evidence)",
    "LeRF": "class probability left after removing the least relevant pixels first: higher is better (the map "
            "kept the evidence)",
    "ROAD": "(LeRF − MoRF) / 2: how much the map's order matters; about 0 for a random order, higher is better",
}


@dataclass
class Curves:
    """One method's ROAD curves on one image or the mean over several (probabilities at each removed fraction)."""
    method: str
    fractions: list
    morf: list              # class probability after removing each fraction, most relevant first
    lerf: list              # ... least relevant first
    original: float         # the class probability on the untouched image (mean over images)
    images: int = 1

    @property
    def morf_area(self) -> float:
        return float(np.mean(self.morf))

    @property
    def lerf_area(self) -> float:
        return float(np.mean(self.lerf))

    @property
    def road(self) -> float:
        """pytorch-grad-cam's ROADCombined score over the same fractions: (LeRF - MoRF) / 2."""
        return (self.lerf_area - self.morf_area) / 2

    def as_dict(self) -> dict:
        return {"method": self.method, "fractions": list(self.fractions), "morf": [float(v) for v in self.morf],
                "lerf": [float(v) for v in self.lerf], "original": float(self.original), "images": self.images,
                "morf_area": self.morf_area, "lerf_area": self.lerf_area, "road": self.road}


def order_map(values: np.ndarray, seed: int = TIE_SEED) -> np.ndarray:
    """The map's pixel ranking as values in [0, 1] (0 = least relevant), every value distinct: ties are broken
    by one fixed seeded order, the same for every method, so no method gains from how its ties fall."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    tie_break = np.random.default_rng(seed).permutation(flat.size)
    order = np.lexsort((tie_break, flat))  # by value, then by the fixed order
    ranks = np.empty(flat.size, dtype=np.float64)
    ranks[order] = np.arange(flat.size)
    return (ranks / max(flat.size - 1, 1)).reshape(np.shape(values)).astype(np.float32)


def road_curves(model: nn.Module, images: Sequence[np.ndarray], targets: Sequence[int],
                maps: Mapping[str, Sequence[np.ndarray]], *, mean: Sequence[float], std: Sequence[float],
                fractions: Sequence[float] = FRACTIONS, seed: int = 0) -> dict[str, Curves]:
    """ROAD's MoRF and LeRF curves of each method, averaged over ``images`` (uint8 HWC) for their ``targets``.

    ``maps[method][i]`` is that method's (32, 32) map of image i; its magnitude is what ranks the pixels (the
    sanity check compares magnitudes too). Returns {method: Curves} in ``maps``' order."""
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst  # lazy: optional
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    if len(images) != len(targets) or not len(images):
        raise I.InspectError("ROAD needs at least one image and one target per image")
    for method, per_image in maps.items():
        if len(per_image) != len(images):
            raise I.InspectError(f"{method}: {len(per_image)} maps for {len(images)} images")
    bad = [f for f in fractions if not 0 < f < 1]
    if bad:
        raise I.InspectError(f"removed fractions must lie strictly between 0 and 1, got {bad[0]}")
    out: dict[str, Curves] = {}
    with I.model_lock(model), I.eval_mode(model):
        device = I.model_device(model)
        x = torch.cat([I.to_batch(img, mean, std, device) for img in images])
        wanted = [ClassifierOutputSoftmaxTarget(int(t)) for t in targets]
        with torch.no_grad():
            original = float(np.mean([w(o).item() for w, o in zip(wanted, model(x))]))
        for method, per_image in maps.items():
            cams = np.stack([order_map(np.abs(m)) for m in per_image])
            morf, lerf = [], []
            for f in fractions:
                percentile = 100.0 * (1.0 - f)  # pytorch-grad-cam keeps the pixels below this percentile
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    morf.append(float(np.mean(ROADMostRelevantFirst(percentile)(
                        x, cams, wanted, model, return_diff=False))))
                    lerf.append(float(np.mean(ROADLeastRelevantFirst(percentile)(
                        x, cams, wanted, model, return_diff=False))))
            out[method] = Curves(method, [float(f) for f in fractions], morf, lerf, original, len(images))
    return out


@dataclass
class Ranking:
    """Methods ranked by ROAD score, best first, with the scores."""
    order: list
    scores: dict = field(default_factory=dict)


def rank_methods(curves: Mapping[str, Curves]) -> Ranking:
    """The methods by ROAD score, highest (most faithful by this test) first."""
    order = sorted(curves, key=lambda m: curves[m].road, reverse=True)
    return Ranking(order, {m: curves[m].road for m in order})


def faithfulness_text(curves: Mapping[str, Curves]) -> str:
    """The ranking in words: which method's order mattered most and least, from the numbers themselves."""
    if not curves:
        return ""
    r = rank_methods(curves)
    best, worst = r.order[0], r.order[-1]
    n = next(iter(curves.values())).images
    where = "this image" if n == 1 else f"{n} test images (mean)"
    return (f"On {where}, **{best}** ranks the pixels most faithfully (ROAD {r.scores[best]:+.3f}: removing its "
            f"top pixels leaves {curves[best].morf_area:.1%} probability on average, removing its bottom ones "
            f"{curves[best].lerf_area:.1%}); **{worst}** least ({r.scores[worst]:+.3f}).")

