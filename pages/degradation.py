"""Depth Degradation: why residual connections work, in three views (He et al. 2015; Li et al. 2018).

1. At initialisation: per-layer gradient norms and activation stds of plain vs residual nets, computed in seconds.
2. Training: a suite of plain/residual nets of two depths (resnet_lab.experiments.degradation), run as a job;
   shipped results (CPU, and the GPU one when present) are on screen at once.
3. Loss landscape: filter-normalised slices around a trained plain net and its residual twin (resnet_lab.landscape).
Texts, forms, checks and result picking are in degradation_ui, figures in degradation_figs: this file lays them out.
"""

from __future__ import annotations

import functools
import time

import streamlit as st

import degradation_ui as UI
import lab_ui
from degradation_figs import fig6, init_fig, landscape_fig_1d, landscape_fig_2d, per_layer

from resnet_lab import tasks
from resnet_lab import landscape as L
from resnet_lab.data import DataError
from resnet_lab.experiments import degradation as D
from resnet_lab.runs import RunStore

JOB_KEY = "degradation_job_id"
KIND = "degradation"
LS_JOB_KEY = "landscape_job_id"
LS_KIND = "landscape"
POLL_S = 2.0
ss = st.session_state
cuda = lab_ui.has_cuda()

lab_ui.page_intro("Depth Degradation", **UI.INTRO)

VIEWS = {"init": "① At initialisation", "training": "② Training: depth degradation", "landscape": "③ Loss landscape"}
view = st.radio("View", list(VIEWS), key="deg_view", format_func=VIEWS.get, horizontal=True,
                label_visibility="collapsed")
registry = lab_ui.job_registry()
owner = lab_ui.session_owner()


# ===================================================================================== ① at initialisation
def init_view() -> None:
    st.subheader("The mechanism at initialisation — no training")
    st.markdown(UI.INIT_HOW)
    c1, c2, c3 = st.columns(3)
    seeds = c1.number_input("Seeds", min_value=1, max_value=5, value=3, step=1, key="deg_init_seeds",
                            help="Each seed draws new initial weights; the band spans them.")
    images = c2.selectbox("Images in the batch", [16, 32, 64], index=0, key="deg_init_images",
                          help="More images: steadier batch statistics, proportionally slower.")
    zero = c3.checkbox("Zero-init the last BN of each residual branch", key="deg_init_zero",
                       help="γ = 0 in each branch's last BN: every residual block starts as the exact identity.")
    source = lab_ui.data_source()
    try:
        lab_ui.ensure_decoded(source)
    except DataError as exc:  # it names the path and both fixes
        lab_ui.show_data_error(exc)
        return
    # A worker builds the nets and measures (5 s on idle cores, minutes beside a training): once per setting for
    # every session; the page shows its progress meanwhile and reruns by itself when it is done.
    prof = UI.init_profile(source, int(images), int(seeds), bool(zero))
    if prof is None:
        return
    text = UI.init_texts(prof)
    st.plotly_chart(init_fig(prof, "grad_norm", "‖∂loss/∂W‖ (log)", True, "3×3 conv layer (0 = first, next to the input)"),
                    key="deg_init_grads")
    st.markdown(text["grads"])
    if text["zero"]:
        st.caption(text["zero"])
    st.caption(text["grads_read"])
    st.plotly_chart(init_fig(prof, "act_std", "std of the block output", False,
                             "block (0 = stem, then one point per block)"), key="deg_init_acts")
    st.markdown(text["acts"])
    st.caption(UI.INIT_ACTS_READ)
    st.caption(text["footer"])


# ============================================================================================== ② training
def run_suite_block() -> None:
    st.subheader("Run a suite")
    ss.setdefault("deg_suite", "quick" if cuda else "cpu")
    c1, c2 = st.columns([2, 3])
    suite = c1.selectbox("Suite", list(D.SUITES), key="deg_suite", format_func=lambda n: D.SUITES[n].label)
    s = D.SUITES[suite]
    c2.caption(s.note)
    opts = UI.suite_options(suite, s, lab_ui.settings())
    c2.caption(UI.suite_summary(s, int(opts["epochs"])))
    problems = UI.suite_problems(lab_ui.settings(), suite, s, opts)
    for message, icon in problems:
        st.error(message, icon=icon)

    def _start() -> None:
        if registry.active(owner, KIND) is not None:
            return
        source = lab_ui.data_source()
        kwargs, problem = UI.suite_start_check(suite, opts, source)
        if problem:
            ss["_deg_start_error"] = problem
            return

        job = registry.start(KIND, tasks.degradation, owner=owner, owner_name=lab_ui.display_name(), title=f"degradation · {suite}", suite=suite,
                             source=source, command=UI.suite_command(suite, s, opts), **kwargs)
        ss[JOB_KEY] = job.id

    lab_ui.start_stop(KIND, "Start suite", "deg", _start, blocked=bool(problems),
                      stop_help="Ends the nets in training after their current batch and skips the rest; finished "
                                "nets are kept.")
    if ss.get("_deg_start_error"):
        st.error(lab_ui.public(ss.pop("_deg_start_error")), icon=":material/error:")


def live_panel_block() -> None:
    job = lab_ui.session_job(KIND, JOB_KEY)
    if job is None:
        return

    def body(j) -> None:
        snap = lab_ui.job_progress(j, "suite", "deg_queue", stopped="Stopped on request: the nets that finished are "
                                   "kept (see the results below).")
        if snap is None or not j.active:
            return
        partial = UI.live_result(j)
        if partial["nets"]:
            st.plotly_chart(fig6(partial, height=320), key=f"deg_live_{j.id}")
        st.caption(UI.running_note(time.time() - snap["created"]))

    lab_ui.live_panel(job, body, POLL_S)


def results_block() -> None:
    st.subheader("Results")
    results = D.list_results()
    if not results:
        st.info("No suite results yet: start one above. Each finished suite is saved in the runs folder and listed "
                "here.", icon=":material/inventory_2:")
        return
    gpu_note = UI.shipped_gpu_note(results)
    if gpu_note and not cuda:
        st.caption(gpu_note)
    result = UI.result_picker("Result", results, "deg_result", "_deg_shown", lab_ui.session_job(KIND, JOB_KEY),
                              UI.default_result(results, cuda), UI.result_label)
    show_result(result, results)


def show_result(result: dict, results: list[dict]) -> None:
    if result.get("shipped"):
        st.info(UI.shipped_note(result), icon=":material/inventory:")
    elif result.get("status") != "done":
        st.warning(f"This suite ended **{result.get('status')}**: only the nets listed below finished.",
                   icon=":material/warning:")
    st.caption(UI.settings_line(result))
    st.markdown("#### Training and test error per epoch (the paper's Fig. 6)")
    st.plotly_chart(fig6(result), key="deg_fig6")
    lines = D.verdict(result)
    if lines:
        st.markdown(UI.bullets(lines))
        if D.effect(result)["shows"] is False:
            st.caption(UI.MISSES_EFFECT)
    twin = UI.zero_init_comparison(result, results)
    if twin:
        st.caption(twin)
    st.markdown("#### Final errors")
    UI.show_table(result)
    st.caption(UI.TABLE_NOTE)
    layer_stats_block(result)
    runs = UI.runs_note(result)
    if runs:
        st.caption(runs)
    st.caption(f"Result file: `{lab_ui.public(result['path'])}`")


def layer_stats_block(result: dict) -> None:
    st.markdown("#### Inside the trained networks, layer by layer")
    when_label = {"trained": "after training", "init": "at initialisation"}
    when = st.radio("When", list(when_label), key="deg_when", format_func=when_label.get, horizontal=True)
    fig, series = per_layer(result, when, "response_std", "response std", log_y=False)
    if not series:
        st.caption("This result has no per-layer statistics.")
        return
    st.markdown(UI.FIG7_HOW)
    st.plotly_chart(fig, key="deg_fig7")
    st.caption(UI.FIG7_READ[when])
    gfig, gseries = per_layer(result, when, "grad_norm", "‖∂loss/∂W‖", log_y=True)
    st.markdown("**Gradient norms:** ‖∂loss/∂W‖ of each 3×3 conv for the same batch (log scale).")
    st.plotly_chart(gfig, key="deg_grads")
    st.caption(UI.gradient_spread(gseries))


def training_view() -> None:
    if not cuda:
        st.info(UI.cpu_note(D.list_results()), icon=":material/developer_board:")
    run_suite_block()
    live_panel_block()
    results_block()


# ======================================================================================== ③ loss landscape
def landscape_start_block() -> None:
    st.markdown("#### Compute a landscape for your own runs")
    runs = [r for r in RunStore().list() if r.has_checkpoint and r.status == "done"]
    if not runs:
        st.caption("No finished runs with saved weights here yet: run the suite in the Training view (or train on "
                   "the Train page), then come back.")
        return
    a, b = UI.run_pickers(runs)
    base = L.defaults("cuda" if cuda else "cpu")
    images, grid, points = UI.landscape_options(base)
    problem = UI.landscape_problem(images, points, grid)
    if problem:
        st.error(problem, icon=":material/error:")
    st.caption(UI.landscape_cost(a == b, images, grid, points))

    def _start() -> None:
        if registry.active(owner, LS_KIND) is not None:
            return
        fn = functools.partial(L.job, run_ids=[a] if a == b else [a, b], images=images, points=points, grid=grid,
                               span=1.0, seed=0, batch_size=base["batch_size"], device="cuda" if cuda else "cpu")
        job = registry.start(LS_KIND, fn, owner=owner, owner_name=lab_ui.display_name(), title="loss landscape")
        ss[LS_JOB_KEY] = job.id

    lab_ui.start_stop(LS_KIND, "Compute landscape", "ls", _start, blocked=problem is not None,
                      icon=":material/landscape:")
    job = lab_ui.session_job(LS_KIND, LS_JOB_KEY)
    if job is not None:
        lab_ui.live_panel(job, lambda j: lab_ui.job_progress(j, "landscape", "ls_queue"), POLL_S)


def landscape_view() -> None:
    st.subheader("The loss landscape around a trained plain net and its residual twin")
    st.markdown(UI.LANDSCAPE_HOW)
    results = L.list_results()
    job = lab_ui.session_job(LS_KIND, LS_JOB_KEY)
    if results:
        result = UI.result_picker("Landscape", results, "ls_result", "_ls_shown", job, UI.landscape_default(results),
                                  UI.landscape_label)
        if result.get("shipped"):
            st.info(UI.landscape_shipped_note(result), icon=":material/inventory:")
        st.caption(UI.landscape_settings_line(result))
        st.plotly_chart(landscape_fig_1d(result), key="ls_1d")
        style = st.radio("2-D view", ["contour", "surface"], key="ls_style", horizontal=True,
                         format_func={"contour": "Contours", "surface": "3-D surface"}.get)
        st.plotly_chart(landscape_fig_2d(result, style), key="ls_2d")
        st.markdown(UI.bullets(UI.landscape_verdict(result)))
        st.caption(UI.LANDSCAPE_READ)
    else:
        st.info("No landscape yet: compute one below.", icon=":material/landscape:")
    landscape_start_block()


{"init": init_view, "training": training_view, "landscape": landscape_view}[view]()
