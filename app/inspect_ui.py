"""Streamlit helpers shared by the three "Look inside" pages: Activations, Grad-CAM and Misclassified.

- ``pick_run(need_checkpoint)``  the run picker (newest first, the choice kept across the three pages); with no
                                 run yet it explains, offers a one-click ``quick-cpu`` training job, and stops
- ``predictions(run)``           stored test predictions (+ loss/confidence), cached on run id + file mtime
- ``run_context(run, ...)``      predictions, the run's images, classes, mean/std and (optionally) the model,
                                 its layers and its receptive-field table — or a clear message and a stop
- ``pick_image(ctx, prefix)``    a test image by class/number, a random mistake, or an upload
- ``show_image`` / ``top5_chart``  the chosen image, enlarged crisply, and its top-5 probabilities

Models are loaded on the CPU on purpose: one image at a time is quick there, and it leaves the GPU to training jobs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import streamlit as st

import lab_ui

from resnet_lab import tasks
from resnet_lab import inspect as I
from resnet_lab.data import DataError
from resnet_lab.models import files as model_files
from resnet_lab.runs import RunError, RunStore
from resnet_lab.training import preset, PRESETS
from resnet_lab.uploads import load_upload, MAX_BYTES, UploadError

RUN_KEY = "inspect_run_id"       # plain session key: the chosen run survives switching between the three pages
QUICK_JOB_KEY = "inspect_quick_job"
GOTO_KEY = "inspect_goto"        # {"run": id, "row": prediction row}: open this image on the next page drawn
TRAIN_PAGE = Path(__file__).resolve().parent.parent / "pages" / "train.py"
POLL_S = 2.0


# --------------------------------------------------------------------------------------------------- the runs

def _store():
    return RunStore()


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def pick_run(need_checkpoint: bool = False, key: str = "inspect_run"):
    """The run to look at (a selectbox, newest first). With none, explain and offer training, then stop."""
    store = _store()
    runs = [r for r in store.list() if r.has_predictions and (r.has_checkpoint or not need_checkpoint)]
    me = lab_ui.session_owner()
    runs.sort(key=lambda r: r.owner != me)  # this session's runs first (stable: newest first within each group)
    if not runs:
        no_run_panel()
        st.stop()
    ids = [r.id for r in runs]
    labels = {r.id: r.label for r in runs}
    # The run chosen on any of the three pages is the one shown on all of them (else the newest).
    st.session_state[key] = st.session_state.get(RUN_KEY) if st.session_state.get(RUN_KEY) in ids else ids[0]

    def remember() -> None:  # runs before the script, so the line above sees the new choice
        st.session_state[RUN_KEY] = st.session_state[key]

    choice = st.selectbox("Trained run", ids, key=key, format_func=labels.get, on_change=remember,
                          help="Every run saved by the Train page or `python -m resnet_lab train`, newest first, "
                               "then the reference runs shipped with the app. Its stored test predictions are "
                               "used as they are: nothing is re-evaluated.")
    st.session_state[RUN_KEY] = choice
    run = runs[ids.index(choice)]
    if run.reference:
        reference_note(run, own_runs=any(not r.reference for r in runs))
    return run


def reference_note(run, own_runs: bool) -> None:
    """Say plainly that this is the shipped reference: how it was made, on what, and how good it is."""
    about = run.about or {}
    top1 = run.metrics.get("top1", about.get("top1"))
    n = run.metrics.get("n_test") or run.config.get("n_test")
    acc = f"**{top1:.1%}** top-1" if isinstance(top1, (int, float)) else "unknown accuracy"
    acc += f" on {n:,} test images" if isinstance(n, int) else ""
    lines = [f"**Reference run shipped with the app** — {lab_ui.md_escape(str(about.get('title') or run.id))}: "
             f"`{run.config.get('model', '?')}`, {acc}. Read-only: it cannot be deleted, and its files are "
             "checked against their checksums before use."]
    if about.get("command"):
        lines.append(f"Trained with `{about['command']}`")
    details = [f"data: {about['data']}" if about.get("data") else "",
               f"hardware: {about['hardware']}" if about.get("hardware") else "",
               f"date: {about['date']}" if about.get("date") else ""]
    if any(details):
        lines.append(lab_ui.md_escape(" · ".join(d for d in details if d)))
    if about.get("notes"):
        lines.append(lab_ui.md_escape(str(about["notes"])))
    if not own_runs:
        lines.append("Train your own on the **Train** page and it appears first in this list.")
    st.info("\n\n".join(lines), icon=":material/verified:")


def no_run_panel() -> None:
    """No trained run yet: say what these pages need and offer the fastest way to get it."""

    _QUICK = PRESETS["quick-cpu"]
    st.info("**No trained network yet.** This page looks inside a network you have trained: it needs a run with "
            "saved weights and test predictions. Train one here with the `quick-cpu` preset — "
            f"{_QUICK['model']} on {_QUICK['subset']:,} training images for {_QUICK['epochs']} epochs, a few minutes "
            "on 2 CPU cores (enough to see what a network looks at; the Train page shows its measured accuracy) — "
            "or set up your own on the **Train** page.",
            icon=":material/model_training:")
    registry = lab_ui.job_registry()
    owner = lab_ui.session_owner()
    job = registry.get(st.session_state.get(QUICK_JOB_KEY)) or registry.active(owner, "train")
    left, right = st.columns([1, 1])
    left.button("Train a quick-cpu run now", key="inspect_quick_train", type="primary",
                icon=":material/play_arrow:", on_click=_start_quick_run, disabled=job is not None and job.active)
    if TRAIN_PAGE.exists():
        try:
            right.page_link("../pages/train.py", label="Open the Train page", icon=":material/model_training:")
        except Exception:  # the page is not in the navigation (e.g. a test that runs one page alone)
            right.caption("Or use the **Train** page in the sidebar.")
    if job is not None:
        _quick_job_panel(job.id, job.active)


def _start_quick_run() -> None:
    registry = lab_ui.job_registry()
    owner = lab_ui.session_owner()
    if registry.active(owner, "train") is not None:
        return  # one training job per session, whichever page started it

    source = lab_ui.data_source()
    # A worker process trains (resnet_lab.jobs): module-level task, picklable arguments.
    job = registry.start("train", tasks.train, owner=owner, owner_name=lab_ui.display_name(),
                         title="quick-cpu · resnet20 (from the Look-inside pages)",
                         config=preset("quick-cpu", data=source).to_dict(), source=source)
    st.session_state[QUICK_JOB_KEY] = job.id


def _quick_job_panel(job_id: str, running: bool) -> None:
    @st.fragment(run_every=POLL_S if running else None)
    def panel() -> None:
        job = lab_ui.job_registry().get(job_id)
        if job is None:
            return
        snap = job.snapshot()
        if snap["status"] == "failed":
            st.error(f"**Training failed:** {lab_ui.public(job.error)}", icon=":material/error:")
            return
        if lab_ui.queue_note(job, "inspect_quick_queue"):
            return
        last = job.events(since=max(0, snap["n_events"] - 1))
        last = last[-1] if last else {}
        if last.get("type") == "batch":
            detail = (f"epoch {last.get('epoch')} · step {last.get('step', 0):,}/{last.get('total_steps', 0):,} · "
                      f"loss {last.get('loss', float('nan')):.3f}")
        elif last.get("type") == "epoch" and last.get("test_acc") is not None:
            detail = f"epoch {last.get('epoch')} done · test accuracy {100 * last['test_acc']:.1f}%"
        else:
            detail = snap["message"] or "starting"
        st.progress(min(max(snap["progress"], 0.0), 1.0), text=f"{job.title}: {snap['status']} — {detail}")
        if running and not job.active:
            st.rerun()  # the whole page: the new run is now in the picker

    panel()


@st.cache_data(show_spinner=False, max_entries=8)
def _predictions(run_id: str, root: str, mtime: int) -> dict:
    """Stored predictions plus loss/confidence; keyed on the file's mtime so a re-trained run is re-read."""

    return I.enrich(RunStore(root).get(run_id).predictions())


def predictions(run) -> dict:
    return _predictions(run.id, str(run.path.parent), _mtime(run.path / "predictions.npz"))


@st.cache_resource(show_spinner="Loading the trained network …", max_entries=3)
def _model(run_id: str, root: str, mtime: int):
    return RunStore(root).get(run_id).load_model("cpu")


@st.cache_resource(show_spinner=False, max_entries=3)
def _layers(run_id: str, root: str, mtime: int) -> list:
    return I.list_layers(_model(run_id, root, mtime))


@st.cache_resource(show_spinner="Computing receptive fields …", max_entries=3)
def _rf_table(run_id: str, root: str, mtime: int):
    return I.receptive_field_table(_model(run_id, root, mtime))


@st.cache_resource(show_spinner=False, max_entries=4)
def _images(run_id: str, root: str, mtime: int, source: str) -> np.ndarray:
    """The run's test images in prediction order (cache_resource: one read-only copy, not pickled per rerun)."""
    images = I.run_images(_predictions(run_id, root, mtime), lab_ui.load_data(source))
    images.setflags(write=False)
    return images


@dataclass
class RunContext:
    run: object
    pred: dict
    images: np.ndarray
    classes: list
    mean: tuple
    std: tuple
    source: str
    model: object = None
    layers: list = field(default_factory=list)
    rf: object = None

    @property
    def stages(self) -> list[str]:
        return I.stages(self.model, self.layers) if self.model is not None else []


def run_context(run, need_model: bool = False, need_rf: bool = False) -> RunContext:
    """Everything a page needs about a run; on a problem, a message that says what to do, then stop."""

    root = str(run.path.parent)
    try:
        pred = predictions(run)
    except RunError as exc:
        st.error(f"**This run's stored predictions cannot be read.** {lab_ui.public(exc)}", icon=":material/error:")
        st.stop()
    # On a class server every page reads the locked source, never the path a run recorded (which may exist here by
    # chance and would be decoded a second time, or name the server's files): the run's images are matched by
    # content instead — run_images checks every stored label against the source's, and refuses other data.
    source = lab_ui.data_source() if lab_ui.class_server() else (I.run_data_source(run) or lab_ui.data_source())
    shown = "the class server's data" if lab_ui.class_server() else source
    try:
        lab_ui.ensure_decoded(source)  # a first decode runs in a worker (the page shows it), never in this thread
        images = _images(run.id, root, _mtime(run.path / "predictions.npz"), source)
    except DataError as exc:
        st.error(f"**The run's data ({shown}) cannot be loaded.**\n\n{lab_ui.public(exc)}", icon=":material/folder_off:")
        st.stop()
    except I.InspectError as exc:
        st.error(f"**The images of this run are not available.** {lab_ui.public(exc)}", icon=":material/folder_off:")
        st.stop()
    cfg = run.config
    n_classes = pred["probs"].shape[1]
    classes = list(cfg.get("classes") or lab_ui.load_data(source).classes)[:n_classes]
    data = lab_ui.load_data(source)
    mean = tuple(cfg.get("mean") or data.mean)
    std = tuple(cfg.get("std") or data.std)
    ctx = RunContext(run, pred, images, classes, mean, std, source)
    if need_model and cfg.get("model_file") and not model_files.may_run_here():
        st.info("**This run's network comes from a student's own file.** Looking inside it runs that file's code, "
                "and on this class server such code runs only in job workers, so this page cannot show it. The "
                "**Misclassified** page (stored predictions) and `python -m resnet_lab report` on your own machine "
                "show this run.", icon=":material/lock:")
        st.stop()
    if need_model:
        mtime = _mtime(run.checkpoint_path)
        try:
            ctx.model = _model(run.id, root, mtime)
            ctx.layers = _layers(run.id, root, mtime)
        except RunError as exc:
            st.error(f"**The trained weights of this run cannot be loaded.** {lab_ui.public(exc)}", icon=":material/error:")
            st.stop()
        if need_rf:
            ctx.rf = _rf_table(run.id, root, mtime)
    return ctx


def defaults_for_run(run, prefix: str, defaults: dict) -> None:
    """Reset layer choices to the model's defaults whenever another run is picked: a layer name such as
    ``layer3`` can exist in two models and mean different things, and a stale choice would hide the defaults."""
    marker = f"_{prefix}_defaults_for"
    if st.session_state.get(marker) != run.id:
        st.session_state[marker] = run.id
        for key, value in defaults.items():
            st.session_state[key] = value


# -------------------------------------------------------------------------------------------------- the image

IMAGE_SOURCES = ("Test image", "Random mistake", "Upload")


def open_on_page(run, row: int, page: str) -> None:
    """Switch to ``page`` (e.g. ``"../pages/gradcam.py"``) with test image ``row`` of ``run`` picked there."""
    st.session_state[GOTO_KEY] = {"run": run.id, "row": int(row)}
    st.session_state[RUN_KEY] = run.id
    st.switch_page(page)


def pick_image(ctx: RunContext, prefix: str) -> dict | None:
    """A test image (by class and number), a random misclassified one, or an upload.

    Returns ``{"image", "label" (None for uploads), "row" (prediction row or None), "title"}`` or None when
    there is nothing to show yet (no upload, a rejected upload)."""
    pred = ctx.pred
    order = np.argsort(pred["indices"], kind="stable")  # "any class": test images in test-index order
    goto = st.session_state.pop(GOTO_KEY, None)
    if goto and goto.get("run") == ctx.run.id and 0 <= goto.get("row", -1) < len(order):
        # another page asked for this image (Misclassified → "Open in Grad-CAM"): set the pickers before they draw
        st.session_state[f"{prefix}_img_source"] = "Test image"
        st.session_state[f"{prefix}_img_class"] = "any class"
        st.session_state[f"{prefix}_img_number"] = int(np.flatnonzero(order == goto["row"])[0])
    source = st.radio("Image", IMAGE_SOURCES, key=f"{prefix}_img_source", horizontal=True)
    if source == "Upload":
        return _pick_upload(prefix)
    if source == "Random mistake":
        wrong = np.flatnonzero(~pred["correct"])
        if not len(wrong):
            st.success("This run gets every test image right: there is no mistake to pick.")
            return None
        state = f"{prefix}_img_mistake_row"
        if st.session_state.get(state) not in set(wrong.tolist()):
            st.session_state[state] = int(wrong[0])

        def another() -> None:
            st.session_state[state] = int(np.random.default_rng().choice(wrong))

        st.button("Another mistake", key=f"{prefix}_img_another", icon=":material/shuffle:", on_click=another)
        row = int(st.session_state[state])
    else:
        cls = st.selectbox("Class", ["any class", *ctx.classes], key=f"{prefix}_img_class")
        rows = order if cls == "any class" else order[pred["labels"][order] == ctx.classes.index(cls)]
        if not len(rows):
            st.warning(f"The run has no test image of class {cls}.")
            return None
        number_key = f"{prefix}_img_number"
        st.session_state[number_key] = min(max(int(st.session_state.get(number_key, 0)), 0), len(rows) - 1)
        n = st.number_input(f"Image number (0–{len(rows) - 1} of {len(rows):,})", 0, len(rows) - 1,
                            key=number_key)
        row = int(rows[min(int(n), len(rows) - 1)])
    index = int(pred["indices"][row])
    return {"image": ctx.images[row], "label": int(pred["labels"][row]), "row": row,
            "title": f"test image #{index}"}


def _pick_upload(prefix: str) -> dict | None:
    up = st.file_uploader(f"A PNG, JPEG or WebP image, up to {MAX_BYTES // 2**20} MB (any size: it is shrunk to "
                          "32×32)", type=["png", "jpg", "jpeg", "webp"], key=f"{prefix}_img_upload")
    if up is None:
        st.caption("Try a photo of one of the ten classes — and one of something else entirely: the network "
                   "must still pick one of its ten classes.")
        return None
    try:
        image, notes = load_upload(up.getvalue(), up.name)
    except UploadError as exc:
        st.error(lab_ui.public(exc), icon=":material/broken_image:")
        return None
    if notes:
        st.caption("Prepared for the network: " + "; ".join(notes) + ".")
    return {"image": image, "label": None, "row": None, "title": up.name}


def show_image(choice: dict, ctx: RunContext, probs: np.ndarray, width: int = 256) -> None:
    """The image enlarged with nearest neighbour (every pixel a crisp square) and what the network says."""
    pred = int(np.argmax(probs))
    label = choice["label"]
    verdict = "" if label is None else (" ✓" if pred == label else " ✗")
    caption = f"{choice['title']}" + ("" if label is None else f" · true: {ctx.classes[label]}")
    st.image(I.upscale(choice["image"], max(1, width // choice["image"].shape[0])), caption=caption, width=width)
    st.markdown(f"Predicted **{ctx.classes[pred]}** ({probs[pred]:.0%}){verdict}")


def top5_chart(probs: np.ndarray, classes: list, true: int | None = None, key: str | None = None) -> None:
    import plotly.graph_objects as go

    top = I.topk(probs, 5)
    names = [classes[c] for c, _ in top][::-1]
    values = [100 * p for _, p in top][::-1]
    colors = ["#2ca02c" if c == true else "#1f77b4" for c, _ in top][::-1]
    fig = go.Figure(go.Bar(x=values, y=names, orientation="h", marker_color=colors,
                           text=[f"{v:.1f}%" for v in values], textposition="auto"))
    fig.update_layout(height=190, margin=dict(l=10, r=10, t=28, b=10), xaxis=dict(range=[0, 100], title="%"),
                      title=dict(text="Top-5 probabilities" + (" (green: true class)" if true is not None else ""),
                                 font=dict(size=13)))
    st.plotly_chart(fig, key=key, config={"displayModeBar": False})


def rf_text(ctx: RunContext, layer: str) -> str:
    """'each unit sees 14×14 px' — or a dash when the receptive-field module is not available."""
    info = I.layer_rf(ctx.rf, layer)
    if info is None:
        return "–"
    h, w = info["size"]
    return f"{h}×{w} px" if (h, w) != (0, 0) else "–"


# ------------------------------------------------------------------------------- attributions and sanity check

def _run_args(ctx: RunContext) -> dict:
    """How a worker opens this run's network (a folder and whether it is a shipped reference)."""
    return {"run_path": str(ctx.run.path), "reference": bool(getattr(ctx.run, "reference", False))}


def _model_identity(ctx: RunContext) -> tuple:
    """What the arguments do not show: a run re-trained under the same id has a new checkpoint."""
    return ctx.run.id, _mtime(ctx.run.checkpoint_path)


def attributions(ctx: RunContext, image: np.ndarray, layer: str, targets: list[int], methods: tuple) -> dict | None:
    """Every method's map for one image and each class in ``targets``: ``{target: {method: {"map", "magnitude",
    "seconds"}}}``, computed in a worker once per model/image/layer/classes for every session (None while it is)."""

    return lab_ui.computed("attributions", tasks.attributions, f"{len(methods)} explanations of one image",
                           "cam_attr", identity=_model_identity(ctx), **_run_args(ctx), image=image, layer=layer,
                           targets=[int(t) for t in targets], methods=list(methods), mean=tuple(ctx.mean),
                           std=tuple(ctx.std))


def sanity(ctx: RunContext, image: np.ndarray, layer: str, target: int, methods: tuple):
    """The cascading randomisation check (on a copy of the model, in a worker), shared like ``attributions``."""

    return lab_ui.computed("sanity", tasks.sanity, "the sanity check", "cam_sanity_job",
                           identity=_model_identity(ctx), **_run_args(ctx), image=image, layer=layer,
                           target=int(target), methods=list(methods), mean=tuple(ctx.mean), std=tuple(ctx.std))


def data_randomisation(ctx: RunContext, image: np.ndarray, layer: str, target: int, methods: tuple):
    """The data-randomisation test against the shipped shuffled-label network, in a worker, shared."""

    return lab_ui.computed("data_randomisation", tasks.data_randomisation, "the data-randomisation test",
                           "cam_data_job", identity=_model_identity(ctx), **_run_args(ctx), image=image, layer=layer,
                           target=int(target), methods=list(methods), mean=tuple(ctx.mean), std=tuple(ctx.std))


def faithfulness(ctx: RunContext, layer: str, methods: tuple, image: np.ndarray | None = None,
                 target: int | None = None, sample: int | None = None) -> dict | None:
    """ROAD on one image (``image``, ``target``) or on ``sample`` class-balanced test images of the run's data
    (the same images as ``explain --sample``), in a worker, shared: the explain JSON's dict."""

    what = "ROAD on this image" if sample is None else f"ROAD on {sample} test images"
    return lab_ui.computed("faithfulness", tasks.faithfulness, what, f"cam_road_job_{sample or 1}",
                           identity=_model_identity(ctx), **_run_args(ctx), layer=layer, methods=list(methods),
                           mean=tuple(ctx.mean), std=tuple(ctx.std), image=image,
                           target=None if target is None else int(target), sample=sample,
                           source=ctx.source if sample is not None else None)
