"""A model's layers by name (every conv, block and stage with its output shape) and safe use of a model shared between
sessions: one lock per model, eval mode put back, frozen weights.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import weakref
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from resnet_lab.inspect.source import IMAGE_SIZE, InspectError
from resnet_lab.transforms import normalize_batch

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
