"""Grad-CAM: which parts of the image a prediction depends on, at any layer, for any class."""

from __future__ import annotations

import numpy as np
import streamlit as st

import gradcam_ui as gc
import inspect_ui as ui
import lab_ui

from resnet_lab import attributions as A
from resnet_lab import explain as E
from resnet_lab import inspect as I
from resnet_lab.models.files import display_name

lab_ui.page_intro(
    "Grad-CAM and other explanations",
    idea="**Grad-CAM** (Selvaraju et al. 2017) asks: if this class's score went up, which channels of a layer "
         "would have pushed it? It weights each channel by its average gradient and sums the weighted maps, giving "
         "one coarse heat map per class. The paper keeps only the positive part (ReLU): the evidence *for* the "
         "class. The signed map also shows the evidence *against* it. Below it, other ways to explain the same "
         "prediction, two **sanity checks** that tell explanations of the model from pictures of the image, and "
         "a **faithfulness** test: does removing the pixels a map ranks first really remove the evidence?",
    try_="Open a mistake and compare the map of the **predicted** class with the map of the **true** class. Slide "
         "the opacity. Switch to the signed map. Compare the **sum** a residual stage outputs with its **branch** "
         "alone. Then scroll to the **layer sweep**, the **methods side by side**, the two **sanity checks** and the "
         "**faithfulness** scores.",
    notice="How coarse the late maps are (the sweep says how many cells each stage has); that Guided Backprop's "
           "crisp map hardly changes when the classifier's weights are replaced by random ones (it is plausible "
           "but not faithful); and that a map can look convincing and still rank pixels worse than another.",
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
                              "features that still have a spatial map. A residual stage or block outputs the sum "
                              "x + F(x) that the next layer sees; its branch F(x) alone is listed just before it.")
    cls = c2.selectbox("Class to explain", ["predicted class", *ctx.classes], key="cam_class",
                       help="The map answers: what in the image speaks for this class?")
    c3, c4, c5 = st.columns(3)
    relu = c3.toggle("ReLU (paper)", value=True, key="cam_relu",
                     help="On: only positive evidence (Selvaraju et al.). Off: the signed map, captum's default "
                          "(relu_attributions=False): red for the class, blue against it.")
    alpha = c4.slider("Opacity of the map", 0.0, 1.0, 0.35, 0.05, key="cam_alpha",
                      help="0: the image alone; 1: the map alone. At 0.35 the image still shows through the map.")
    smooth = c5.radio("Upsampling", ["smooth", "blocks"], key="cam_upsample", horizontal=True,
                      help="smooth: bilinear, as in the paper. blocks: nearest, so each cell of the layer's map is "
                           "one visible square.") == "smooth"

if choice is None:
    st.stop()

image, label = choice["image"], choice["label"]
upsample = "bilinear" if smooth else "nearest"
targets = [None if cls == "predicted class" else ctx.classes.index(cls)]
if label is not None:
    targets.append(label)  # side by side: the chosen class and the true class
try:
    cams = I.gradcams(ctx.model, image, layer, targets, ctx.mean, ctx.std, relu=relu, upsample=upsample)
except I.InspectError as exc:
    st.error(lab_ui.public(exc))
    st.stop()
probs = cams[0].probs
if label is None:  # an upload has no true class: compare with the runner-up instead
    runner_up = I.topk(probs, 2)[1][0]
    cams += I.gradcams(ctx.model, image, layer, [runner_up], ctx.mean, ctx.std, relu=relu, upsample=upsample)

with left:
    ui.show_image(choice, ctx, probs)
    ui.top5_chart(probs, ctx.classes, label, key="cam_top5")


roles = ["Predicted class" if targets[0] is None else "Chosen class",
         "True class" if label is not None else "Runner-up class"]
with right:
    cols = st.columns(2)
    for col, cam, role in zip(cols, cams, roles):
        with col:
            st.markdown(gc.cam_caption(cam, role, ctx.classes, ctx.rf))
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

# ------------------------------------------------------------------------------------------ sum or branch
branch = I.branch_of(ctx.model, layer)
if branch is not None:
    st.header("The sum or the branch?", divider="gray")
    try:
        pair = [cams[0], I.gradcam(ctx.model, image, branch, cams[0].target, mean=ctx.mean, std=ctx.std, relu=relu,
                                   upsample=upsample)]
    except I.InspectError as exc:
        st.error(lab_ui.public(exc))
        st.stop()
    st.markdown(gc.branch_text(layer, branch, ctx.classes[pair[0].target]))
    cols = st.columns(2)
    for col, cam, role in zip(cols, pair, [f"sum · `{layer}`", f"branch only · `{branch}`"]):
        with col:
            st.markdown(f"**{role}** · {cam.grid[0]}×{cam.grid[1]} cells")
            st.image(I.overlay(image, cam.normalized, alpha, signed=not relu, size=256, smooth=smooth), width=256)
            if cam.constant:
                st.info(cam.note, icon=":material/info:")
    st.caption(gc.agreement_caption(A.rank_correlation(pair[0].cells, pair[1].cells)))

# ------------------------------------------------------------------------------------------------ the sweep
st.header("Layer sweep", divider="gray")
st.markdown(f"The same image and class (**{ctx.classes[cams[0].target]}**) at every stage of `{display_name(run.config.get('model'))}`, "
            "drawn as blocks: one square per cell of the layer's map. The yellow square is the strongest cell; the "
            "white box is its receptive field — everything in the image that cell can see.")


def draw_sweep() -> None:
    if not stages:
        st.info("This model has no stage with a spatial map to sweep.")
        return
    try:
        sweep = I.layer_sweep(ctx.model, image, cams[0].target, stages, mean=ctx.mean, std=ctx.std, relu=relu)
    except I.InspectError as exc:
        st.error(lab_ui.public(exc))
        return
    per_row = min(len(sweep), 6)
    for start in range(0, len(sweep), per_row):
        cols = st.columns(per_row)
        for col, cam in zip(cols, sweep[start:start + per_row]):
            picture, caption = gc.sweep_panel(image, cam, ctx.rf, alpha, signed=not relu)
            with col:
                st.image(picture, width=gc.SWEEP_SIZE)
                st.caption(caption)


draw_sweep()
if ctx.rf is None:
    st.caption("Receptive fields are not available for this model, so no box is drawn.")

# ------------------------------------------------------------------------------------------ methods side by side
st.header(f"{len(A.METHODS)} ways to explain one prediction", divider="gray")
st.markdown(f"The same image, explained by {len(A.METHODS)} methods from [captum](https://captum.ai), for the "
            "predicted class "
            + ("and the true class" if label is not None else "and the runner-up")
            + ". Each map shows *how much* each pixel matters (its magnitude, scaled to the map's own 99th "
            "percentile), drawn over the image.")
with st.expander("What each method computes"):
    for name, about in A.ABOUT.items():
        st.markdown(f"- **{name}** — {about}")
methods = st.multiselect("Methods", list(A.METHODS), default=list(A.METHODS), key="cam_methods",
                         help="Integrated Gradients and Occlusion cost the most: dozens of forward passes each.")
if not methods:
    st.info("Choose at least one method.")
else:
    rows = gc.method_rows(cams, roles, ctx.classes)
    # A worker computes every map (seconds to a minute on a busy CPU), once per image, layer and classes for every
    # session; the page shows its progress meanwhile and reruns by itself when the maps are in.
    computed = ui.attributions(ctx, image, layer, [target for _, target in rows], tuple(methods))
    if computed is not None:
        total = 0.0
        for title, target in rows:
            maps = computed[int(target)]
            st.markdown(f"**{title}** ({probs[target]:.1%})")
            cols = st.columns(len(methods))
            for col, m in zip(cols, methods):
                total += maps[m]["seconds"]
                with col:
                    st.image(I.overlay(image, maps[m]["magnitude"], max(alpha, 0.5), size=160), width=160)
                    st.caption(f"{m} · {maps[m]['seconds'] * 1000:,.0f} ms")
        st.caption(f"All maps together took {total:.1f} s of one CPU core (computed once per image and class in a "
                   "background worker, then kept for everyone). Grad-CAM at `" + layer + "` is coarse by "
                   "construction; the gradient methods are pixel-sharp but noisy.")

# ------------------------------------------------------------------------------------------- the sanity check
st.header("Sanity check 1: do the maps depend on what the network learned?", divider="gray")
steps = A.randomisation_steps(ctx.model)
st.markdown(gc.sanity_intro(steps))
run_check = st.toggle(f"Run the check ({len(steps)} steps × {len(methods)} methods, predicted class)",
                      key="cam_sanity", help="Works on a copy of the network; the trained one is not changed.")
if run_check and methods:
    check = ui.sanity(ctx, image, layer, int(cams[0].target), tuple(methods))
    if check is not None:
        st.plotly_chart(gc.sanity_figure(check, methods), key="cam_sanity_chart", config={"displayModeBar": False})
        st.markdown(gc.sanity_text(check, methods))
        st.caption(f"The maps at every step (rows: methods; columns: steps). Took {check.seconds:.1f} s of one CPU "
                   "core in a background worker (kept for everyone who asks for the same image, layer and class).")
        for m in methods:
            cols = st.columns(len(check.steps) + 1)
            cols[0].markdown(f"**{m}**")
            for col, step, mag, r in zip(cols[1:], check.steps, check.maps[m], check.correlations[m]):
                col.image(I.overlay(image, mag, 0.6, size=96), width=96)
                col.caption(f"{step} · ρ {r:.2f}" if np.isfinite(r) else f"{step} · ρ –")
elif run_check:
    st.info("Choose at least one method above.")
measured = E.measured()
if measured is not None:
    with st.expander(gc.measured_title(measured)):
        st.markdown(gc.measured_text(measured))
        st.dataframe(gc.measured_rows(measured), hide_index=True, key="cam_measured")

# ------------------------------------------------------------------------------------ the data randomisation test
st.header("Sanity check 2: would a network that learned nothing draw the same map?", divider="gray")
st.markdown(gc.DATA_INTRO)
problem = gc.shuffled_problem(run)
if problem:
    st.info(problem, icon=":material/info:")
elif st.toggle(f"Compare with the shuffled-label network ({len(methods)} methods)", key="cam_data",
               disabled=not methods):
    got = ui.data_randomisation(ctx, image, layer, int(cams[0].target), tuple(methods))
    if got is not None:
        st.markdown(gc.data_text(got, methods))
        # One row of columns per network, so each label sits beside its own maps.
        for label, maps in (("trained", got.trained), ("shuffled labels", got.shuffled)):
            cols = st.columns(len(methods) + 1, vertical_alignment="center")
            cols[0].markdown(f"**{label}**")
            for col, m in zip(cols[1:], methods):
                col.image(I.overlay(image, maps[m], 0.6, size=96), width=96)
        cols = st.columns(len(methods) + 1)
        for col, m in zip(cols[1:], methods):
            r = got.correlations[m]
            col.caption(f"{m} · ρ {r:.2f}" if np.isfinite(r) else f"{m} · ρ –")
        st.caption(f"Took {got.seconds:.1f} s in a background worker.")

# ----------------------------------------------------------------------------------------------- faithfulness
st.header("Faithfulness: does removing what a map ranks first remove the evidence?", divider="gray")
st.markdown(gc.ROAD_INTRO)
with st.expander("What the three numbers mean"):
    for name, about in gc.ROAD_ABOUT.items():
        st.markdown(f"- **{name}** — {about}")
f1, f2 = st.columns([2, 1])
road_on = f1.toggle("Score each method with ROAD", key="cam_road", disabled=not methods)
sample = f2.number_input("... and on test images (class-balanced; 0 = only this image)", 0, 50,
                         value=10, step=2, key="cam_road_sample",
                         help="The same images as `explain --sample K`: K/10 of each class.")
if road_on and methods:
    for title, kwargs in [("This image", {"image": image, "target": int(cams[0].target)}),
                          (f"{int(sample)} test images (mean)", {"sample": int(sample)})][: 2 if sample else 1]:
        result = ui.faithfulness(ctx, layer, tuple(methods), **kwargs)
        if result is None:
            continue
        st.subheader(title)
        st.markdown(result["faithfulness"]["text"])
        st.dataframe(gc.faithfulness_rows(result), hide_index=True, key=f"cam_road_table_{kwargs.get('sample', 1)}",
                     column_config={k: st.column_config.NumberColumn(k, format="%.3f") for k in
                                    ("MoRF (lower better)", "LeRF (higher better)", "ROAD (higher better)")})
        st.plotly_chart(gc.faithfulness_figure(result), key=f"cam_road_chart_{kwargs.get('sample', 1)}",
                        config={"displayModeBar": False})
        st.caption(f"Took {result['seconds']:.1f} s in a background worker (pytorch-grad-cam's ROAD, kept for "
                   "everyone).")
