"""Depth Degradation: plain vs residual networks of growing depth (He et al. 2015, Fig. 6 and 7).

One job trains every net of a suite in the background (resnet_lab.experiments.degradation); this session keeps
only the job id. Finished suites are JSON files in the runs folder, and the project ships a pre-computed CPU result,
so the figure is on screen at once.
"""

from __future__ import annotations

import time

import streamlit as st

import lab_ui
from resnet_lab.experiments import degradation as D

JOB_KEY = "degradation_job_id"
KIND = "degradation"
POLL_S = 2.0
ss = st.session_state
cuda = lab_ui.has_cuda()

lab_ui.page_intro(
    "Depth Degradation",
    idea="Stack more layers and a network can represent *more* — a deeper net could copy a shallower one and set its "
         "extra layers to the identity. Yet He et al. (2015) found that a 56-layer **plain** network ends with a "
         "*higher training error* than a 20-layer one. That is not overfitting (the training error is worse), it is "
         "an optimisation problem: plain layers find it hard to learn the identity. A **residual** block computes "
         "`x + F(x)`, so the identity is the default (F = 0) and extra depth can only help.",
    try_="Pick a suite and start it (on a CPU: **mini**, 4–5 minutes for four nets). While it runs, discuss the "
         "figure of the pre-computed result below. Then compare: plain-20 vs plain-56 on the left, ResNet-20 vs "
         "ResNet-56 on the right. Open the per-layer panels underneath.",
    notice="Dashed lines are training error, bold lines test error. On the left the deeper plain net sits *above* the "
           "shallow one — in training error too; on the right the deeper ResNet is level with or below the shallow one. "
           "Per layer: the plain-56's responses and gradients spread over a much wider range from layer to layer "
           "than the ResNet's.",
)

if not cuda:
    mini = D.SUITES["mini"]
    st.info(f"**No GPU here.** The **mini** suite is the CPU default: the same four nets as *quick*, on "
            f"{mini.subset:,} training / {mini.test_subset:,} test images for {mini.epochs} epochs (about 4 minutes "
            "on 2 free cores). Its errors are far above the paper's and one run is noisy — look at the ordering, not "
            "the numbers. *quick* and *paper* train on all 50,000 images and are meant for a GPU (hours here).",
            icon=":material/developer_board:")

registry = lab_ui.job_registry()
owner = lab_ui.session_owner()
PALETTE = {20: "#1f77b4", 32: "#2ca02c", 44: "#9467bd", 56: "#d62728", 110: "#8c564b"}


def color(depth: int) -> str:
    return PALETTE.get(depth, "#7f7f7f")


# ------------------------------------------------------------------------------------------------ run a suite
st.header("Run a suite", divider="gray")
names = list(D.SUITES)
ss.setdefault("deg_suite", "quick" if cuda else "mini")
c1, c2 = st.columns([2, 3])
with c1:
    suite = st.selectbox("Suite", names, key="deg_suite", format_func=lambda n: D.SUITES[n].label)
s = D.SUITES[suite]
with c2:
    st.caption(s.note)
    depths_text = ", ".join(str(d) for d in s.depths)
    st.caption(f"Nets: plain and residual at depths {depths_text} · {s.epochs} epochs · batch {s.batch_size} · "
               f"SGD, momentum 0.9, weight decay 1e-4, one-cycle LR up to {s.lr_max:g} · crop + flip · seed 0")
with st.expander("Change the suite's size (epochs, images)"):
    o1, o2, o3, o4 = st.columns(4)
    epochs = o1.number_input("Epochs", min_value=1, max_value=200, value=s.epochs, step=1, key=f"deg_epochs_{suite}")
    subset = o2.number_input("Training images (0 = all)", min_value=0, value=s.subset or 0, step=500,
                             key=f"deg_subset_{suite}")
    test_subset = o3.number_input("Test images (0 = all)", min_value=0, value=s.test_subset or 0, step=500,
                                  key=f"deg_test_subset_{suite}")
    with_110 = o4.checkbox("Add 110 layers", key=f"deg_110_{suite}", disabled=suite != "paper",
                           help="The paper's deepest pair: slow, GPU only.")
if 0 < subset < 10 or 0 < test_subset < 10:
    st.error("A subset needs at least 10 images (one per class); 0 means all.", icon=":material/error:")


def _command(source: str) -> str:
    parts = ["python -m resnet_lab degradation", f"--suite {suite}"]
    if epochs != s.epochs:
        parts.append(f"--epochs {epochs}")
    if (subset or None) != s.subset:
        parts.append(f"--subset {subset}")
    if (test_subset or None) != s.test_subset:
        parts.append(f"--test-subset {test_subset}")
    if with_110 and suite == "paper":
        parts.append("--with-110")
    parts.append(f"--data {source}")
    return " ".join(parts)


def _start() -> None:
    if registry.active(owner, KIND) is not None:
        return
    source = lab_ui.data_source()
    try:
        full = lab_ui.load_data(source)
    except Exception as exc:
        ss["_deg_start_error"] = str(exc)
        return
    kwargs = dict(epochs=int(epochs), subset=int(subset), test_subset=int(test_subset),
                  include_110=bool(with_110 and suite == "paper"))
    try:
        D.suite_configs(suite, **kwargs)
    except D.DegradationError as exc:
        ss["_deg_start_error"] = str(exc)
        return
    command = _command(source)

    from resnet_lab import tasks  # a worker process runs the suite and loads the data itself

    job = registry.start(KIND, tasks.degradation, owner=owner, title=f"degradation · {suite}", suite=suite,
                         source=source, command=command, **kwargs)
    ss[JOB_KEY] = job.id


def _stop() -> None:
    job = registry.active(owner, KIND)
    if job is not None:
        job.stop()


active = registry.active(owner, KIND)
b1, b2, _ = st.columns([1, 1, 4])
b1.button("Start suite", key="deg_start", type="primary", icon=":material/play_arrow:", on_click=_start,
          disabled=active is not None or 0 < subset < 10 or 0 < test_subset < 10)
b2.button("Stop", key="deg_stop", icon=":material/stop:", on_click=_stop,
          disabled=active is None or active.status == "stopping",
          help="Ends the net in training after its current batch and skips the rest; finished nets are kept.")
if ss.get("_deg_start_error"):
    st.error(ss.pop("_deg_start_error"), icon=":material/error:")


def my_job():
    job = registry.get(ss.get(JOB_KEY))
    if job is None:
        job = next(iter(registry.for_owner(owner, KIND)), None)
    return job if job is not None and job.owner == owner else None


# ----------------------------------------------------------------------------------------------------- figures
def live_result(job) -> dict:
    """A result-shaped dict from the job's events, so the running suite draws with the same figure code."""
    nets: dict[str, dict] = {}
    for e in job.events("epoch"):
        name = e.get("net")
        if not name or e.get("partial"):
            continue
        net = nets.setdefault(name, {"model": name, "label": D.net_label(name), "depth": D.depth_of(name),
                                     "family": "plain" if name.startswith("plain") else "resnet", "history": []})
        row = {"epoch": e["epoch"], "train_error": 1 - e["train_acc"]}
        if "test_acc" in e:
            row["test_error"] = 1 - e["test_acc"]
        net["history"].append(row)
    return {"nets": list(nets.values())}


def fig6(result: dict, height: int = 380):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=("Plain networks", "Residual networks (ResNet)"))
    for sr in D.fig6_series(result):
        col = 1 if sr["panel"] == "plain" else 2
        name = f"{sr['label']} {sr['kind']}"
        fig.add_trace(go.Scatter(x=sr["epochs"], y=sr["error_pct"], name=name, mode="lines+markers",
                                 line=dict(color=color(sr["depth"]), dash=sr["dash"], width=sr["width"]),
                                 marker=dict(size=4 if sr["kind"] == "train" else 6),
                                 legendgroup=sr["model"]), 1, col)
    for col in (1, 2):
        fig.update_xaxes(title_text="epoch", row=1, col=col, dtick=1 if _max_epoch(result) <= 12 else None)
    fig.update_yaxes(title_text="error (%)", row=1, col=1)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40, b=10),
                      legend=dict(orientation="h", yanchor="top", y=-0.18))
    return fig


def _max_epoch(result: dict) -> int:
    return max((len(n.get("history") or []) for n in result.get("nets", [])), default=0)


def per_layer(result: dict, when: str, quantity: str, title: str, log_y: bool):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    series = D.fig7_series(result, when=when, quantity=quantity)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08,
                        subplot_titles=(f"{title} — layers in network order", f"{title} — sorted, largest first"))
    for sr in series:
        style = dict(color=color(sr["depth"]), dash="solid" if sr["family"] == "plain" else "dot", width=2)
        fig.add_trace(go.Scatter(x=sr["layer_index"], y=sr["values"], name=sr["label"], mode="lines+markers",
                                 marker=dict(size=3), line=style, legendgroup=sr["model"],
                                 text=sr["layers"], hovertemplate="%{text}: %{y:.3g}<extra>" + sr["label"] + "</extra>"),
                      1, 1)
        fig.add_trace(go.Scatter(x=sr["layer_index"], y=sr["sorted_values"], name=sr["label"], mode="lines",
                                 line=style, legendgroup=sr["model"], showlegend=False), 1, 2)
    for col in (1, 2):
        fig.update_xaxes(title_text="layer index (3×3 conv → BN)" if col == 1 else "rank", row=1, col=col)
        fig.update_yaxes(type="log" if log_y else "linear", dtick=1 if log_y else None, row=1, col=col)
    fig.update_layout(height=340, margin=dict(l=10, r=10, t=40, b=10),
                      legend=dict(orientation="h", yanchor="top", y=-0.2))
    return fig, series


# ------------------------------------------------------------------------------------------------ the live job
job = my_job()
if job is not None:
    running_at_render = job.active

    @st.fragment(run_every=POLL_S if running_at_render else None)
    def live_panel() -> None:
        j = registry.get(job.id)
        if lab_ui.queue_note(j, "deg_queue"):  # waiting for a free slot: place in line and Cancel
            return
        snap = j.snapshot()
        text = snap["message"] or "Starting …"
        if snap["status"] == "stopping":
            text = "Stopping after this batch … · " + text
        elif snap["status"] == "done":
            text = "Finished · " + text
        st.progress(min(max(snap["progress"], 0.0), 1.0), text=text)
        if snap["status"] == "failed":
            st.error(f"**The suite failed:** {j.error}", icon=":material/error:")
        elif snap["status"] == "stopped":
            st.warning("Stopped on request: the nets that finished are kept (see the results below).",
                       icon=":material/stop_circle:")
        if j.active:
            partial = live_result(j)
            if partial["nets"]:
                st.plotly_chart(fig6(partial, height=320), key=f"deg_live_{j.id}")
            elapsed = time.time() - snap["created"]
            st.caption(f"Running for {int(elapsed) // 60}:{int(elapsed) % 60:02d} min:s. You can leave this page; "
                       "the suite keeps running and its result appears here.")
        if running_at_render and not j.active:
            st.rerun()

    live_panel()


# ----------------------------------------------------------------------------------------------------- results
st.header("Results", divider="gray")
results = D.list_results()
if not results:
    st.info("No suite results yet: start one above. Each finished suite is saved in the runs folder and listed here.",
            icon=":material/inventory_2:")
    st.stop()


def _label(r: dict) -> str:
    when = (r.get("created") or "")[:16].replace("T", " ")
    origin = "pre-computed, shipped with the project" if r.get("shipped") else r.get("status", "")
    return f"{r['suite']} · {when} · {r.get('device', '?')} · {origin}"


paths = [r["path"] for r in results]
by_path = {r["path"]: r for r in results}
if job is not None and not job.active and isinstance(job.result, dict) and job.result.get("path") in by_path \
        and ss.get("_deg_shown") != job.id:
    ss["deg_result"] = job.result["path"]  # show what this session just finished
    ss["_deg_shown"] = job.id
if ss.get("deg_result") not in by_path:
    ss["deg_result"] = paths[0]
chosen = st.selectbox("Result", paths, key="deg_result", format_func=lambda p: _label(by_path[p]))
result = by_path[chosen]

if result.get("shipped"):
    st.info(f"**Pre-computed result** of the **{result['suite']}** suite, produced by the project on "
            f"**{result.get('device', '?')}** on {(result.get('created') or '?')[:10]} in "
            f"{(result.get('seconds_total') or 0) / 60:.1f} minutes, with:\n\n`{result.get('command') or '?'}`\n\n"
            "Start the same suite above to reproduce it on this machine.", icon=":material/inventory:")
elif result.get("status") != "done":
    st.warning(f"This suite ended **{result.get('status')}**: only the nets listed below finished.",
               icon=":material/warning:")
settings = result.get("settings", {})
st.caption(f"{result.get('label', '')} · data: {result.get('data_source', '?')} · {settings.get('epochs')} epochs, "
           f"batch {settings.get('batch_size')}, LR max {settings.get('lr_max')} · "
           f"{(result.get('seconds_total') or 0):.0f} s in all")

st.subheader("Training and test error per epoch (the paper's Fig. 6)")
st.plotly_chart(fig6(result), key="deg_fig6")
eff = result.get("effect") or {}
if eff.get("shows") is not None:
    plain = "**yes**" if eff["plain_degrades"] else "**no**"
    res = "**yes**" if eff["residual_ok"] else "**no**"
    fe = D.final_errors(result)

    def gap(family: str) -> str:
        deep, shallow = fe[D.model_name(family, eff["deep"])], fe[D.model_name(family, eff["shallow"])]
        return f"{100 * (deep['train_error'] - shallow['train_error']):+.1f} points"

    st.markdown(f"Deeper plain net ({eff['deep']} layers) ends with a *higher training error* than the {eff['shallow']}-"
                f"layer one: {plain} ({gap('plain')}). Deeper ResNet trains at least as well as the shallow one: "
                f"{res} ({gap('resnet')}).")
    if not eff["shows"]:
        st.caption("Short or small runs are noisy: a single run can miss the effect. The paper's curves are averages "
                   "of long runs on all 50,000 images; try the quick suite on a GPU or more epochs.")

st.subheader("Final errors")
rows = D.table(result)
if result.get("shipped"):
    for row in rows:
        row.pop("run", None)  # its runs live on the machine that produced it, not here
st.dataframe(rows, hide_index=True, column_config={
    "parameters": st.column_config.NumberColumn(format="%d"),
    "final train error %": st.column_config.NumberColumn(format="%.1f"),
    "final test error %": st.column_config.NumberColumn(format="%.1f"),
    "seconds": st.column_config.NumberColumn(format="%.0f")})
st.caption("Train error is measured during the last epoch on augmented images (as in the paper's curves); test error "
           "on the unaugmented test images after it. Plain and residual nets of one depth have exactly the same "
           "parameters: option-A shortcuts add none.")

st.subheader("Inside the networks, layer by layer")
when_label = {"trained": "after training", "init": "at initialisation"}
when = st.radio("When", list(when_label), key="deg_when", format_func=when_label.get, horizontal=True)
fig, series = per_layer(result, when, "response_std", "Response std", log_y=False)
if series:
    st.markdown("**Layer responses (the paper's Fig. 7):** the standard deviation of each 3×3 layer's output after "
                "batch norm, before the ReLU, on a fixed batch of test images. Solid lines: plain nets; dotted: "
                "ResNets.")
    st.plotly_chart(fig, key="deg_fig7")
    if when == "init":
        st.caption("At initialisation batch norm uses the statistics of the batch itself, so every response has a "
                   "std of about 1 (γ = 1): training is what makes the layers differ.")
    else:
        st.caption("He et al.: ResNets' responses are generally smaller than their plain twins' — the residual "
                   "functions stay close to zero, so each block only nudges its input.")
    gfig, _ = per_layer(result, when, "grad_norm", "Gradient norm", log_y=True)
    st.markdown("**Gradient norms:** ‖∂loss/∂W‖ of each 3×3 conv for the same batch (log scale) — how strongly "
                "each layer is being pushed to change.")
    st.plotly_chart(gfig, key="deg_grads")
    spread = []
    for sr in D.fig7_series(result, when=when, quantity="grad_norm"):
        v = sr["values"]
        if v and min(v) > 0:
            spread.append(f"{sr['label']}: first ÷ last layer {v[0] / v[-1]:.3g}×, largest ÷ smallest "
                          f"{max(v) / min(v):.3g}×")
    st.caption("In this result — " + "; ".join(spread) + ". " + (
        "Deep plain stacks with batch norm tend to *explode* gradients backwards at initialisation (the first "
        "layers get far more than the last), " if when == "init" else
        "After training a plain net's first layers typically get far *less* gradient than its last ones, ") +
        "while a ResNet's shortcuts carry the gradient past every block, so all its layers stay within a small "
        "factor of each other. (He et al. ruled out *vanishing* gradients at initialisation as the cause of "
        "degradation; what the plots show is how uneven the plain net's layers are.)")
else:
    st.caption("This result has no per-layer statistics.")

if any(n.get("run_id") for n in result.get("nets", [])) and not result.get("shipped"):
    st.caption("Every net is also a normal run in the runs store: " +
               ", ".join(f"`{n['run_id']}`" for n in result["nets"] if n.get("run_id")) +
               " — open them on the Train, Activations or Misclassified pages.")
st.caption(f"Result file: `{result['path']}`")
