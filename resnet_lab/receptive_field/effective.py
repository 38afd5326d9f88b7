"""The effective RF (Luo et al. 2016): the input gradient of one output unit, |.| averaged over real images, and how
far it reaches.
"""

from __future__ import annotations

import torch
from torch import nn

from resnet_lab.receptive_field.analysis import receptive_fields
from resnet_lab.receptive_field.table import RFError, RFTable
from resnet_lab.receptive_field.trace import _ModeGuard, _trace

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
