"""Activations: the feature maps a trained network computes for one image, layer by layer."""

from __future__ import annotations

import numpy as np
import streamlit as st

import inspect_ui as ui
import lab_ui
from resnet_lab import inspect as I

lab_ui.page_intro(
    "Activations",
    idea="Every convolution turns the image into a stack of **feature maps**: one channel per filter, each a small "
         "picture of *where* that filter found its pattern. Early layers keep the full 32×32 grid and answer "
         "simple questions (an edge, a colour); each stride or pooling halves the grid, and the units of deeper "
         "layers see more of the image (their receptive field) and answer more abstract ones.",
    try_="Pick a test image and compare the first stage with the last. Switch the grid between the **strongest "
         "channels** and **all channels**. Upload a photo of your own, then one of something that is none of the "
         "ten classes.",
    notice="How the maps shrink (32×32 → 16×16 → 8×8 → 4×4 for `custom_resnet`) while the channels multiply "
           "(64 → 512), and how many units are exactly zero after a ReLU (the *active* percentage). Early maps "
           "still look like the image; late ones do not.",
)

run = ui.pick_run(need_checkpoint=True)
ctx = ui.run_context(run, need_model=True, need_rf=True)
layers = {layer.name: layer for layer in ctx.layers}

left, right = st.columns([1, 2], gap="large")
with left:
    choice = ui.pick_image(ctx, "act")

ui.defaults_for_run(run, "act", {"act_layers": [n for n in ctx.stages[:1] + ctx.stages[-1:] if n in layers]})
with right:
    chosen = st.multiselect(
        "Layers", list(layers), key="act_layers", max_selections=4,
        format_func=lambda n: layers[n].label,
        help="Every convolution, block and stage of the model, in forward order (name · type · channels×height×"
             "width). A forward hook records each chosen layer's output; the hooks are removed right after.")
    c1, c2, c3 = st.columns(3)
    mode = c1.radio("Show", ["Strongest channels", "All channels"], key="act_mode",
                    help="Strongest: the channels with the largest mean activation for this image.")
    scale = c2.radio("Colour scale", ["Each map", "Whole layer"], key="act_scale",
                     help="Each map: every tile stretched to its own min..max (shows every pattern). Whole layer: "
                          "one scale for all tiles (weak channels look dark).")
    if mode == "Strongest channels":
        k = c3.slider("How many", 4, 64, 16, step=4, key="act_k")
        per_page = None
    else:
        per_page = c3.selectbox("Per page", [32, 64, 128], key="act_per_page")
        k = None

if choice is None:
    st.stop()

try:
    acts = I.activations(ctx.model, choice["image"], chosen, ctx.mean, ctx.std)
except I.InspectError as exc:
    st.error(str(exc))
    st.stop()

with left:
    ui.show_image(choice, ctx, acts.probs)
    ui.top5_chart(acts.probs, ctx.classes, choice["label"], key="act_top5")
    if choice["row"] is not None:
        stored = ctx.pred["probs"][choice["row"]]
        if int(np.argmax(stored)) != int(np.argmax(acts.probs)):
            st.caption("The stored prediction differs from this forward pass (the run was evaluated with "
                       "test-time augmentation or in another precision).")
    st.caption(f"Forward pass with {len(chosen)} hook(s): {acts.seconds * 1000:.0f} ms on the CPU.")

if not chosen:
    with right:
        st.info("Choose at least one layer above.")
    st.stop()

with right:
    for name in chosen:
        fmap = acts.maps[name]
        c, h, w = fmap.shape
        stats = I.channel_stats(fmap)
        st.subheader(f"`{name}`", divider="gray")
        st.caption(f"Output {c} × {h} × {w} (channels × height × width) · {layers[name].type}")
        m1, m2, m3, m4 = st.columns(4)
        m1.metric("Channels", f"{c}", help="One feature map per filter of this layer.")
        m2.metric("Map size", f"{h}×{w}", help="Positions per channel; the input is 32×32.")
        m3.metric("Receptive field", ui.rf_text(ctx, name),
                  help="How many input pixels one unit of this layer can see (analytic, from the Receptive "
                       "Field module); the image is 32×32 px.")
        m4.metric("Active units", f"{100 * float((fmap > 0).mean()):.0f}%",
                  help=f"Share of all {c * h * w:,} units above zero (mean activation {float(fmap.mean()):.3f}). "
                       "After a ReLU the rest are exactly 0.")
        if mode == "Strongest channels":
            channels = I.top_channels(fmap, k)
            caption = f"The {len(channels)} channels (of {c}) with the largest mean activation, strongest first."
        else:
            pages = max(1, -(-c // per_page))
            page = st.number_input(f"Page (1–{pages})", 1, pages, 1, key=f"act_page_{name}") if pages > 1 else 1
            channels = np.arange((page - 1) * per_page, min(page * per_page, c))
            caption = f"Channels {channels[0]}–{channels[-1]} of {c}, in order."
        grid = I.feature_grid(fmap, channels, cols=8, cell=64,
                              scale="layer" if scale == "Whole layer" else "channel")
        st.image(grid)
        st.caption(caption + f" Each tile is one {h}×{w} map; bright = high (viridis colour map).")
        with st.expander(f"Per-channel statistics ({len(channels)} shown)"):
            rows = [{"channel": int(ch), "mean": float(stats["mean"][ch]), "std": float(stats["std"][ch]),
                     "min": float(stats["min"][ch]), "max": float(stats["max"][ch]),
                     "active %": 100 * float(stats["active"][ch])} for ch in channels]
            st.dataframe(rows, hide_index=True, width="stretch",
                         column_config={"active %": st.column_config.ProgressColumn("active %", min_value=0,
                                                                                      max_value=100, format="%.0f%%")})
