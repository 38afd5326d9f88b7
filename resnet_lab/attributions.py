"""Attribution methods side by side, and the two sanity checks of Adebayo et al. (2018).

``attribute(model, image, target, layer, methods, mean=, std=)`` runs captum's Grad-CAM, Guided Grad-CAM, Guided
Backprop, Saliency, Gradient × Input, Integrated Gradients and Occlusion on one image for one class and returns one
32x32 map per method.

``sanity_check(...)`` is the *model-randomisation* test: it re-initialises the network's layers from the top (the
classifier) downwards, one block per step, recomputes every map for the same image and class after each step, and
reports the Spearman rank correlation with the trained network's map. ``data_randomisation(...)`` is the second
test: the maps of the same image from a network of the same architecture trained on shuffled labels (it can only
memorise) against the trained network's. A method whose map barely changes while the weights that make the
prediction are destroyed, or when the labels carried no information, is not explaining the model.

What the paper found, and what this project measures on its shipped reference run (``python -m resnet_lab explain
--run reference --image 0 1 2 3 4 5 --sanity --json``; the figures are in docs/inspect.md and
assets/explain/reference.json): **Guided Backprop** barely changes when the classifier is re-initialised, and
still correlates with the trained map once every layer is random: it mostly reconstructs the image. **Guided
Grad-CAM**, Guided Backprop times Grad-CAM, does *not* fail the same way here: its Grad-CAM factor follows the
classifier, so it changes with the weights. Grad-CAM changes most.

captum is imported inside the functions (it is not needed to train). The model is used under the same per-model
lock as ``resnet_lab.inspect`` and in eval mode; the sanity check works on a copy, never on the shared model, and
draws its random weights from its own ``torch.Generator`` (the global RNG, which a training job may be using,
is never touched).
"""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from resnet_lab import inspect as I

METHODS = ("Grad-CAM", "Guided Grad-CAM", "Guided Backprop", "Saliency", "Gradient × Input", "Integrated Gradients",
           "Occlusion")
# Methods that replace every ReLU's backward pass (captum hooks nn.ReLU modules; an F.relu call is invisible to it)
GUIDED = ("Guided Grad-CAM", "Guided Backprop")
DEFAULT_METHODS = METHODS
IG_STEPS = 32          # integration steps (captum's default is 50; 32 keeps one image under a second on a CPU)
OCCLUSION_WINDOW = 8   # px square of grey (the mean colour: 0 after normalisation) slid over the image
OCCLUSION_STRIDE = 4
# A map still correlated this much (Spearman rho) with the trained network's once every layer is random is mostly a
# picture of the image (Adebayo et al. 2018 read their figure 2 the same way: high rank correlation = fails the check).
SANITY_RHO = 0.5
# A map still this correlated after the classifier alone was re-initialised has "barely changed" (Adebayo et al.'s
# guided backpropagation stays near 1 through the top layers in their figures 2 and 3).
FAIL_RHO = 0.8
# How alike two maps of one image are, by the Spearman rho of their pixel rankings (the first bound it reaches).
AGREEMENT = ((0.9, "nearly the same picture"), (0.5, "related but different pictures"), (-1.0, "different pictures"))

ABOUT = {
    "Grad-CAM": "gradient-weighted feature maps of one layer (Selvaraju et al. 2017): coarse, class-specific",
    "Guided Grad-CAM": "Grad-CAM times guided backpropagation (negative gradients stopped at every ReLU): "
                       "sharp edges from the guided factor, class and model dependence from the Grad-CAM factor",
    "Guided Backprop": "the input gradient with every negative gradient stopped at every ReLU on the way back "
                       "(Springenberg et al. 2015): crisp, image-like edges",
    "Saliency": "|d score / d pixel| (Simonyan et al. 2013): which pixels would change the score most",
    "Gradient × Input": "the input gradient times the (normalised) input itself (Shrikumar et al. 2016): "
                        "a first-order estimate of each pixel's contribution to the score",
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
    note: str | None = None  # what the map is not (a guided method on a network without nn.ReLU modules)

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
    if method == "Guided Backprop":
        return A.GuidedBackprop(model).attribute(x, target=target)[0].sum(0)
    if method == "Gradient × Input":
        return A.InputXGradient(model).attribute(x, target=target)[0].sum(0)
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


def guided_note(model: nn.Module) -> str | None:
    """Why a guided map would be the plain gradient: the network has no ``nn.ReLU`` module for captum to hook
    (its ReLUs are ``F.relu`` / ``torch.relu`` calls in ``forward``). None when it has them."""
    if any(isinstance(m, nn.ReLU) for m in model.modules()):
        return None
    return ("this network has no nn.ReLU modules (it calls F.relu in forward), so captum cannot stop the negative "
            "gradients: the guided map here is the plain gradient")


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
            with torch.enable_grad(), I.frozen(model), warnings.catch_warnings():
                # captum announces on every guided call that it hooks the ReLUs (and removes the hooks after)
                warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
                values = _one(model, module, method, x.clone().requires_grad_(method != "Occlusion"), int(target))
            out[method] = Attribution(method, int(target), values.detach().float().cpu().numpy(),
                                      time.perf_counter() - t0, guided_note(model) if method in GUIDED else None)
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
    """The model-randomisation check read, per method, from its correlations (Spearman rho with the trained map):

    - ``first``: rho once the first part (the classifier) is random; ``final``: once every layer is;
    - ``fail``: rho after the first step at FAIL_RHO or more (the map barely changed although the weights that make
      the decision are gone: Adebayo et al.'s finding for guided backpropagation), or still SANITY_RHO or more with
      every layer random;
    - ``partly``: rho after the first step at SANITY_RHO or more (much of the map survives: typically the methods
      that multiply by the input, or follow its edges);
    - ``pass``: below SANITY_RHO after the first step and at the end: the map depends on the trained weights.

    A method whose rho is undefined (a constant map) is in none of the three."""
    methods = list(methods) if methods is not None else list(check.correlations)
    first = {m: float(check.correlations[m][1]) if len(check.correlations[m]) > 1 else float("nan")
             for m in methods}
    final = {m: float(check.correlations[m][-1]) for m in methods}
    out = {"first": first, "final": final, "fail": [], "partly": [], "pass": []}
    for m in methods:
        a, b = first[m], final[m]
        if not (np.isfinite(a) and np.isfinite(b)):
            continue
        a, b = round(a, 2), round(b, 2)  # judged as shown (two decimals): a "0.50" on the page is not "below 0.5"
        key = "fail" if a >= FAIL_RHO or b >= SANITY_RHO else "partly" if a >= SANITY_RHO else "pass"
        out[key].append(m)
    return out


# --------------------------------------------------------------------------------------------------------------------
# The data-randomisation test


@dataclass
class DataRandomisation:
    correlations: dict      # method -> Spearman rho of |map| between the trained and the shuffled-label network
    trained: dict           # method -> (32, 32) magnitude map of the trained network
    shuffled: dict          # method -> (32, 32) magnitude map of the network trained on shuffled labels
    target: int = 0
    seconds: float = 0.0


def data_randomisation(model: nn.Module, shuffled: nn.Module, image: np.ndarray, target: int | None, layer: str,
                       methods: Sequence[str] = METHODS, *, mean: Sequence[float], std: Sequence[float],
                       shuffled_mean: Sequence[float] | None = None,
                       shuffled_std: Sequence[float] | None = None) -> DataRandomisation:
    """Adebayo et al.'s second test: the same image and class explained by the trained network and by one of the
    same architecture trained on shuffled labels (it learned nothing about the classes, only memorised). A map
    that stays alike (high Spearman rho of the absolute maps) does not depend on what the labels taught.
    ``target`` None: the trained network's predicted class, used for both. Each network sees the image normalised
    with its own training statistics (``shuffled_mean/std``, default ``mean/std``)."""
    methods = _check_methods(methods)
    t0 = time.perf_counter()
    I.get_layer(shuffled, layer)  # the same architecture: the Grad-CAM layer must exist in both
    base = attribute(model, image, target, layer, methods, mean=mean, std=std)
    target = next(iter(base.values())).target
    other = attribute(shuffled, image, target, layer, methods, mean=shuffled_mean or mean,
                      std=shuffled_std or std)
    return DataRandomisation({m: rank_correlation(np.abs(base[m].map), np.abs(other[m].map)) for m in methods},
                             {m: base[m].magnitude for m in methods}, {m: other[m].magnitude for m in methods},
                             target, time.perf_counter() - t0)


def data_verdict(correlations: dict) -> dict:
    """The data-randomisation test read like the model one: ``fail`` when the shuffled-label network's map is
    still correlated at SANITY_RHO or more with the trained one's (the labels made no difference to it), ``pass``
    below. An undefined rho (a constant map) is in neither."""
    shown = {m: round(float(r), 2) for m, r in correlations.items() if np.isfinite(r)}  # judged as shown
    return {"fail": [m for m, r in shown.items() if r >= SANITY_RHO],
            "pass": [m for m, r in shown.items() if r < SANITY_RHO]}
