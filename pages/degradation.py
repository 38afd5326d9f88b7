"""Depth Degradation: why residual connections work, in three views (He et al. 2015; Li et al. 2018).

1. At initialisation: per-layer gradient norms and activation stds of plain vs residual nets, computed in seconds.
2. Training: a suite of plain/residual nets of two depths (resnet_lab.experiments.degradation), run as a job;
   shipped results (CPU, and the GPU one when present) are on screen at once.
3. Loss landscape: filter-normalised slices around a trained plain net and its residual twin (resnet_lab.landscape).
"""

from __future__ import annotations

import functools
import time

import streamlit as st

import lab_ui
from degradation_figs import fig6, init_fig, landscape_fig_1d, landscape_fig_2d, per_layer, times
from resnet_lab.config import check_caps
from resnet_lab import landscape as L
from resnet_lab.experiments import degradation as D

JOB_KEY = "degradation_job_id"
KIND = "degradation"
LS_JOB_KEY = "landscape_job_id"
LS_KIND = "landscape"
POLL_S = 2.0
ss = st.session_state
cuda = lab_ui.has_cuda()


lab_ui.page_intro(
    "Depth Degradation",
    idea="A deeper net can represent everything a shallower one can (copy it, make the extra layers the "
         "identity), yet He et al. (2015) found that a 56-layer **plain** net ends with a *higher training error* "
         "than a 20-layer one — not overfitting but an optimisation problem. A **residual** block computes "
         "`x + F(x)`: to be the identity it only has to drive `F` towards zero, which the solver *can* do, while a "
         "plain stack has to learn the identity through convs and ReLUs. Shortcuts do not make depth free: the "
         "paper's 1202-layer ResNet still did worse than its 110-layer one.",
    try_="Start with **At initialisation**: no training, seconds. Then **Training** — the shipped result is on screen "
         "at once; start the suite to reproduce it (on a CPU a few minutes). Then **Loss landscape**: the "
         "loss around the trained deep plain net and its residual twin.",
    notice="At initialisation the plain net's gradient grows by orders of magnitude from its last layer back to its "
           "first, the ResNet's stays within a small factor. After training (the shipped results), the deeper plain net "
           "sits *above* the shallow one in training error, the deeper ResNet at or below its shallow twin. Every verdict line is "
           "computed from the numbers shown next to it.",
)

VIEWS = {"init": "① At initialisation", "training": "② Training: depth degradation", "landscape": "③ Loss landscape"}
view = st.radio("View", list(VIEWS), key="deg_view", format_func=VIEWS.get, horizontal=True,
                label_visibility="collapsed")
registry = lab_ui.job_registry()
owner = lab_ui.session_owner()


# ===================================================================================== ① at initialisation
@st.cache_data(show_spinner=False, max_entries=16)
def init_profile(source: str, images: int, seeds: int, zero_init: bool) -> dict:
    data = lab_ui.load_data(source)
    x, y = D.init_batch(data, images)
    return D.init_profile(x, y, seeds=tuple(range(seeds)), zero_init=zero_init)


def init_view() -> None:
    st.subheader("The mechanism at initialisation — no training")
    st.markdown("Build plain and residual nets of **20, 56 and 110** layers with fresh weights, push **one batch of "
                "real training images** through them (batch norm on batch statistics, exactly what the first SGD "
                "step sees), and read two things per layer: how much gradient of the loss reaches its weights, and "
                "how large the signal it passes on is. Several seeds: the line is the median, the band min–max.")
    c1, c2, c3 = st.columns(3)
    seeds = c1.number_input("Seeds", min_value=1, max_value=5, value=3, step=1, key="deg_init_seeds",
                            help="Each seed draws new initial weights; the band spans them.")
    images = c2.selectbox("Images in the batch", [16, 32, 64], index=0, key="deg_init_images",
                          help="More images: steadier batch statistics, proportionally slower.")
    zero = c3.checkbox("Zero-init the last BN of each residual branch", key="deg_init_zero",
                       help="γ = 0 in each branch's last BN: every residual block starts as the exact identity.")
    source = lab_ui.data_source()
    t0 = time.perf_counter()
    try:
        with st.spinner("Building 6 nets per seed and measuring one batch …"):
            prof = init_profile(source, int(images), int(seeds), bool(zero))
    except Exception as exc:  # a DataError names the path and both fixes
        from resnet_lab.data import DataError

        if isinstance(exc, DataError):
            lab_ui.show_data_error(exc)
            return
        raise
    shown_in = time.perf_counter() - t0
    st.plotly_chart(init_fig(prof, "grad_norm", "‖∂loss/∂W‖ (log)", True, "3×3 conv layer (0 = first, next to the input)"),
                    key="deg_init_grads")
    by = {(n["family"], n["depth"]): n for n in prof["nets"]}
    deep = max(prof["depths"])
    p, r = by[("plain", deep)], by[("resnet", deep)]
    lines = []
    for d in prof["depths"]:
        pn, rn = by[("plain", d)], by[("resnet", d)]
        lines.append(f"{d} layers — plain: first ÷ last layer **{times(pn['grad_first_over_last'])}**, "
                     f"ResNet: **{times(rn['grad_first_over_last'])}**")
    st.markdown("**Gradient norm per layer** (log scale): " + "; ".join(lines) + ".")
    if r.get("grad_zero_layers"):
        st.caption(f"Zero-init: the last conv of each residual branch ({r['grad_zero_layers']} in ResNet-{deep}) gets "
                   "exactly zero gradient at the first step — γ = 0 blocks it; only that BN's γ is pushed. Those "
                   "layers are left out of the ratios and fall off the log scale.")
    st.caption(f"Read it: in plain-{deep} the first layer's gradient is {times(p['grad_first_over_last'])} its last "
               f"layer's (largest ÷ smallest over all layers: {times(p['grad_max_over_min'])}); in ResNet-{deep} the "
               f"same ratios are {times(r['grad_first_over_last'])} and {times(r['grad_max_over_min'])}. With batch norm "
               "the gradient of a deep plain stack does not vanish — it *explodes* towards the input (each BN "
               "layer amplifies the backward signal a little), so no single learning rate suits its first and "
               "last layers. The shortcut adds an identity path to every block's Jacobian, so the gradient reaches "
               "the first layers at about the size it had at the top.")
    st.plotly_chart(init_fig(prof, "act_std", "std of the block output", False,
                             "block (0 = stem, then one point per block)"), key="deg_init_acts")
    st.markdown("**Signal passed forward** (std of each block's output over the batch): plain — "
                + "; ".join(f"{by[('plain', d)]['label']} last ÷ first {by[('plain', d)]['act_last_over_first']:.2f}×"
                            for d in prof["depths"])
                + "; ResNet — "
                + "; ".join(f"{by[('resnet', d)]['label']} {by[('resnet', d)]['act_last_over_first']:.2f}×"
                            for d in prof["depths"]) + ".")
    st.caption("In the plain nets every block ends in BN + ReLU, so the forward signal keeps the same size at any "
               "depth: what gets lost is not its size but the path back. In a ResNet each block *adds* its "
               "branch to the stream, so the stream grows with depth and each block's branch is a shrinking "
               "fraction of it — a deep ResNet starts close to a shallower one. With zero-init the branches add "
               "nothing at first and the stream stays flat.")
    st.caption(f"{prof['images']} training images · seeds {', '.join(map(str, prof['seeds']))} · "
               f"{len(prof['nets'])} nets per seed at width {prof['width']} (the paper's) · measured in "
               f"{prof['seconds']:.1f} s when first computed (this view took {shown_in:.1f} s now; results are cached "
               "per setting).")


# ============================================================================================== ② training
def _suite_settings():
    names = list(D.SUITES)
    ss.setdefault("deg_suite", "quick" if cuda else "cpu")
    c1, c2 = st.columns([2, 3])
    with c1:
        suite = st.selectbox("Suite", names, key="deg_suite", format_func=lambda n: D.SUITES[n].label)
    s = D.SUITES[suite]
    with c2:
        st.caption(s.note)
        st.caption(f"Nets: plain and residual at depths {', '.join(map(str, s.depths))} · width {s.width} · "
                   f"{s.epochs} epochs · batch {s.batch_size} · SGD, momentum 0.9, weight decay 1e-4, one-cycle LR up "
                   f"to {s.lr_max:g} · {'crop + flip' if s.augment else 'no augmentation'}")
    with st.expander("Change the suite (epochs, images, seed, zero-init)"):
        o1, o2, o3, o4, o5 = st.columns(5)
        opts = dict(
            epochs=o1.number_input("Epochs", min_value=1, max_value=200, value=s.epochs, step=1,
                                   key=f"deg_epochs_{suite}"),
            subset=o2.number_input("Training images (0 = all)", min_value=0, value=s.subset or 0, step=500,
                                   key=f"deg_subset_{suite}"),
            test_subset=o3.number_input("Test images (0 = all)", min_value=0, value=s.test_subset or 0, step=500,
                                        key=f"deg_test_subset_{suite}"),
            seed=o4.number_input("Seed", min_value=0, max_value=10_000, value=0, step=1, key=f"deg_seed_{suite}"),
            zero_init=o5.checkbox("Zero-init residual branches", value=s.zero_init, key=f"deg_zero_{suite}",
                                  help="Last BN of every residual branch at γ = 0: each block starts as the "
                                       "identity (Goyal et al. 2017). Compare with the same suite without it."),
            include_110=o5.checkbox("Add 110 layers", key=f"deg_110_{suite}", disabled=suite != "paper",
                                    help="The paper's deepest pair: slow, GPU only."))
    opts["include_110"] = bool(opts["include_110"] and suite == "paper")
    return suite, s, opts


def _command(suite: str, s, opts: dict) -> str:
    parts = ["python -m resnet_lab degradation", f"--suite {suite}"]
    if opts["epochs"] != s.epochs:
        parts.append(f"--epochs {opts['epochs']}")
    if (opts["subset"] or None) != s.subset:
        parts.append(f"--subset {opts['subset']}")
    if (opts["test_subset"] or None) != s.test_subset:
        parts.append(f"--test-subset {opts['test_subset']}")
    if opts["seed"]:
        parts.append(f"--seed {opts['seed']}")
    if opts["zero_init"]:
        parts.append("--zero-init")
    if opts["include_110"]:
        parts.append("--with-110")
    return " ".join(parts)


def run_suite_block() -> None:
    st.subheader("Run a suite")
    suite, s, opts = _suite_settings()
    bad = 0 < opts["subset"] < 10 or 0 < opts["test_subset"] < 10
    if bad:
        st.error("A subset needs at least 10 images (one per class); 0 means all.", icon=":material/error:")
    caps = lab_ui.settings()  # a class server's caps apply to every net of the suite
    if any(caps.get(k) for k in ("max_epochs", "max_batch_size", "max_params")):
        try:
            nets = D.suite_configs(suite, epochs=int(opts["epochs"]), include_110=bool(opts["include_110"]))
        except D.DegradationError:
            nets = []
        from resnet_lab.models import param_count

        params = max((param_count(c.model, **(c.model_options or {})) for c in nets), default=None)
        for message in check_caps(caps, epochs=int(opts["epochs"]), batch_size=s.batch_size, params=params).values():
            st.error(message, icon=":material/lock:")
            bad = True

    def _start() -> None:
        if registry.active(owner, KIND) is not None:
            return
        source = lab_ui.data_source()
        try:
            lab_ui.load_data(source)  # a data problem shows here at once, not minutes later in the worker
        except Exception as exc:
            ss["_deg_start_error"] = str(exc)
            return
        kwargs = {k: (int(v) if k in ("epochs", "subset", "test_subset", "seed") else bool(v))
                  for k, v in opts.items()}
        try:
            D.suite_configs(suite, **kwargs)
        except D.DegradationError as exc:
            ss["_deg_start_error"] = str(exc)
            return
        command = _command(suite, s, opts)
        from resnet_lab import tasks  # a worker process runs the suite and loads the data itself

        job = registry.start(KIND, tasks.degradation, owner=owner, title=f"degradation · {suite}", suite=suite,
                             source=source, command=command, **kwargs)
        ss[JOB_KEY] = job.id

    lab_ui.start_stop(KIND, "Start suite", "deg", _start, blocked=bad,
                      stop_help="Ends the nets in training after their current batch and skips the rest; finished "
                                "nets are kept.")
    if ss.get("_deg_start_error"):
        st.error(ss.pop("_deg_start_error"), icon=":material/error:")


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


def live_panel_block() -> None:
    job = lab_ui.session_job(KIND, JOB_KEY)
    if job is None:
        return

    def body(j) -> None:
        snap = lab_ui.job_progress(j, "suite", "deg_queue", stopped="Stopped on request: the nets that finished are "
                                   "kept (see the results below).")
        if snap is None or not j.active:
            return
        partial = live_result(j)
        if partial["nets"]:
            st.plotly_chart(fig6(partial, height=320), key=f"deg_live_{j.id}")
        elapsed = time.time() - snap["created"]
        st.caption(f"Running for {int(elapsed) // 60}:{int(elapsed) % 60:02d} min:s. You can leave this page; "
                   "the suite keeps running and its result appears here.")

    lab_ui.live_panel(job, body, POLL_S)


def _result_label(r: dict) -> str:
    when = (r.get("created") or "")[:16].replace("T", " ")
    origin = "pre-computed, shipped with the project" if r.get("shipped") else r.get("status", "")
    extra = " · zero-init" if (r.get("settings") or {}).get("zero_init") else ""
    return f"{r['suite']}{extra} · {when} · {r.get('device', '?')} · {origin}"


def _default_result(results: list[dict]) -> str:
    """A result of this machine first; else the shipped GPU result (the paper's regime) when there is one and
    this machine has a GPU, else the shipped CPU result, else the newest."""
    local = [r for r in results if not r.get("shipped")]
    if local:
        return local[0]["path"]
    shipped = {r["suite"]: r for r in results if r.get("shipped") and not (r.get("settings") or {}).get("zero_init")}
    for name in (("quick", "paper", "cpu") if cuda else ("cpu", "quick", "paper")):
        if name in shipped:
            return shipped[name]["path"]
    return results[0]["path"]


def results_block() -> None:
    st.subheader("Results")
    results = D.list_results()
    if not results:
        st.info("No suite results yet: start one above. Each finished suite is saved in the runs folder and listed "
                "here.", icon=":material/inventory_2:")
        return
    by_path = {r["path"]: r for r in results}
    job = lab_ui.session_job(KIND, JOB_KEY)
    if job is not None and not job.active and isinstance(job.result, dict) and job.result.get("path") in by_path \
            and ss.get("_deg_shown") != job.id:
        ss["deg_result"] = job.result["path"]  # show what this session just finished
        ss["_deg_shown"] = job.id
    if ss.get("deg_result") not in by_path:
        ss["deg_result"] = _default_result(results)
    shipped_gpu = [r for r in results if r.get("shipped") and r.get("suite") in ("quick", "paper")]
    if shipped_gpu and not cuda:
        st.caption(f"A GPU result ships with the project too ({shipped_gpu[0]['suite']} suite, "
                   f"{shipped_gpu[0].get('device', '?')}): pick it in the list to see the paper's regime.")
    chosen = st.selectbox("Result", list(by_path), key="deg_result", format_func=lambda p: _result_label(by_path[p]))
    show_result(by_path[chosen])


def show_result(result: dict) -> None:
    settings = result.get("settings", {})
    if result.get("shipped"):
        st.info(f"**Pre-computed result** of the **{result['suite']}** suite, produced by the project on "
                f"**{result.get('device', '?')}** on {(result.get('created') or '?')[:10]} in "
                f"{(result.get('seconds_total') or 0) / 60:.1f} minutes, with:\n\n`{result.get('command') or '?'}`"
                f"\n\nData: {result.get('data_source', '?')}. Start the same suite above to reproduce it on this "
                "machine.", icon=":material/inventory:")
    elif result.get("status") != "done":
        st.warning(f"This suite ended **{result.get('status')}**: only the nets listed below finished.",
                   icon=":material/warning:")
    st.caption(f"{result.get('label', '')} · data: {result.get('data_source', '?')} · {settings.get('epochs')} epochs, "
               f"batch {settings.get('batch_size')}, LR max {settings.get('lr_max')}, width "
               f"{settings.get('width', 16)}, seed {settings.get('seed', 0)}"
               f"{', zero-init residual branches' if settings.get('zero_init') else ''} · "
               f"{(result.get('seconds_total') or 0):.0f} s in all")
    st.markdown("#### Training and test error per epoch (the paper's Fig. 6)")
    st.plotly_chart(fig6(result), key="deg_fig6")
    lines = D.verdict(result)
    if lines:
        st.markdown("\n".join(f"- {line}" for line in lines))
        eff = D.effect(result)
        if eff["shows"] is False:
            st.caption("This result misses part of the effect. Short runs on few images are noisy; the paper's curves "
                       "are long runs on all 50,000 images.")
    zero_init_comparison(result)
    st.markdown("#### Final errors")
    rows = D.table(result)
    if result.get("shipped"):
        for row in rows:
            row.pop("run", None)  # its runs live on the machine that produced it, not here
    st.dataframe(rows, hide_index=True, column_config={
        "parameters": st.column_config.NumberColumn(format="%d"),
        "final train error %": st.column_config.NumberColumn(format="%.1f"),
        "final test error %": st.column_config.NumberColumn(format="%.1f"),
        "seconds": st.column_config.NumberColumn(format="%.0f")})
    st.caption("Train error is measured during the last epoch on the training images as the net saw them (augmented "
               "when the suite augments), as in the paper's curves; test error on the test images after it. Plain and "
               "residual nets of one depth have exactly the same parameters: option-A shortcuts add none.")
    layer_stats_block(result)
    if any(n.get("run_id") for n in result.get("nets", [])) and not result.get("shipped"):
        st.caption("Every net is also a normal run in the runs store: " +
                   ", ".join(f"`{n['run_id']}`" for n in result["nets"] if n.get("run_id")) +
                   " — open them on the Train, Activations or Misclassified pages, or compare two in the loss "
                   "landscape view.")
    st.caption(f"Result file: `{result['path']}`")


def zero_init_comparison(result: dict) -> None:
    """The same suite and seed with the other residual init, when a result of it is at hand: the option's own
    comparison, in numbers taken from both files."""
    s = result.get("settings") or {}
    twin = next((r for r in D.list_results() if r.get("suite") == result.get("suite") and r["path"] != result["path"]
                 and (r.get("settings") or {}).get("seed", 0) == s.get("seed", 0)
                 and bool((r.get("settings") or {}).get("zero_init")) != bool(s.get("zero_init"))), None)
    if twin is None:
        return
    std, zi = (twin, result) if s.get("zero_init") else (result, twin)
    a, b = D.final_errors(std), D.final_errors(zi)
    parts = [f"{D.net_label(m)} {100 * a[m]['train_error']:.1f}% → {100 * b[m]['train_error']:.1f}%"
             for m in a if m.startswith("resnet") and m in b and a[m]["train_error"] is not None
             and b[m]["train_error"] is not None]
    if parts:
        gaps = [D.effect(std).get("residual_gap"), D.effect(zi).get("residual_gap")]
        # A stopped suite may lack one of the ResNets: then there is no lead to quote, only the nets both have.
        lead = ("" if None in gaps else f" The deeper ResNet's lead: {-100 * gaps[0]:+.1f} points with the standard "
                f"init, {-100 * gaps[1]:+.1f} with zero-init.")
        st.caption("**Zero-init comparison** (same suite and seed; last BN of each residual branch at γ = 0): final "
                   "training error " + "; ".join(parts) + "." + lead)


def layer_stats_block(result: dict) -> None:
    st.markdown("#### Inside the trained networks, layer by layer")
    when_label = {"trained": "after training", "init": "at initialisation"}
    when = st.radio("When", list(when_label), key="deg_when", format_func=when_label.get, horizontal=True)
    fig, series = per_layer(result, when, "response_std", "response std", log_y=False)
    if not series:
        st.caption("This result has no per-layer statistics.")
        return
    st.markdown("**Layer responses (the paper's Fig. 7):** the standard deviation of each 3×3 layer's output after "
                "batch norm, before the ReLU, on a fixed batch of test images. Solid lines: plain nets; dotted: "
                "ResNets.")
    st.plotly_chart(fig, key="deg_fig7")
    if when == "init":
        st.caption("At initialisation batch norm uses the statistics of the batch itself, so every response has a "
                   "std of about 1 (γ = 1; 0 in a zero-initialised branch end): training is what makes layers differ.")
    else:
        st.caption("He et al.: ResNets' responses are generally smaller than their plain twins' — the residual "
                   "functions stay close to zero, so each block only nudges its input.")
    gfig, gseries = per_layer(result, when, "grad_norm", "‖∂loss/∂W‖", log_y=True)
    st.markdown("**Gradient norms:** ‖∂loss/∂W‖ of each 3×3 conv for the same batch (log scale).")
    st.plotly_chart(gfig, key="deg_grads")
    spread = [f"{sr['label']}: first ÷ last layer {times(sr['values'][0] / sr['values'][-1])}, largest ÷ smallest "
              f"{times(max(sr['values']) / min(sr['values']))}" for sr in gseries
              if sr["values"] and min(sr["values"]) > 0]
    st.caption("In this result — " + "; ".join(spread) + ".")


def _shipped(suite: str) -> dict | None:
    return next((r for r in D.list_results() if r.get("shipped") and r.get("suite") == suite
                 and not (r.get("settings") or {}).get("zero_init")), None)


def training_view() -> None:
    if not cuda:
        cpu = D.SUITES["cpu"]
        ref = _shipped("cpu")
        took = (f" The shipped run took {ref['seconds_total']:.0f} s on {ref.get('device', '?')}."
                if ref and ref.get("seconds_total") else "")
        st.info(f"**No GPU here.** The **cpu** suite is the default: plain and residual nets of {cpu.depths[0]} and "
                f"{cpu.depths[1]} layers, {cpu.width} filters wide (the paper: 16), on {cpu.subset:,} training images "
                f"without augmentation for {cpu.epochs} epochs.{took} Why these choices: the depth gap (4×) is as wide "
                "as a CPU affords; the narrow width cuts the work by 4×; degradation is an *optimisation* effect, so "
                "the training error is measured on exactly the images the nets fit, without augmentation, over "
                "enough passes that the deeper ResNet can use its extra layers (in 8 epochs it had not yet caught "
                "up). Each net trains on one thread, two nets at a time, so the same seed gives the same numbers "
                "on any machine with this torch build; another seed gives others (the README lists three). "
                "*quick* and *paper* train on all 50,000 images and are meant for a GPU.",
                icon=":material/developer_board:")
    run_suite_block()
    live_panel_block()
    results_block()


# ======================================================================================== ③ loss landscape


def landscape_verdict(result: dict) -> list[str]:
    nets = [n for n in result["nets"] if n.get("roughness")]
    out = []
    for n in nets:
        r = n["roughness"]
        out.append(f"**{n['label']}**: loss at the trained weights {n['origin_loss']:.3f} "
                   f"(training accuracy {100 * n['origin_acc']:.1f}% on these images); the 2-D grid's border is "
                   f"{r['edge_rise']:.3g} higher on average; {100 * r['nonconvex_fraction']:.0f}% of its interior points "
                   f"curve downwards in some direction (non-convex); the 1-D slice has {r['line_minima']} local "
                   f"minim{'um' if r['line_minima'] == 1 else 'a'}.")
    cmp = result.get("comparison")
    if cmp and len(nets) == 2:
        plain = next((n for n in nets if (n.get("model") or "").startswith("plain")), None)
        other = next((n for n in nets if n is not plain), None)
        if plain is not None:
            names = {"nonconvex_fraction": "more non-convex points", "edge_rise": "steeper walls",
                     "line_excess_variation": "a bumpier 1-D slice"}
            rougher = [k for k in names if cmp.get(k) == plain["label"]]
            nc_gap = plain["roughness"]["nonconvex_fraction"] - other["roughness"]["nonconvex_fraction"]
            if len(rougher) >= 2 and nc_gap >= 0.1:
                out.append(f"Measured here: **{plain['label']} is clearly the rougher surface** ("
                           + ", ".join(names[k] for k in rougher) + ") — the picture of Li et al.'s Fig. 5.")
            elif len(rougher) >= 2:
                out.append(f"Measured here: **{plain['label']} is rougher, but only slightly** ("
                           + ", ".join(names[k] for k in rougher) + f"; non-convex points {100 * nc_gap:+.0f} "
                           "percentage points). Li et al.'s chaotic plain-56 was trained to convergence on all "
                           "50,000 images; these are short CPU runs on few images, and a coarse grid.")
            else:
                out.append(f"Measured here: **{plain['label']} is not rougher** (rougher by {len(rougher)} of 3 "
                           f"measures: {', '.join(names[k] for k in rougher) or 'none'}). Li et al.'s contrast is for "
                           "nets trained to convergence; short CPU runs may not show it.")
            if cmp.get("edge_rise") == other["label"]:
                out.append(f"{other['label']}'s walls rise faster: it sits lower (loss {other['origin_loss']:.2f} vs "
                           f"{plain['origin_loss']:.2f}) in a narrower valley.")
    return out


def landscape_start_block() -> None:
    from resnet_lab.runs import RunStore

    st.markdown("#### Compute a landscape for your own runs")
    runs = [r for r in RunStore().list() if r.has_checkpoint and r.status == "done"]
    if not runs:
        st.caption("No finished runs with saved weights here yet: run the suite in the Training view (or train on "
                   "the Train page), then come back.")
        return
    ids = [r.id for r in runs]
    labels = {r.id: r.label for r in runs}
    depth = {r.id: _depth(r.config.get("model")) for r in runs}  # None for nets outside the plain/resnet pairs
    default_a = next((r.id for r in runs if r.config["model"].startswith("plain") and depth[r.id]), ids[0])
    default_b = next((r.id for r in runs if r.config["model"].startswith("resnet") and depth[r.id]
                      and depth[r.id] == depth[default_a]), None)
    ss.setdefault("ls_run_a", default_a)
    ss.setdefault("ls_run_b", default_b or ids[min(1, len(ids) - 1)])
    if ss["ls_run_a"] not in ids:
        ss["ls_run_a"] = default_a
    if ss["ls_run_b"] not in ids:
        ss["ls_run_b"] = ids[0]
    c1, c2 = st.columns(2)
    a = c1.selectbox("Run A (e.g. the deep plain net)", ids, key="ls_run_a", format_func=labels.get)
    b = c2.selectbox("Run B (e.g. its residual twin)", ids, key="ls_run_b", format_func=labels.get)
    base = L.defaults("cuda" if cuda else "cpu")
    o1, o2, o3 = st.columns(3)
    images = o1.number_input("Training images", min_value=10, max_value=50_000, value=base["images"], step=500,
                             key="ls_images")
    grid = o2.number_input("2-D grid points per side (odd)", min_value=3, max_value=51, value=base["grid"], step=2,
                           key="ls_grid")
    points = o3.number_input("1-D slice points (odd)", min_value=3, max_value=101, value=base["points"], step=2,
                             key="ls_points")
    problem = None
    try:
        L.check_settings(int(images), int(points), int(grid), 1.0)
    except L.LandscapeError as exc:
        problem = str(exc)
    if problem:
        st.error(problem, icon=":material/error:")
    n_eval = (1 if a == b else 2) * (int(grid) ** 2 + int(points))
    st.caption(f"{n_eval} loss evaluations of {int(images):,} images each (the 1-D slice shares its β = 0 points with "
               "the grid). Time grows with images × evaluations × the nets' depth and width.")

    def _start() -> None:
        if registry.active(owner, LS_KIND) is not None:
            return
        fn = functools.partial(L.job, run_ids=[a] if a == b else [a, b], images=int(images), points=int(points),
                               grid=int(grid), span=1.0, seed=0, batch_size=base["batch_size"],
                               device="cuda" if cuda else "cpu")
        job = registry.start(LS_KIND, fn, owner=owner, title="loss landscape")
        ss[LS_JOB_KEY] = job.id

    lab_ui.start_stop(LS_KIND, "Compute landscape", "ls", _start, blocked=problem is not None,
                      icon=":material/landscape:")
    job = lab_ui.session_job(LS_KIND, LS_JOB_KEY)
    if job is not None:
        lab_ui.live_panel(job, lambda j: lab_ui.job_progress(j, "landscape", "ls_queue"), POLL_S)


def _depth(model) -> int | None:
    try:
        return D.depth_of(model or "")
    except D.DegradationError:
        return None


def landscape_view() -> None:
    st.subheader("The loss landscape around a trained plain net and its residual twin")
    st.markdown("Li et al. (2018) look at the training loss around the trained weights θ along random directions: "
                "`loss(θ + α·d₁ + β·d₂)`. Each direction is **filter-normalised** — every filter of d gets the norm "
                "of the same filter of θ — so nets with different weight scales compare fairly. As in the paper's "
                "code (`--xignore biasbn`), directions are **zero on biases and BN γ/β**, and BN runs in eval mode "
                "with the **trained running statistics**. Both nets get the same direction seeds (0 and 1) and the "
                "same span. Li et al. found the 56-layer plain net's surface chaotic and the ResNet's smooth and "
                "nearly convex.")
    results = L.list_results()
    job = lab_ui.session_job(LS_KIND, LS_JOB_KEY)
    by_path = {r["path"]: r for r in results}
    if job is not None and not job.active and isinstance(job.result, dict) and job.result.get("path") in by_path \
            and ss.get("_ls_shown") != job.id:
        ss["ls_result"] = job.result["path"]
        ss["_ls_shown"] = job.id
    if results:
        if ss.get("ls_result") not in by_path:  # this machine's newest, else the shipped one
            ss["ls_result"] = next((r for r in results if not r.get("shipped")), results[0])["path"]

        def label(p):
            r = by_path[p]
            who = " vs ".join(n["label"] for n in r["nets"])
            return f"{who} · {(r.get('created') or '')[:16].replace('T', ' ')} · " + (
                "pre-computed, shipped with the project" if r.get("shipped") else r.get("status", ""))

        chosen = st.selectbox("Landscape", list(by_path), key="ls_result", format_func=label)
        result = by_path[chosen]
        s = result["settings"]
        if result.get("shipped"):
            st.info(f"**Pre-computed** on **{result.get('device', '?')}** in {result.get('seconds_total', 0):.0f} s "
                    f"around the deep nets of the shipped CPU suite result, with:\n\n`{result.get('command')}`",
                    icon=":material/inventory:")
        st.caption(f"{s['images']:,} training images · 1-D: {s['points']} points, 2-D: {s['grid']}×{s['grid']} "
                   f"over ±{s['span']:g} · direction seeds {s['direction_seeds']} · status {result['status']}")
        st.plotly_chart(landscape_fig_1d(result), key="ls_1d")
        style = st.radio("2-D view", ["contour", "surface"], key="ls_style", horizontal=True,
                         format_func={"contour": "Contours", "surface": "3-D surface"}.get)
        st.plotly_chart(landscape_fig_2d(result, style), key="ls_2d")
        st.markdown("\n".join(f"- {line}" for line in landscape_verdict(result)))
        st.caption("Colour and height are log10 of the loss, on one scale for both nets. Non-convex points: the "
                   "finite-difference Hessian of the 2-D grid has a negative eigenvalue there (Li et al. map the "
                   "ratio of the Hessian's extreme eigenvalues for the same question).")
    else:
        st.info("No landscape yet: compute one below.", icon=":material/landscape:")
    landscape_start_block()


{"init": init_view, "training": training_view, "landscape": landscape_view}[view]()
