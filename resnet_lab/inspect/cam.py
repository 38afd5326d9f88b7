"""Grad-CAM with captum's ``LayerGradCam`` (imported lazily: captum stays off the training path), normalised and
overlaid, and where a feature-map cell sits in the image (its receptive field).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from resnet_lab import receptive_field
from resnet_lab.inspect.activations import _resize, class_probs, colorize, upscale
from resnet_lab.inspect.layers import eval_mode, frozen, get_layer, model_device, model_lock, stages, to_batch
from resnet_lab.inspect.source import IMAGE_SIZE, InspectError

# --------------------------------------------------------------------------------------------------------------------
# Grad-CAM


@dataclass
class CamResult:
    layer: str
    target: int              # the class whose score is explained
    cells: np.ndarray        # (h, w) Grad-CAM at the layer's own resolution (raw values)
    cam: np.ndarray          # (32, 32) the same, upsampled to the input (captum's LayerAttribution.interpolate)
    relu: bool               # True: ReLU'd (the paper's Grad-CAM); False: signed (captum's default)
    probs: np.ndarray        # (num_classes,) the model's probabilities for the image
    seconds: float = 0.0
    normalized: np.ndarray = field(init=False)   # cam scaled to [0, 1] (ReLU) or [-1, 1] (signed); 0 if constant
    constant: bool = field(init=False)
    note: str | None = field(init=False)

    def __post_init__(self) -> None:
        self.normalized, self.constant, self.note = normalize_cam(self.cam, signed=not self.relu,
                                                                  cells=self.cells.shape)

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.cells.shape)

    def peak_cell(self) -> tuple[int, int]:
        """(row, col) of the strongest cell (largest value; largest |value| for a signed map)."""
        values = self.cells if self.relu else np.abs(self.cells)
        return tuple(int(v) for v in np.unravel_index(int(np.argmax(values)), values.shape))


def normalize_cam(cam: np.ndarray, signed: bool, cells: tuple | None = None) -> tuple[np.ndarray, bool, str | None]:
    """Scale a Grad-CAM map for display without ever dividing by zero.

    Returns ``(map, constant, note)``: the map divided by its largest |value| ([0, 1] ReLU'd, [-1, 1] signed),
    or zeros with ``constant=True`` and a plain-words explanation when the map is all zero, uniform or not
    finite (captum's own visualiser divides by zero on those)."""
    cam = np.asarray(cam, dtype=np.float64)
    zeros = np.zeros(cam.shape, np.float32)
    if not np.all(np.isfinite(cam)):
        return zeros, True, ("The map contains NaN or infinite values (the gradients overflowed), so it cannot "
                             "be shown.")
    peak = float(np.abs(cam).max()) if cam.size else 0.0
    if cells is not None and int(np.prod(cells)) == 1:
        return zeros, True, ("This layer's map is 1×1: a single number for the whole image, so there is nothing "
                             "to localise. Pick an earlier layer with a spatial map.")
    if peak == 0.0:
        if not signed:
            return zeros, True, ("The map is zero everywhere after the ReLU: at no position do this layer's "
                                 "features, weighted by their gradients, speak *for* this class. That is common "
                                 "for a class the network rejects. Switch to the signed map to see the evidence "
                                 "against it.")
        return zeros, True, ("The map is exactly zero: the class score does not change with this layer's "
                             "output (zero gradients, e.g. dead ReLUs), so Grad-CAM has nothing to show.")
    if float(cam.max() - cam.min()) <= 1e-6 * peak:
        return zeros, True, (f"The map has the same value ({cam.flat[0]:.3g}) everywhere: this layer's evidence "
                             "does not vary across the image, so Grad-CAM cannot localise anything here.")
    out = cam / peak
    return (np.clip(out, -1, 1) if signed else np.clip(out, 0, 1)).astype(np.float32), False, None


def gradcams(model: nn.Module, image: np.ndarray, layer: str, targets: Sequence[int | None],
             mean: Sequence[float], std: Sequence[float], relu: bool = True,
             upsample: str = "bilinear") -> list[CamResult]:
    """Grad-CAM of one uint8 HWC image at ``layer`` for several classes in one batched captum call.

    ``None`` in ``targets`` means the predicted class. ``relu=True`` is the Grad-CAM paper's map (only
    positive evidence); ``False`` keeps the sign (captum's default, ``relu_attributions=False``). ``upsample``:
    ``"bilinear"`` (smooth, as in the paper) or ``"nearest"`` (every cell of the layer stays a visible block).
    """
    from captum.attr import LayerAttribution, LayerGradCam  # lazy: captum is not needed to train

    module = get_layer(model, layer)
    t0 = time.perf_counter()
    with model_lock(model), eval_mode(model):
        x = to_batch(image, mean, std, model_device(model))
        with torch.no_grad():
            probs = class_probs(model(x))
        pred = int(probs.argmax())
        chosen = [pred if t is None else int(t) for t in targets]
        bad = [t for t in chosen if not 0 <= t < len(probs)]
        if bad:
            raise InspectError(f"class {bad[0]} does not exist (the model has {len(probs)} classes)")
        xb = x.expand(len(chosen), *x.shape[1:]).contiguous()
        # enable_grad: callers may sit inside no_grad (e.g. a Streamlit page); Grad-CAM needs the backward pass.
        with torch.enable_grad(), frozen(model):
            attr = LayerGradCam(model, module).attribute(xb, target=chosen, relu_attributions=relu)
        if attr.dim() != 4:
            raise InspectError(f"layer {layer!r} does not output a feature map (got shape {tuple(attr.shape)})")
        up = LayerAttribution.interpolate(attr, tuple(x.shape[-2:]), interpolate_mode=upsample)
    seconds = (time.perf_counter() - t0) / len(chosen)
    cells = attr.detach()[:, 0].float().cpu().numpy()
    cams = up.detach()[:, 0].float().cpu().numpy()
    return [CamResult(layer, t, cells[i], cams[i], relu, probs, seconds) for i, t in enumerate(chosen)]


def gradcam(model: nn.Module, image: np.ndarray, layer: str, target: int | None = None, *,
            mean: Sequence[float], std: Sequence[float], relu: bool = True, upsample: str = "bilinear") -> CamResult:
    """Grad-CAM of one image at one layer for one class (default: the predicted class)."""
    return gradcams(model, image, layer, [target], mean, std, relu=relu, upsample=upsample)[0]


def layer_sweep(model: nn.Module, image: np.ndarray, target: int | None = None, layers: Sequence[str] | None = None,
                *, mean: Sequence[float], std: Sequence[float], relu: bool = True) -> list[CamResult]:
    """The same image and class at every stage (default ``stages(model)``): the maps get coarser with depth.

    Upsampled with ``nearest`` so each map cell stays a visible block."""
    layers = list(layers) if layers is not None else stages(model)
    if target is None and layers:
        first = gradcam(model, image, layers[0], None, mean=mean, std=std, relu=relu, upsample="nearest")
        target, results = first.target, [first]
        layers = layers[1:]
    else:
        results = []
    return results + [gradcam(model, image, name, target, mean=mean, std=std, relu=relu, upsample="nearest")
                      for name in layers]


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5, signed: bool = False, size: int = 256,
            smooth: bool = True) -> np.ndarray:
    """Blend a normalised map (``CamResult.normalized``) over a uint8 HWC image, ``size`` px wide.

    The image is enlarged with nearest neighbour (crisp pixels); the map is resized bilinearly (``smooth``) or
    nearest. ReLU'd maps use "jet" (blue = 0, red = strongest); signed maps a blue-white-red diverging map
    (blue against the class, red for it)."""
    img = np.asarray(image, np.uint8)
    factor = max(1, size // img.shape[0])
    big = upscale(img, factor).astype(np.float32)
    heat = _resize(cam, big.shape[:2], smooth)
    colored = colorize((heat + 1) / 2, "RdBu_r") if signed else colorize(heat, "jet")
    alpha = float(np.clip(alpha, 0, 1))
    return (big * (1 - alpha) + colored.astype(np.float32) * alpha).round().astype(np.uint8)


# --------------------------------------------------------------------------------------------------------------------
# Receptive fields (resnet_lab.receptive_field)


def receptive_field_table(model: nn.Module):
    """``resnet_lab.receptive_field.receptive_fields(model, 32)``, or None when it cannot trace the model (the
    pages then just leave the RF out)."""
    try:
        with model_lock(model):
            return receptive_field.receptive_fields(model, IMAGE_SIZE)
    except Exception:  # an RF that cannot be computed must not take the activation/Grad-CAM view down with it
        return None


def _rf_row_name(table, layer: str) -> str | None:
    """The RF table names traced nodes (leaves like 'layer1.conv'); a container's output is its last node."""
    names = [row.name for row in table.layers]
    if layer in names:
        return layer
    inside = [row for row in table.layers if row.name.startswith(layer + ".") and row.out_size is not None]
    return inside[-1].name if inside else None


def layer_rf(table, layer: str) -> dict | None:
    """``{"size": (h, w) px, "jump": (h, w) px, "name": row}`` for a layer of ``list_layers``, or None."""
    if table is None:
        return None
    name = _rf_row_name(table, layer)
    if name is None:
        return None
    row = table.layer(name)
    return {"size": tuple(int(round(v)) for v in row.rf_max), "jump": tuple(float(v) for v in row.jump),
            "name": name}


def cell_box(table, layer: str, cell: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right), inclusive input px clipped to the image, that map cell ``cell`` can see."""
    if table is None:
        return None
    name = _rf_row_name(table, layer)
    if name is None:
        return None
    try:
        box = table.box(name, tuple(cell))
    except Exception:
        return None
    return box["top"], box["bottom"], box["left"], box["right"]
