"""The Receptive Field page's tables, figures, texts and cached computations, built from
resnet_lab.receptive_field results. The page (pages/receptive_field.py) lays them out."""

from __future__ import annotations

import numpy as np
import streamlit as st

from resnet_lab import receptive_field as rf
from resnet_lab.runs import RunStore
from resnet_lab.transforms import normalize_batch

TORCHVISION = [f"torchvision:{n}" for n in ("vgg16", "googlenet", "resnet50")]
ERF_MASS = 0.9
BOX_COLOR, MIN_BOX_COLOR = "#00e5ff", "#ffd400"  # bright enough on any photo and on the heatmap


def px(v) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.1f}"


# ------------------------------------------------------------------------------------------ cached computations

@st.cache_data(show_spinner="Tracing the model with torch.fx …", max_entries=32)
def rf_table(model: str, size: int) -> tuple[rf.RFTable | None, str | None]:
    try:
        return rf.receptive_fields(model, size), None
    except rf.RFError as exc:
        return None, str(exc)


@st.cache_resource(show_spinner="Building the model …", max_entries=4)
def _random_model(name: str):
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return rf.load_model(name).eval()


@st.cache_resource(show_spinner="Loading the trained weights …", max_entries=4)
def _trained_model(run_id: str, stamp: float):
    return RunStore().get(run_id).load_model("cpu").eval()


def trained_runs(name: str) -> list:
    try:
        return [r for r in RunStore().list() if r.has_checkpoint and r.config.get("model") == name]
    except Exception:  # an unreadable runs folder must not break this page
        return []


@st.cache_data(show_spinner="Back-propagating from one unit …", max_entries=64)
def erf_map(name: str, run_id: str | None, stamp: float, side: int, layer: str, pos: tuple, n: int,
            source: str, _data) -> np.ndarray:
    """``source`` names the data in the cache key; ``_data`` (not hashed: it is large) is that Dataset or None."""
    model = _trained_model(run_id, stamp) if run_id else _random_model(name)
    return rf.effective_rf(model, erf_batch(_data, side, n), layer, pos, table=rf_table(name, side)[0])["heatmap"]


def display_image(data, index: int, side: int) -> np.ndarray:
    """The chosen test image as uint8 HWC at the model's input size (bilinear upscaling for 224-px models)."""
    import torch
    import torch.nn.functional as F

    img = data.test_x[index] if data is not None else np.full((32, 32, 3), 128, np.uint8)
    if side == img.shape[0]:
        return img
    t = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    t = F.interpolate(t, size=(side, side), mode="bilinear", align_corners=False)
    return t[0].permute(1, 2, 0).clamp(0, 255).round().to(torch.uint8).numpy()


def erf_batch(data, side: int, n: int):
    """n test images (one per class first), normalised like training, at the model's input size; noise without
    data."""
    import torch
    import torch.nn.functional as F

    if data is None:
        return torch.randn(n, 3, side, side)
    picks = [int(np.flatnonzero(data.test_y == c)[0]) for c in range(data.num_classes)
             if (data.test_y == c).any()]
    picks = (picks * ((n // max(len(picks), 1)) + 1))[:n] if picks else list(range(n))
    x = normalize_batch(data.test_x[picks], data.mean, data.std)
    if side != x.shape[-1]:
        x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
    return x


# --------------------------------------------------------------------------------------------- the table

def depth_figure(table: rf.RFTable, size: int):
    """RF max and min along the layers that change the RF, with the image size as a line."""
    import plotly.graph_objects as go

    rows = [r for r in table.layers if r.geometric and r.spatial and not r.fixed]
    x = list(range(len(rows)))
    hover = [f"{r.name} ({r.type})<br>RF max {px(r.rf_max[0])} · min {px(r.rf_min[0])} · jump {px(r.jump[0])}"
             for r in rows]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x, y=[r.rf_max[0] for r in rows], mode="lines+markers", name="RF max (longest path)",
                             hovertext=hover, hoverinfo="text", line={"color": "#1f77b4", "width": 3}))
    fig.add_trace(go.Scatter(x=x, y=[r.rf_min[0] for r in rows], mode="lines+markers", name="RF min (shortest path)",
                             hovertext=hover, hoverinfo="text", line={"color": "#2ca02c", "dash": "dot"}))
    over = [i for i, r in enumerate(rows) if r.rf_max[0] > size]
    if over:
        fig.add_trace(go.Scatter(x=over, y=[rows[i].rf_max[0] for i in over], mode="markers",
                                 name="RF larger than the image", hovertext=[hover[i] for i in over], hoverinfo="text",
                                 marker={"color": "#d62728", "size": 11, "symbol": "circle-open",
                                         "line": {"width": 2.5}}))
    fig.add_hline(y=size, line={"color": "#d62728", "dash": "dash"}, annotation_text=f"image: {size} px",
                  annotation_position="top left")
    fig.update_layout(height=380, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      legend={"orientation": "h", "y": 1.08, "x": 0},
                      xaxis_title="depth (layers that change the RF, in order)", yaxis_title="receptive field (px)")
    step = max(1, len(rows) // 12)
    fig.update_xaxes(tickvals=x[::step], ticktext=[rows[i].name for i in x[::step]], tickangle=-35)
    return fig


def layer_frame(table: rf.RFTable, size: int, show_all: bool):
    """The per-layer table as a pandas Styler: rows whose RF exceeds the image tinted red."""
    import pandas as pd

    def pair(v):
        if v is None:
            return ""
        a, b = v
        return px(a) if a == b else f"{px(a)}×{px(b)}"

    rows = [{"layer": r.name, "op": r.op, "type": r.type, "kernel": pair(r.kernel), "stride": pair(r.stride),
             "padding": pair(r.padding), "output": f"{r.out_size[0]}×{r.out_size[1]}" if r.out_size else "—",
             "jump": pair(r.jump), "RF max": r.rf_max[0], "RF min": r.rf_min[0], "start": r.start[0],
             "> image": "yes" if r.rf_max[0] > size else "", "note": r.note}
            for r in table.layers if show_all or r.geometric]

    def highlight(row):
        return ["background-color: rgba(214, 39, 40, 0.13)" if row["> image"] else "" for _ in row]

    return (pd.DataFrame(rows).style.apply(highlight, axis=1)
            .format({"RF max": "{:g}", "RF min": "{:g}", "start": "{:g}"}))


# -------------------------------------------------------------------------------------------------- one unit

def default_layer(spatial_rows: list, size: int) -> str:
    """Where the lesson is: the first layer that sees at least half the image (box and blob both visible)."""
    half = [r.name for r in spatial_rows if r.rf_max[0] >= size / 2]
    return half[0] if half else spatial_rows[-1].name


def unit_centre(row, pos: tuple) -> tuple:
    """Centre of unit ``pos``'s RF in input pixels (a fixed-size layer's units all share one)."""
    return (row.start[0] + (0 if row.fixed else pos[0] * row.jump[0]),
            row.start[1] + (0 if row.fixed else pos[1] * row.jump[1]))


def unit_caption(row, box: dict, layer: str, pos: tuple, side: int) -> str:
    return (f"Unit ({pos[0]}, {pos[1]}) of `{layer}`: rows {box['top']}–{box['bottom']}, cols "
            f"{box['left']}–{box['right']} of the {side}-px input. Cyan: longest path; dashed yellow: "
            f"shortest path ({px(row.rf_min[0])} px).")


def box_shapes(box: dict, side: int, dim: bool = False) -> list[dict]:
    """The RF box (longest path, solid) and the shortest path's box (dashed); ``dim`` darkens what is outside."""
    x0, x1, y0, y1 = box["left"] - 0.5, box["right"] + 0.5, box["top"] - 0.5, box["bottom"] + 0.5
    shapes = []
    if dim:
        lo, hi = -0.5, side - 0.5
        for r in ((lo, hi, lo, y0), (lo, hi, y1, hi), (lo, x0, y0, y1), (x1, hi, y0, y1)):
            if r[1] > r[0] and r[3] > r[2]:
                shapes.append({"type": "rect", "x0": r[0], "x1": r[1], "y0": r[2], "y1": r[3], "line": {"width": 0},
                               "fillcolor": "rgba(0,0,0,0.55)"})
    shapes.append({"type": "rect", "x0": x0, "x1": x1, "y0": y0, "y1": y1, "line": {"color": BOX_COLOR, "width": 3}})
    shapes.append({"type": "rect", "x0": box["min_left"] - 0.5, "x1": box["min_right"] + 0.5,
                   "y0": box["min_top"] - 0.5, "y1": box["min_bottom"] + 0.5,
                   "line": {"color": MIN_BOX_COLOR, "width": 2, "dash": "dash"}})
    return shapes


def _pixel_axes(fig, shape: tuple) -> None:
    """Image axes: hidden, one unit per pixel, row 0 at the top, square pixels."""
    fig.update_xaxes(visible=False, range=[-0.5, shape[1] - 0.5])
    fig.update_yaxes(visible=False, range=[shape[0] - 0.5, -0.5], scaleanchor="x")


def image_figure(img: np.ndarray, box: dict, centre: tuple, title: str):
    import plotly.graph_objects as go

    fig = go.Figure(go.Image(z=img, hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=[centre[1]], y=[centre[0]], mode="markers", hoverinfo="skip",
                             marker={"symbol": "x", "size": 12, "color": BOX_COLOR}))
    fig.update_layout(shapes=box_shapes(box, img.shape[0], dim=True), title={"text": title, "font": {"size": 14}},
                      height=340, margin={"l": 0, "r": 0, "t": 40, "b": 0}, showlegend=False)
    _pixel_axes(fig, img.shape)
    return fig


def colorize(heat: np.ndarray) -> np.ndarray:
    """Heatmap (0..1) -> uint8 RGB with the Inferno colours (drawn as an image: no chart theme can restyle it)."""
    from plotly.colors import hex_to_rgb, sequential

    anchors = np.array([hex_to_rgb(c) for c in sequential.Inferno], dtype=np.float64)
    pos = np.clip(heat, 0, 1) * (len(anchors) - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(anchors) - 1)
    frac = (pos - lo)[..., None]
    return (anchors[lo] * (1 - frac) + anchors[hi] * frac).round().astype(np.uint8)


def erf_figure(heat: np.ndarray, box: dict, centre: tuple, weights: str, image: np.ndarray | None = None):
    """The effective RF (titled with the size that holds ERF_MASS of it) on its own, or drawn over ``image`` (a
    darkened photo with the hot part on top). ``weights``: "random weights" or "trained"."""
    import plotly.graph_objects as go

    extent = rf.erf_extent(heat, centre, ERF_MASS)
    rgb = colorize(heat)
    if image is not None:
        alpha = np.clip(heat, 0, 1)[..., None] ** 0.6
        rgb = (0.45 * image * (1 - alpha) + rgb * alpha).round().astype(np.uint8)
    fig = go.Figure(go.Image(z=rgb, customdata=heat,
                             hovertemplate="row %{y}, col %{x}: %{customdata:.3f}<extra></extra>"))
    title = f"Effective RF, {weights}: {int(ERF_MASS * 100)}% within {extent} px"
    fig.update_layout(shapes=box_shapes(box, heat.shape[0]), title={"text": title, "font": {"size": 14}},
                      height=340, margin={"l": 0, "r": 0, "t": 40, "b": 0})
    _pixel_axes(fig, heat.shape)
    return fig


# --------------------------------------------------------------------------------------------------- 224 px

def imagenet_text(resnet50_rf: int, vgg16_rf: int | None) -> str:
    """Why torchvision's resnet50 RF differs from the one Distill lists for resnet_v1_50."""
    # He et al.'s bottleneck puts the stride-2 on a downsampling block's first 1x1 conv; torchvision ("v1.5") on
    # its 3x3. With the stride first, that 3x3 already works at the stage's new jump: 2·(j_new − j_old) more px
    # per stage.
    shift = sum(2 * (new - old) for old, new in ((4, 8), (8, 16), (16, 32)))
    return (
        "The same picture blown up to 224 px and fed to an ImageNet network. torchvision's `resnet50` reaches "
        f"**{resnet50_rf} px** at its last stage (jump 32) over its longest path — about {resnet50_rf / 224:.1f}× "
        f"the image. Distill's table lists **{resnet50_rf + shift} px** for `resnet_v1_50`, and He et al.'s own "
        "layout gives the same: the paper puts a stage's stride 2 on the *first 1×1* conv of its first block, "
        "torchvision ('ResNet v1.5') on that block's *3×3* conv. With the stride first, the 3×3 already works at "
        "the new, coarser jump, which adds 2·(8−4) + 2·(16−8) + 2·(32−16) = "
        f"{shift} px over the three downsampling stages: {resnet50_rf} + {shift} = {resnet50_rf + shift}. Where "
        "the strides sit matters as much as how many layers there are."
        + (f" `vgg16` has no shortcuts: its last feature map sees {vgg16_rf} px." if vgg16_rf else "")
    )


def final_caption(name: str, final) -> str:
    """A 224-px model's last feature map in one line."""
    return (f"`{name}` at 224 px: last feature map `{final.name}` ({final.out_size[0]}×{final.out_size[1]} units, "
            f"jump {px(final.jump[0])} px): RF max {px(final.rf_max[0])} px, RF min {px(final.rf_min[0])} px. "
            "Its centre unit:")
