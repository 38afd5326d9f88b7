"""Attribution methods side by side, and the model-randomisation sanity check (Adebayo et al. 2018).

``attribute(model, image, target, layer, methods, mean=, std=)`` runs captum's Grad-CAM, Guided Grad-CAM,
Saliency, Integrated Gradients and Occlusion on one image for one class and returns one 32x32 map per method.
``sanity_check(...)`` re-initialises the network's layers from the top (the classifier) downwards, one block per
step, recomputes every map for the same image and class after each step, and reports the Spearman rank
correlation with the trained network's map. A method whose map barely changes while the weights that make the
prediction are being destroyed is not explaining the model (Adebayo et al., "Sanity Checks for Saliency Maps",
NeurIPS 2018: guided backpropagation, and so Guided Grad-CAM, is the classic example).

captum is imported inside the functions (it is not needed to train). The model is used under the same per-model
lock as ``resnet_lab.inspect`` and in eval mode; the sanity check works on a copy, never on the shared model, and
draws its random weights from its own ``torch.Generator`` (the global RNG, which a training job may be using,
is never touched).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from resnet_lab import inspect as I

METHODS = ("Grad-CAM", "Guided Grad-CAM", "Saliency", "Integrated Gradients", "Occlusion")
DEFAULT_METHODS = METHODS
IG_STEPS = 32          # integration steps (captum's default is 50; 32 keeps one image under a second on a CPU)
OCCLUSION_WINDOW = 8   # px square of grey (the mean colour: 0 after normalisation) slid over the image
OCCLUSION_STRIDE = 4
# A map still correlated this much (Spearman rho) with the trained network's once every layer is random is mostly a
# picture of the image (Adebayo et al. 2018 read their figure 2 the same way: high rank correlation = fails the check).
SANITY_RHO = 0.5
# How alike two maps of one image are, by the Spearman rho of their pixel rankings (the first bound it reaches).
AGREEMENT = ((0.9, "nearly the same picture"), (0.5, "related but different pictures"), (-1.0, "different pictures"))

ABOUT = {
    "Grad-CAM": "gradient-weighted feature maps of one layer (Selvaraju et al. 2017): coarse, class-specific",
    "Guided Grad-CAM": "Grad-CAM times guided backpropagation (negative gradients stopped at every ReLU): "
                       "sharp edges, but guided backprop mostly reconstructs the image",
    "Saliency": "|d score / d pixel| (Simonyan et al. 2013): which pixels would change the score most",
    "Integrated Gradients": "gradients averaged along a straight path from a baseline (the mean image) to this "
                            f"image, times the difference (Sundararajan et al. 2017); {IG_STEPS} steps",
    "Occlusion": f"how much the class score drops when an {OCCLUSION_WINDOW}×{OCCLUSION_WINDOW} px square is "
                 f"greyed out, slid {OCCLUSION_STRIDE} px at a time (Zeiler & Fergus 2014): no gradients at all",
}


@dataclass
class Attribution:
    method: str
    target: int
    map: np.ndarray        # float32 (32, 32): the attribution per pixel (channels combined), signed
    seconds: float

    @property
    def magnitude(self) -> np.ndarray:
        """|map| scaled to 0..1 by its 99th percentile (one hot pixel must not turn the rest dark)."""
        mag = np.abs(self.map)
        top = float(np.percentile(mag, 99)) if mag.size else 0.0
        return np.clip(mag / top, 0, 1).astype(np.float32) if top > 0 else np.zeros_like(mag, dtype=np.float32)


def _check_methods(methods: Sequence[str]) -> list[str]:
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise I.InspectError(f"unknown attribution method(s) {', '.join(bad)}; choose from {', '.join(METHODS)}")
    return list(dict.fromkeys(methods))


def _one(model: nn.Module, layer: nn.Module, method: str, x: torch.Tensor, target: int) -> torch.Tensor:
    """One captum call; returns (H, W) (channels combined: summed for signed methods, max |.| for saliency)."""
    from captum import attr as A  # lazy: captum is not needed to train

    if method == "Grad-CAM":
        cam = A.LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True)
        return A.LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")[0, 0]
    if method == "Guided Grad-CAM":
        return A.GuidedGradCam(model, layer).attribute(x, target=target)[0].sum(0)
    if method == "Saliency":
        return A.Saliency(model).attribute(x, target=target, abs=True)[0].amax(0)
    if method == "Integrated Gradients":
        return A.IntegratedGradients(model).attribute(x, baselines=torch.zeros_like(x), target=target,
                                                      n_steps=IG_STEPS, internal_batch_size=IG_STEPS)[0].sum(0)
    if method == "Occlusion":
        n = ((x.shape[-1] - OCCLUSION_WINDOW) // OCCLUSION_STRIDE + 1) ** 2
        return A.Occlusion(model).attribute(x, target=target, baselines=0.0,
                                            sliding_window_shapes=(x.shape[1], OCCLUSION_WINDOW, OCCLUSION_WINDOW),
                                            strides=(x.shape[1], OCCLUSION_STRIDE, OCCLUSION_STRIDE),
                                            perturbations_per_eval=n)[0].sum(0)
    raise I.InspectError(f"unknown attribution method {method!r}")


def attribute(model: nn.Module, image: np.ndarray, target: int | None, layer: str, methods: Sequence[str] = METHODS,
              *, mean: Sequence[float], std: Sequence[float]) -> dict[str, Attribution]:
    """Each method's map of one uint8 HWC image for class ``target`` (None: the predicted class).

    ``layer`` is the Grad-CAM layer (also Guided Grad-CAM's). Returns {method: Attribution} in ``methods``'
    order."""
    methods = _check_methods(methods)
    module = I.get_layer(model, layer)
    out: dict[str, Attribution] = {}
    with I.model_lock(model), I.eval_mode(model):
        x = I.to_batch(image, mean, std, I.model_device(model))
        if target is None:
            with torch.no_grad():
                target = int(model(x).argmax(1)[0])
        for method in methods:
            t0 = time.perf_counter()
            # enable_grad: a Streamlit page may call this inside no_grad; frozen: input gradients only (faster)
            with torch.enable_grad(), I.frozen(model):
                values = _one(model, module, method, x.clone().requires_grad_(method != "Occlusion"), int(target))
            out[method] = Attribution(method, int(target), values.detach().float().cpu().numpy(),
                                      time.perf_counter() - t0)
    return out


# --------------------------------------------------------------------------------------------------------------------
# The sanity check


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two maps (average ranks for ties, as scipy.stats.spearmanr); NaN when
    either map is constant (no ranking to compare). Written here to keep scipy off the dependency list."""
    ra, rb = _ranks(np.ravel(a)), _ranks(np.ravel(b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    sorted_vals = values[order]
    # tied runs share the average of their ranks
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_vals)) + 1]
    ends = np.r_[starts[1:], len(values)]
    avg = (starts + ends - 1) / 2.0 + 1
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def randomisation_steps(model: nn.Module, blocks: bool = False) -> list[str]:
    """The cascade's steps, top (classifier) first: every top-level part with weights (resnet20: fc, layer3,
    layer2, layer1, stem). ``blocks=True`` splits a stage of blocks into its blocks (fc, layer3.2, ..., stem),
    as the paper goes layer by layer; each step costs one full set of maps."""
    steps = []
    for name, child in model.named_children():
        if not any(True for _ in child.parameters()):
            continue
        if blocks and isinstance(child, nn.Sequential) and len(child) and all(
                next(b.children(), None) is not None for b in child):
            steps += [f"{name}.{i}" for i in range(len(child))]
        else:
            steps.append(name)
    return steps[::-1]


@torch.no_grad()
def _reinitialise(module: nn.Module, generator: torch.Generator) -> None:
    """Fresh random weights for every conv and linear layer inside ``module`` (He-normal, biases zero), drawn
    from ``generator``. BatchNorm keeps its statistics: only what the network learned in its filters goes."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
            if m.bias is not None:
                m.bias.zero_()


@dataclass
class SanityCheck:
    steps: list[str]                              # "trained" first, then each re-initialised part, top down
    correlations: dict = field(default_factory=dict)  # method -> list of Spearman rho per step (1.0 at "trained")
    maps: dict = field(default_factory=dict)      # method -> list of (32, 32) magnitude maps per step
    target: int = 0
    seconds: float = 0.0


def sanity_check(model: nn.Module, image: np.ndarray, target: int | None, layer: str,
                 methods: Sequence[str] = METHODS, *, mean: Sequence[float], std: Sequence[float], seed: int = 0,
                 steps: Sequence[str] | None = None, progress=None) -> SanityCheck:
    """Cascading model randomisation: re-initialise ``steps`` (default ``randomisation_steps``) one after the
    other on a copy of the model, and compare each method's map with the trained model's (Spearman rho of the
    absolute maps, as in the paper's figure 2). ``progress(fraction, message)`` is told after each step."""
    methods = _check_methods(methods)
    t0 = time.perf_counter()
    with I.model_lock(model):
        work = copy.deepcopy(model).cpu().eval()
    steps = list(steps) if steps is not None else randomisation_steps(work)
    base = attribute(work, image, target, layer, methods, mean=mean, std=std)
    target = next(iter(base.values())).target
    result = SanityCheck(["trained"], {m: [1.0] for m in methods}, {m: [base[m].magnitude] for m in methods},
                         target)
    generator = torch.Generator().manual_seed(seed)
    for i, step in enumerate(steps):
        if progress is not None:
            progress(i / (len(steps) + 1), f"re-initialising {step} ({i + 1} of {len(steps)})")
        _reinitialise(I.get_layer(work, step), generator)
        now = attribute(work, image, target, layer, methods, mean=mean, std=std)
        result.steps.append(step)
        for m in methods:
            result.correlations[m].append(rank_correlation(np.abs(base[m].map), np.abs(now[m].map)))
            result.maps[m].append(now[m].magnitude)
    result.seconds = time.perf_counter() - t0
    return result


def agreement(rho: float) -> str | None:
    """Two maps' rank correlation in words (AGREEMENT); None when it is undefined (a constant map)."""
    if not np.isfinite(rho):
        return None
    return next(words for bound, words in AGREEMENT if rho > bound or bound == AGREEMENT[-1][0])


def sanity_verdict(check: SanityCheck, methods: Sequence[str] | None = None) -> dict:
    """The sanity check read: each method's rho with the trained map once every layer is random (``final``), the
    methods still at SANITY_RHO or more (``image``: their map comes from the image, not the weights) and those that
    changed (``model``). A method whose rho is undefined (a constant map) is in neither list."""
    methods = list(methods) if methods is not None else list(check.correlations)
    final = {m: float(check.correlations[m][-1]) for m in methods}
    return {"final": final, "image": [m for m, r in final.items() if np.isfinite(r) and r >= SANITY_RHO],
            "model": [m for m, r in final.items() if np.isfinite(r) and r < SANITY_RHO]}
