"""Receptive Field: how much of the image each layer can see — computed from the graph, and measured with gradients."""

from __future__ import annotations

import streamlit as st

import lab_ui
import model_file_ui
import receptive_field_ui as ui

from resnet_lab import tasks
from resnet_lab.models import files as model_files
from resnet_lab.models import is_model_file, list_models

ss = st.session_state

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
names = model_file_ui.choices(list_models()) + ui.TORCHVISION
ss.setdefault("rf_model", "custom_resnet" if "custom_resnet" in names else names[0])
ss.setdefault("rf_input_size", 224 if ss["rf_model"].startswith("torchvision:") else 32)
for key in ("rf_model", "rf_input_size"):
    ss[key] = ss[key]  # keep the choice across page switches


def on_model_change() -> None:
    ss["rf_input_size"] = 224 if ss["rf_model"].startswith("torchvision:") else 32
    for key in ("rf_layer", "rf_row", "rf_col"):
        ss.pop(key, None)


c1, c2, c3 = st.columns([2, 1, 3], vertical_alignment="bottom")
c1.selectbox("Model", names, key="rf_model", on_change=on_model_change, format_func=model_file_ui.shown,
             help="Registry models are built for 32-px CIFAR images; torchvision ones (no weights downloaded) for "
                  "224-px ImageNet images; yours (checked on Data & Models) for 32-px images.")
c2.number_input("Input size (px)", min_value=1, max_value=1024, step=8, key="rf_input_size")
model_name, size = ss["rf_model"], int(ss["rf_input_size"])
in_worker = is_model_file(model_name) and not model_files.may_run_here()
if in_worker:  # a student's file on a class server: traced in a job's worker, never in this process
    found = lab_ui.computed("rf_table", tasks.rf_table, f"the receptive fields of {model_file_ui.shown(model_name)}",
                            "rf_file", spec=model_name, size=size)
    if found is None:
        st.stop()
    table, error = found
else:
    table, error = ui.rf_table(model_name, size)
if error:
    st.error(error, icon=":material/error:")
    st.stop()
c3.caption(f"{len(table.layers)} traced layers, {sum(r.geometric for r in table.layers)} of which change the RF "
           "or merge branches.")
for note in table.notes:
    st.warning(note, icon=":material/warning:")

final = table.final
exceed = [r for r in table.exceeding() if r.spatial and not r.fixed]
px = ui.px
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
if exceed:
    st.markdown(f":red[**RF is more than the size of the image!**] From layer `{exceed[0].name}` on, one unit's "
                f"RF ({px(exceed[0].rf_max[0])} px) is larger than the {size}-px input.")

st.plotly_chart(ui.depth_figure(table, size), key="rf_depth_chart")
show_all = st.checkbox("Show every layer (BN, ReLU, … keep the RF unchanged)", key="rf_all")
styled = ui.layer_frame(table, size, show_all)
st.dataframe(styled, hide_index=True, width="stretch", height=min(38 + 35 * len(styled.data), 460),
             column_config={"note": st.column_config.TextColumn(width="large")})
st.caption("Per layer along one side: kernel k, stride s, padding p; **jump** = product of the strides so far; "
           "**RF** grows by (k−1)·jump at each layer (Araujo et al., Distill 2019); **start** = centre of the first "
           "unit's RF in input pixels (negative: it lies in the padding). Where branches meet (add, cat), RF max "
           "follows the longest path and RF min the shortest.")

# ------------------------------------------------------------------------------------------------ one unit
st.header("Where does one unit look?", divider="gray")
data = lab_ui.data_or_none()


def unit_view(name: str, side: int, tab, layer: str, pos: tuple, image_index: int, prefix: str,
              auto: bool) -> None:
    """Three panels: the RF box on an image, the effective RF at random init, and with trained weights."""
    row = tab.layer(layer)
    box = tab.box(layer, pos)
    centre = ui.unit_centre(row, pos)
    n = 16 if side <= 64 else 2
    runs = ui.trained_runs(name) if not name.startswith("torchvision:") else []
    cols = st.columns(3)
    with cols[0]:
        clipped = " (cut by the border)" if box["clipped"] else ""
        st.plotly_chart(ui.image_figure(ui.display_image(data, image_index, side), box, centre,
                                        f"Analytic RF: {px(row.rf_max[0])} px{clipped}"),
                        key=f"{prefix}_img", config={"displayModeBar": False})
        st.caption(ui.unit_caption(row, box, layer, pos, side))
    if is_model_file(name) and not model_files.may_run_here():
        cols[1].info("The effective RF runs your network's code; on this class server that happens only in job "
                     "workers, so this view is left out here. The analytic RF above is complete.",
                     icon=":material/lock:")
        return
    source = lab_ui.data_source()
    go_now = auto or st.session_state.get(f"{prefix}_erf_go", False)
    overlay = ui.display_image(data, image_index, side) if ss.get("rf_overlay", True) else None
    with cols[1]:
        if go_now:
            heat = ui.erf_map(name, None, 0.0, side, layer, tuple(pos), n, source, data)
            st.plotly_chart(ui.erf_figure(heat, box, centre, "random weights", overlay),
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
            st.info(f"No trained `{model_file_ui.shown(name)}` in the runs store yet. Train one on the **Train** page to see how "
                    "training reshapes the effective RF; until then, random weights only.", icon=":material/info:")
        elif go_now:
            labels = [r.label for r in runs]
            pick = st.selectbox("Trained run", labels, key=f"{prefix}_run")
            run = runs[labels.index(pick)]
            stamp = run.checkpoint_path.stat().st_mtime
            heat = ui.erf_map(name, run.id, stamp, side, layer, tuple(pos), n, source, data)
            st.plotly_chart(ui.erf_figure(heat, box, centre, "trained", overlay),
                            key=f"{prefix}_erf_trained", config={"displayModeBar": False})


spatial_rows = [r for r in table.layers if r.spatial and not r.fixed and r.op != "input" and r.geometric]
if not spatial_rows:
    st.info("This model has no spatial layers to look into.")
    st.stop()
layer_names = [r.name for r in spatial_rows]
if ss.get("rf_layer") not in layer_names:
    ss["rf_layer"] = ui.default_layer(spatial_rows, size)


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
r50, _ = ui.rf_table("torchvision:resnet50", 224)
vgg, _ = ui.rf_table("torchvision:vgg16", 224)
if r50 is not None:
    st.markdown(ui.imagenet_text(int(round(r50.final.rf_max[0])),
                                 int(round(vgg.final.rf_max[0])) if vgg is not None else None))
ss.setdefault("rf_tv_model", "torchvision:resnet50")
ss["rf_tv_model"] = ss["rf_tv_model"]
t1, t2 = st.columns([1, 3], vertical_alignment="bottom")
t1.selectbox("ImageNet model", ui.TORCHVISION, key="rf_tv_model")
tv_name = ss["rf_tv_model"]
tv_table, tv_error = ui.rf_table(tv_name, 224)
if tv_error:
    st.error(tv_error)
else:
    t2.caption(ui.final_caption(tv_name, tv_table.final))
    unit_view(tv_name, 224, tv_table, tv_table.final.name, tv_table.centre_unit(tv_table.final.name),
              int(ss["rf_image"]), "rf_tv", auto=False)
