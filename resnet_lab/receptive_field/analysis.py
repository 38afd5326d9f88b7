"""``receptive_fields(model, size)``: composes the per-op geometry along the traced graph into the analytic RF of every
layer (max and min over paths, union box), cached per model.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from resnet_lab.receptive_field.ops import _classify, _fn_name, _probe
from resnet_lab.receptive_field.table import _Axis, _merge_axes, _pair, LayerRF, RFError, RFTable
from resnet_lab.receptive_field.trace import (
    _first_param,
    _ModeGuard,
    _NodeFailure,
    _propagate,
    _tensor_args,
    _TensorMeta,
    _trace,
    load_model,
)


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
