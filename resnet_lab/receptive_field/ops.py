"""Per-op geometry: the kernel, stride, padding and dilation of each traced node (convs, pools, slices, adaptive pools,
functional calls), or a probe with input gradients for what cannot be read off.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from resnet_lab.receptive_field.table import _pair
from resnet_lab.receptive_field.trace import _tensor_args, _TensorMeta

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
