"""Train: pick a preset, change any hyperparameter, preview the one-cycle schedule, train in the background with
live curves, then read the results and compare runs.

Every TrainConfig field has a widget here, generated from the field's metadata (app/settings_form.py) like the
CLI's flags. Training runs as a job (resnet_lab.jobs) in the app-wide registry, so reruns, clicks and page switches
neither kill nor restart it; this session keeps only the job id. A fragment polls the job while it runs.
"""

from __future__ import annotations

import streamlit as st

import lab_ui
import model_file_ui
import train_ui as UI
from settings_form import field_error, widget
from train_figs import history_figure, schedule_figure

from resnet_lab import tasks, training
from resnet_lab.models import list_models, model_info
from resnet_lab.models.files import display_name
from resnet_lab.runs import RunStore

JOB_KEY = "train_job_id"  # the only trace of a job in the session
FORM_KEY = "_train_form"  # widget values survive page switches (Streamlit drops unrendered widgets' state)
SHOWN_KEY = "_train_shown_job"  # the job whose run was last put into the result picker
POLL_S = 1.0  # at most ~1 Hz: each poll reads only the new events (lab_ui.new_events)
FULL_SIZE = 50_000
P, SPECS = UI.P, UI.SPECS
MAIN = ["model", "optimizer", "batch_size", "seed", "epochs", "peak_epoch", "lr_max", "lr_min"]  # always in view

ss = st.session_state
cuda = lab_ui.has_cuda()

lab_ui.page_intro(
    "Train",
    idea="The **one-cycle policy** changes the learning rate every step. It starts low (LR min), climbs in a straight "
         "line to LR max by the **peak epoch** — a warm-up that lets batch norm and the first weights settle — and "
         "then walks back down for the rest of the run, so the last epochs fine-tune with small steps. Momentum moves "
         "the *opposite* way: low while the LR is high (so the big steps don't pile up), high while it is low. "
         "Large LRs in the middle act like noise that keeps the net out of sharp, poorly generalising minima.",
    try_="Start the preset and watch the curves. Then change one thing at a time and compare runs in the table at the "
         "bottom: LR max ×3 or ÷3 (or the LR Finder's pick), the peak epoch early or late, annihilation on, Adam vs "
         "SGD, label smoothing 0.1.",
    notice="The schedule preview redraws as you type. Training loss drops slowly while the LR is climbing and fastest "
           "after the peak; test accuracy jumps in the last epochs as the LR falls. Too high an LR max shows up as a "
           "loss that stalls or explodes around the peak.",
)

data = lab_ui.data_or_none()
n_full = data.n_train if data is not None else FULL_SIZE
registry = lab_ui.job_registry()
owner = lab_ui.session_owner()
store = RunStore()

# ------------------------------------------------------------------------------------------------- form state
form_memo = lab_ui.owner_memo("train_form")  # the form survives a reload too (per session id, in the app)
if P + "preset" not in ss:
    ss.update(ss.get(FORM_KEY) or form_memo.get("values") or {})  # restore
if P + "preset" not in ss:
    ss[P + "preset"] = training.default_preset(cuda)
for key, value in UI.preset_values(ss[P + "preset"]).items():
    ss.setdefault(key, value)
devices = ["auto", "cpu"] + [f"cuda:{i}" for i in range(lab_ui.device_info().get("gpus", 1) if cuda else 0)]
if ss[P + "device"] not in devices:
    ss[P + "device"] = "auto"
ss[P + "data"] = "set by the class server" if lab_ui.data_locked() else lab_ui.data_source()
if ss[P + "model"] in list_models():
    for opt, info in model_info(ss[P + "model"])["options"].items():
        ss.setdefault(UI.OPTION + opt, info["default"])

prefill = ss.pop("train_prefill", None)  # handed over by the LR Finder page
if isinstance(prefill, dict) and (note := UI.apply_prefill(prefill)):
    ss["_train_prefill_note"] = note

config = UI.current_config(lab_ui.data_source())
n_train = min(config.subset, n_full) if isinstance(config.subset, int) and config.subset >= 10 else n_full
errors = config.validate(n_train=n_train)
for key, message in UI.cap_problems(config, skip_model="model" in errors).items():
    errors.setdefault(key, message)
EXTRA = {"model": dict(choices=model_file_ui.choices(list_models()), format_func=model_file_ui.shown),
         "device": dict(choices=devices),
         "subset": dict(empty_note=f"all {n_full:,}"), "compile": dict(disabled=not cuda),
         "data": dict(disabled=True, help_extra=" Set it in the sidebar.")}


def field(name: str) -> None:
    widget(SPECS[name], P + name, **EXTRA.get(name, {}))
    field_error(errors, name)


# --------------------------------------------------------------------------------------------------- settings
st.header("Settings", divider="gray")
if not cuda:
    _q, _a = training.PRESETS["quick-cpu"], training.PRESETS["assignment"]
    st.info(f"**No GPU here.** Training runs on the CPU, so the **quick-cpu** preset is the default: a *demo* "
            f"({_q['model']} on {_q['subset']:,} training / {_q['test_subset']:,} test images, {_q['epochs']} epochs) "
            f"— enough to watch the one-cycle curves, not a real result (its measured time and accuracy are under "
            f"the preset box). The **assignment** preset ({_a['model']}, all training images, {_a['epochs']} epochs) "
            f"is made for a GPU and takes hours here.", icon=":material/developer_board:")
if ss.get("_train_prefill_note"):
    st.success(f"{ss['_train_prefill_note']}.", icon=":material/search_insights:")

pc1, pc2 = st.columns([5, 1], vertical_alignment="bottom")
pc1.selectbox("Preset", list(training.PRESETS), key=P + "preset", on_change=UI.apply_preset,
              help="Sets every field below; change any of them afterwards.")
# Choosing the same preset again fires no change, so a handed-over LR (or any edit) would stay: this button is
# the way back to the preset's own values.
pc2.button("Reset to preset", key=P + "reset_preset", on_click=UI.reset_preset, icon=":material/restart_alt:",
           help="Every field back to the preset's values (a class server's caps still apply).", width="stretch")
st.caption(training.preset_note(ss[P + "preset"]))
for note in UI.caps_notes(ss[P + "preset"])[1]:
    st.caption(f":material/lock: {note[:1].upper()}{note[1:]}.")
for i, column in enumerate(st.columns(4)):
    with column:
        for name in MAIN[i::4]:
            field(name)
field("annihilation")

rest = [n for n in SPECS if n not in MAIN + ["annihilation", "preset"]]
with st.expander("More settings: model options, momentum, regularisation, augmentation, data, hardware",
                 expanded=bool(set(errors) - set(MAIN))):
    for section, title in training.SECTIONS.items():
        names = [n for n in rest if SPECS[n].meta.section == section and n != "model_options"]
        st.markdown(f"**{title.capitalize()}**")
        if section == "model" and ss[P + "model"] in list_models():
            options = model_info(ss[P + "model"])["options"]
            for column, (opt, info) in zip(st.columns(4), options.items()):
                column.selectbox(f"Option: {opt}", info["choices"], key=UI.OPTION + opt, help=info["help"])
            field_error(errors, "model_options")
        for i, column in enumerate(st.columns(4)):
            with column:
                for name in names[i::4]:
                    field(name)
    for key in set(errors) - set(SPECS):
        st.error(errors[key], icon=":material/error:")
ss[FORM_KEY] = form_memo["values"] = UI.form_state()

# ---------------------------------------------------------------------------------------------------- preview
SCHEDULE_FIELDS = {"epochs", "peak_epoch", "lr_max", "lr_min", "momentum_max", "momentum_min", "batch_size",
                   "subset", "lr_end"}
st.subheader("Schedule preview")
if SCHEDULE_FIELDS & set(errors):
    st.warning("Fix the settings marked above to see the schedule.", icon=":material/edit:")
else:
    fig, spe, lrs = schedule_figure(config, n_train)
    st.plotly_chart(fig, key=P + "schedule_chart")
    st.caption(f"{config.epochs} epochs × {spe} steps = {len(lrs):,} steps on {n_train:,} images; LR "
               f"{lrs[0]:.3g} → {lrs.max():.3g} → {lrs[-1]:.3g}.")


# --------------------------------------------------------------------------------------------- start and stop
def _start() -> None:
    if registry.active(owner, "train") is not None:
        return  # one job per session
    cfg = UI.current_config(lab_ui.data_source())
    try:
        full = lab_ui.load_data(cfg.data)
    except Exception as exc:  # shown by the page body on the rerun
        ss["_train_start_error"] = str(exc)
        return
    bad = cfg.validate(n_train=min(cfg.subset, full.n_train) if cfg.subset else full.n_train)
    # The caps are checked again on the values of this click: ``errors`` is the previous run's verdict, and a
    # value changed in the same round trip as the click would otherwise pass.
    if bad or errors or UI.cap_problems(cfg, skip_model="model" in bad):
        return  # the form shows them; Start is disabled
    # The worker process loads the data itself (from the decoded cache) and trains there: nothing this page or
    # any other does (tracing, hooks, seeds, thread counts) can reach it.
    curve = ss.get("_train_lr_test")  # the LR Finder's curve, when these LRs came from it
    linked = {"lr_test": curve} if curve and curve.get("lrs") else {}
    job = registry.start("train", tasks.train, owner=owner, owner_name=lab_ui.display_name(),
                         title=f"{display_name(cfg.model)} · {cfg.epochs} epochs · LR max {cfg.lr_max:g}",
                         config=cfg.to_dict(), source=cfg.data, **linked)
    ss[JOB_KEY] = job.id


st.header("Training", divider="gray")
lab_ui.start_stop("train", "Start training", "train", _start, blocked=bool(errors) or data is None,
                  stop_help="Ends after the current batch; the run is evaluated and kept.")
if errors:
    st.caption(f":material/error: {len(errors)} setting(s) to fix before training can start.")
if ss.get("_train_start_error"):
    st.error(lab_ui.public(ss.pop("_train_start_error")))
job = lab_ui.session_job("train", JOB_KEY)  # also after a reload: the session id is in the URL
if job is None:
    st.caption("No training started in this session yet. Runs from earlier sessions are in the table below.")
else:
    lab_ui.live_panel(job, UI.draw_job, POLL_S)  # the whole page reruns at the end: results, Start enabled again

# ---------------------------------------------------------------------------------------------------- results
st.header("Results", divider="gray")
runs = lab_ui.visible_runs(store.list(), P + "runs_everyone")  # this session's (and CLI) runs unless switched
if not runs:
    if job is not None and job.active:
        st.info("Your first run is training; its results appear here when it ends.", icon=":material/hourglass_top:")
    else:
        st.info("No saved runs of yours yet. Start one above; it is saved in the runs folder and listed here. "
                "Switch on *Everyone's runs* to see the others'.", icon=":material/inventory_2:")
    st.stop()

labels = {r.id: r.label for r in runs}
if job is not None and not job.active and ss.get(SHOWN_KEY) != job.id:
    started = next(iter(job.events("start", since=0)), None)
    if started and started["run_id"] in labels:
        ss[P + "result_run"] = started["run_id"]  # show the run this session just finished
    ss[SHOWN_KEY] = job.id
if ss.get(P + "result_run") not in labels:
    ss[P + "result_run"] = runs[0].id
run_id = st.selectbox("Run", list(labels), key=P + "result_run", format_func=labels.get)
UI.show_run(next(r for r in runs if r.id == run_id))

st.subheader("All runs")
UI.runs_table(runs)
ss[P + "compare_runs"] = [r for r in ss.get(P + "compare_runs", []) if r in labels]  # drop deleted runs
compare = st.multiselect("Overlay the curves of these runs", list(labels), key=P + "compare_runs",
                         format_func=labels.get)
if compare:
    st.plotly_chart(history_figure([r for r in runs if r.id in compare]), key=P + "compare_chart")
UI.delete_control(store, runs, labels)
