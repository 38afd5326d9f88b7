"""Receptive Field: how much of the image each layer can see — computed from the graph, and measured with gradients."""

from __future__ import annotations

import numpy as np
import streamlit as st

import lab_ui
from resnet_lab import receptive_field as rf
from resnet_lab.models import list_models

ss = st.session_state
TORCHVISION = [f"torchvision:{n}" for n in ("vgg16", "googlenet", "resnet50")]
ERF_MASS = 0.9

lab_ui.page_intro(
    "Receptive Field",
    idea="A unit of a convolutional layer sees only part of the input: its **receptive field** (RF). Each 3×3 "
         "conv adds 2 × (the spacing between the units it reads) pixels; every stride-2 layer doubles that spacing "
         "(the *jump*). In a ResNet a signal can skip blocks, so one unit has many paths to the input: the longest "
         "gives the largest RF, the shortest the smallest. The **effective** RF — where the gradient actually "
         "lands — is a soft blob much smaller than the box.",
    try_="Pick `custom_resnet` and find the first layer whose RF is larger than the 32-px image. Compare `resnet20` "
         "with `plain20` (same layers; only the shortcuts differ) and look at RF min. Then move the output unit to a "
         "corner, and switch the effective RF from random to trained weights.",
    notice="The box is cut by the image border: near the edge part of the RF is zero padding. The effective RF is "
           "Gaussian-like and concentrated in the centre (Luo et al. 2016) — the analytic number is an upper "
           "bound on what a unit uses. Training typically makes it larger.",
)

# ------------------------------------------------------------------------------------------------ the table
names = list_models() + TORCHVISION
ss.setdefault("rf_model", "custom_resnet" if "custom_resnet" in names else names[0])
ss.setdefault("rf_input_size", 224 if ss["rf_model"].startswith("torchvision:") else 32)
for key in ("rf_model", "rf_input_size"):
    ss[key] = ss[key]  # keep the choice across page switches


def on_model_change() -> None:
    ss["rf_input_size"] = 224 if ss["rf_model"].startswith("torchvision:") else 32
    for key in ("rf_layer", "rf_row", "rf_col"):
        ss.pop(key, None)


@st.cache_data(show_spinner="Tracing the model with torch.fx …", max_entries=32)
def rf_table(model: str, size: int) -> tuple[rf.RFTable | None, str | None]:
    try:
        return rf.receptive_fields(model, size), None
    except rf.RFError as exc:
        return None, str(exc)


c1, c2, c3 = st.columns([2, 1, 3], vertical_alignment="bottom")
c1.selectbox("Model", names, key="rf_model", on_change=on_model_change,
             help="Registry models are built for 32-px CIFAR images; torchvision ones (no weights downloaded) for "
                  "224-px ImageNet images.")
c2.number_input("Input size (px)", min_value=1, max_value=1024, step=8, key="rf_input_size")
model_name, size = ss["rf_model"], int(ss["rf_input_size"])
table, error = rf_table(model_name, size)
if error:
    st.error(error, icon=":material/error:")
    st.stop()
c3.caption(f"{len(table.layers)} traced layers, {sum(r.geometric for r in table.layers)} of which change the RF "
           "or merge branches.")
for note in table.notes:
    st.warning(note, icon=":material/warning:")

final = table.final
exceed = [r for r in table.exceeding() if r.spatial and not r.fixed]
first_exceed = exceed[0] if exceed else None


def px(v) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.1f}"


m1, m2, m3, m4 = st.columns(4)
m1.metric("RF, longest path", f"{px(final.rf_max[0])} px",
          help=f"Of the last feature map, layer '{final.name}': the most input pixels one unit can depend on.")
m2.metric("RF, shortest path", f"{px(final.rf_min[0])} px",
          help="Taking every shortcut: the RF if all residual branches were skipped.")
m3.metric("Jump (effective stride)", f"{px(final.jump[0])} px",
          help="Distance in input pixels between neighbouring units of the last feature map.")
m4.metric("Layers seeing > image", f"{len(exceed)}",
          help=f"RF max > {size} px (zero padding fills the rest).")
st.caption(f"Last feature map: `{final.name}`, {final.out_size[0]}×{final.out_size[1]} units.")
if first_exceed is not None:
    st.markdown(f":red[**RF is more than the size of the image!**] From layer `{first_exceed.name}` on, one unit's "
                f"RF ({px(first_exceed.rf_max[0])} px) is larger than the {size}-px input.")


def depth_figure():
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


st.plotly_chart(depth_figure(), key="rf_depth_chart")

show_all = st.checkbox("Show every layer (BN, ReLU, … keep the RF unchanged)", key="rf_all")


def table_rows() -> list[dict]:
    def pair(v, digits=0):
        if v is None:
            return ""
        a, b = v
        return px(a) if a == b else f"{px(a)}×{px(b)}"

    out = []
    for r in table.layers:
        if not show_all and not r.geometric:
            continue
        out.append({"layer": r.name, "op": r.op, "type": r.type, "kernel": pair(r.kernel), "stride": pair(r.stride),
                    "padding": pair(r.padding),
                    "output": f"{r.out_size[0]}×{r.out_size[1]}" if r.out_size else "—",
                    "jump": pair(r.jump), "RF max": r.rf_max[0], "RF min": r.rf_min[0], "start": r.start[0],
                    "> image": "yes" if r.rf_max[0] > size else "", "note": r.note})
    return out


def highlight(row):
    return ["background-color: rgba(214, 39, 40, 0.13)" if row["> image"] else "" for _ in row]


import pandas as pd  # noqa: E402  (only needed from here on)

frame = pd.DataFrame(table_rows())
st.dataframe(frame.style.apply(highlight, axis=1).format({"RF max": "{:g}", "RF min": "{:g}", "start": "{:g}"}),
             hide_index=True, width="stretch", height=min(38 + 35 * len(frame), 460),
             column_config={"note": st.column_config.TextColumn(width="large")})
st.caption("Per layer along one side: kernel k, stride s, padding p; **jump** = product of the strides so far; "
           "**RF** grows by (k−1)·jump at each layer (Araujo et al., Distill 2019); **start** = centre of the first "
           "unit's RF in input pixels (negative: it lies in the padding). Where branches meet (add, cat), RF max "
           "follows the longest path and RF min the shortest.")

# ------------------------------------------------------------------------------------------------ one unit
st.header("Where does one unit look?", divider="gray")
data = lab_ui.data_or_none()


@st.cache_resource(show_spinner="Building the model …", max_entries=4)
def random_model(name: str):
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return rf.load_model(name).eval()


@st.cache_resource(show_spinner="Loading the trained weights …", max_entries=4)
def trained_model(run_id: str, stamp: float):
    from resnet_lab.runs import RunStore

    return RunStore().get(run_id).load_model("cpu").eval()


def trained_runs(name: str) -> list:
    from resnet_lab.runs import RunStore

    try:
        return [r for r in RunStore().list() if r.has_checkpoint and r.config.get("model") == name]
    except Exception:  # an unreadable runs folder must not break this page
        return []


def display_image(index: int, side: int) -> np.ndarray:
    """The chosen test image as uint8 HWC at the model's input size (bilinear upscaling for 224-px models)."""
    import torch
    import torch.nn.functional as F

    img = data.test_x[index] if data is not None else np.full((32, 32, 3), 128, np.uint8)
    if side == img.shape[0]:
        return img
    t = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    t = F.interpolate(t, size=(side, side), mode="bilinear", align_corners=False)
    return t[0].permute(1, 2, 0).clamp(0, 255).round().to(torch.uint8).numpy()


def erf_batch(side: int, n: int):
    """n test images (one per class first), normalised like training, at the model's input size."""
    import torch
    import torch.nn.functional as F

    from resnet_lab.transforms import normalize_batch

    if data is None:
        return torch.randn(n, 3, side, side)
    picks = [int(np.flatnonzero(data.test_y == c)[0]) for c in range(data.num_classes)
             if (data.test_y == c).any()]
    picks = (picks * ((n // max(len(picks), 1)) + 1))[:n] if picks else list(range(n))
    x = normalize_batch(data.test_x[picks], data.mean, data.std)
    if side != x.shape[-1]:
        x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
    return x


@st.cache_data(show_spinner="Back-propagating from one unit …", max_entries=64)
def erf_map(name: str, run_id: str | None, stamp: float, side: int, layer: str, pos: tuple, n: int,
            source: str) -> np.ndarray:
    model = trained_model(run_id, stamp) if run_id else random_model(name)
    return rf.effective_rf(model, erf_batch(side, n), layer, pos, table=rf_table(name, side)[0])["heatmap"]


BOX_COLOR, MIN_BOX_COLOR = "#00e5ff", "#ffd400"  # bright enough on any photo and on the heatmap


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


def image_figure(img: np.ndarray, box: dict, centre: tuple, title: str):
    import plotly.graph_objects as go

    fig = go.Figure(go.Image(z=img, hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=[centre[1]], y=[centre[0]], mode="markers", hoverinfo="skip",
                             marker={"symbol": "x", "size": 12, "color": BOX_COLOR}))
    fig.update_layout(shapes=box_shapes(box, img.shape[0], dim=True), title={"text": title, "font": {"size": 14}}, height=340,
                      margin={"l": 0, "r": 0, "t": 40, "b": 0}, showlegend=False)
    fig.update_xaxes(visible=False, range=[-0.5, img.shape[1] - 0.5])
    fig.update_yaxes(visible=False, range=[img.shape[0] - 0.5, -0.5], scaleanchor="x")
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


def heat_figure(heat: np.ndarray, box: dict, title: str, image: np.ndarray | None = None):
    """The heatmap on its own, or drawn over ``image`` (a darkened photo with the hot part on top)."""
    import plotly.graph_objects as go

    rgb = colorize(heat)
    if image is not None:
        alpha = np.clip(heat, 0, 1)[..., None] ** 0.6
        rgb = (0.45 * image * (1 - alpha) + rgb * alpha).round().astype(np.uint8)
    fig = go.Figure(go.Image(z=rgb, customdata=heat,
                             hovertemplate="row %{y}, col %{x}: %{customdata:.3f}<extra></extra>"))
    fig.update_layout(shapes=box_shapes(box, heat.shape[0]), title={"text": title, "font": {"size": 14}},
                      height=340, margin={"l": 0, "r": 0, "t": 40, "b": 0})
    fig.update_xaxes(visible=False, range=[-0.5, heat.shape[1] - 0.5])
    fig.update_yaxes(visible=False, range=[heat.shape[0] - 0.5, -0.5], scaleanchor="x")
    return fig


def unit_view(name: str, side: int, tab: rf.RFTable, layer: str, pos: tuple, image_index: int, prefix: str,
              auto: bool) -> None:
    """Three panels: the RF box on an image, the effective RF at random init, and with trained weights."""
    row = tab.layer(layer)
    box = tab.box(layer, pos)
    centre = (row.start[0] + (0 if row.fixed else pos[0] * row.jump[0]),
              row.start[1] + (0 if row.fixed else pos[1] * row.jump[1]))
    n = 16 if side <= 64 else 2
    runs = trained_runs(name) if not name.startswith("torchvision:") else []
    cols = st.columns(3)
    with cols[0]:
        clipped = " (cut by the border)" if box["clipped"] else ""
        st.plotly_chart(image_figure(display_image(image_index, side), box, centre,
                                     f"Analytic RF: {px(row.rf_max[0])} px{clipped}"),
                        key=f"{prefix}_img", config={"displayModeBar": False})
        st.caption(f"Unit ({pos[0]}, {pos[1]}) of `{layer}`: rows {box['top']}–{box['bottom']}, cols "
                   f"{box['left']}–{box['right']} of the {side}-px input. Cyan: longest path; dashed yellow: "
                   f"shortest path ({px(row.rf_min[0])} px).")
    source = lab_ui.data_source()
    go_now = auto or st.session_state.get(f"{prefix}_erf_go", False)
    overlay = display_image(image_index, side) if ss.get("rf_overlay", True) else None
    with cols[1]:
        if go_now:
            heat = erf_map(name, None, 0.0, side, layer, tuple(pos), n, source)
            size90 = rf.erf_extent(heat, centre, ERF_MASS)
            st.plotly_chart(heat_figure(heat, box, f"Effective RF, random weights: {int(ERF_MASS * 100)}% "
                                                   f"within {size90} px", overlay),
                            key=f"{prefix}_erf_random", config={"displayModeBar": False})
            st.caption(f"|∂ unit / ∂ input| averaged over {n} test images and the colour channels, scaled to 1"
                       + (", drawn over the image on the left." if overlay is not None else "."))
        else:
            st.button("Compute the effective RF", key=f"{prefix}_erf_button", icon=":material/blur_on:",
                      on_click=lambda: st.session_state.update({f"{prefix}_erf_go": True}),
                      help=f"Back-propagates from this unit through {n} images at {side} px: a few seconds to "
                           "half a minute on a CPU, so it waits for you.")
    with cols[2]:
        if name.startswith("torchvision:"):
            st.info("torchvision models are built without weights here (nothing is downloaded), so there is no "
                    "trained version to compare.", icon=":material/info:")
        elif not runs:
            st.info(f"No trained `{name}` in the runs store yet. Train one on the **Train** page to see how "
                    "training reshapes the effective RF; until then, random weights only.", icon=":material/info:")
        elif go_now:
            labels = [r.label for r in runs]
            pick = st.selectbox("Trained run", labels, key=f"{prefix}_run")
            run = runs[labels.index(pick)]
            stamp = run.checkpoint_path.stat().st_mtime
            heat = erf_map(name, run.id, stamp, side, layer, tuple(pos), n, source)
            size90 = rf.erf_extent(heat, centre, ERF_MASS)
            st.plotly_chart(heat_figure(heat, box, f"Effective RF, trained: {int(ERF_MASS * 100)}% within "
                                                   f"{size90} px", overlay),
                            key=f"{prefix}_erf_trained", config={"displayModeBar": False})


spatial_rows = [r for r in table.layers if r.spatial and not r.fixed and r.op != "input" and r.geometric]
if not spatial_rows:
    st.info("This model has no spatial layers to look into.")
    st.stop()
layer_names = [r.name for r in spatial_rows]
if ss.get("rf_layer") not in layer_names:
    # Start where the lesson is: the first layer that sees at least half the image (box and blob both visible).
    half = [r.name for r in spatial_rows if r.rf_max[0] >= size / 2]
    ss["rf_layer"] = half[0] if half else layer_names[-1]


def reset_position() -> None:
    ss.pop("rf_row", None)
    ss.pop("rf_col", None)


l1, l2, l3, l4 = st.columns([3, 1, 1, 2], vertical_alignment="bottom")
l1.selectbox("Layer", layer_names, key="rf_layer", on_change=reset_position)
chosen = table.layer(ss["rf_layer"])
h, w = chosen.out_size
ss.setdefault("rf_row", (h - 1) // 2)
ss.setdefault("rf_col", (w - 1) // 2)
ss["rf_row"], ss["rf_col"] = min(int(ss["rf_row"]), h - 1), min(int(ss["rf_col"]), w - 1)
l2.number_input(f"Unit row (0–{h - 1})", min_value=0, max_value=h - 1, key="rf_row")
l3.number_input(f"Unit column (0–{w - 1})", min_value=0, max_value=w - 1, key="rf_col")
n_images = data.n_test if data is not None else 1
ss.setdefault("rf_image", 0)
l4.number_input(f"Test image (0–{n_images - 1})", min_value=0, max_value=max(n_images - 1, 0), key="rf_image")
st.checkbox("Draw the effective RF over the image", value=True, key="rf_overlay",
            help="Off: the heatmap alone, on black, where faint gradients are easier to see.")
if data is None:
    st.caption("No data: the RF box is drawn on a grey image and the effective RF is measured on noise.")
unit_view(model_name, size, table, ss["rf_layer"], (int(ss["rf_row"]), int(ss["rf_col"])), int(ss["rf_image"]),
          "rf_main", auto=size <= 64)

# ------------------------------------------------------------------------------------------------ 224 px
st.header("At ImageNet scale: a 224-px network on an upscaled CIFAR image", divider="gray")
_r50, _ = rf_table("torchvision:resnet50", 224)
_r50_rf = int(round(_r50.final.rf_max[0])) if _r50 is not None else None
_vgg, _ = rf_table("torchvision:vgg16", 224)
_vgg_rf = int(round(_vgg.final.rf_max[0])) if _vgg is not None else None
# He et al.'s bottleneck puts the stride-2 on a downsampling block's first 1x1 conv; torchvision ("v1.5") on its
# 3x3. With the stride first, that 3x3 already works at the stage's new jump: 2·(j_new − j_old) more px per stage.
_shift = sum(2 * (new_ - old_) for old_, new_ in ((4, 8), (8, 16), (16, 32)))
if _r50_rf is not None:
    st.markdown(
        f"The same picture blown up to 224 px and fed to an ImageNet network. torchvision's `resnet50` reaches "
        f"**{_r50_rf} px** at its last stage (jump 32) over its longest path — about {_r50_rf / 224:.1f}× the image. "
        f"Distill's table lists **{_r50_rf + _shift} px** for `resnet_v1_50`, and He et al.'s own layout gives the "
        "same: the paper puts a stage's stride 2 on the *first 1×1* conv of its first block, torchvision ('ResNet "
        "v1.5') on that block's *3×3* conv. With the stride first, the 3×3 already works at the new, coarser jump, "
        f"which adds 2·(8−4) + 2·(16−8) + 2·(32−16) = {_shift} px over the three downsampling stages: "
        f"{_r50_rf} + {_shift} = {_r50_rf + _shift}. Where the strides sit matters as much as how many layers there "
        "are." + (f" `vgg16` has no shortcuts: its last feature map sees {_vgg_rf} px." if _vgg_rf else "")
    )
ss.setdefault("rf_tv_model", "torchvision:resnet50")
ss["rf_tv_model"] = ss["rf_tv_model"]
t1, t2 = st.columns([1, 3], vertical_alignment="bottom")
t1.selectbox("ImageNet model", TORCHVISION, key="rf_tv_model")
tv_name = ss["rf_tv_model"]
tv_table, tv_error = rf_table(tv_name, 224)
if tv_error:
    st.error(tv_error)
else:
    tv_final = tv_table.final
    t2.caption(f"`{tv_name}` at 224 px: last feature map `{tv_final.name}` ({tv_final.out_size[0]}×"
               f"{tv_final.out_size[1]} units, jump {px(tv_final.jump[0])} px): RF max {px(tv_final.rf_max[0])} px, "
               f"RF min {px(tv_final.rf_min[0])} px. Its centre unit:")
    centre_unit = tv_table.centre_unit(tv_final.name)
    unit_view(tv_name, 224, tv_table, tv_final.name, centre_unit, int(ss["rf_image"]), "rf_tv", auto=False)
