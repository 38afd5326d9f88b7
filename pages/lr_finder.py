"""LR Finder: the learning-rate range test, read by clicking on the curve, handed to the Train page."""

from __future__ import annotations

import math
from pathlib import Path

import streamlit as st

import lab_ui
from resnet_lab import lr_finder as lrf
from resnet_lab import tasks
from resnet_lab.config import check_caps
from resnet_lab.models import list_models

ss = st.session_state
TRAIN_PAGE = Path(__file__).resolve().parent / "train.py"
JOB_KIND = "lr_find"
CURVES = "lr_curves"          # finished curves: [{"id", "label", "result": LRFindResult.to_dict()}]
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]
MARKERS = {"steepest": "star", "torch-lr-finder": "circle", "valley": "diamond", "minimum/10": "triangle-down",
           "slide": "square"}
RULE_COLORS = {"steepest": "#111111", "torch-lr-finder": "#e377c2", "valley": "#ff7f0e", "minimum/10": "#17becf",
               "slide": "#bcbd22"}

lab_ui.page_intro(
    "LR Finder",
    idea="Before a one-cycle run you need its **maximum learning rate**. The range test trains for ~100 steps while "
         "the LR grows from tiny (nothing happens) to huge (the loss climbs back up, and may blow up). In between "
         "the loss falls — the "
         "LR you want is where it falls *fastest*, not where it is lowest: at the lowest point you are already "
         "at the edge of divergence.",
    try_="Press **Start** and watch the curve draw. Click a point on it (or type a value) to choose LR max; LR min "
         "follows at max/10. Then change the optimizer (Adam ↔ SGD) or the batch size and run again: the curves "
         "overlay. **Use for training** carries your pick to the Train page.",
    notice="The five rules disagree, and the table under the curve says by how much on *your* curve. Whether SGD "
           "wants larger LRs than Adam, and how a larger batch moves the curve, is for your own overlaid sweeps to "
           "show: compare one change at a time. The test's cost (steps × batch images) is printed under the curve; "
           "the model is restored afterwards, so it does not count as training.",
)

cuda = lab_ui.has_cuda()
defaults = lrf.default_config(cuda=cuda)
if not cuda:
    _cost = lrf.sweep_cost(defaults)
    st.info(f"**No GPU here.** The defaults are sized for a CPU: `{defaults.model}` with {defaults.optimizer} on a "
            f"class-balanced subset of {defaults.subset:,} images, batch {defaults.batch_size}, "
            f"{defaults.iterations} steps from LR {defaults.start_lr:g} to {defaults.end_lr:g}: "
            f"{_cost['images']:,} images through forward and backward ({_cost['passes']:.1f} passes over the "
            "subset), meant to take under a minute on 2 free CPU cores and several times longer while other work "
            "shares them — the time it really took is printed under the curve. On a GPU the page defaults to the "
            "assignment's `custom_resnet` at batch 512 on all the training images.", icon=":material/developer_board:")

data = lab_ui.data_or_stop()
registry = lab_ui.job_registry()
owner = lab_ui.session_owner()
# Curves and the pick live per owner in the app process, so a reload (or a new tab on the same link) finds them.
memo = lab_ui.owner_memo("lr_finder")
if ss.get(CURVES) and ss[CURVES] is not memo.get("curves"):
    memo["curves"] = ss[CURVES]  # curves put into this session directly (tests, older sessions) join the memo
ss[CURVES] = memo.setdefault("curves", [])
for key in ("lr_max", "lr_min", "lr_current"):
    if key not in ss and key in memo:
        ss[key] = memo[key]

# ------------------------------------------------------------------------------------------------ the settings

WIDGETS = {  # widget key -> (config field, default)
    "lr_model": ("model", defaults.model),
    "lr_optimizer": ("optimizer", defaults.optimizer),
    "lr_batch_size": ("batch_size", defaults.batch_size),
    "lr_subset": ("subset", defaults.subset or 0),
    "lr_start_lr": ("start_lr", f"{defaults.start_lr:g}"),
    "lr_end_lr": ("end_lr", f"{defaults.end_lr:g}"),
    "lr_iters": ("iterations", defaults.iterations),
    "lr_mode": ("mode", defaults.mode),
    "lr_smooth": ("smooth", defaults.smooth),
    "lr_diverge": ("diverge", defaults.diverge),
    "lr_momentum": ("momentum", defaults.momentum),
    "lr_weight_decay": ("weight_decay", defaults.weight_decay),
    "lr_augment": ("augment", defaults.augment),
}
for key, (_field, default) in WIDGETS.items():
    # Re-assigning keeps the settings when the user visits another page and comes back (Streamlit drops the
    # state of widgets that were not drawn in a run unless the script itself wrote it).
    ss[key] = ss.get(key, default)


def parse_lr(text: str) -> float | None:
    try:
        value = float(str(text).strip())
    except ValueError:
        return None
    return value


def current_config() -> tuple[lrf.LRFindConfig, dict[str, str]]:
    """The settings as a config, and field -> message for everything that is wrong with them."""
    problems: dict[str, str] = {}
    values = {field: ss[key] for key, (field, _d) in WIDGETS.items()}
    for field in ("start_lr", "end_lr"):
        parsed = parse_lr(values[field])
        if parsed is None:
            problems[field] = f"'{values[field]}' is not a number (write it like 1e-7 or 0.001)"
            parsed = float("nan")
        values[field] = parsed
    values["subset"] = int(values["subset"]) or None
    config = lrf.LRFindConfig(**values, data=lab_ui.data_source())
    n_train = min(config.subset or data.n_train, data.n_train)
    for field, message in config.validate(n_train=n_train).items():
        problems.setdefault(field, message)
    caps = lab_ui.settings()
    params = None
    if caps.get("max_params") and "model" not in problems:
        from resnet_lab.models import param_count

        params = param_count(config.model)
    for field, message in check_caps(caps, batch_size=config.batch_size, params=params).items():
        problems.setdefault(field, message)
    return config, problems


config, problems = current_config()


def say(field: str) -> None:
    """The problem with one field, right under it."""
    if field in problems:
        st.error(problems[field], icon=":material/error:")


st.header("1 · Set up the sweep", divider="gray")
models_ = list_models()
c1, c2, c3, c4 = st.columns(4)
with c1:
    st.selectbox("Model", models_, key="lr_model", help="Any network of the registry (Data & Models shows them).")
    say("model")
    st.selectbox("Optimizer", list(lrf.OPTIMIZERS), key="lr_optimizer",
                 help="SGD (with momentum), Adam or AdamW. They want different LRs: overlay a sweep of each on the "
                      "same model and batch to see how far apart on this data.")
    say("optimizer")
with c2:
    st.number_input("Batch size", min_value=0, step=32, key="lr_batch_size",
                    help="Use the batch size you will train with: the best LR grows with the batch.")
    say("batch_size")
    st.number_input(f"Training images (0 = all {data.n_train:,})", min_value=0, step=500, key="lr_subset",
                    help="A class-balanced subset: on a CPU a few thousand images are plenty for the test.")
    say("subset")
with c3:
    st.text_input("Start LR", key="lr_start_lr", help="Where the sweep starts: so small that nothing happens yet.")
    say("start_lr")
    st.text_input("End LR", key="lr_end_lr", help="Where it ends: so large that the loss climbs well above its minimum (10 is usual).")
    say("end_lr")
with c4:
    st.number_input("Iterations", min_value=0, step=10, key="lr_iters",
                    help="Steps of the sweep (100 is typical; the test stops early if the smoothed loss passes the "
                         "divergence threshold, 5× its best by default).")
    say("iterations")
    st.radio("LR steps", list(lrf.MODES), key="lr_mode", horizontal=True,
             help="exp: each step multiplies the LR by the same factor (even on a log axis); linear: adds.")
    say("mode")
with st.expander("More settings: smoothing, divergence, momentum, weight decay, augmentation"):
    e1, e2, e3, e4, e5 = st.columns(5)
    with e1:
        st.number_input("Smoothing", min_value=0.0, max_value=0.99, step=0.01, key="lr_smooth", format="%.2f",
                        help="Weight of the newest loss in the running average (0 = raw loss, noisy).")
        say("smooth")
    with e2:
        st.number_input("Divergence ×", min_value=0.0, step=0.5, key="lr_diverge",
                        help="Stop when the smoothed loss exceeds this many times its best value.")
        say("diverge")
    with e3:
        st.number_input("Momentum / β₁", min_value=0.0, max_value=0.999, step=0.05, key="lr_momentum",
                        format="%.2f")
        say("momentum")
    with e4:
        st.number_input("Weight decay", min_value=0.0, step=1e-4, key="lr_weight_decay", format="%.0e")
        say("weight_decay")
    with e5:
        st.checkbox("Augment (crop, flip, cutout)", key="lr_augment",
                    help="Test on what training will see: the augmented images.")

# ------------------------------------------------------------------------------------------------ the job


def job_of_this_session():
    return lab_ui.session_job(JOB_KIND, "lr_job_id")


def harvest(job) -> None:
    """Move a finished job's curve into this owner's list (once), or keep its error for display."""
    harvested = memo.setdefault("harvested", [])
    if job is None or job.active or job.id in harvested:
        return
    harvested.append(job.id)
    ss["lr_harvested"] = job.id
    if job.status == "failed":
        ss["lr_error"] = job.error
        return
    result = job.result
    if result is None:
        return
    ss["lr_error"] = None
    curves = ss.setdefault(CURVES, [])
    curves.append({"id": job.id, "label": f"#{len(curves) + 1} {result.label}", "result": result.to_dict()})
    select_curve(len(curves) - 1)


def select_curve(index: int) -> None:
    """Make a curve the one LR max is read from; LR max starts at its 'steepest' suggestion."""
    curve = ss[CURVES][index]
    ss["lr_current"] = curve["label"]
    apply_curve(curve)


def apply_curve(curve: dict) -> None:
    result = lrf.LRFindResult.from_dict(curve["result"])
    best = result.suggestion(lrf.RECOMMENDED)
    if best is not None:
        set_lr_max(best.lr)


def set_lr_max(value: float) -> None:
    ss["lr_max"] = float(f"{value:.3g}")
    ss["lr_min"] = float(f"{value / 10:.3g}")  # the seed's rule: LR min = LR max / 10


def start_job() -> None:
    cfg, bad = current_config()
    if bad:
        return
    # A worker process runs the sweep (resnet_lab.jobs): it loads the data from the cache itself.
    job = registry.start(JOB_KIND, tasks.lr_find, owner=owner, owner_name=lab_ui.display_name(),
                         title=f"LR test {cfg.model} · {cfg.optimizer} · batch {cfg.batch_size}",
                         config=cfg.to_dict(), source=lab_ui.data_source())
    ss["lr_job_id"] = job.id
    ss["lr_error"] = None


job = job_of_this_session()
harvest(job)
running = job is not None and job.active

b1, b2, b3 = st.columns([1, 1, 4], vertical_alignment="center")
b1.button("Start", key="start", type="primary", icon=":material/play_arrow:", on_click=start_job,
          disabled=bool(problems) or running, width="stretch",
          help="Fix the settings marked in red first." if problems else "Run the range test in the background.")
with b3:
    if problems:
        st.caption(f":red[{len(problems)} setting{'s' if len(problems) > 1 else ''} to fix before starting.]")
    elif running and job.status == "pending":
        st.caption("Your test is waiting for its turn; it starts by itself.")
    elif running:
        st.caption("A test is running; you can switch pages, it keeps going.")
    else:
        n = min(config.subset or data.n_train, data.n_train)
        st.caption(f"{config.iterations} steps × {config.batch_size} images ≈ "
                   f"{config.iterations * config.batch_size / n:.1f} passes over {n:,} images.")
if ss.get("lr_error"):
    st.error(f"The test failed: {ss['lr_error']}", icon=":material/error:")


def live_figure(batches: list[dict]):
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(x=[e["lr"] for e in batches], y=[e["loss"] for e in batches], mode="lines+markers",
                               marker={"size": 4}, name="smoothed loss"))
    fig.update_layout(height=260, margin={"l": 10, "r": 10, "t": 10, "b": 10}, xaxis_title="learning rate (log)",
                      yaxis_title="loss", showlegend=False)
    fig.update_xaxes(type="log")
    return fig


@st.fragment(run_every=1.0 if running else None)
def progress_panel() -> None:
    current = job_of_this_session()
    if current is None:
        return
    if not current.active:
        if current.id not in memo.get("harvested", []) and running:
            st.rerun()  # the whole page: the finished curve belongs to the results below
        return
    if lab_ui.queue_note(current, "lr_queue"):
        return
    batches = lab_ui.new_events(current, "lr").get("batch", [])
    last = batches[-1] if batches else None
    text = (f"step {last['step'] + 1}/{last['total']} · LR {last['lr']:.2e} · loss {last['loss']:.3f} · "
            f"{last['images_per_s']:,.0f} images/s" if last else current.message or "starting …")
    p1, p2 = st.columns([5, 1], vertical_alignment="center")
    p1.progress(min(current.progress, 1.0), text=text)
    p2.button("Stop", key="stop", icon=":material/stop:", on_click=current.stop, width="stretch")
    if batches:
        st.plotly_chart(live_figure(lab_ui.thin(batches)), key="lr_live", config={"displayModeBar": False})


if running:
    progress_panel()

# ------------------------------------------------------------------------------------------------ the results
curves: list[dict] = ss.get(CURVES, [])
st.header("2 · Read the curve", divider="gray")
if not curves:
    st.caption("No curve yet: press **Start**. Finished curves stay here (and can be overlaid) as long as the app "
               "runs — also after a reload, or in a new tab opened on this page's link.")
    st.stop()

labels = [c["label"] for c in curves]
if ss.get("lr_current") not in labels:
    ss["lr_current"] = labels[-1]


def on_current_change() -> None:
    apply_curve(next(c for c in curves if c["label"] == ss["lr_current"]))


pick_col, overlay_col = st.columns([2, 3])
pick_col.selectbox("Read LR max from", labels, key="lr_current", on_change=on_current_change,
                   help="The curve whose suggestions are marked and whose LR you pick.")
shown = []
with overlay_col:
    st.markdown("**Overlay**")
    cols = st.columns(min(len(curves), 4))
    for i, c in enumerate(curves):
        if cols[i % len(cols)].checkbox(c["label"], value=True, key=f"lr_show_{c['id']}"):
            shown.append(i)

current = next(c for c in curves if c["label"] == ss["lr_current"])
result = lrf.LRFindResult.from_dict(current["result"])
ss.setdefault("lr_max", float(f"{(result.suggestion().lr if result.suggestion() else 1e-2):.3g}"))
ss.setdefault("lr_min", float(f"{ss['lr_max'] / 10:.3g}"))


def on_chart_select() -> None:
    """A click on a point of the chart: its x (the LR, in data units also on a log axis) becomes LR max."""
    event = ss.get("lr_chart")
    points = (event or {}).get("selection", {}).get("points", []) if isinstance(event, dict) else \
        getattr(getattr(event, "selection", None), "points", [])
    if points:
        x = points[0].get("x")
        if isinstance(x, (int, float)) and x > 0 and math.isfinite(x):
            set_lr_max(float(x))


def curve_figure():
    import plotly.graph_objects as go

    fig = go.Figure()
    for i in shown:
        c = curves[i]
        r = c["result"]
        is_current = c["label"] == ss["lr_current"]
        color = COLORS[i % len(COLORS)]
        if is_current and r["raw_losses"]:
            fig.add_trace(go.Scatter(x=r["lrs"], y=r["raw_losses"], mode="lines", name="raw loss (this curve)",
                                     line={"color": color, "width": 1}, opacity=0.25, hoverinfo="skip"))
        fig.add_trace(go.Scatter(
            x=r["lrs"], y=r["losses"], mode="lines+markers", name=c["label"],
            line={"color": color, "width": 3 if is_current else 1.5}, marker={"size": 6 if is_current else 4},
            opacity=1.0 if is_current else 0.6,
            hovertemplate="LR %{x:.3g}<br>loss %{y:.3f}<extra>" + c["label"] + "</extra>"))
    # No text labels on the markers: rules often land within a step of each other and their labels overlapped;
    # each rule has its own symbol and colour, named with its LR in the legend.
    for s in result.suggestions:
        fig.add_trace(go.Scatter(
            x=[s.lr], y=[s.loss], mode="markers", name=f"{s.name}: {s.lr:.2g}",
            marker={"symbol": MARKERS.get(s.name, "circle"), "size": 14, "color": RULE_COLORS.get(s.name),
                    "line": {"width": 1.5, "color": "white"}},
            hovertemplate=f"{s.name}<br>LR %{{x:.3g}}<br>loss %{{y:.3f}}<extra>{s.reason}</extra>"))
    # Labels are added by hand: on a log axis an annotation's x is log10 of the value (add_vline's own
    # annotation gets that wrong and lands far to the right).
    for value, text, style, anchor in ((ss["lr_max"], "LR max", {"color": "black", "width": 2}, "left"),
                                       (ss["lr_min"], "LR min", {"color": "gray", "width": 1.5, "dash": "dash"},
                                        "right")):
        if value > 0:
            fig.add_vline(x=value, line=style)
            fig.add_annotation(x=math.log10(value), y=1, yref="paper", text=f" {text} {value:.3g} ",
                               showarrow=False, xanchor=anchor, yanchor="top", bgcolor="rgba(255,255,255,0.8)")
    ys = [y for i in shown for y in curves[i]["result"]["losses"] if y is not None and math.isfinite(y)]
    if ys:  # clip the explosion at the end so the valley stays readable
        low = min(ys)
        first = [curves[i]["result"]["losses"][0] for i in shown if curves[i]["result"]["losses"]]
        top = max(first) if first else max(ys)
        fig.update_yaxes(range=[low - 0.1 * (top - low + 1e-3), top + 0.6 * (top - low + 1e-3)])
    fig.update_xaxes(type="log", title="learning rate (log scale)")
    fig.update_yaxes(title="training loss (smoothed)")
    fig.update_layout(height=480, margin={"l": 10, "r": 10, "t": 30, "b": 10}, clickmode="event+select",
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0})
    return fig


st.plotly_chart(curve_figure(), key="lr_chart", on_select=on_chart_select, selection_mode="points")
_cost = lrf.sweep_cost({**result.config, "iterations": result.iterations}, result.n_train)
_rise = ""
if result.losses:
    _low = min(result.losses)
    _after = result.losses[result.losses.index(_low):]
    _rise = (f" The smoothed loss went from {result.losses[0]:.2f} down to {_low:.2f} and back up to "
             f"{max(_after):.2f} ({max(_after) / _low:.1f}× its minimum"
             + (f"; the sweep stopped at the {result.config.get('diverge', 5):g}× divergence threshold)."
                if result.diverged else ", below the divergence threshold, so all steps ran)."))
st.caption(f"Cost: {result.iterations} steps × batch {result.config.get('batch_size')} = {_cost['images']:,} images "
           f"({_cost['passes']:.1f} passes over {result.n_train:,} training images) in {result.seconds:.1f} s on "
           f"{result.device} ({result.images_per_s:,.0f} images/s).{_rise} Click a point to make its LR the maximum; "
           "the faint line is the raw loss of each step, the thick one its running average.")
if result.message:
    (st.warning if not result.suggestions else st.info)(result.message, icon=":material/info:")

if result.suggestions:
    st.subheader(f"{len(result.suggestions)} rules, one curve")
    import pandas as pd

    st.table(pd.DataFrame([{"rule": s.name, "LR": f"{s.lr:.2e}", "loss there": f"{s.loss:.3f}", "why": s.reason}
                           for s in result.suggestions]).set_index("rule"))
    spread = max(s.lr for s in result.suggestions) / min(s.lr for s in result.suggestions)
    st.caption(f"On this curve the rules span a factor of {spread:,.0f} in LR (largest ÷ smallest). The seed's rule "
               "is **steepest**: the middle of the sharpest fall, its slope taken over several steps and only "
               "before the minimum — so it can differ from **torch-lr-finder**'s own answer (the steepest "
               "step-to-step drop anywhere in its window). **valley**, **minimum/10** and **slide** are fastai's, "
               "computed exactly as fastai does. Buttons below copy any of them.")
    bcols = st.columns(3)  # three per row: five in one row cut "Use torch-lr-finder (0.0…" short
    for i, s in enumerate(result.suggestions):
        col = bcols[i % 3]
        col.button(f"Use {s.name} ({s.lr:.2g})", key=f"lr_use_{s.name}", on_click=set_lr_max, args=(s.lr,),
                   width="stretch")

# ------------------------------------------------------------------------------------------------ the pick
st.header("3 · Pick the one-cycle range", divider="gray")


def on_lr_max_change() -> None:
    if ss["lr_max"] > 0:
        ss["lr_min"] = float(f"{ss['lr_max'] / 10:.3g}")


m1, m2, m3 = st.columns([1, 1, 2], vertical_alignment="bottom")
m1.number_input("LR max", min_value=0.0, step=1e-4, format="%.3g", key="lr_max", on_change=on_lr_max_change,
                help="The peak of the one-cycle schedule. Click the curve, use a rule's button, or type it.")
m2.number_input("LR min", min_value=0.0, step=1e-5, format="%.3g", key="lr_min",
                help="Where one-cycle starts and ends. Defaults to LR max / 10; edit it freely.")
pick_problems = []
if not ss["lr_max"] > 0:
    pick_problems.append("LR max must be > 0")
if not 0 < ss["lr_min"] < ss["lr_max"]:
    pick_problems.append("LR min must be > 0 and below LR max")
for msg in pick_problems:
    st.error(msg, icon=":material/error:")
if result.lrs and not pick_problems:
    at_max = min(range(len(result.lrs)), key=lambda i: abs(math.log10(result.lrs[i]) - math.log10(ss["lr_max"])))
    low = min(result.losses)
    where = ("past the lowest loss — training will likely diverge" if result.lrs[at_max] > result.lrs[
        result.losses.index(low)] else "on the falling part of the curve")
    m3.caption(f"At LR {ss['lr_max']:.3g} this curve's loss is {result.losses[at_max]:.3f}, {where}.")


memo.update(lr_max=ss["lr_max"], lr_min=ss["lr_min"], lr_current=ss["lr_current"])
tested_batch = int(current["result"]["config"]["batch_size"])
st.checkbox(f"Also use batch size {tested_batch}", key="lr_use_batch", value=False,
            help="Off: the Train page keeps its preset's batch size and takes only LR max and LR min.")
st.caption(f"The best LR depends on the batch size: this curve was measured at batch {tested_batch}. Larger batches "
           "average away gradient noise and usually tolerate a larger LR, so for another batch size treat the pick "
           "as a starting point (or rerun the test at that batch size). Only the LR is carried over unless you tick "
           "the box.")


def use_for_training() -> None:
    cfg = current["result"]["config"]
    prefill = {"lr_max": float(ss["lr_max"]), "lr_min": float(ss["lr_min"]), "tested_batch_size": tested_batch,
               "tested_model": cfg.get("model"), "tested_optimizer": cfg.get("optimizer")}
    if ss.get("lr_use_batch"):
        prefill["batch_size"] = tested_batch
    ss["train_prefill"] = prefill
    ss["lr_handed_over"] = True


if st.button("Use for training", key="use_for_training", type="primary", icon=":material/model_training:",
             disabled=bool(pick_problems), on_click=use_for_training,
             help="Fill the Train page's LR max and LR min (and the batch size only if ticked above)."):
    if TRAIN_PAGE.exists():
        st.switch_page("../pages/train.py")
    st.success("Saved for the Train page: open it to start training with these settings.",
               icon=":material/check_circle:")
