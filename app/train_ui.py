"""The Train page's pieces: its form state (generated from TrainConfig's field metadata), the LR Finder hand-over,
the live job panel and the result views. The page (pages/train.py) lays them out."""

from __future__ import annotations

import time

import streamlit as st

import lab_ui
import model_file_ui
import report_ui
from lr_finder_ui import UNCOUNTED

from resnet_lab import training
from resnet_lab.config import check_caps, fit_to_caps
from resnet_lab.models import list_models, model_info
from resnet_lab.runs import RunError
from resnet_lab.settings import specs
from settings_form import from_widget, to_widget
from train_figs import history_figure, live_figure, per_class_figure

SPECS = specs(training.TrainConfig)
P = "train_"  # every widget key of the page starts with it
# Fields whose widgets hold the form; ``data`` comes from the sidebar, ``model_options`` has one widget per option
# of the chosen model, ``preset`` is the preset picker.
FORM = [name for name in SPECS if name not in ("data", "model_options", "preset")]
OPTION = P + "model_options."  # + option name
ss = st.session_state


def preset_values(name: str) -> dict:
    """The form's values for a preset, cut to a class server's caps (caps_notes says what was cut)."""
    cfg = training.preset(name)
    values = {k: getattr(cfg, k) for k in FORM}
    values.update(caps_notes(name)[0])
    return {P + k: to_widget(SPECS[k], v) for k, v in values.items()}


def cap_problems(cfg, skip_model: bool = False) -> dict[str, str]:
    """Field -> message for each class-server cap ``cfg`` exceeds (its model's parameters counted unless the model
    itself is invalid)."""
    caps = lab_ui.settings()
    params = None
    if caps.get("max_params") and not skip_model:
        params = model_file_ui.params(cfg.model)
        if params is None:
            return {"model": UNCOUNTED, **check_caps(caps, epochs=cfg.epochs, batch_size=cfg.batch_size)}
    return check_caps(caps, epochs=cfg.epochs, batch_size=cfg.batch_size, params=params)


def caps_notes(name: str) -> tuple[dict, list[str]]:
    """What a class server's caps change in preset ``name``'s defaults, and the sentences that say so."""
    cfg = training.preset(name)
    return fit_to_caps(lab_ui.settings(), epochs=cfg.epochs, peak_epoch=cfg.peak_epoch, batch_size=cfg.batch_size)


def apply_preset() -> None:
    for key in [k for k in ss if str(k).startswith(OPTION)]:
        del ss[key]  # the preset's model starts from its default options
    ss.update(preset_values(ss[P + "preset"]))


def reset_preset() -> None:
    """The preset's own values again, dropping what another page handed over (and its note)."""
    apply_preset()
    ss.pop("_train_prefill_note", None)


def form_state() -> dict:
    """What to keep of the form across page switches and reloads."""
    return {k: ss[k] for k in ss if str(k).startswith(P) and (k == P + "preset" or k[len(P):] in FORM
                                                                or str(k).startswith(OPTION))}


def model_options() -> dict:
    """The chosen model's options that differ from its defaults (the widgets hold all of them)."""
    model = ss[P + "model"]
    if model not in list_models():
        return {}
    return {opt: ss[OPTION + opt] for opt, info in model_info(model)["options"].items()
            if OPTION + opt in ss and ss[OPTION + opt] != info["default"]}


def current_config(data_source: str) -> training.TrainConfig:
    values = {k: from_widget(SPECS[k], ss[P + k]) for k in FORM}
    return training.TrainConfig(**values, model_options=model_options(), preset=ss[P + "preset"], data=data_source)


def apply_prefill(prefill: dict) -> str | None:
    """Put what another page handed over into the form: its preset first (if any), then each setting it names
    (the LR Finder: LR max/min and every setting its sweep shares with the run; the search: the winner's genes,
    model and optimizer). Returns the note the page shows (None when nothing was used)."""
    if prefill.get("preset") in training.PRESETS and prefill["preset"] != ss[P + "preset"]:
        ss[P + "preset"] = prefill["preset"]
        apply_preset()
    used = {}
    for key in [k for k in prefill if k in FORM]:  # in the order the other page listed them (the LRs first)
        value = prefill[key]
        if value is None or SPECS[key].problem(value) or \
                (key == "model" and value not in list_models()):
            continue
        ss[P + key] = to_widget(SPECS[key], value)
        used[key] = value
    if "lr_max" in used and "lr_min" not in used:
        ss[P + "lr_min"] = ss[P + "lr_max"] / 10
    if isinstance(prefill.get("lr_test"), dict) and "lr_max" in used:
        ss["_train_lr_test"] = prefill["lr_test"]  # handed to the next run started (tasks.train keeps it)
    if not used:
        return None
    note = f"From {prefill.get('source') or 'the LR Finder'}: " + ", ".join(f"{SPECS[k].title} = {v:g}" if isinstance(v, float) else f"{SPECS[k].title} = {v}"
                     for k, v in used.items())
    tested, batch = prefill.get("tested_batch_size"), ss[P + "batch_size"]
    if "batch_size" not in used and tested and int(tested) != batch:
        note += (f". The batch size stays {batch} (the test ran at {int(tested)}): the best LR depends "
                 "on the batch size, so treat the LR as a starting point or rerun the test at this batch size")
    other = [f"{field} {prefill[k]}" for k, field in (("tested_model", "model"), ("tested_optimizer", "optimizer"))
             if prefill.get(k) and field not in used and prefill[k] != ss[P + field]]
    if other:
        note += f". The test used {' and '.join(other)}, not this form's: the best LR differs between them too"
    return note


def _clock(seconds) -> str:
    if seconds is None:
        return "–"
    seconds = int(max(seconds, 0))
    return f"{seconds // 60}:{seconds % 60:02d}"


def _progress_text(start: dict, last: dict | None, end: dict | None) -> str:
    total_epochs = start["epochs"]
    if end is not None and end["status"] == "done":
        return f"Finished: {total_epochs} epochs in {end['seconds']:.1f} s · test accuracy {100 * end['top1']:.2f} %"
    if end is not None:
        where = f" in epoch {last['epoch']}, step {last['step']:,}/{start['total_steps']:,}" if last else ""
        return f"{end['status'].capitalize()}{where}"
    if last:
        return (f"Epoch {last['epoch']}/{total_epochs} · step {last['step']:,}/{start['total_steps']:,} · "
                f"loss {last['loss']:.3f} · {last['images_per_s']:,.0f} images/s · ETA {_clock(last['eta_s'])}")
    return f"Starting: {start['n_train']:,} images, {start['steps_per_epoch']} steps per epoch …"


def draw_job(job) -> None:
    """The live panel: queue place, progress with ETA, the curves so far (reading only the new events)."""
    snap = job.snapshot()
    if lab_ui.queue_note(job, P + "queue"):
        return
    events = lab_ui.new_events(job, "train")
    start = next(iter(events.get("start", [])), None)
    batches, epochs = events.get("batch", []), events.get("epoch", [])
    end = next(iter(events.get("end", [])), None)
    if snap["status"] == "cancelled":
        st.info("Cancelled before it started.", icon=":material/close:")
    elif start is None:
        st.progress(0.0, text=job.message or "Loading data and building the model …")
    else:
        text = _progress_text(start, batches[-1] if batches else None, end)
        if snap["status"] == "stopping":
            text = "Stopping after this batch, then evaluating … · " + text
        st.progress(min(max(snap["progress"], 0.0), 1.0), text=text)
        node = next(iter(job.events("node")), None)  # a job on a Ray cluster says where it runs
        where = f" of cluster node {node['host']} ({node['node_id'][:8]})" if node else ""
        st.caption(f"Run `{start['run_id']}` on {start['device']}{where} · input pipeline: {start['pipeline']}")
        if batches or epochs:
            st.plotly_chart(live_figure(lab_ui.thin(batches), epochs, start["steps_per_epoch"]),
                            key=f"{P}live_{job.id}")
    if snap["status"] == "failed":
        st.error(f"**Training failed:** {lab_ui.public(job.error)}", icon=":material/error:")
    elif snap["status"] == "stopped":
        st.warning("Stopped on request: the run was evaluated and saved as *stopped* (see the results below).",
                   icon=":material/stop_circle:")


def _pct(value) -> str:
    return f"{100 * value:.2f} %" if isinstance(value, (int, float)) else "–"


def _g(value) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else "?"


STATUS_NOTES = {"running": ("info", "still training"), "stopped": ("warning", "stopped before the end"),
                "failed": ("error", "failed"), "interrupted": ("warning", "interrupted: its process ended")}


def show_run(run) -> None:
    """One run's results: status, accuracy metrics with units, curves, per-class accuracy, checkpoint, config."""
    if run.status in STATUS_NOTES:
        kind, text = STATUS_NOTES[run.status]
        getattr(st, kind)(f"This run is **{text}**." + (f" {lab_ui.public(run.error)}" if run.error else ""))
    met = run.metrics
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
        st.caption(f"{model_file_ui.shown(str(cfg.get('model')))} · {met.get('epochs_done', len(run.history))} of {cfg.get('epochs')} epochs · "
                   f"{cfg.get('n_train') or 0:,} train / {cfg.get('n_test') or 0:,} test images · "
                   f"{cfg.get('optimizer')} · LR {_g(cfg.get('lr_min'))} → {_g(cfg.get('lr_max'))} (peak epoch "
                   f"{_g(cfg.get('peak_epoch'))}) · batch {cfg.get('batch_size')} · seed {cfg.get('seed')} · "
                   f"{met.get('images_per_s') or 0:,.0f} images/s")
        left, right = st.columns([3, 2])
        with left:
            st.plotly_chart(history_figure([run]), key=P + "result_curves")
        with right:
            if met.get("per_class_acc"):
                st.plotly_chart(per_class_figure(run), key=P + "per_class_chart")
    elif run.history:
        st.plotly_chart(history_figure([run]), key=P + "result_curves")
    if run.has_checkpoint:
        path = run.checkpoint_path
        st.download_button("Download the checkpoint (model.pt, a state_dict)", data=lambda: path.read_bytes(),
                           file_name=f"{run.id}.pt", mime="application/octet-stream", key=P + "download",
                           icon=":material/download:", on_click="ignore")
    if run.has_checkpoint and run.status in ("done", "stopped"):
        report_ui.panel(run, P + "result")
    with st.expander("Full configuration"):
        st.json(lab_ui.redacted_config(run.config), expanded=False)


def runs_table(runs: list) -> None:
    import pandas as pd  # the app has pandas; only this table needs it

    table = pd.DataFrame([{
        "run": r.id, "status": r.status, "by": lab_ui.owner_label(r), "model": model_file_ui.shown(str(r.config.get("model"))), "preset": r.config.get("preset"),
        "epochs": len(r.history), "images": r.config.get("n_train"), "LR max": r.config.get("lr_max"),
        "optimizer": r.config.get("optimizer"), "top-1 %": 100 * r.metrics["top1"] if "top1" in r.metrics else None,
        "seconds": r.metrics.get("seconds_total"),
        "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created)),
    } for r in runs])
    st.dataframe(table, hide_index=True, column_config={
        "top-1 %": st.column_config.NumberColumn(format="%.2f"),
        "seconds": st.column_config.NumberColumn(format="%.1f")})


def delete_control(store, runs: list, labels: dict) -> None:
    """Pick a run, ask, confirm: a student may delete only their own runs (the teacher any)."""
    pending_key = "_train_pending_delete"
    deletable = {rid: label for rid, label in labels.items()
                 if lab_ui.may_delete(next(r for r in runs if r.id == rid))}

    def ask() -> None:
        ss[pending_key] = ss.get(P + "delete_run")

    def confirm() -> None:
        rid = ss.pop(pending_key, None)
        try:
            if not lab_ui.may_delete(store.get(rid)):  # checked again here: the list could be stale
                raise RunError(f"run {rid} was started by someone else; only they (or the teacher) can delete it")
            store.delete(rid)
        except RunError as exc:
            ss["_train_delete_error"] = str(exc)
        ss[P + "delete_run"] = None

    d1, d2 = st.columns([3, 2], vertical_alignment="bottom")
    with d1:
        if ss.get(P + "delete_run") not in deletable:
            ss[P + "delete_run"] = None
        chosen = st.selectbox("Delete a run (yours only)" if not lab_ui.is_teacher() else "Delete a run",
                              [None, *deletable], key=P + "delete_run",
                              format_func=lambda rid: "—" if rid is None else deletable[rid])
    with d2:
        st.button("Delete…", key=P + "delete", disabled=chosen is None, icon=":material/delete:", on_click=ask)
    if ss.get("_train_delete_error"):
        st.error(lab_ui.public(ss.pop("_train_delete_error")))
    pending = ss.get(pending_key)
    if pending in deletable:
        st.warning(f"Delete run **{pending}** and its checkpoint for good? This cannot be undone.",
                   icon=":material/warning:")
        y, n, _ = st.columns([1, 1, 4])
        y.button("Yes, delete", key=P + "confirm_delete", type="primary", on_click=confirm)
        n.button("Cancel", key=P + "cancel_delete", on_click=lambda: ss.pop(pending_key, None))
