"""Train: pick a preset, change any hyperparameter, preview the one-cycle schedule, train in the background with
live curves, then read the results and compare runs.

Training runs as a job (resnet_lab.jobs) in the app-wide registry, so reruns, clicks and page switches neither kill
nor restart it; this session keeps only the job id. A fragment polls the job while it runs.
"""

from __future__ import annotations

import time

import streamlit as st

import lab_ui
from train_figs import history_figure, live_figure, per_class_figure, schedule_figure
from resnet_lab import tasks, training
from resnet_lab.config import check_caps
from resnet_lab.models import list_models
from resnet_lab.runs import RunError, RunStore

JOB_KEY = "train_job_id"  # the only trace of a job in the session
FORM_KEY = "_train_form"  # widget values survive page switches (Streamlit drops unrendered widgets' state)
SHOWN_KEY = "_train_shown_job"  # the job whose run was last put into the result picker
DELETE_KEY = "_train_pending_delete"
POLL_S = 1.0  # at most ~1 Hz: each poll reads only the new events (lab_ui.new_events)
FULL_SIZE = 50_000

# widget key -> type; every key is also a TrainConfig field
FIELDS = {"model": str, "optimizer": str, "batch_size": int, "seed": int, "epochs": int, "peak_epoch": float,
          "lr_max": float, "lr_min": float, "annihilation": bool, "momentum_max": float, "momentum_min": float,
          "nesterov": bool, "weight_decay": float, "label_smoothing": float, "subset": int, "test_subset": int,
          "augment": bool, "cutout": int, "tta": bool, "pipeline": str, "compile": bool}
LABELS = {"lr_max": "LR max", "lr_min": "LR min", "peak_epoch": "Peak epoch", "batch_size": "Batch size"}

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
def _preset_values(name: str) -> dict:
    cfg = training.preset(name)
    values = {k: getattr(cfg, k) for k in FIELDS}
    values["subset"] = cfg.subset or 0
    values["test_subset"] = cfg.test_subset or 0
    return {k: FIELDS[k](v) for k, v in values.items()}  # 5 → 5.0 where the widget is a float one


def _apply_preset() -> None:
    ss.update(_preset_values(ss["preset"]))


form_memo = lab_ui.owner_memo("train_form")  # the form survives a reload too (per session id, in the app)
if "preset" not in ss:
    ss.update({k: v for k, v in (ss.get(FORM_KEY) or form_memo.get("values") or {}).items()})  # restore
if "preset" not in ss:
    ss["preset"] = training.default_preset(cuda)
for key, value in _preset_values(ss["preset"]).items():
    ss.setdefault(key, value)

prefill = ss.pop("train_prefill", None)  # handed over by the LR Finder page
if isinstance(prefill, dict):
    used = {}
    for key in ("lr_max", "lr_min", "model", "optimizer", "batch_size"):
        value = prefill.get(key)
        if value is None or (key == "model" and value not in list_models()) or \
                (key == "optimizer" and value not in training.OPTIMIZERS):
            continue
        ss[key] = FIELDS[key](value)
        used[key] = value
    if "lr_max" in used and "lr_min" not in used:
        ss["lr_min"] = ss["lr_max"] / 10
    if used:
        note = ", ".join(f"{LABELS.get(k, k)} = {v:g}" if isinstance(v, float) else
                         f"{LABELS.get(k, k)} = {v}" for k, v in used.items())
        tested = prefill.get("tested_batch_size")
        if "batch_size" not in used and tested and int(tested) != ss["batch_size"]:
            note += (f". The batch size stays {ss['batch_size']} (the test ran at {int(tested)}): the best LR depends "
                     "on the batch size, so treat the LR as a starting point or rerun the test at this batch size")
        other = [f"{what} {prefill[k]}" for k, what, field in (("tested_model", "model", "model"),
                                                                 ("tested_optimizer", "optimizer", "optimizer"))
                 if prefill.get(k) and field not in used and prefill[k] != ss[field]]
        if other:
            note += f". The test used {' and '.join(other)}, not this form's: the best LR differs between them too"
        ss["_train_prefill_note"] = note


def current_config() -> training.TrainConfig:
    values = {k: ss[k] for k in FIELDS}
    values["subset"] = values["subset"] or None
    values["test_subset"] = values["test_subset"] or None
    return training.TrainConfig(**values, preset=ss["preset"], data=lab_ui.data_source(), device="auto")


def effective_n_train(subset) -> int:
    return min(subset, n_full) if subset else n_full


config = current_config()
n_train = effective_n_train(config.subset) if isinstance(config.subset, int) and config.subset >= 10 else n_full
errors = config.validate(n_train=n_train)
caps = lab_ui.settings()
if caps.get("max_params") and "model" not in errors:
    from resnet_lab.models import param_count

    model_params = param_count(config.model)
else:
    model_params = None
for key, message in check_caps(caps, epochs=config.epochs, batch_size=config.batch_size, params=model_params).items():
    errors.setdefault(key, message)


def field_error(key: str) -> None:
    if key in errors:
        st.error(errors[key], icon=":material/error:")


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
    st.success(f"From the LR Finder: {ss['_train_prefill_note']}.", icon=":material/search_insights:")

st.selectbox("Preset", list(training.PRESETS), key="preset", on_change=_apply_preset,
             help="Sets every field below; change any of them afterwards.")
st.caption(training.PRESET_NOTES.get(ss["preset"], ""))

c1, c2, c3, c4 = st.columns(4)
with c1:
    st.selectbox("Model", list_models(), key="model", help="Any network of the registry (Data & Models page).")
    field_error("model")
    st.number_input("Epochs", step=1, key="epochs", help="Passes over the training images.")
    field_error("epochs")
with c2:
    st.selectbox("Optimizer", training.OPTIMIZERS, key="optimizer",
                 help="adam / adamw: β1 follows the momentum cycle; sgd: the momentum does.")
    field_error("optimizer")
    st.number_input("Peak epoch", step=0.5, format="%g", key="peak_epoch",
                    help="The LR reaches LR max at the end of this epoch (fractions allowed).")
    field_error("peak_epoch")
with c3:
    st.number_input("Batch size", step=32, key="batch_size", help="Images per step.")
    field_error("batch_size")
    st.number_input("LR max", step=0.001, format="%g", key="lr_max", help="The learning rate at the peak.")
    field_error("lr_max")
with c4:
    st.number_input("Seed", step=1, key="seed", help="Same seed, same settings → the same run on the same hardware.")
    field_error("seed")
    st.number_input("LR min", step=0.0001, format="%g", key="lr_min",
                    help="The starting LR, and the final one when annihilation is off.")
    field_error("lr_min")
st.toggle("Annihilation: end far below LR min (LR min / 1000) instead of at LR min", key="annihilation",
          help="The assignment says no annihilation: the run ends at LR min.")

with st.expander("More settings: momentum, regularisation, data, hardware", expanded=bool(
        set(errors) - {"model", "epochs", "optimizer", "peak_epoch", "batch_size", "lr_max", "seed", "lr_min"})):
    m1, m2, m3, m4 = st.columns(4)
    with m1:
        st.number_input("Momentum max", step=0.01, format="%g", key="momentum_max",
                        help="SGD momentum / Adam β1 at the start and the end.")
        field_error("momentum_max")
        st.number_input("Weight decay", step=0.0001, format="%g", key="weight_decay")
        field_error("weight_decay")
    with m2:
        st.number_input("Momentum min", step=0.01, format="%g", key="momentum_min",
                        help="… at the LR peak. Equal to max: constant momentum.")
        field_error("momentum_min")
        st.number_input("Label smoothing", step=0.05, format="%g", key="label_smoothing",
                        help="0 = plain cross-entropy (the assignment).")
        field_error("label_smoothing")
    with m3:
        st.number_input(f"Training images (0 = all {n_full:,})", step=500, key="subset",
                        help="A class-balanced subset, the same images for every seed.")
        field_error("subset")
        st.number_input("Test images (0 = all)", step=500, key="test_subset")
        field_error("test_subset")
    with m4:
        st.number_input("Cutout size (px, 0 = none)", step=1, key="cutout")
        field_error("cutout")
        st.selectbox("Input pipeline", training.PIPELINES, key="pipeline",
                     help="auto: batched torch ops on the GPU, albumentations per image on a CPU.")
        field_error("pipeline")
    f1, f2, f3, f4 = st.columns(4)
    f1.checkbox("Augment (crop + flip + cutout)", key="augment")
    f2.checkbox("Nesterov (SGD)", key="nesterov")
    with f2:
        field_error("nesterov")
    f3.checkbox("Test-time flip averaging", key="tta", help="Average each test image's prediction with its mirror's.")
    f4.checkbox("torch.compile", key="compile", disabled=not cuda,
                help="Compiles the model first (slow start, faster epochs); GPU only.")
    for key in set(errors) - set(FIELDS):
        st.error(errors[key], icon=":material/error:")
ss[FORM_KEY] = form_memo["values"] = {k: ss[k] for k in ["preset", *FIELDS]}


# ---------------------------------------------------------------------------------------------------- preview
SCHEDULE_FIELDS = {"epochs", "peak_epoch", "lr_max", "lr_min", "momentum_max", "momentum_min", "batch_size",
                   "subset"}


st.subheader("Schedule preview")
if SCHEDULE_FIELDS & set(errors):
    st.warning("Fix the settings marked above to see the schedule.", icon=":material/edit:")
else:
    fig, spe, lrs = schedule_figure(config, n_train)
    st.plotly_chart(fig, key="schedule_chart")
    st.caption(f"{config.epochs} epochs × {spe} steps = {len(lrs):,} steps on {n_train:,} images; LR "
               f"{lrs[0]:.3g} → {lrs.max():.3g} → {lrs[-1]:.3g}.")


# --------------------------------------------------------------------------------------------- start and stop
def my_job():
    return lab_ui.session_job("train", JOB_KEY)  # also after a reload: the session id is in the URL


def _start() -> None:
    if registry.active(owner, "train") is not None:
        return  # one job per session
    cfg = current_config()
    source = lab_ui.data_source()
    try:
        full = lab_ui.load_data(source)
    except Exception as exc:  # shown by the page body on the rerun
        ss["_train_start_error"] = str(exc)
        return
    problems = cfg.validate(n_train=effective_n_train(cfg.subset) if cfg.subset else full.n_train)
    if problems or errors:
        return  # the form shows them; Start is disabled
    # The worker process loads the data itself (from the decoded cache) and trains there: nothing this page or
    # any other does (tracing, hooks, seeds, thread counts) can reach it.
    job = registry.start("train", tasks.train, owner=owner, owner_name=lab_ui.display_name(),
                         title=f"{cfg.model} · {cfg.epochs} epochs · LR max {cfg.lr_max:g}",
                         config=cfg.to_dict(), source=source)
    ss[JOB_KEY] = job.id


def _stop() -> None:
    job = registry.active(owner, "train")
    if job is not None:
        job.stop()


st.header("Training", divider="gray")
active = registry.active(owner, "train")
b1, b2, b3 = st.columns([1, 1, 4])
b1.button("Start training", key="start", type="primary", icon=":material/play_arrow:", on_click=_start,
          disabled=bool(errors) or active is not None or data is None,
          help="Fix the marked settings first." if errors else None)
b2.button("Stop", key="stop", icon=":material/stop:", on_click=_stop, disabled=active is None or
          active.status == "stopping", help="Ends after the current batch; the run is evaluated and kept.")
if errors:
    b3.caption(f":material/error: {len(errors)} setting(s) to fix before training can start.")
if ss.get("_train_start_error"):
    st.error(ss.pop("_train_start_error"))


def _clock(seconds) -> str:
    if seconds is None:
        return "–"
    seconds = int(max(seconds, 0))
    return f"{seconds // 60}:{seconds % 60:02d}"


def draw_job(job) -> None:
    snap = job.snapshot()
    if lab_ui.queue_note(job, "train_queue"):
        return
    events = lab_ui.new_events(job, "train")
    start = next(iter(events.get("start", [])), None)
    batches, epochs = events.get("batch", []), events.get("epoch", [])
    last = batches[-1] if batches else None
    end = next(iter(events.get("end", [])), None)
    if snap["status"] == "cancelled":
        st.info("Cancelled before it started.", icon=":material/close:")
    elif start is None:
        st.progress(0.0, text=job.message or "Loading data and building the model …")
    else:
        total_epochs = start["epochs"]
        if end is not None and end["status"] == "done":
            text = (f"Finished: {total_epochs} epochs in {end['seconds']:.1f} s · test accuracy "
                    f"{100 * end['top1']:.2f} %")
        elif end is not None:
            where = f" in epoch {last['epoch']}, step {last['step']:,}/{start['total_steps']:,}" if last else ""
            text = f"{end['status'].capitalize()}{where}"
        elif last:
            text = (f"Epoch {last['epoch']}/{total_epochs} · step {last['step']:,}/{start['total_steps']:,} · "
                    f"loss {last['loss']:.3f} · {last['images_per_s']:,.0f} images/s · ETA {_clock(last['eta_s'])}")
        else:
            text = f"Starting: {start['n_train']:,} images, {start['steps_per_epoch']} steps per epoch …"
        if snap["status"] == "stopping":
            text = "Stopping after this batch, then evaluating … · " + text
        st.progress(min(max(snap["progress"], 0.0), 1.0), text=text)
        st.caption(f"Run `{start['run_id']}` on {start['device']} · input pipeline: {start['pipeline']}")
        if batches or epochs:
            st.plotly_chart(live_figure(lab_ui.thin(batches), epochs, start["steps_per_epoch"]), key=f"live_{job.id}")
    if snap["status"] == "failed":
        st.error(f"**Training failed:** {job.error}", icon=":material/error:")
    elif snap["status"] == "stopped":
        st.warning("Stopped on request: the run was evaluated and saved as *stopped* (see the results below).",
                   icon=":material/stop_circle:")


job = my_job()
if job is None:
    st.caption("No training started in this session yet. Runs from earlier sessions are in the table below.")
else:
    lab_ui.live_panel(job, draw_job, POLL_S)  # the whole page reruns at the end: results, Start enabled again


# ---------------------------------------------------------------------------------------------------- results
st.header("Results", divider="gray")
runs = lab_ui.visible_runs(store.list(), "runs_everyone")  # this session's (and CLI) runs unless switched
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
        ss["result_run"] = started["run_id"]  # show the run this session just finished
    ss[SHOWN_KEY] = job.id
if ss.get("result_run") not in labels:
    ss["result_run"] = runs[0].id
run_id = st.selectbox("Run", list(labels), key="result_run", format_func=labels.get)
run = next(r for r in runs if r.id == run_id)


status_note = {"running": ("info", "still training"), "stopped": ("warning", "stopped before the end"),
               "failed": ("error", "failed"), "interrupted": ("warning", "interrupted: its process ended")}
if run.status in status_note:
    kind, text = status_note[run.status]
    getattr(st, kind)(f"This run is **{text}**." + (f" {run.error}" if run.error else ""))
met = run.metrics


def _pct(value) -> str:
    return f"{100 * value:.2f} %" if isinstance(value, (int, float)) else "–"


def _g(value) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else "?"


if "top1" in met:
    cols = st.columns(5)
    cols[0].metric("Top-1 accuracy", _pct(met.get("top1")))
    cols[1].metric("Top-3 accuracy", _pct(met.get("top3")))
    cols[2].metric("Top-5 accuracy", _pct(met.get("top5")))
    cols[3].metric("Test loss", f"{met['test_loss']:.3f}" if "test_loss" in met else "–")
    secs = met.get("seconds_total")
    cols[4].metric("Training time", f"{secs:.1f} s" if isinstance(secs, (int, float)) else "–",
                   help=f"first batch → final accuracy, on {met.get('device')}")
    cfg = run.config
    st.caption(f"{cfg.get('model')} · {met.get('epochs_done', len(run.history))} of {cfg.get('epochs')} epochs · "
               f"{cfg.get('n_train') or 0:,} train / {cfg.get('n_test') or 0:,} test images · {cfg.get('optimizer')} · "
               f"LR {_g(cfg.get('lr_min'))} → {_g(cfg.get('lr_max'))} (peak epoch {_g(cfg.get('peak_epoch'))}) · "
               f"batch {cfg.get('batch_size')} · seed {cfg.get('seed')} · {met.get('images_per_s') or 0:,.0f} images/s")
    left, right = st.columns([3, 2])
    with left:
        st.plotly_chart(history_figure([run]), key="result_curves")
    with right:
        if met.get("per_class_acc"):
            st.plotly_chart(per_class_figure(run), key="per_class_chart")
elif run.history:
    st.plotly_chart(history_figure([run]), key="result_curves")
if run.has_checkpoint:
    path = run.checkpoint_path
    st.download_button("Download the checkpoint (model.pt, a state_dict)", data=lambda: path.read_bytes(),
                       file_name=f"{run.id}.pt", mime="application/octet-stream", key="download",
                       icon=":material/download:", on_click="ignore")
with st.expander("Full configuration"):
    st.json(run.config, expanded=False)


# -------------------------------------------------------------------------------------------------- all runs
st.subheader("All runs")
import pandas as pd  # noqa: E402  (the app has pandas; only this table needs it)

table = pd.DataFrame([{
    "run": r.id, "status": r.status, "model": r.config.get("model"), "preset": r.config.get("preset"),
    "epochs": len(r.history), "images": r.config.get("n_train"), "LR max": r.config.get("lr_max"),
    "optimizer": r.config.get("optimizer"), "top-1 %": 100 * r.metrics["top1"] if "top1" in r.metrics else None,
    "seconds": r.metrics.get("seconds_total"),
    "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created)), "by": lab_ui.owner_label(r),
} for r in runs])
st.dataframe(table, hide_index=True, column_config={
    "top-1 %": st.column_config.NumberColumn(format="%.2f"), "seconds": st.column_config.NumberColumn(format="%.1f")})

ss["compare_runs"] = [r for r in ss.get("compare_runs", []) if r in labels]  # drop deleted runs
compare = st.multiselect("Overlay the curves of these runs", list(labels), key="compare_runs",
                         format_func=labels.get)
if compare:
    st.plotly_chart(history_figure([r for r in runs if r.id in compare]), key="compare_chart")

def _ask_delete() -> None:
    ss[DELETE_KEY] = ss.get("delete_run")


deletable = {rid: label for rid, label in labels.items() if lab_ui.may_delete(next(r for r in runs if r.id == rid))}


def _confirm_delete() -> None:
    rid = ss.pop(DELETE_KEY, None)
    try:
        if not lab_ui.may_delete(store.get(rid)):  # checked again here: the list could be stale
            raise RunError(f"run {rid} was started by someone else; only they (or the teacher) can delete it")
        store.delete(rid)
    except RunError as exc:
        ss["_train_delete_error"] = str(exc)
    ss["delete_run"] = None


def _cancel_delete() -> None:
    ss.pop(DELETE_KEY, None)


d1, d2 = st.columns([3, 2], vertical_alignment="bottom")
with d1:
    if ss.get("delete_run") not in deletable:
        ss["delete_run"] = None
    to_delete = st.selectbox("Delete a run (yours only)" if not lab_ui.is_teacher() else "Delete a run",
                             [None, *deletable], key="delete_run",
                             format_func=lambda rid: "—" if rid is None else deletable[rid])
with d2:
    st.button("Delete…", key="delete", disabled=to_delete is None, icon=":material/delete:", on_click=_ask_delete)
if ss.get("_train_delete_error"):
    st.error(ss.pop("_train_delete_error"))
pending = ss.get(DELETE_KEY)
if pending in deletable:
    st.warning(f"Delete run **{pending}** and its checkpoint for good? This cannot be undone.",
               icon=":material/warning:")
    y, n, _ = st.columns([1, 1, 4])
    y.button("Yes, delete", key="confirm_delete", type="primary", on_click=_confirm_delete)
    n.button("Cancel", key="cancel_delete", on_click=_cancel_delete)
