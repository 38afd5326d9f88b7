"""Grad-CAM: which parts of the image a prediction depends on, at any layer, for any class."""

from __future__ import annotations

import streamlit as st

import inspect_ui as ui
import lab_ui
from resnet_lab import inspect as I

lab_ui.page_intro(
    "Grad-CAM",
    idea="**Grad-CAM** (Selvaraju et al. 2017) asks: if this class's score went up, which channels of a layer "
         "would have pushed it? It weights each channel by its average gradient and sums the weighted maps, giving "
         "one coarse heat map per class. The paper keeps only the positive part (ReLU): the evidence *for* the "
         "class. The signed map also shows the evidence *against* it.",
    try_="Open a mistake and compare the map of the **predicted** class with the map of the **true** class. Slide "
         "the opacity. Switch to the signed map. Then scroll to the **layer sweep**: the same question asked at "
         "every stage of the network.",
    notice="How coarse the late maps are: the last stage of `custom_resnet` is a 4×4 grid, so each cell covers "
           "8×8 pixels of the image and sees (through its receptive field) far more. A smooth-looking map is "
           "only interpolated between those cells; switch to *blocks* to see the real resolution.",
)

run = ui.pick_run(need_checkpoint=True)
ctx = ui.run_context(run, need_model=True, need_rf=True)
layers = {layer.name: layer for layer in ctx.layers}
stages = ctx.stages

left, right = st.columns([1, 2], gap="large")
with left:
    choice = ui.pick_image(ctx, "cam")

with right:
    c1, c2 = st.columns(2)
    names = list(layers)
    ui.defaults_for_run(run, "cam", {"cam_layer": stages[-1] if stages else names[-1]})
    layer = c1.selectbox("Layer", names, key="cam_layer", format_func=lambda n: layers[n].label,
                         help="Grad-CAM is usually taken at the last convolutional stage: the most abstract "
                              "features that still have a spatial map.")
    cls = c2.selectbox("Class to explain", ["predicted class", *ctx.classes], key="cam_class",
                       help="The map answers: what in the image speaks for this class?")
    c3, c4, c5 = st.columns(3)
    relu = c3.toggle("ReLU (paper)", value=True, key="cam_relu",
                     help="On: only positive evidence (Selvaraju et al.). Off: the signed map, captum's default "
                          "(relu_attributions=False): red for the class, blue against it.")
    alpha = c4.slider("Opacity of the map", 0.0, 1.0, 0.5, 0.05, key="cam_alpha")
    smooth = c5.radio("Upsampling", ["smooth", "blocks"], key="cam_upsample", horizontal=True,
                      help="smooth: bilinear, as in the paper. blocks: nearest, so each cell of the layer's map is "
                           "one visible square.") == "smooth"

if choice is None:
    st.stop()

image, label = choice["image"], choice["label"]
targets = [None if cls == "predicted class" else ctx.classes.index(cls)]
if label is not None:
    targets.append(label)  # side by side: the chosen class and the true class
try:
    cams = I.gradcams(ctx.model, image, layer, targets, ctx.mean, ctx.std, relu=relu,
                      upsample="bilinear" if smooth else "nearest")
except I.InspectError as exc:
    st.error(str(exc))
    st.stop()
probs = cams[0].probs
if label is None:  # an upload has no true class: compare with the runner-up instead
    runner_up = I.topk(probs, 2)[1][0]
    cams += I.gradcams(ctx.model, image, layer, [runner_up], ctx.mean, ctx.std, relu=relu,
                       upsample="bilinear" if smooth else "nearest")

with left:
    ui.show_image(choice, ctx, probs)
    ui.top5_chart(probs, ctx.classes, label, key="cam_top5")


def cam_caption(cam: I.CamResult, role: str) -> str:
    h, w = cam.grid
    rf = I.layer_rf(ctx.rf, cam.layer)
    seen = f"; each cell sees up to {rf['size'][0]}×{rf['size'][1]} px" if rf else ""
    return (f"{role}: **{ctx.classes[cam.target]}** ({cam.probs[cam.target]:.1%}) · `{cam.layer}` map of "
            f"{h}×{w} cells, {32 // max(h, 1)} px apart{seen}")


roles = ["Predicted class" if targets[0] is None else "Chosen class",
         "True class" if label is not None else "Runner-up class"]
with right:
    cols = st.columns(2)
    for col, cam, role in zip(cols, cams, roles):
        with col:
            st.markdown(cam_caption(cam, role))
            st.image(I.overlay(image, cam.normalized, alpha, signed=not relu, size=320, smooth=smooth),
                     width=320)
            if cam.constant:
                st.info(cam.note, icon=":material/info:")
    if label is not None and cams[0].target == label:
        st.caption("The network is right here, so both maps explain the same class.")
    legend = ("red = for the class, blue = against it, white = neutral" if not relu
              else "red = strongest evidence for the class, blue = none")
    st.caption(f"Colours: {legend}; each map is scaled to its own maximum. Grad-CAM took "
               f"{cams[0].seconds * 1000:.0f} ms per map on the CPU (captum's LayerGradCam).")

# ------------------------------------------------------------------------------------------------ the sweep
st.header("Layer sweep", divider="gray")
st.markdown(f"The same image and class (**{ctx.classes[cams[0].target]}**) at every stage of `{run.config.get('model')}`, "
            "drawn as blocks: one square per cell of the layer's map. The yellow square is the strongest cell; the "
            "white box is its receptive field — everything in the image that cell can see.")
if not stages:
    st.info("This model has no stage with a spatial map to sweep.")
    st.stop()
try:
    sweep = I.layer_sweep(ctx.model, image, cams[0].target, stages, mean=ctx.mean, std=ctx.std, relu=relu)
except I.InspectError as exc:
    st.error(str(exc))
    st.stop()
per_row = min(len(sweep), 6)
for start in range(0, len(sweep), per_row):
    cols = st.columns(per_row)
    for col, cam in zip(cols, sweep[start:start + per_row]):
        size = 192
        picture = I.overlay(image, cam.normalized, alpha, signed=not relu, size=size, smooth=False)
        box = None if cam.constant else I.cell_box(ctx.rf, cam.layer, cam.peak_cell())
        if box is not None:
            picture = I.draw_box(picture, box, color=(255, 255, 255), width=2, scale=size // 32)
        if not cam.constant:  # the strongest cell itself: its footprint on the input grid
            (r, c), (sr, sc) = cam.peak_cell(), (32 // cam.grid[0], 32 // cam.grid[1])
            picture = I.draw_box(picture, (r * sr, (r + 1) * sr - 1, c * sc, (c + 1) * sc - 1),
                                 color=(255, 221, 0), width=2, scale=size // 32)
        h, w = cam.grid
        rf = I.layer_rf(ctx.rf, cam.layer)
        with col:
            st.image(picture, width=size)
            whole = box is not None and box == (0, 31, 0, 31)
            st.caption(f"`{cam.layer}` · {h}×{w} cells" + (f" · RF {rf['size'][0]} px" if rf else "")
                       + (" (the whole image)" if whole else "") + (" · constant map" if cam.constant else ""))
if ctx.rf is None:
    st.caption("Receptive fields are not available for this model, so no box is drawn.")
