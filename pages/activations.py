"""Activations: the feature maps a trained network computes for one image, layer by layer."""

from __future__ import annotations

import numpy as np
import streamlit as st

import inspect_ui as ui
import lab_ui

from resnet_lab import channels as C
from resnet_lab import inspect as I
from resnet_lab.channels import examples_job
from resnet_lab.models.files import display_name

lab_ui.page_intro(
    "Activations",
    idea="Every convolution turns the image into a stack of **feature maps**: one channel per filter, each a small "
         "picture of *where* that filter found its pattern. Early layers keep the full 32×32 grid and answer "
         "simple questions (an edge, a colour); each stride or pooling halves the grid, and the units of deeper "
         "layers see more of the image (their receptive field) and answer more abstract ones.",
    try_="Pick a test image and compare the first stage with the last. Switch the grid between the **strongest "
         "channels** and **all channels**. Upload a photo of your own, then one of something that is none of the "
         "ten classes.",
    notice="How the maps shrink while the channels multiply (the numbers for the network shown are right below), "
           "and how many units are exactly zero after a ReLU (the *active* percentage). Early maps still look like "
           "the image; late ones do not. At the bottom: what single channels respond to across the whole test set.",
)

run = ui.pick_run(need_checkpoint=True)
ctx = ui.run_context(run, need_model=True, need_rf=True)
layers = {layer.name: layer for layer in ctx.layers}
shapes = [layers[n].shape for n in ctx.stages if n in layers]
if shapes:
    sizes = " → ".join(dict.fromkeys(f"{h}×{w}" for _, h, w in shapes))
    widths = " → ".join(dict.fromkeys(str(c) for c, _, _ in shapes))
    st.caption(f"In `{display_name(run.config.get('model'))}` the stages' maps go {sizes} positions while the channels go "
               f"{widths}.")

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

# ------------------------------------------------------------------------------------------- channel examples
CHEX_JOB = "chex_job"


def _start_examples(layer: str) -> None:
    import functools

    fn = functools.partial(examples_job, run_path=str(run.path), reference=bool(run.reference), layer=layer,
                           source=ctx.source)
    job = lab_ui.job_registry().start("channels", fn, owner=lab_ui.session_owner(), owner_name=lab_ui.display_name(),
                                      title=f"channel examples · {run.id} · {layer}")
    st.session_state[CHEX_JOB] = job.id


def channel_examples_section() -> None:
    st.header("What one channel responds to", divider="gray")
    n = len(ctx.pred["labels"])
    st.markdown(f"A single feature map answers one question about one image. To see what a **channel** looks for, "
                f"run all {n:,} test images through the network once and keep, for every channel, the "
                f"{C.TOP_K} images on which its strongest unit fires hardest — OpenAI Microscope's *dataset "
                "examples*. The colour over each image is that channel's map: *where* it fired.")
    spatial = [name for name, layer in layers.items() if min(layer.shape[1:]) > 1]
    default = ctx.stages[-1] if ctx.stages and ctx.stages[-1] in spatial else spatial[-1]
    ui.defaults_for_run(run, "chex", {"chex_layer": default})
    c1, c2, c3 = st.columns([2, 1, 1])
    layer = c1.selectbox("Layer", spatial, key="chex_layer", format_func=lambda n_: layers[n_].label,
                         help="Early layers: colours and edges. Late layers: parts and textures that come with a "
                              "class.")
    found = C.cached(run, layer, n)
    registry = lab_ui.job_registry()
    job = registry.get(st.session_state.get(CHEX_JOB))
    if found is None:
        running = job is not None and job.active
        c2.button(f"Find the top {C.TOP_K} per channel", key="chex_start", type="primary", disabled=running,
                  on_click=_start_examples, args=(layer,), icon=":material/search:",
                  help=f"One pass over {n:,} test images up to `{layer}` (a background job: the page stays usable).")
        st.caption(f"Not computed yet for `{layer}`. The pass runs once per run and layer; the result is cached.")
        if job is not None:
            _job_panel(job.id)
        return
    channels = found.channels
    order_by = c2.radio("Order", ["strongest first", "by number"], key="chex_order",
                        help="strongest first: channels sorted by their best activation on the test set.")
    order = np.argsort(-found.scores[:, 0], kind="stable") if order_by == "strongest first" else np.arange(channels)
    per_page = 4
    pages = -(-channels // per_page)
    page = c3.number_input(f"Page (1–{pages})", 1, pages, 1, key="chex_page")
    shown = order[(page - 1) * per_page: page * per_page]
    for ch in shown:
        rows, maps = found.rows[ch], found.maps[ch]
        top = float(maps.max()) if maps.size else 0.0
        names = [ctx.classes[int(ctx.pred["labels"][r])] for r in rows]
        counts = {c: names.count(c) for c in dict.fromkeys(names)}
        st.markdown(f"**Channel {int(ch)}** · strongest activation {found.scores[ch, 0]:.2f} · "
                    + ", ".join(f"{c} ×{k}" if k > 1 else c for c, k in counts.items()))
        cols = st.columns(len(rows))
        for col, r, fmap in zip(cols, rows, maps):
            heat = np.clip(fmap / top, 0, 1) if top > 0 else np.zeros_like(fmap)
            col.image(I.overlay(ctx.images[int(r)], heat, 0.45, size=96), width=96)
    st.caption(f"Channels {', '.join(str(int(c)) for c in shown)} of {channels} at `{layer}` "
               f"({layers[layer].shape[1]}×{layers[layer].shape[2]} maps), each over its {C.TOP_K} most exciting "
               f"test images of {found.n_images:,}; the colour scale is shared within a channel (red = its "
               "strongest unit). A channel whose nine images share a class, a colour or a texture has found "
               "something; one that mixes everything is harder to read.")


def _job_panel(job_id: str) -> None:
    job = lab_ui.job_registry().get(job_id)
    if job is not None:
        lab_ui.live_panel(job, lambda j: lab_ui.job_progress(j, "channel-example pass", "channels_queue",
                                                             with_title=True), 2.0)


if choice is None:
    channel_examples_section()
    st.stop()

try:
    acts = I.activations(ctx.model, choice["image"], chosen, ctx.mean, ctx.std)
except I.InspectError as exc:
    st.error(lab_ui.public(exc))
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
    channel_examples_section()
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

channel_examples_section()
