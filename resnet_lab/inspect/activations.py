"""Feature maps through forward hooks (always removed), their channel statistics, and the pictures made of them (colour
maps, upscaling, grids, boxes, PNG bytes).
"""

from __future__ import annotations

import contextlib
import functools
import io
import time
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from resnet_lab.inspect.layers import eval_mode, get_layer, model_device, model_lock, to_batch
from resnet_lab.inspect.source import InspectError

# --------------------------------------------------------------------------------------------------------------------
# Forward hooks and activations


def _save_output(store: dict, name: str, module, inputs, output) -> None:
    if torch.is_tensor(output):
        # clone: an in-place ReLU right after this module would otherwise overwrite what we keep
        store[name] = output.detach().clone()


@contextlib.contextmanager
def capture(model: nn.Module, names: Iterable[str]):
    """Record the outputs of the named modules during the forward passes inside the ``with`` block.

    Yields a dict name -> tensor (detached copies). The hooks are removed on exit, also when the forward
    pass raises, so a model never accumulates hooks however often this runs."""
    modules = [(name, get_layer(model, name)) for name in dict.fromkeys(names)]
    store: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for name, module in modules:
            handles.append(module.register_forward_hook(functools.partial(_save_output, store, name)))
        yield store
    finally:
        for h in handles:
            h.remove()


def class_probs(logits: torch.Tensor) -> np.ndarray:
    """The softmax of one image's logits. Non-finite logits (NaN weights: a diverged run or a damaged model.pt)
    are an InspectError: softmax would give NaN probabilities, argmax would then name class 0 and call it right."""
    if not torch.isfinite(logits).all():
        bad = "NaN" if torch.isnan(logits).any() else "infinite values"
        raise InspectError(f"the network outputs {bad} for this image (non-finite outputs), so it makes no "
                           "prediction: its weights hold NaN or inf (the run diverged, or model.pt is damaged); "
                           "train the run again")
    return torch.softmax(logits.float(), 1)[0].cpu().numpy()


@dataclass
class Activations:
    maps: dict            # layer name -> float32 (C, H, W)
    probs: np.ndarray     # (num_classes,) softmax of the logits
    seconds: float


def activations(model: nn.Module, image: np.ndarray, layers: Iterable[str], mean: Sequence[float],
                std: Sequence[float]) -> Activations:
    """Feature maps of one uint8 HWC image at the named layers, and the class probabilities."""
    layers = list(dict.fromkeys(layers))
    t0 = time.perf_counter()
    with model_lock(model), eval_mode(model), torch.no_grad():
        x = to_batch(image, mean, std, model_device(model))
        with capture(model, layers) as store:
            logits = model(x)
    missing = [n for n in layers if n not in store]
    if missing:
        raise InspectError(f"layer(s) {', '.join(missing)} did not run in the forward pass")
    probs = class_probs(logits)
    maps = {n: store[n][0].float().cpu().numpy() for n in layers}
    return Activations(maps, probs, time.perf_counter() - t0)


def channel_stats(fmap: np.ndarray) -> dict[str, np.ndarray]:
    """Per channel of a (C, H, W) map: mean, std, min, max and the fraction of positive units."""
    flat = np.asarray(fmap, dtype=np.float32).reshape(fmap.shape[0], -1)
    return {"mean": flat.mean(1), "std": flat.std(1), "min": flat.min(1), "max": flat.max(1),
            "active": (flat > 0).mean(1)}


def top_channels(fmap: np.ndarray, k: int, by: str = "mean") -> np.ndarray:
    """Indices of the k channels with the largest ``by`` statistic (mean activation by default), largest first."""
    stat = channel_stats(fmap)[by]
    k = max(0, min(int(k), len(stat)))
    return np.argsort(-stat, kind="stable")[:k]


# --------------------------------------------------------------------------------------------------------------------
# Colour and pictures (pure numpy: no matplotlib needed)

# 9 evenly spaced samples of matplotlib's maps, interpolated linearly.
_CMAPS = {
    "viridis": [[68, 1, 84], [71, 45, 123], [59, 82, 139], [44, 114, 142], [33, 145, 140], [40, 174, 128],
                [94, 201, 98], [173, 220, 48], [253, 231, 37]],
    "jet": [[0, 0, 128], [0, 0, 255], [0, 128, 255], [22, 255, 225], [125, 255, 122], [228, 255, 19],
            [255, 148, 0], [255, 30, 0], [128, 0, 0]],
    "RdBu_r": [[5, 48, 97], [42, 113, 178], [107, 172, 209], [194, 221, 236], [247, 246, 246], [251, 204, 180],
               [228, 128, 102], [186, 40, 50], [103, 0, 31]],
}


def colorize(values: np.ndarray, cmap: str = "viridis") -> np.ndarray:
    """Values in [0, 1] -> uint8 RGB with a matplotlib-like colormap (NaN -> 0)."""
    table = np.asarray(_CMAPS[cmap], dtype=np.float32)
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float32)), 0, 1) * (len(table) - 1)
    lo = np.floor(v).astype(np.int64)
    hi = np.minimum(lo + 1, len(table) - 1)
    t = (v - lo)[..., None]
    return (table[lo] * (1 - t) + table[hi] * t).round().astype(np.uint8)


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement: every pixel becomes a crisp factor x factor square."""
    factor = max(1, int(factor))
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def _resize(values: np.ndarray, size: tuple[int, int], smooth: bool) -> np.ndarray:
    """Resize a 2-D float map to (H, W): bilinear when ``smooth``, else nearest (cells stay visible)."""
    t = torch.as_tensor(np.asarray(values, dtype=np.float32))[None, None]
    if smooth:
        out = torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False)
    else:
        out = torch.nn.functional.interpolate(t, size=size, mode="nearest")
    return out[0, 0].numpy()


def feature_grid(fmap: np.ndarray, channels: Sequence[int] | None = None, cols: int = 8, cell: int = 64,
                 pad: int = 4, scale: str = "channel", cmap: str = "viridis") -> np.ndarray:
    """Tile feature maps into one uint8 RGB picture (nearest upscaling, so each unit is a visible square).

    ``scale="channel"``: each tile on its own min..max (shows every pattern; brightness is not comparable);
    ``"layer"``: one scale for all tiles (strong channels stand out). A constant tile is drawn dark."""
    fmap = np.asarray(fmap, dtype=np.float32)
    channels = list(range(fmap.shape[0])) if channels is None else [int(c) for c in channels]
    if not channels:
        return np.full((cell, cell, 3), 255, np.uint8)
    tiles = fmap[channels]
    if scale == "layer":
        lo, hi = float(tiles.min()), float(tiles.max())
        norm = (tiles - lo) / (hi - lo) if hi > lo else np.zeros_like(tiles)
    else:
        lo = tiles.min(axis=(1, 2), keepdims=True)
        span = tiles.max(axis=(1, 2), keepdims=True) - lo
        norm = np.where(span > 0, (tiles - lo) / np.where(span > 0, span, 1), 0.0)
    factor = max(1, cell // max(fmap.shape[1:]))
    h, w = fmap.shape[1] * factor, fmap.shape[2] * factor
    cols = max(1, min(cols, len(channels)))
    rows = -(-len(channels) // cols)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, tile in enumerate(norm):
        r, c = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y:y + h, x:x + w] = upscale(colorize(tile, cmap), factor)
    return grid


def draw_box(image: np.ndarray, box: tuple[int, int, int, int], color=(255, 255, 255), width: int = 2,
             scale: int = 1) -> np.ndarray:
    """A rectangle around input pixels top..bottom, left..right (inclusive) on an image ``scale`` times larger."""
    out = image.copy()
    top, bottom, left, right = (int(round(v)) for v in box)
    y0, y1 = top * scale, (bottom + 1) * scale - 1
    x0, x1 = left * scale, (right + 1) * scale - 1
    h, w = out.shape[:2]
    y0, y1, x0, x1 = max(y0, 0), min(y1, h - 1), max(x0, 0), min(x1, w - 1)
    if y1 < y0 or x1 < x0:
        return out
    col = np.asarray(color, np.uint8)
    out[y0:y0 + width, x0:x1 + 1] = col
    out[max(y1 - width + 1, y0):y1 + 1, x0:x1 + 1] = col
    out[y0:y1 + 1, x0:x0 + width] = col
    out[y0:y1 + 1, max(x1 - width + 1, x0):x1 + 1] = col
    return out


def to_png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def strip(panels, gap: int = 8):
    """Panels side by side, each with its caption underneath (PIL's built-in font: no font files needed)."""
    from PIL import Image, ImageDraw

    h = max(p.shape[0] for p, _ in panels)
    w = sum(p.shape[1] for p, _ in panels) + gap * (len(panels) + 1)
    canvas = Image.new("RGB", (w, h + 2 * gap + 16), "white")
    draw = ImageDraw.Draw(canvas)
    x = gap
    for panel, caption in panels:
        canvas.paste(Image.fromarray(np.asarray(panel, np.uint8)), (x, gap))
        draw.text((x, h + gap + 2), caption[:42], fill="black")
        x += panel.shape[1] + gap
    return np.asarray(canvas)
