"""Receptive fields: the analytic one, traced from the real graph, and the effective one, measured with gradients.

Analytic RF (Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional Neural Networks", Distill 2019).
Along one axis a layer with kernel k, stride s, padding p and dilation d (effective kernel k' = d(k-1)+1) maps
feature-map unit i to the input units [i*s - p, i*s - p + k' - 1]. Composing layers, each feature map is
described in *input pixel* coordinates by

    jump j   = product of the strides so far (distance in input px between neighbouring units),
    rf r     = r_in + (k' - 1) * j_in,
    lo / hi  = first / last input pixel that unit 0 can see (lo may be negative: that part is padding);
               unit i sees [lo + i*j, hi + i*j], and the RF centre ("start") is (lo + hi) / 2.

A ResNet is not a chain: at every ``x + F(x)`` (and every concatenation) paths of different depth meet. We
track, per node, the largest-RF path and the smallest-RF path (r and lo of each) and the union box over all
paths, so a node reports ``rf_max`` and ``rf_min``. Counting the paths themselves would explode (2^blocks);
max/min/union are exact under the merge rule because every layer transforms all paths the same monotone way.
Where branches arrive with different jumps the graph is "not aligned" (Distill's library refuses it); we keep
going with the coarser jump and say so in the layer's note.

The graph comes from ``torch.fx`` (so branches are seen as they are, not guessed from module order); feature-map
sizes come from running the traced graph once on a zero image in eval mode. Submodules fx cannot trace (data-
dependent Python control flow) become opaque leaves whose geometry is estimated from input-gradient support.

Effective RF (Luo, Li, Urtasun & Zemel 2016, "Understanding the Effective Receptive Field in Deep CNNs"): the
gradient of one output unit (all channels) w.r.t. the input, |.| averaged over a batch of real images. It is
roughly Gaussian and much smaller than the analytic box.
"""

from __future__ import annotations

import copy
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from resnet_lab import models
from resnet_lab.data import safe_text

__all__ = ["RFError", "LayerRF", "RFTable", "receptive_fields", "load_model", "effective_rf", "erf_extent",
           "TORCHVISION_MODELS"]

# torchvision models the page and CLI offer by name (any torchvision.models builder works with "torchvision:NAME").
TORCHVISION_MODELS = ("vgg16", "googlenet", "resnet50", "resnet18", "resnet152", "alexnet")


class RFError(ValueError):
    """A problem the user can fix (input too small, a model that cannot be traced), said in plain words."""


# --------------------------------------------------------------------------------------------------------------------
# One axis of one feature map


@dataclass(frozen=True)
class _Axis:
    jump: float
    max_r: float      # largest RF over all paths, and its left edge for unit 0
    max_lo: float
    min_r: float      # smallest RF over all paths, and its left edge for unit 0
    min_lo: float
    lo: float         # union over all paths for unit 0: [lo, hi]
    hi: float
    fixed: bool = False  # every unit sees the same region (after global pooling / flatten)

    @staticmethod
    def input() -> "_Axis":
        return _Axis(1, 1, 0, 1, 0, 0, 0)

    def layer(self, k: int, s: float, p: float, d: int = 1) -> "_Axis":
        """Apply a conv/pool-like layer (Distill eq. for r, j and the left edge u)."""
        keff = d * (k - 1) + 1
        j = self.jump
        if self.fixed:  # the region no longer moves with the unit; only the lattice spacing changes
            return _Axis(j * s, self.max_r, self.max_lo, self.min_r, self.min_lo, self.lo, self.hi, True)
        return _Axis(j * s, self.max_r + (keff - 1) * j, self.max_lo - p * j,
                     self.min_r + (keff - 1) * j, self.min_lo - p * j,
                     self.lo - p * j, self.hi + (keff - 1 - p) * j)

    def whole(self, n: int) -> "_Axis":
        """Global pooling / flatten over n units: each output sees all n input units' RFs."""
        out = self.layer(n, n, 0)
        return _Axis(out.jump, out.max_r, out.max_lo, out.min_r, out.min_lo, out.lo, out.hi, True)

    @property
    def start(self) -> float:
        return self.max_lo + (self.max_r - 1) / 2


def _merge_axes(axes: Sequence[_Axis]) -> tuple[_Axis, list[str]]:
    """Where paths meet (add, mul, cat): max/min over paths, union of the boxes."""
    notes = []
    jumps = {a.jump for a in axes}
    if len(jumps) > 1:
        notes.append("branches arrive with different effective strides "
                     f"({', '.join(_fmt(j) for j in sorted(jumps))} px): not aligned (Distill) — "
                     "using the coarsest; the box is approximate")
    centres = {a.max_lo + (a.max_r - 1) / 2 for a in axes if not a.fixed}
    if len(centres) > 1 and len(jumps) == 1:
        notes.append("branch RF centres differ by "
                     f"{_fmt(max(centres) - min(centres))} px (their boxes are not concentric)")
    big = max(axes, key=lambda a: (a.max_r, -a.max_lo))
    small = min(axes, key=lambda a: (a.min_r, a.min_lo))
    fixed = any(a.fixed for a in axes)
    if fixed and not all(a.fixed for a in axes):
        notes.append("a branch that already sees the whole input (global pooling) joins here")
    return _Axis(max(jumps), big.max_r, big.max_lo, small.min_r, small.min_lo,
                 min(a.lo for a in axes), max(a.hi for a in axes), fixed), notes


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.2f}"


def _num(x: float) -> int | float:
    return int(x) if float(x).is_integer() else round(float(x), 3)


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[-1])) if len(v) else (1, 1)
    return int(v), int(v)


# --------------------------------------------------------------------------------------------------------------------
# Results


@dataclass
class LayerRF:
    """One row of the table: a traced node that produces a tensor."""

    index: int
    name: str
    node: str              # the fx node name (for effective_rf)
    op: str                # input | conv | pool | add | cat | pass | global | flatten | linear | slice | pad | opaque
    type: str
    kernel: tuple[int, int] | None
    stride: tuple[float, float] | None
    padding: tuple[float, float] | None
    dilation: tuple[int, int] | None
    out_size: tuple[int, int] | None    # (H, W); None once the spatial part has ended (flatten, linear)
    channels: int | None
    jump: tuple[float, float]
    rf_max: tuple[float, float]
    rf_min: tuple[float, float]
    start: tuple[float, float]          # centre of unit (0,0)'s largest RF, in input px (Distill's "start")
    box_lo: tuple[float, float]         # union box of unit (0,0), input px; may lie outside the image (padding)
    box_hi: tuple[float, float]
    min_lo: tuple[float, float]
    fixed: bool = False                 # every unit sees the same (whole-input) region
    spatial: bool = True
    note: str = ""

    @property
    def geometric(self) -> bool:
        """Rows that change the RF or merge paths (what the chart and the short table show)."""
        return self.op not in ("pass", "linear")

    def to_dict(self) -> dict:
        def one(v):  # square models give plain numbers; a 1x7 kernel gives [h, w]
            if v is None:
                return None
            a, b = _num(v[0]), _num(v[1])
            return a if a == b else [a, b]

        return {"index": self.index, "name": self.name, "op": self.op, "type": self.type,
                "kernel": one(self.kernel), "stride": one(self.stride), "padding": one(self.padding),
                "dilation": one(self.dilation),
                "out_size": list(self.out_size) if self.out_size is not None else None,
                "channels": self.channels, "jump": one(self.jump), "rf_max": one(self.rf_max),
                "rf_min": one(self.rf_min), "start": one(self.start), "box_lo": one(self.box_lo),
                "box_hi": one(self.box_hi), "whole_input": self.fixed, "note": self.note}


@dataclass
class RFTable:
    model: str
    input_size: tuple[int, int]
    layers: list[LayerRF]
    notes: list[str] = field(default_factory=list)
    leaves: list[str] = field(default_factory=list)   # submodules fx could not trace into

    def to_records(self) -> list[dict]:
        return [row.to_dict() for row in self.layers]

    def layer(self, name: str) -> LayerRF:
        for row in self.layers:
            if row.name == name or row.node == name:
                return row
        raise KeyError(f"no layer named {name!r}; layers: {', '.join(r.name for r in self.layers[:8])} …")

    @property
    def final(self) -> LayerRF:
        """The last layer that still has a spatial map (what the classifier head sees)."""
        spatial = [r for r in self.layers if r.spatial and not r.fixed and r.op != "input"]
        return spatial[-1] if spatial else self.layers[-1]

    def exceeding(self) -> list[LayerRF]:
        """Layers whose largest RF is bigger than the image ("RF is more than the size of the image!")."""
        h, w = self.input_size
        return [r for r in self.layers if r.rf_max[0] > h or r.rf_max[1] > w]

    def box(self, name: str, position: tuple[int, int] | None = None, clip: bool = True) -> dict:
        """The input region output unit ``position`` (row, col; default the centre) of a layer can see.

        Returns ``{"top","bottom","left","right"}`` (inclusive px) for the union box, the same for the
        smallest path (``min_*``), and whether clipping to the image cut it.
        """
        row = self.layer(name)
        pos = position if position is not None else self.centre_unit(name)
        out = {}
        for axis, (a, b) in enumerate((("top", "bottom"), ("left", "right"))):
            shift = 0 if row.fixed else pos[axis] * row.jump[axis]
            lo, hi = row.box_lo[axis] + shift, row.box_hi[axis] + shift
            mlo = row.min_lo[axis] + shift
            mhi = mlo + row.rf_min[axis] - 1
            size = self.input_size[axis]
            out[a], out[b] = lo, hi
            out["min_" + a], out["min_" + b] = mlo, mhi
            if clip:
                out[a], out[b] = max(lo, 0), min(hi, size - 1)
                out["min_" + a], out["min_" + b] = max(mlo, 0), min(mhi, size - 1)
        out["clipped"] = bool(clip and (row.box_lo[0] + (0 if row.fixed else pos[0] * row.jump[0]) < 0
                                        or out["bottom"] < row.box_hi[0] + (0 if row.fixed else pos[0] * row.jump[0])
                                        or row.box_lo[1] + (0 if row.fixed else pos[1] * row.jump[1]) < 0
                                        or out["right"] < row.box_hi[1] + (0 if row.fixed else pos[1] * row.jump[1])))
        out["position"] = tuple(pos)
        return {k: _num(v) if isinstance(v, float) else v for k, v in out.items()}

    def centre_unit(self, name: str) -> tuple[int, int]:
        row = self.layer(name)
        if row.out_size is None:
            return (0, 0)
        return (row.out_size[0] - 1) // 2, (row.out_size[1] - 1) // 2


# --------------------------------------------------------------------------------------------------------------------
# Building models by name


def load_model(name: str, device: str | torch.device = "cpu") -> nn.Module:
    """A registry model (``resnet20``) or a torchvision one (``torchvision:vgg16``), with untrained weights.

    ``device="meta"`` builds the architecture without allocating or initialising weights: enough for the
    analytic table and ~10x faster for big torchvision models.
    """
    name = str(name).strip()
    with torch.device(device):
        if name.startswith("torchvision:"):
            import torchvision

            arch = name.split(":", 1)[1].strip()
            # Only registered classification builders: torchvision.models also exports helpers (get_model,
            # list_models), classes (ResNet) and weight enums that are callable but not models.
            builders = torchvision.models.list_models(module=torchvision.models)
            if arch not in builders:
                raise RFError(f"torchvision has no model builder called {safe_text(arch, 60)!r}. Valid names: "
                              + ", ".join(builders) + " (e.g. torchvision:vgg16)")
            builder = torchvision.models.get_model_builder(arch)
            kwargs = {"weights": None}
            if arch in ("googlenet", "inception_v3"):
                kwargs.update(aux_logits=False, init_weights=True)
            return builder(**kwargs)

        try:
            return models.build(name)
        except ValueError as exc:
            raise RFError(f"{exc}; or use torchvision:NAME (e.g. torchvision:vgg16)") from None


# --------------------------------------------------------------------------------------------------------------------
# Tracing


def _trace(model: nn.Module) -> tuple[Any, list[str], list[str]]:
    """fx-trace ``model``; submodules that fail to trace are retried as opaque leaves (innermost first)."""
    import torch.fx as fx

    leaves: set[str] = set()
    notes: list[str] = []

    class Tracer(fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return qualname in leaves or super().is_leaf_module(m, qualname)

    for _ in range(64):
        tracer = Tracer()
        try:
            graph = tracer.trace(model)
        except Exception as exc:  # fx raises TraceError, TypeError, RuntimeError... for untraceable Python
            stack = [v for v in tracer.module_stack.values() if v[0]]
            culprit = next((q for q, _t in reversed(stack) if q not in leaves), None)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            if culprit is None:
                raise RFError(f"torch.fx cannot trace {type(model).__name__}.forward itself ({first}). "
                              "The receptive field needs the graph; rewrite the data-dependent Python "
                              "(if/for on tensor values) in that forward.") from None
            module_type = type(model.get_submodule(culprit)).__name__
            leaves.add(culprit)
            notes.append(f"torch.fx cannot trace inside '{culprit}' ({module_type}: {first}); "
                         "it is treated as one layer and its geometry is estimated from input gradients")
            continue
        gm = fx.GraphModule(tracer.root, graph)
        gm._rf_scopes = dict(tracer.node_name_to_scope)
        return gm, sorted(leaves), notes
    raise RFError("torch.fx could not trace this model even with its submodules as opaque leaves")


def _first_param(model: nn.Module) -> torch.Tensor | None:
    param = next(iter(model.parameters()), None)
    return param if param is not None else next(iter(model.buffers()), None)


class _ModeGuard:
    """Eval mode during analysis (BN with batch 1, no aux heads), then each module's own mode back."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modes = [(m, m.training) for m in model.modules()]

    def __enter__(self):
        self.model.eval()
        return self

    def __exit__(self, *exc):
        for m, mode in self.modes:
            m.training = mode


def _tensor_args(node) -> list:
    import torch.fx as fx

    found: list = []
    fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n))
    return found


def _propagate(gm, x: torch.Tensor) -> dict[str, Any]:
    """Run the graph once, keeping each node's output metadata (shape for tensors, value for small non-tensors)."""
    import torch.fx as fx

    meta: dict[str, Any] = {}

    class Recorder(fx.Interpreter):
        def call_module(self, target, args, kwargs):
            # Shapes are all we need: skip running layers that cannot change them (BN on the meta device
            # goes through a slow Python decomposition; this halves the time for resnet152).
            if isinstance(self.submodules[target], _SHAPE_PRESERVING) and args \
                    and isinstance(args[0], torch.Tensor) and len(args) == 1 and not kwargs:
                return args[0]
            return super().call_module(target, args, kwargs)

        def run_node(self, n):
            try:
                result = super().run_node(n)
            except Exception as exc:
                raise _NodeFailure(n, exc) from exc
            meta[n.name] = result if not isinstance(result, torch.Tensor) else _TensorMeta(result)
            if isinstance(result, torch.Tensor) and result.dim() == 4 and 0 in result.shape[2:]:
                raise _NodeFailure(n, RuntimeError(f"output size {tuple(result.shape[2:])}"))
            return result

    with torch.no_grad():
        Recorder(gm).run(x)
    return meta


_SHAPE_PRESERVING = (nn.modules.batchnorm._BatchNorm, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU,
                     nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.ELU, nn.Mish, nn.Identity, nn.Dropout, nn.Dropout2d,
                     nn.GroupNorm, nn.LocalResponseNorm)


class _TensorMeta:
    __slots__ = ("shape", "dim")

    def __init__(self, t: torch.Tensor) -> None:
        self.shape = tuple(t.shape)
        self.dim = t.dim()


class _NodeFailure(Exception):
    def __init__(self, node, exc: Exception) -> None:
        super().__init__(str(exc))
        self.node, self.exc = node, exc


# --------------------------------------------------------------------------------------------------------------------
# Per-op geometry

_ADAPTIVE = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_FUNCTIONAL_POOLS = {"max_pool2d", "avg_pool2d", "max_pool2d_with_indices", "lp_pool2d", "_max_pool2d"}


def _fn_name(target) -> str:
    return getattr(target, "__name__", str(target))


def _call_args(node, names: Sequence[str], defaults: dict) -> dict:
    """Positional + keyword arguments of a call_function node, by parameter name (skipping the input)."""
    values = dict(defaults)
    for name, value in zip(names, node.args[1:]):
        values[name] = value
    values.update({k: v for k, v in node.kwargs.items() if k in names})
    return values


def _same_padding(k: tuple[int, int], d: tuple[int, int]) -> tuple[int, int]:
    # PyTorch's padding="same" puts the smaller half on the left/top.
    return tuple((d[i] * (k[i] - 1)) // 2 for i in range(2))  # type: ignore[return-value]


def _conv_geometry(kernel, stride, padding, dilation) -> tuple:
    k, s, d = _pair(kernel), _pair(stride), _pair(dilation)
    if isinstance(padding, str):
        p = _same_padding(k, d) if padding == "same" else (0, 0)
    else:
        p = _pair(padding)
    return k, s, p, d


def _slice_geometry(index, in_shape) -> tuple | None:
    """``x[:, :, a::s, b::t]``: kernel 1, stride s, left edge moved by a. None if not a plain spatial slice."""
    if not isinstance(index, tuple):
        index = (index,)
    if any(i is Ellipsis for i in index) or len(index) > 4:
        return None
    k, s, p = [1, 1], [1, 1], [0, 0]
    for dim, item in enumerate(index):
        if dim < 2:
            if not (isinstance(item, slice) and item == slice(None)) and dim == 1 and not isinstance(item, slice):
                return None
            continue
        if not isinstance(item, slice):
            return None
        size = in_shape[dim]
        start, _stop, step = item.indices(size)
        s[dim - 2], p[dim - 2] = step, -start
    return tuple(k), tuple(s), tuple(p), (1, 1)


def _adaptive_geometry(in_hw, out_hw) -> tuple:
    """Adaptive pooling: exact when the input divides evenly (k = s = n/o); else the widest bin."""
    k, s = [], []
    for n, o in zip(in_hw, out_hw):
        if n % o == 0:
            k.append(n // o)
            s.append(n // o)
        else:
            k.append(max(math.ceil((i + 1) * n / o) - (i * n) // o for i in range(o)))
            s.append(n / o)
    return tuple(k), tuple(s), (0, 0), (1, 1)


def _probe(fn, in_shape, out_shape, dtype, device) -> tuple | None:
    """Geometry of an opaque layer from where one centre output unit's input gradient is non-zero."""
    if str(device) == "meta":
        return None
    x = (torch.rand(in_shape, dtype=dtype, device=device) + 0.5).requires_grad_(True)
    with torch.enable_grad():
        y = fn(x)
        if not isinstance(y, torch.Tensor) or y.dim() != 4:
            return None
        ci, cj = (y.shape[2] - 1) // 2, (y.shape[3] - 1) // 2
        y[:, :, ci, cj].abs().sum().backward()
    g = x.grad.abs().sum(dim=(0, 1))
    rows = torch.nonzero(g.sum(1)).flatten()
    cols = torch.nonzero(g.sum(0)).flatten()
    if len(rows) == 0 or len(cols) == 0:
        return None
    k, s, p = [], [], []
    for support, c, n, o in ((rows, ci, in_shape[2], out_shape[2]), (cols, cj, in_shape[3], out_shape[3])):
        a, b = int(support[0]), int(support[-1])
        stride = max(1, round(n / o))
        k.append(b - a + 1)
        s.append(stride)
        p.append(c * stride - a)
    return tuple(k), tuple(s), tuple(p), (1, 1)


# --------------------------------------------------------------------------------------------------------------------
# The analysis


def _classify(gm, node, meta, modules) -> tuple[str, str, tuple | None]:
    """(op, type name, geometry (k, s, p, d) or None) for one node."""
    out = meta.get(node.name)
    tensor_in = [a for a in _tensor_args(node) if isinstance(meta.get(a.name), _TensorMeta)]
    spatial_in = [a for a in tensor_in if meta[a.name].dim == 4]
    in_shape = meta[spatial_in[0].name].shape if spatial_in else None
    out4 = isinstance(out, _TensorMeta) and out.dim == 4

    if in_shape is None:  # after flatten: no spatial map left to change
        tname = type(modules[node.target]).__name__ if node.op == "call_module" else _fn_name(node.target)
        return ("linear" if tname in ("Linear", "linear") else "pass"), tname, None
    if node.op == "call_module":
        return _classify_module(modules[node.target], in_shape, out, out4)
    if node.op in ("call_function", "call_method"):
        return _classify_function(node, meta, in_shape, spatial_in, out, out4)
    return "pass", node.op, None


def _classify_module(m, in_shape, out, out4: bool) -> tuple[str, str, tuple | None]:
    """``_classify`` for a call to a submodule (Conv2d, MaxPool2d, BN, padding, a user's own module ...)."""
    tname = type(m).__name__
    if isinstance(m, (nn.Conv2d,)):
        return "conv", tname, _conv_geometry(m.kernel_size, m.stride, m.padding, m.dilation)
    if isinstance(m, nn.MaxPool2d):
        return "pool", tname, _conv_geometry(m.kernel_size, m.stride or m.kernel_size, m.padding, m.dilation)
    if isinstance(m, (nn.AvgPool2d, nn.LPPool2d)):
        pad = getattr(m, "padding", 0)
        return "pool", tname, _conv_geometry(m.kernel_size, m.stride or m.kernel_size, pad, 1)
    if isinstance(m, _ADAPTIVE) and in_shape is not None and out4:
        if out.shape[2:] == (1, 1):
            return "global", tname, None
        return "pool", tname, _adaptive_geometry(in_shape[2:], out.shape[2:])
    if isinstance(m, nn.Flatten):
        return ("flatten" if in_shape is not None and not out4 else "pass"), tname, None
    if isinstance(m, nn.Linear):
        return ("linear" if in_shape is None else "pass"), tname, None
    builtin = type(m).__module__.startswith("torch.nn")
    if in_shape is not None and out4 and out.shape[2:] == in_shape[2:] and builtin \
            and not _has_spatial_weights(m):
        return "pass", tname, None  # BN, activations, dropout, 1x1 convs ... (a user's own module is probed)
    if in_shape is not None and out4 and isinstance(m, (nn.ConstantPad2d, nn.ZeroPad2d, nn.ReflectionPad2d,
                                                        nn.ReplicationPad2d)):
        l, r, t, b = _pad4(m.padding)
        return "pad", tname, ((1, 1), (1, 1), (t, l), (1, 1))
    if in_shape is not None and not out4:
        return "flatten", tname, None
    return "opaque", tname, None


def _classify_function(node, meta, in_shape, spatial_in, out, out4: bool) -> tuple[str, str, tuple | None]:
    """``_classify`` for a function or method call (F.conv2d, pooling, slicing, add/cat where paths meet ...)."""
    target = node.target
    fname = _fn_name(target)
    if node.op == "call_function" and fname in ("conv2d",) and len(node.args) > 1:
        weight = meta.get(getattr(node.args[1], "name", ""))
        a = _call_args(node, ["weight", "bias", "stride", "padding", "dilation", "groups"],
                       {"stride": 1, "padding": 0, "dilation": 1})
        if isinstance(weight, _TensorMeta):
            return "conv", "conv2d", _conv_geometry(weight.shape[2:], a["stride"], a["padding"], a["dilation"])
    if fname in _FUNCTIONAL_POOLS:
        a = _call_args(node, ["kernel_size", "stride", "padding", "dilation"],
                       {"stride": None, "padding": 0, "dilation": 1})
        if fname.startswith("avg") or fname.startswith("lp"):
            a["dilation"] = 1
        return "pool", fname, _conv_geometry(a["kernel_size"], a["stride"] or a["kernel_size"], a["padding"],
                                             a["dilation"])
    if fname in ("adaptive_avg_pool2d", "adaptive_max_pool2d") and in_shape is not None and out4:
        if out.shape[2:] == (1, 1):
            return "global", fname, None
        return "pool", fname, _adaptive_geometry(in_shape[2:], out.shape[2:])
    if fname in ("mean", "amax", "sum", "max", "amin") and in_shape is not None and not out4:
        return "global", fname, None
    if fname in ("mean", "amax", "sum") and in_shape is not None and out4 and out.shape[2:] == (1, 1) \
            and in_shape[2:] != (1, 1):
        return "global", fname, None
    if fname == "getitem" and in_shape is not None and out4 and node.args and node.args[0] is spatial_in[0]:
        geo = _slice_geometry(node.args[1], in_shape)
        if geo is not None:
            return ("pass" if geo[1] == (1, 1) and geo[2] == (0, 0) else "slice"), "slice", geo
    if fname == "pad" and in_shape is not None and out4:
        pads = node.args[1] if len(node.args) > 1 else node.kwargs.get("pad")
        if isinstance(pads, (tuple, list)) and all(isinstance(v, int) for v in pads):
            l, r, t, b = (list(pads) + [0, 0, 0, 0])[:4]
            return ("pass" if (l, t) == (0, 0) and out.shape[2:] == in_shape[2:] else "pad"), "pad", \
                ((1, 1), (1, 1), (t, l), (1, 1))
    if len(spatial_in) > 1:  # add, mul, cat, stack, ...: paths meet
        if out4 and all(meta[a.name].shape[2:] == out.shape[2:] for a in spatial_in):
            return ("cat" if fname in ("cat", "concat", "stack") else "add"), fname, None
    if in_shape is not None and not out4 and isinstance(out, _TensorMeta):
        return "flatten", fname, None
    if in_shape is not None and out4 and out.shape[2:] == in_shape[2:]:
        return "pass", fname, None
    if in_shape is not None and out4:
        return "opaque", fname, None
    return "pass", fname, None


def _pad4(padding) -> tuple[int, int, int, int]:
    if isinstance(padding, int):
        return padding, padding, padding, padding
    return tuple(padding)  # type: ignore[return-value]


def _has_spatial_weights(m: nn.Module) -> bool:
    return any(p.dim() >= 4 and p.shape[-1] * p.shape[-2] > 1 for p in m.parameters())


def _size_message(gm, failure: _NodeFailure, size: tuple[int, int], names: dict, smallest: int | None) -> str:
    node = failure.node
    label = names.get(node.name, node.name)
    what = type(gm.get_submodule(node.target)).__name__ if node.op == "call_module" else _fn_name(node.target)
    text = str(failure.exc).strip().splitlines()[0].rstrip(".") if str(failure.exc).strip() \
        else type(failure.exc).__name__
    if _too_small(failure):
        hint = f" The smallest input that works is {smallest}×{smallest} px." if smallest else \
            " Use a larger input size."
        return (f"A {size[0]}×{size[1]} input is too small for this model: layer '{label}' ({what}) would "
                f"shrink its feature map to 0×0 ({text}).{hint}")
    return (f"Layer '{label}' ({what}) fails on a {size[0]}×{size[1]} input: {text}. "
            "This model may only accept some input sizes (the CIFAR models expect 32 px).")


def _too_small(failure: _NodeFailure) -> bool:
    lower = str(failure.exc).lower()
    return any(w in lower for w in ("too small", "output size", "kernel size can't be greater", "non-positive"))


def _smallest_size(gm, size: tuple[int, int], in_channels: int, dtype, device, limit: int = 2048) -> int | None:
    """The smallest square input that gets through (doubling, then bisection), for the error message."""
    def works(n: int) -> bool:
        try:
            _propagate(gm, torch.zeros(1, in_channels, n, n, dtype=dtype, device=device))
            return True
        except _NodeFailure as failure:
            if not _too_small(failure):
                raise
            return False

    lo, hi = max(size), max(size) * 2
    try:
        while not works(hi):
            lo, hi = hi, hi * 2
            if hi > limit:
                return None
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if works(mid) else (mid, hi)
    except _NodeFailure:  # bigger inputs fail for another reason (e.g. a fixed-size classifier)
        return None
    return hi


def receptive_fields(model: nn.Module | str, input_size: int | tuple[int, int] = 32, in_channels: int = 3,
                     name: str | None = None) -> RFTable:
    """The analytic receptive field of every traced layer of ``model`` for an ``input_size`` image.

    ``model`` is an ``nn.Module`` or a name for ``load_model``. Raises ``RFError`` with a plain-words message
    for inputs that are too small or models that cannot be traced. The model itself is not run: a weightless
    twin on the meta device is traced and propagated (shapes only), so resnet152 at 224 px takes a fraction
    of a second on a CPU and the caller's model keeps its weights, mode and grads.
    """
    if isinstance(model, str):
        return _cached_table(model, _pair(input_size), in_channels, name or model)
    name = name or getattr(model, "registry_name", None) or type(model).__name__
    size = _pair(input_size)
    if min(size) < 1:
        raise RFError(f"input size must be at least 1 px, got {input_size}")

    twin = _meta_twin(model)
    table = None
    if twin is not None:
        try:
            table = _table(twin, model, size, in_channels, str(name))
        except _MetaUnsupported:
            table = None
    if table is None:  # an op without a meta kernel, or a model deepcopy cannot copy: run it for real
        with _ModeGuard(model):
            table = _table(model, model, size, in_channels, str(name))
    return table


_TABLES: "OrderedDict[tuple, RFTable]" = OrderedDict()
_TABLES_LOCK = threading.Lock()
_TABLES_MAX = 64


def _cached_table(model: str, size: tuple[int, int], in_channels: int, name: str) -> RFTable:
    """A named model's table depends only on (model, input size, channels): trace it once per process. Callers get
    a copy, so editing a returned table cannot change what the next caller sees."""
    key = (model, size, in_channels, name)
    with _TABLES_LOCK:
        hit = _TABLES.get(key)
        if hit is not None:
            _TABLES.move_to_end(key)
            return copy.deepcopy(hit)
    table = receptive_fields(load_model(model, device="meta"), size, in_channels, name=name)
    with _TABLES_LOCK:
        _TABLES[key] = copy.deepcopy(table)
        while len(_TABLES) > _TABLES_MAX:
            _TABLES.popitem(last=False)
    return table


class _MetaUnsupported(Exception):
    pass


def _meta_twin(model: nn.Module) -> nn.Module | None:
    """A copy of ``model`` whose parameters and buffers live on the meta device (no memory, no compute)."""
    import copy

    param = _first_param(model)
    if param is not None and param.device.type == "meta":
        twin = model
    else:
        memo: dict[int, Any] = {}
        for p in model.parameters():
            memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
        for b in model.buffers():
            memo[id(b)] = torch.empty_like(b, device="meta")
        try:
            twin = copy.deepcopy(model, memo)
        except Exception:
            return None
    if twin is not model:
        twin.eval()
    return twin


def _table(shape_model: nn.Module, real_model: nn.Module, size, in_channels: int, name: str) -> RFTable:
    param = _first_param(shape_model)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    with _ModeGuard(shape_model):
        gm, leaves, notes = _trace(shape_model)
        names = _readable_names(gm, getattr(gm, "_rf_scopes", {}))
        x = torch.zeros(1, in_channels, *size, dtype=dtype, device=device)
        try:
            meta = _propagate(gm, x)
        except _NodeFailure as failure:
            if device.type == "meta" and _first_param(real_model) is not None \
                    and _first_param(real_model).device.type != "meta":
                raise _MetaUnsupported() from None  # confirm (and word) the failure on the real model
            smallest = _smallest_size(gm, size, in_channels, dtype, device) if _too_small(failure) else None
            raise RFError(_size_message(gm, failure, size, names, smallest)) from None
        modules = dict(gm.named_modules())
        rows = _analyse(gm, meta, modules, names, real_model, notes)
    return RFTable(model=name, input_size=size, layers=rows, notes=notes, leaves=leaves)


def _readable_names(gm, scopes: dict) -> dict[str, str]:
    """Module paths for module calls ('layer1.0.conv1'), scope + op for functions ('layer1.0.add')."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for node in gm.graph.nodes:
        if node.op == "call_module":
            label = str(node.target)
        elif node.op == "placeholder":
            label = "input"
        else:
            base = node.name.rstrip("0123456789").rstrip("_") or node.name
            scope = scopes.get(node.name, ("", None))[0]
            label = f"{scope}.{base}" if scope else node.name
        if label in used:
            i = 1
            while f"{label}_{i}" in used:
                i += 1
            label = f"{label}_{i}"
        used.add(label)
        out[node.name] = label
    return out


def _analyse(gm, meta, modules, names, real_model, notes) -> list[LayerRF]:
    states: dict[str, tuple[_Axis, _Axis, bool]] = {}  # node -> (axis H, axis W, still spatial)
    rows: list[LayerRF] = []

    for node in gm.graph.nodes:
        out = meta.get(node.name)
        if node.op == "placeholder":
            states[node.name] = (_Axis.input(), _Axis.input(), True)
            rows.append(_row(len(rows), names[node.name], node.name, "input", "input", None, states[node.name],
                             out, ""))
            continue
        if node.op in ("output", "get_attr") or not isinstance(out, _TensorMeta):
            continue
        ins = [a for a in _tensor_args(node) if a.name in states]
        if not ins:  # constants, weights fetched with get_attr
            continue
        op, tname, geo = _classify(gm, node, meta, modules)
        note = ""
        in_states = [states[a.name] for a in ins]
        spatial_states = [s for a, s in zip(ins, in_states) if s[2] and meta[a.name].dim == 4]
        if len(spatial_states) > 1 or op in ("add", "cat"):
            hs, nh = _merge_axes([s[0] for s in (spatial_states or in_states)])
            ws, nw = _merge_axes([s[1] for s in (spatial_states or in_states)])
            note = "; ".join(dict.fromkeys(nh + nw))
            base = (hs, ws, True)
            if op not in ("add", "cat"):
                op = "cat" if tname in ("cat", "concat", "stack") else "add"
        else:
            base = (spatial_states or in_states)[0]
        h, w, spatial = base
        if not spatial:
            states[node.name] = (h, w, False)
            rows.append(_row(len(rows), names[node.name], node.name, "linear" if op == "linear" else "pass",
                             tname, None, states[node.name], out, note))
            continue

        if op == "opaque":
            geo = _probe_node(gm, node, meta, real_model)
            if geo is None:
                note = _join(note, "opaque layer: geometry unknown, passed through unchanged (RF may be larger)")
            else:
                note = _join(note, "opaque layer: kernel/stride/padding estimated from input-gradient support")
        if op in ("global", "flatten"):
            in_meta = meta[ins[0].name]
            n_h, n_w = in_meta.shape[2], in_meta.shape[3]
            h, w = h.whole(n_h), w.whole(n_w)
            if op == "global":
                note = _join(note, f"global pooling over the {n_h}×{n_w} map: the RF covers the whole input image")
            else:
                note = _join(note, "flatten: the spatial part ends here; every feature sees the whole input image")
            states[node.name] = (h, w, op == "global" and out.dim == 4)
        elif geo is not None:
            k, s, p, d = geo
            states[node.name] = (h.layer(k[0], s[0], p[0], d[0]), w.layer(k[1], s[1], p[1], d[1]), True)
        else:
            states[node.name] = (h, w, True)
        rows.append(_row(len(rows), names[node.name], node.name, op, tname, geo, states[node.name], out, note))
    return rows


def _probe_node(gm, node, meta, real_model) -> tuple | None:
    """Run one opaque node for real (its own module from the real model; random stand-ins for other tensor
    inputs: only where the gradient is non-zero matters) and read its geometry off the gradient support."""
    import torch.fx as fx

    param = _first_param(real_model)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    if device.type == "meta":
        return None
    inputs = [a for a in _tensor_args(node) if isinstance(meta.get(a.name), _TensorMeta)]
    spatial = [a for a in inputs if meta[a.name].dim == 4]
    if len(spatial) != 1:
        return None
    target = spatial[0]
    stand_in = {a.name: torch.rand(meta[a.name].shape, dtype=dtype, device=device) for a in inputs}

    def fn(x):
        args, kwargs = fx.node.map_arg((node.args, node.kwargs),
                                       lambda n: x if n is target else stand_in.get(n.name, n))
        if node.op == "call_module":
            module = real_model.get_submodule(node.target)
            with _ModeGuard(module):
                return module(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        return node.target(*args, **kwargs)

    try:
        return _probe(fn, meta[target.name].shape, meta[node.name].shape, dtype, device)
    except Exception:
        return None


def _join(a: str, b: str) -> str:
    return f"{a}; {b}" if a else b


def _row(index, name, node, op, tname, geo, state, out, note) -> LayerRF:
    h, w, spatial = state
    k = s = p = d = None
    if geo is not None:
        k, s, p, d = geo
    out_size = tuple(out.shape[2:4]) if spatial and isinstance(out, _TensorMeta) and out.dim == 4 else None
    channels = out.shape[1] if isinstance(out, _TensorMeta) and out.dim >= 2 else None
    return LayerRF(
        index=index, name=name, node=node, op=op, type=tname, kernel=k, stride=s, padding=p, dilation=d,
        out_size=out_size, channels=channels, jump=(h.jump, w.jump), rf_max=(h.max_r, w.max_r),
        rf_min=(h.min_r, w.min_r), start=(h.start, w.start), box_lo=(h.lo, w.lo), box_hi=(h.hi, w.hi),
        min_lo=(h.min_lo, w.min_lo), fixed=h.fixed or w.fixed, spatial=spatial, note=note,
    )


# --------------------------------------------------------------------------------------------------------------------
# Effective receptive field


def _truncated(gm, node_name: str):
    """A GraphModule that stops at ``node_name`` and returns its output."""
    import torch.fx as fx

    graph = fx.Graph()
    env: dict = {}
    target = None
    for node in gm.graph.nodes:
        if node.op == "output":
            break
        env[node] = graph.node_copy(node, lambda n: env[n])
        if node.name == node_name:
            target = env[node]
            break
    if target is None:
        raise KeyError(f"no node {node_name!r} in the traced graph")
    graph.output(target)  # nodes after the target were never copied; unused branches before it cost little
    return fx.GraphModule(gm, graph)


def effective_rf(model: nn.Module, images: torch.Tensor, layer: str, position: tuple[int, int] | None = None,
                 table: RFTable | None = None) -> dict:
    """Luo et al.'s effective RF: mean |d unit / d input| over ``images`` for one output unit of ``layer``.

    ``images``: float (N, C, H, W), already normalised, on the model's device. ``layer`` is a row name of
    ``receptive_fields(model, H)`` (or its fx node name). ``position`` (row, col) defaults to the centre unit.
    Returns ``{"heatmap": (H, W) float numpy array scaled to max 1, "raw": unscaled mean |grad|,
    "position": (row, col), "layer": name}``. The model's train/eval flags and parameters' grads are untouched.
    """
    import numpy as np

    if images.dim() != 4:
        raise ValueError("images must be a (N, C, H, W) batch")
    table = table or receptive_fields(model, tuple(images.shape[2:]), in_channels=images.shape[1])
    row = table.layer(layer)
    pos = position if position is not None else table.centre_unit(row.name)
    with _ModeGuard(model):
        gm, _leaves, _notes = _trace(model)
        sub = _truncated(gm, row.node)
        params = list(model.parameters())
        saved = [p.requires_grad for p in params]
        try:
            for p in params:  # only d/d input is needed: skip weight grads (faster, leaves .grad alone)
                p.requires_grad_(False)
            x = images.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                y = sub(x)
                if y.dim() == 4:
                    if not (0 <= pos[0] < y.shape[2] and 0 <= pos[1] < y.shape[3]):
                        raise RFError(f"position {tuple(pos)} is outside layer '{row.name}' "
                                      f"({y.shape[2]}×{y.shape[3]} units)")
                    # Luo et al.: gradient signal 1 at one spatial position (every channel), 0 elsewhere.
                    unit = y[:, :, pos[0], pos[1]].sum()
                else:
                    unit = y.reshape(y.shape[0], -1).sum()
                (grad,) = torch.autograd.grad(unit, x)
        finally:
            for p, flag in zip(params, saved):
                p.requires_grad_(flag)
    raw = grad.abs().mean(dim=(0, 1)).double().cpu().numpy()
    peak = raw.max()
    heat = raw / peak if peak > 0 else raw
    return {"heatmap": heat.astype(np.float32), "raw": raw, "position": tuple(int(v) for v in pos),
            "layer": row.name}


def erf_extent(heatmap, centre: tuple[float, float], mass: float = 0.9) -> int:
    """Side (px) of the smallest square around ``centre`` holding ``mass`` of the heatmap's total.

    A single number for "how big is the effective RF": compare it with the analytic rf_max.
    """
    import numpy as np

    h = np.asarray(heatmap, dtype=np.float64)
    total = h.sum()
    if total <= 0:
        return 0
    cy, cx = centre
    rows, cols = np.arange(h.shape[0])[:, None], np.arange(h.shape[1])[None, :]
    dist = np.maximum(np.abs(rows - cy), np.abs(cols - cx))  # Chebyshev distance: squares around the centre
    order = np.argsort(dist, axis=None, kind="stable")
    cum = np.cumsum(h.flatten()[order])
    idx = int(np.searchsorted(cum, mass * total))
    radius = dist.flatten()[order][min(idx, len(order) - 1)]
    return int(round(2 * radius + 1))
