"""What the analysis returns: one axis of a feature map in input-pixel coordinates (jump, rf, lo/hi of the largest- and
smallest-RF paths, the union box), a layer's row (``LayerRF``) and the whole table (``RFTable``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence


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
