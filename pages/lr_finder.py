"""LR Finder: the learning-rate range test, read by clicking on the curve, handed to the Train page."""

from __future__ import annotations


import streamlit as st

import lab_ui
import lr_finder_ui as UI
import model_file_ui

from resnet_lab import lr_finder as lrf
from resnet_lab import tasks
from resnet_lab.models import list_models
from resnet_lab.training import PRESETS

ss = st.session_state
JOB_KIND = "lr_find"
CURVES = "lrf_curves"  # finished curves: [{"id", "label", "result": LRFindResult.to_dict()}]
PICK = ("lrf_lr_max", "lrf_lr_min", "lrf_current")

lab_ui.page_intro("LR Finder", **UI.INTRO)

cuda = lab_ui.has_cuda()
defaults = lrf.default_config(cuda=cuda)
if not cuda:
    st.info(UI.cpu_note(defaults), icon=":material/developer_board:")

data = lab_ui.data_or_stop()
registry = lab_ui.job_registry()
owner = lab_ui.session_owner()
# Curves and the pick live per owner in the app process, so a reload (or a new tab on the same link) finds them.
memo = lab_ui.owner_memo("lr_finder")
if ss.get(CURVES) and ss[CURVES] is not memo.get("curves"):
    memo["curves"] = ss[CURVES]  # curves put into this session directly (tests, older sessions) join the memo
ss[CURVES] = memo.setdefault("curves", [])
ss.update({key: memo[key] for key in PICK if key not in ss and key in memo})

# ------------------------------------------------------------------------------------------------ the settings

for name, default in UI.form_values(defaults).items():
    # Re-assigning keeps the settings when the user visits another page and comes back (Streamlit drops the
    # state of widgets that were not drawn in a run unless the script itself wrote it).
    ss[f"lrf_{name}"] = ss.get(f"lrf_{name}", default)
ss["lrf_preset"] = ss.get("lrf_preset", defaults.preset)


def apply_preset() -> None:
    """Set the sweep up for the chosen preset's run (its model, optimizer, batch, decay, augmentation)."""
    for name, value in UI.preset_form(ss["lrf_preset"], cuda).items():
        ss[f"lrf_{name}"] = value


def current_config() -> tuple[lrf.LRFindConfig, dict[str, str]]:
    values = {name: ss[f"lrf_{name}"] for name in UI.FORM}
    return UI.config_from_form({**values, "preset": ss["lrf_preset"]}, lab_ui.data_source(), data.n_train,
                               lab_ui.settings(), params_of=model_file_ui.params)


config, problems = current_config()


def field(widget, name: str, label: str, **kwargs) -> None:
    """A setting's widget (key lrf_<name>), and the problem with it right under it."""
    widget(label, key=f"lrf_{name}", **kwargs)
    if name in problems:
        st.error(problems[name], icon=":material/error:")


st.header("1 · Set up the sweep", divider="gray")
p1, p2 = st.columns([1, 3], vertical_alignment="bottom")
p1.selectbox("Sweep for the run of preset", list(PRESETS), key="lrf_preset", on_change=apply_preset,
             help="The test sweeps what this Train preset's run will use: its network, optimizer, batch size, "
                  "momentum at the peak, weight decay and augmentation.")
p2.button("Reset to the preset's run", key="lrf_reset_preset", on_click=apply_preset, icon=":material/restart_alt:",
          help="Every setting below back to what the chosen preset's run uses.")
c1, c2, c3, c4 = st.columns(4)
with c1:
    field(st.selectbox, "model", "Model", options=model_file_ui.choices(list_models()), format_func=model_file_ui.shown,
          help="Any network of the registry (Data & Models shows them), or your own file checked there.")
    field(st.selectbox, "optimizer", "Optimizer", options=list(lrf.OPTIMIZERS),
          help="SGD (with momentum), Adam or AdamW. They want different LRs: overlay a sweep of each on the "
               "same model and batch to see how far apart on this data.")
with c2:
    field(st.number_input, "batch_size", "Batch size", min_value=0, step=32,
          help="Use the batch size you will train with: the best LR grows with the batch.")
    field(st.number_input, "subset", f"Training images (0 = all {data.n_train:,})", min_value=0, step=500,
          help="A class-balanced subset: on a CPU a few thousand images are plenty for the test.")
with c3:
    field(st.text_input, "start_lr", "Start LR", help="Where the sweep starts: so small that nothing happens yet.")
    field(st.text_input, "end_lr", "End LR",
          help="Where it ends: so large that the loss climbs well above its minimum (10 is usual).")
with c4:
    field(st.number_input, "iterations", "Iterations", min_value=0, step=10,
          help="Steps of the sweep (100 is typical; the test stops early if the smoothed loss passes the "
               "divergence threshold, 5× its best by default).")
    field(st.radio, "mode", "LR steps", options=list(lrf.MODES), horizontal=True,
          help="exp: each step multiplies the LR by the same factor (even on a log axis); linear: adds.")
with st.expander("More settings: smoothing, divergence, momentum, weight decay, augmentation"):
    e1, e2, e3, e4, e5, e6 = st.columns(6)
    with e1:
        field(st.number_input, "smooth", "Smoothing", min_value=0.0, max_value=0.99, step=0.01, format="%.2f",
              help="Weight of the newest loss in the running average (0 = raw loss, noisy).")
    with e2:
        field(st.number_input, "diverge", "Divergence ×", min_value=0.0, step=0.5,
              help="Stop when the smoothed loss exceeds this many times its best value.")
    with e3:
        field(st.number_input, "momentum", "Momentum / β₁", min_value=0.0, max_value=0.999, step=0.05, format="%.2f")
    with e4:
        field(st.number_input, "weight_decay", "Weight decay", min_value=0.0, step=1e-4, format="%.0e")
    with e5:
        field(st.checkbox, "nesterov", "Nesterov (SGD)", help="Nesterov momentum, as the run's SGD uses it.")
        field(st.checkbox, "augment", "Augment (crop, flip, cutout)",
              help="Test on what training will see: the augmented images.")
    with e6:
        field(st.number_input, "crop_pad", "Crop padding (px)", min_value=0, max_value=16, step=1)
        field(st.number_input, "cutout", "Cutout hole (px)", min_value=0, max_value=32, step=1,
              help="Side of the square hole; 0 = none.")
        field(st.selectbox, "flip", "Flips", options=list(lrf.FLIPS),
              help="As the run flips: random per image, alternate (every image flips on every 2nd pass over the "
                   "data) or none.")

# ------------------------------------------------------------------------------------------------ the job


def harvest(job) -> None:
    """Move a finished job's curve into this owner's list (once), or keep its error for display."""
    harvested = memo.setdefault("harvested", [])
    if job is None or job.active or job.id in harvested:
        return
    harvested.append(job.id)
    if job.status == "failed":
        ss["lrf_error"] = job.error
    elif job.result is not None:
        ss["lrf_error"] = None
        curve = UI.add_curve(ss[CURVES], job.id, job.result)
        ss["lrf_current"] = curve["label"]  # the new curve is the one LR max is read from
        set_lr_max(UI.recommended_lr(curve))


def set_lr_max(value: float | None) -> None:
    """LR max (and LR min at max / 10) from a click, a rule's button or a curve's recommendation, if any."""
    if value is not None:
        ss["lrf_lr_max"], ss["lrf_lr_min"] = UI.rounded_pair(value)


def start_job() -> None:
    cfg, bad = current_config()
    if bad:
        return
    # A worker process runs the sweep (resnet_lab.jobs): it loads the data from the cache itself.
    job = registry.start(JOB_KIND, tasks.lr_find, owner=owner, owner_name=lab_ui.display_name(),
                         title=f"LR test {cfg.model} · {cfg.optimizer} · batch {cfg.batch_size}",
                         config=cfg.to_dict(), source=lab_ui.data_source())
    ss["lrf_job_id"] = job.id
    ss["lrf_error"] = None


job = lab_ui.session_job(JOB_KIND, "lrf_job_id")
harvest(job)
running = job is not None and job.active

# The page's own Start (not lab_ui.start_stop): its help says why it is off, the status line sits beside it, and
# Stop shows only with the running test, next to its progress bar.
b1, _, b3 = st.columns([1, 1, 4], vertical_alignment="center")
b1.button("Start", key="lrf_start", type="primary", icon=":material/play_arrow:", on_click=start_job,
          disabled=bool(problems) or running, width="stretch",
          help="Fix the settings marked in red first." if problems else "Run the range test in the background.")
b3.caption(UI.start_note(len(problems), job.status if running else None, config, data.n_train))
if ss.get("lrf_error"):
    st.error(f"The test failed: {lab_ui.public(ss['lrf_error'])}", icon=":material/error:")


def live_body(j) -> None:
    if not j.active or lab_ui.queue_note(j, "lrf_queue"):
        return  # a finished job: live_panel reruns the page, whose results show its curve
    batches = lab_ui.new_events(j, "lrf").get("batch", [])
    p1, p2 = st.columns([5, 1], vertical_alignment="center")
    p1.progress(min(j.progress, 1.0), text=UI.progress_text(batches, j.message))
    p2.button("Stop", key="lrf_stop", icon=":material/stop:", on_click=j.stop, width="stretch")
    if batches:
        st.plotly_chart(UI.live_figure(lab_ui.thin(batches)), key="lrf_live", config={"displayModeBar": False})


if running:
    lab_ui.live_panel(job, live_body, 1.0)

# ------------------------------------------------------------------------------------------------ the results
curves: list[dict] = ss[CURVES]
st.header("2 · Read the curve", divider="gray")
if not curves:
    st.caption("No curve yet: press **Start**. Finished curves stay here (and can be overlaid) as long as the app "
               "runs — also after a reload, or in a new tab opened on this page's link.")
    st.stop()

by_label = {c["label"]: c for c in curves}
if ss.get("lrf_current") not in by_label:
    ss["lrf_current"] = curves[-1]["label"]
pick_col, overlay_col = st.columns([2, 3])
pick_col.selectbox("Read LR max from", list(by_label), key="lrf_current",
                   on_change=lambda: set_lr_max(UI.recommended_lr(by_label[ss["lrf_current"]])),
                   help="The curve whose suggestions are marked and whose LR you pick.")
shown = []
with overlay_col:
    st.markdown("**Overlay**")
    cols = st.columns(min(len(curves), 4))
    for i, c in enumerate(curves):
        if cols[i % len(cols)].checkbox(c["label"], value=True, key=f"lrf_show_{c['id']}"):
            shown.append(i)

current = by_label[ss["lrf_current"]]
result = lrf.LRFindResult.from_dict(current["result"])
ss.setdefault("lrf_lr_max", UI.rounded_pair(result.suggestion().lr if result.suggestion() else 1e-2)[0])
ss.setdefault("lrf_lr_min", UI.rounded_pair(ss["lrf_lr_max"])[1])
st.plotly_chart(UI.curve_figure(curves, shown, ss["lrf_current"], result, ss["lrf_lr_max"], ss["lrf_lr_min"]),
                key="lrf_chart", selection_mode="points",  # a click on a point: its LR becomes LR max
                on_select=lambda: set_lr_max(UI.clicked_lr(ss.get("lrf_chart"))))
st.caption(UI.curve_caption(result))
if result.message:
    (st.warning if not result.suggestions else st.info)(result.message, icon=":material/info:")

if result.suggestions:
    st.subheader(f"{len(result.suggestions)} rules, one curve")
    st.table(UI.suggestion_table(result))
    st.caption(UI.rules_caption(result))
    bcols = st.columns(3)  # three per row: five in one row cut "Use torch-lr-finder (0.0…" short
    for i, s in enumerate(result.suggestions):
        bcols[i % 3].button(f"Use {s.name} ({s.lr:.2g})", key=f"lrf_use_{s.name}", on_click=set_lr_max,
                            args=(s.lr,), width="stretch")

# ------------------------------------------------------------------------------------------------ the pick
st.header("3 · Pick the one-cycle range", divider="gray")


def on_lr_max_change() -> None:
    if ss["lrf_lr_max"] > 0:
        ss["lrf_lr_min"] = UI.rounded_pair(ss["lrf_lr_max"])[1]  # LR max stays as typed


m1, m2, m3 = st.columns([1, 1, 2], vertical_alignment="bottom")
m1.number_input("LR max", min_value=0.0, step=1e-4, format="%.3g", key="lrf_lr_max", on_change=on_lr_max_change,
                help="The peak of the one-cycle schedule. Click the curve, use a rule's button, or type it.")
m2.number_input("LR min", min_value=0.0, step=1e-5, format="%.3g", key="lrf_lr_min",
                help="Where one-cycle starts and ends. Defaults to LR max / 10; edit it freely.")
pick_problems = UI.pick_problems(ss["lrf_lr_max"], ss["lrf_lr_min"])
for msg in pick_problems:
    st.error(msg, icon=":material/error:")
if not pick_problems and result.lrs:
    m3.caption(UI.pick_note(result, ss["lrf_lr_max"]))

memo.update({key: ss[key] for key in PICK})
swept_for = current["result"]["config"].get("preset")
unmatched = lrf.not_swept(swept_for) if swept_for in PRESETS else []
if unmatched:  # the sweep cannot be that run: say so, and hand nothing over
    st.warning(f"**Not handed over:** the **{swept_for}** run uses "
               f"{', '.join(unmatched)}, which this range test does not reproduce — the best LR moves with each. "
               "Use the preset's own LRs on the Train page, or sweep another preset.", icon=":material/block:")
else:
    st.caption(UI.handover_note(current))


def use_for_training() -> None:
    ss["train_prefill"] = UI.train_prefill(current, ss["lrf_lr_max"], ss["lrf_lr_min"])


if st.button("Use for training", key="lrf_use_for_training", type="primary", icon=":material/model_training:",
             disabled=bool(pick_problems or unmatched), on_click=use_for_training,
             help="Fill the Train page with LR max and LR min and the settings this curve was swept with."):
    st.switch_page("../pages/train.py")
