"""Look inside a trained network: feature maps, Grad-CAM, and the test images it gets wrong.

Three groups of functions, all plain numpy/torch (the app and the CLI draw them):

- **Runs and their images** — ``open_run("latest")``, ``run_data_source(run)``, ``run_dataset(run)``,
  ``run_images(pred, data)``: a run's stored test predictions index the *full* test split
  (``predictions["indices"]``), so its images are the data source's ``test_x[indices]``; the stored labels are
  checked against the source's, so a run trained on other data is refused instead of silently showing the wrong
  pictures. Predictions are never recomputed.
- **Activations and Grad-CAM** — ``list_layers(model)`` (every conv, block and stage with its output shape),
  ``capture(model, names)`` (forward hooks, always removed), ``activations(...)``, ``gradcam(...)`` and
  ``layer_sweep(...)`` (captum's ``LayerGradCam``, imported lazily: captum stays off the training path),
  ``normalize_cam``, ``overlay``, ``feature_grid``.
- **Mistakes** — ``summary``, ``filter_predictions``, ``predictions_csv`` over the metrics of
  ``resnet_lab.metrics`` (top-k, per-class accuracy, the confusion matrix, most-confused pairs): vectorised numpy,
  fast on 10,000 predictions.

Models are used in eval mode and put back in the mode they were in. Hooks and captum runs on one model are
serialised by a per-model lock, because the app shares one cached model between browser sessions: without it
session A's hook could record session B's forward pass.
"""

from __future__ import annotations

import contextlib
import functools
import io
import re
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from resnet_lab import receptive_field
from resnet_lab.data import load_dataset, safe_text
from resnet_lab.metrics import confusion_matrix, most_confused, per_class_accuracy, topk_accuracy
from resnet_lab.runs import RunError, RunStore
from resnet_lab.transforms import normalize_batch

IMAGE_SIZE = 32


class InspectError(Exception):
    """Something the user can fix (a missing run, an unknown layer, other data than the run's); plain words."""


# --------------------------------------------------------------------------------------------------------------------
# Runs and their images


def open_run(spec: str | None = "latest", store=None, need_checkpoint: bool = False):
    """A run by id, or ``"latest"`` (the newest one with stored predictions). Raises InspectError naming
    the runs folder and what is in it."""

    store = store or RunStore()
    if spec is not None and not str(spec).strip():
        # an empty id (a blank --run, a cleared box) is not "latest": that would quietly show another run
        raise InspectError("the run id is empty; give a run id (python -m resnet_lab runs lists them) or 'latest'")
    spec = (spec or "latest").strip()
    try:
        store.check_root()
    except RunError as exc:
        raise InspectError(str(exc)) from None
    if spec == "latest":
        run = store.latest(with_predictions=True)
        if run is None:
            raise InspectError(f"no run with stored predictions in {store.root.resolve()}; train one first "
                               "(python -m resnet_lab train --preset quick-cpu) or set RESNET_LAB_RUNS")
    else:
        try:
            run = store.get(spec)
        except RunError as exc:
            ids = [r.id for r in store.list()[:5]]
            hint = f" Recent runs: {', '.join(ids)}." if ids else ""
            raise InspectError(f"{exc}.{hint}") from None
        if not run.has_predictions:
            raise InspectError(f"run {run.id} has no stored predictions (status: {run.status}); "
                               "it stopped or failed before its final evaluation")
    if need_checkpoint and not run.has_checkpoint:
        raise InspectError(f"run {run.id} has no saved weights (model.pt), so there is no network to look inside")
    return run


_DESCRIBED = re.compile(r"^(?:class folders|class-folder archive): (?P<path>.+) \([\d,]+ images[^)]*\)$")


def run_data_source(run) -> str | None:
    """The data source the run was trained on, as ``load_dataset`` accepts it (None when unknown).

    The trainer stores the source's description (``data_source``), e.g. ``"class folders: /x (300 images)"``
    or ``"torchvision CIFAR-10: ..."``, plus ``data`` when a source was named explicitly."""
    cfg = run.config or {}
    for key in ("data_path", "data"):
        if cfg.get(key):
            return _local(run, str(cfg[key]))
    described = str(cfg.get("data_source") or "").split("; subset ")[0].strip()
    if described.startswith("torchvision CIFAR-10"):
        return "cifar10"
    match = _DESCRIBED.match(described)
    return _local(run, match.group("path")) if match else None


def _local(run, source: str) -> str | None:
    # A shipped reference run names the path it was trained from on another machine: there, fall back to the
    # user's own source (None); run_images still checks every label, so other data is refused, not shown.
    if getattr(run, "reference", False) and source != "cifar10" and not Path(source).exists():
        return None
    return source


def run_dataset(run, source: str | None = None, progress=None):
    """The full data source of a run (``source`` overrides it), as a ``Dataset``; raises ``DataError``, or
    ``InspectError`` when its classes are not the run's (another source's images would be labelled with this
    run's class names, and its predictions would index other images)."""

    data = load_dataset(source or run_data_source(run), progress=progress)
    try:
        classes = run.classes
    except RunError as exc:
        raise InspectError(str(exc)) from None
    if classes and list(data.classes) != classes:
        raise InspectError(f"{data.source} has {_listed(data.classes)} but run {run.id} was trained on "
                           f"{_listed(classes)}; use the data the run was trained on")
    return data


def _listed(classes, limit: int = 10) -> str:
    names = ", ".join(safe_text(c, 40) for c in list(classes)[:limit])
    more = f", … {len(classes) - limit} more" if len(classes) > limit else ""
    return f"{len(classes)} classes ({names}{more})"


def run_images(pred: dict, data) -> np.ndarray:
    """The test images of a run, row-aligned with its stored predictions: uint8 (N, 32, 32, 3).

    ``data`` is a ``Dataset`` (the full source or any subset containing those images). Raises InspectError
    when an image is missing or the stored labels disagree with the data's (a run trained on other data)."""
    indices = np.asarray(pred["indices"], dtype=np.int64)
    test_index = np.asarray(data.test_index, dtype=np.int64)
    if len(test_index) and np.array_equal(test_index, np.arange(len(test_index))):
        rows = indices  # the full split: positions are indices
        missing = (indices < 0) | (indices >= len(test_index))
    else:
        order = np.argsort(test_index, kind="stable")
        where = np.searchsorted(test_index[order], indices)
        where = np.clip(where, 0, max(len(order) - 1, 0))
        rows = order[where] if len(order) else where
        missing = (test_index[rows] != indices) if len(order) else np.ones(len(indices), bool)
    if missing.any():
        raise InspectError(f"{int(missing.sum()):,} of the run's {len(indices):,} test images are not in "
                           f"{data.source} (it has {len(test_index):,} test images): the run was trained on "
                           "other data. Choose the run's data source in the sidebar.")
    labels = np.asarray(pred["labels"])
    wrong = data.test_y[rows] != labels
    if wrong.any():
        raise InspectError(f"the run's stored labels disagree with {data.source} on {int(wrong.sum()):,} of "
                           f"{len(labels):,} images: the run was trained on other data. Choose the run's data "
                           "source in the sidebar.")
    return data.test_x[rows]


# --------------------------------------------------------------------------------------------------------------------
# Small helpers: device, eval mode, the per-model lock, inputs

_LOCKS: "weakref.WeakKeyDictionary[nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """One re-entrant lock per model object: hook-based work on a shared model runs one call at a time."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


def model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Eval mode (BN uses running statistics: one image is a valid batch) and each module's own mode back."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode


@contextlib.contextmanager
def frozen(model: nn.Module):
    """Parameters without requires_grad for the duration: Grad-CAM needs d score / d layer output only, so
    autograd then records nothing before the hooked layer and computes no weight gradients (about 2x faster
    on a CPU). Each parameter's flag is restored, and ``.grad`` is never touched."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def to_batch(images: np.ndarray, mean: Sequence[float], std: Sequence[float], device=None) -> torch.Tensor:
    """uint8 HWC image or NHWC batch -> normalised float (N, 3, H, W) on ``device``."""

    x = np.asarray(images)
    if x.dtype != np.uint8 or x.shape[-1] != 3 or x.ndim not in (3, 4):
        raise InspectError(f"expected uint8 RGB image(s) of shape (H, W, 3) or (N, H, W, 3), got {x.dtype} {x.shape}")
    if x.ndim == 3:
        x = x[None]
    # a copy: cached image arrays are read-only, and torch warns about (and may write to) read-only memory
    return normalize_batch(torch.from_numpy(np.array(x, copy=True)), mean, std).to(device or "cpu")


# --------------------------------------------------------------------------------------------------------------------
# Layers


@dataclass
class Layer:
    name: str          # module path, e.g. "layer1.0.conv1"
    type: str          # class name, e.g. "Conv2d"
    kind: str          # "stage" (a top-level part), "block" (a container inside one) or "conv"
    shape: tuple       # (C, H, W) of its output for one 32x32 image
    order: int         # position in the forward pass

    @property
    def label(self) -> str:
        c, h, w = self.shape
        return f"{self.name} · {self.type} · {c}×{h}×{w}"


def resolve_layer_name(model: nn.Module, name: str) -> str:
    """``layer3_res`` (the branch's name before custom_resnet's stages became ``Residual`` modules) means
    ``layer3.res`` now; every other name is returned as it is."""
    if isinstance(name, str) and name.endswith("_res") and "." not in name:
        alias = name[:-4] + ".res"
        try:
            model.get_submodule(name)
        except AttributeError:
            try:
                model.get_submodule(alias)
                return alias
            except AttributeError:
                pass
    return name


def get_layer(model: nn.Module, name: str) -> nn.Module:
    name = resolve_layer_name(model, name)
    try:
        module = model.get_submodule(name) if name else None
    except AttributeError:
        module = None
    if module is None or module is model:
        some = ", ".join(n for n, _ in list(model.named_modules())[1:9])
        raise InspectError(f"the model has no layer named {name!r}; layers look like: {some}, …")
    return module


def list_layers(model: nn.Module, input_size: tuple[int, int, int] = (3, IMAGE_SIZE, IMAGE_SIZE)) -> list[Layer]:
    """Every conv, block and stage that outputs a feature map, in forward order, with its output shape.

    Found by one probe forward pass with a hook on every module (all removed again): leaf layers other than
    convolutions (BN, ReLU, pooling, identity shortcuts) are left out to keep the list readable."""
    found: dict[str, Layer] = {}
    handles = []
    named = [(n, m) for n, m in model.named_modules() if n]

    def hook(name, module, inputs, output):
        if name in found or not torch.is_tensor(output) or output.dim() != 4:
            return
        has_children = next(module.children(), None) is not None
        if not (isinstance(module, nn.Conv2d) or has_children):
            return
        kind = "conv" if isinstance(module, nn.Conv2d) else ("stage" if "." not in name else "block")
        found[name] = Layer(name, type(module).__name__, kind, tuple(output.shape[1:]), len(found))

    with model_lock(model), eval_mode(model), torch.no_grad():
        try:
            for name, module in named:
                handles.append(module.register_forward_hook(functools.partial(hook, name)))
            model(torch.zeros(1, *input_size, device=model_device(model)))
        finally:
            for h in handles:
                h.remove()
    return sorted(found.values(), key=lambda layer: layer.order)


def stages(model: nn.Module, layers: list[Layer] | None = None) -> list[str]:
    """The top-level parts whose output is still a spatial map (H, W > 1): one row of the layer sweep."""
    layers = layers if layers is not None else list_layers(model)
    out = [layer.name for layer in layers if "." not in layer.name and min(layer.shape[1:]) > 1]
    return out or [layer.name for layer in layers if min(layer.shape[1:]) > 1][-4:]


def branch_of(model: nn.Module, layer: str) -> str | None:
    """The layer that outputs only the residual branch F(x) of the sum ``layer`` outputs, or None.

    custom_resnet's ``Residual`` stages: ``layer3`` -> ``layer3.res``. A basic block ``relu(bn2(...) + shortcut(x))``:
    ``layer2.0`` -> ``layer2.0.bn2`` (the branch before the add); a stage of blocks ends with its last block's sum.
    Plain blocks (no shortcut) add nothing, so they have no branch."""
    try:
        module = get_layer(model, layer)
    except InspectError:
        return None
    name = resolve_layer_name(model, layer)
    if isinstance(getattr(module, "res", None), nn.Module):
        return f"{name}.res"
    if isinstance(module, nn.Sequential) and len(module):
        return branch_of(model, f"{name}.{len(module) - 1}")
    if getattr(module, "shortcut", None) is not None:
        # post-activation blocks add after their last BN; pre-activation ones after their last conv
        ends = ("conv3", "conv2") if type(module).__name__.startswith("PreAct") else ("bn3", "bn2")
        for last in ends:
            if isinstance(getattr(module, last, None), nn.Module):
                return f"{name}.{last}"
    return None


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


# --------------------------------------------------------------------------------------------------------------------
# Mistakes: confusion matrix, accuracies, filtering


def enrich(pred: dict) -> dict:
    """Add what the workbench sorts and filters by: ``preds``, ``confidence`` (max probability),
    ``p_true`` (probability of the true class), ``loss`` (-log p_true) and ``correct``."""
    probs = np.asarray(pred["probs"], dtype=np.float32)
    labels = np.asarray(pred["labels"], dtype=np.int64)
    out = dict(pred)
    out["preds"] = probs.argmax(1) if len(probs) else np.zeros(0, np.int64)
    out["confidence"] = probs.max(1) if len(probs) else np.zeros(0, np.float32)
    out["p_true"] = probs[np.arange(len(labels)), labels] if len(labels) else np.zeros(0, np.float32)
    out["loss"] = -np.log(np.maximum(out["p_true"], 1e-12))
    out["correct"] = out["preds"] == labels
    return out


SORTS = ("loss", "confidence", "index")


def filter_predictions(pred: dict, true: int | None = None, predicted: int | None = None, only_wrong: bool = True,
                       sort: str = "loss") -> np.ndarray:
    """Rows of the prediction arrays that match, sorted: an int64 array of positions.

    ``sort="loss"``: the most wrong first (highest -log p_true); ``"confidence"``: most confident first;
    ``"index"``: by test-set index. ``pred`` is a ``run.predictions()`` dict (``enrich`` is applied if needed).
    """
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {', '.join(SORTS)}; got {sort!r}")
    if "loss" not in pred:
        pred = enrich(pred)
    mask = np.ones(len(pred["labels"]), dtype=bool)
    if true is not None:
        mask &= pred["labels"] == int(true)
    if predicted is not None:
        mask &= pred["preds"] == int(predicted)
    if only_wrong:
        mask &= ~pred["correct"]
    rows = np.flatnonzero(mask)
    if sort == "loss":
        key = -pred["loss"][rows]
    elif sort == "confidence":
        key = -pred["confidence"][rows]
    else:
        key = np.asarray(pred["indices"])[rows]
    return rows[np.argsort(key, kind="stable")]


def summary(pred: dict, classes: Sequence[str], min_count: int = 1) -> dict:
    """Headline numbers of stored predictions: n, n_wrong, top-1/3/5, per-class accuracy, confusion, pairs."""
    if "loss" not in pred:
        pred = enrich(pred)
    n_classes = len(classes)
    confusion = confusion_matrix(pred["labels"], pred["preds"], n_classes)
    top = topk_accuracy(pred["probs"], pred["labels"], (1, 3, 5))
    return {"n": int(len(pred["labels"])), "n_wrong": int((~pred["correct"]).sum()),
            "top1": top[1], "top3": top[3], "top5": top[5],
            "per_class_acc": [None if np.isnan(v) else float(v) for v in per_class_accuracy(confusion)],
            "classes": list(classes), "confusion": confusion.tolist(),
            "most_confused": [list(t) for t in most_confused(confusion, classes, min_count)]}


def topk(probs: np.ndarray, k: int = 5) -> list[tuple[int, float]]:
    """The k most probable classes of one probability vector: [(class, probability), ...]."""
    probs = np.asarray(probs)
    order = np.argsort(-probs, kind="stable")[:k]
    return [(int(c), float(probs[c])) for c in order]


def predictions_csv(pred: dict, rows: np.ndarray, classes: Sequence[str]) -> str:
    """The chosen rows as CSV: test_index, true, predicted, confidence, p_true, loss, correct."""
    if "loss" not in pred:
        pred = enrich(pred)
    rows = np.asarray(rows, dtype=np.int64)
    names = np.asarray(list(classes), dtype=object)
    out = io.StringIO()
    out.write("test_index,true,predicted,confidence,p_true,loss,correct\n")
    for idx, t, p, conf, pt, loss, ok in zip(np.asarray(pred["indices"])[rows], names[pred["labels"][rows]],
                                             names[pred["preds"][rows]], pred["confidence"][rows],
                                             pred["p_true"][rows], pred["loss"][rows], pred["correct"][rows]):
        out.write(f"{int(idx)},{_csv_field(t)},{_csv_field(p)},{conf:.6f},{pt:.6f},{loss:.6f},{bool(ok)}\n")
    return out.getvalue()


def _csv_field(text: str) -> str:
    text = str(text)
    if any(ch in text for ch in ',"\n') or text[:1] in "=+-@":
        # quote, and defuse spreadsheet formulas in class names taken from folder names
        text = text if text[:1] not in "=+-@" else "'" + text
        return '"' + text.replace('"', '""') + '"'
    return text
