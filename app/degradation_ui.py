"""The Depth Degradation page's texts, tables, forms and small computations: composers that turn the numbers of a
result (resnet_lab.experiments.degradation, resnet_lab.landscape) into the page's sentences, the settings forms and
their checks, the suite's command line, and which result the pickers show. pages/degradation.py lays them out;
only the forms and pickers (``*_options``, ``*_picker(s)``) and ``show_table`` draw anything themselves."""

from __future__ import annotations

import streamlit as st

import lab_ui
from degradation_figs import times

from resnet_lab import tasks
from resnet_lab import landscape as L
from resnet_lab.config import check_caps, fit_to_caps
from resnet_lab.experiments import degradation as D
from resnet_lab.models import param_count

INTRO = dict(
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

# ----------------------------------------------------------------------------------------- ① at initialisation
INIT_HOW = ("Build plain and residual nets of **20, 56 and 110** layers with fresh weights, push **one batch of "
            "real training images** through them (batch norm on batch statistics, exactly what the first SGD "
            "step sees), and read two things per layer: how much gradient of the loss reaches its weights, and "
            "how large the signal it passes on is. Several seeds: the line is the median, the band min–max.")
INIT_ACTS_READ = ("In the plain nets every block ends in BN + ReLU, so the forward signal keeps the same size at any "
                  "depth: what gets lost is not its size but the path back. In a ResNet each block *adds* its "
                  "branch to the stream, so the stream grows with depth and each block's branch is a shrinking "
                  "fraction of it — a deep ResNet starts close to a shallower one. With zero-init the branches add "
                  "nothing at first and the stream stays flat.")


def init_profile(source: str, images: int, seeds: int, zero_init: bool) -> dict | None:
    """The initialisation view's numbers (D.init_profile), computed in a worker once per setting for every session;
    None while they are computed (its progress is drawn)."""

    return lab_ui.computed("init_profile", tasks.init_profile, f"the initialisation view ({seeds} seed(s), "
                           f"{images} images)", "deg_init_job", source=source, images=images, seeds=seeds,
                           zero_init=zero_init)


def init_texts(prof: dict) -> dict[str, str | None]:
    """The sentences under the two initialisation figures, every number read from ``prof`` (D.init_profile)."""
    by = {(n["family"], n["depth"]): n for n in prof["nets"]}
    deep = max(prof["depths"])
    p, r = by[("plain", deep)], by[("resnet", deep)]
    ratios = [f"{d} layers — plain: first ÷ last layer **{times(by[('plain', d)]['grad_first_over_last'])}**, "
              f"ResNet: **{times(by[('resnet', d)]['grad_first_over_last'])}**" for d in prof["depths"]]

    def acts(family: str, word: str) -> str:
        return "; ".join(f"{by[(family, d)]['label']}{word} {by[(family, d)]['act_last_over_first']:.2f}×"
                         for d in prof["depths"])

    return {
        "grads": "**Gradient norm per layer** (log scale): " + "; ".join(ratios) + ".",
        "zero": None if not r.get("grad_zero_layers") else (
            f"Zero-init: the last conv of each residual branch ({r['grad_zero_layers']} in ResNet-{deep}) gets "
            "exactly zero gradient at the first step — γ = 0 blocks it; only that BN's γ is pushed. Those "
            "layers are left out of the ratios and fall off the log scale."),
        "grads_read": (
            f"Read it: in plain-{deep} the first layer's gradient is {times(p['grad_first_over_last'])} its last "
            f"layer's (largest ÷ smallest over all layers: {times(p['grad_max_over_min'])}); in ResNet-{deep} the "
            f"same ratios are {times(r['grad_first_over_last'])} and {times(r['grad_max_over_min'])}. With batch norm "
            "the gradient of a deep plain stack does not vanish — it *explodes* towards the input (each BN "
            "layer amplifies the backward signal a little), so no single learning rate suits its first and "
            "last layers. The shortcut adds an identity path to every block's Jacobian, so the gradient reaches "
            "the first layers at about the size it had at the top."),
        "acts": ("**Signal passed forward** (std of each block's output over the batch): plain — "
                 + acts("plain", " last ÷ first") + "; ResNet — " + acts("resnet", "") + "."),
        "footer": (f"{prof['images']} training images · seeds {', '.join(map(str, prof['seeds']))} · "
                   f"{len(prof['nets'])} nets per seed at width {prof['width']} (the paper's) · measured in "
                   f"{prof['seconds']:.1f} s by a background worker when first asked for (then kept for everyone, "
                   "per setting)."),
    }


# ------------------------------------------------------------------------------------------------- ② training
MISSES_EFFECT = ("This result misses part of the effect. Short runs on few images are noisy; the paper's curves "
                 "are long runs on all 50,000 images.")
TABLE_NOTE = ("Train error is measured during the last epoch on the training images as the net saw them (augmented "
              "when the suite augments), as in the paper's curves; test error on the test images after it. Plain and "
              "residual nets of one depth have exactly the same parameters: option-A shortcuts add none.")
FIG7_HOW = ("**Layer responses (the paper's Fig. 7):** the standard deviation of each 3×3 layer's output after "
            "batch norm, before the ReLU, on a fixed batch of test images. Solid lines: plain nets; dotted: "
            "ResNets.")
FIG7_READ = {
    "init": "At initialisation batch norm uses the statistics of the batch itself, so every response has a "
            "std of about 1 (γ = 1; 0 in a zero-initialised branch end): training is what makes layers differ.",
    "trained": "He et al.: ResNets' responses are generally smaller than their plain twins' — the residual "
               "functions stay close to zero, so each block only nudges its input.",
}


def bullets(lines: list[str]) -> str:
    return "\n".join(f"- {line}" for line in lines)


def cpu_note(results: list[dict]) -> str:
    """Why the cpu suite is what it is, with the time the shipped run took when it is at hand."""
    cpu = D.SUITES["cpu"]
    ref = shipped(results, "cpu")
    took = (f" The shipped run took {ref['seconds_total']:.0f} s on {ref.get('device', '?')}."
            if ref and ref.get("seconds_total") else "")
    return (f"**No GPU here.** The **cpu** suite is the default: plain and residual nets of {cpu.depths[0]} and "
            f"{cpu.depths[1]} layers, {cpu.width} filters wide (the paper: 16), on {cpu.subset:,} training images "
            f"without augmentation for {cpu.epochs} epochs.{took} Why these choices: the depth gap (4×) is as wide "
            "as a CPU affords; the narrow width cuts the work by 4×; degradation is an *optimisation* effect, so "
            "the training error is measured on exactly the images the nets fit, without augmentation, over "
            "enough passes that the deeper ResNet can use its extra layers (in 8 epochs it had not yet caught "
            "up). Each net trains on one thread, two nets at a time, so the same seed gives the same numbers "
            "on any machine with this torch build; another seed gives others (docs/experiments.md lists three). "
            "*quick* and *paper* train on all 50,000 images and are meant for a GPU.")


def suite_summary(s, epochs: int | None = None) -> str:
    """The suite's recipe in one line, with the epochs in force (the form's, not the spec's)."""
    return (f"Nets: plain and residual at depths {', '.join(map(str, s.depths))} · width {s.width} · "
            f"{epochs or s.epochs} epochs · batch {s.batch_size} · SGD, momentum 0.9, weight decay 1e-4, one-cycle LR up "
            f"to {s.lr_max:g} · {'crop + flip' if s.augment else 'no augmentation'}")


def suite_options(suite: str, s, caps: dict | None = None) -> dict:
    """The expander that changes a suite's settings; widget keys carry the suite's name, so each keeps its own.
    A class server's epoch cap lowers the default (and the maximum) so the default suite can start."""
    fitted, notes = fit_to_caps(caps or {}, epochs=s.epochs)
    for note in notes:
        st.caption(f":material/lock: {note[:1].upper()}{note[1:]}.")
    with st.expander("Change the suite (epochs, images, seed, zero-init)"):
        o1, o2, o3, o4, o5 = st.columns(5)
        opts = dict(
            epochs=o1.number_input("Epochs", min_value=1, max_value=int((caps or {}).get("max_epochs") or 200),
                                   value=fitted.get("epochs", s.epochs), step=1, key=f"deg_epochs_{suite}"),
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
    return opts


def suite_problems(caps: dict, suite: str, s, opts: dict) -> list[tuple[str, str]]:
    """(message, icon) for each reason the suite may not start: a too small subset, a class server's caps
    (checked against every net of the suite: the largest one's parameters)."""
    out = []
    if 0 < opts["subset"] < 10 or 0 < opts["test_subset"] < 10:
        out.append(("A subset needs at least 10 images (one per class); 0 means all.", ":material/error:"))
    if not any(caps.get(k) for k in ("max_epochs", "max_batch_size", "max_params")):
        return out
    try:
        nets = D.suite_configs(suite, epochs=int(opts["epochs"]), include_110=bool(opts["include_110"]))
    except D.DegradationError:
        nets = []

    params = max((param_count(c.model, **(c.model_options or {})) for c in nets), default=None)
    caps_hit = check_caps(caps, epochs=int(opts["epochs"]), batch_size=s.batch_size, params=params)
    return out + [(message, ":material/lock:") for message in caps_hit.values()]


def suite_start_check(suite: str, opts: dict, source: str) -> tuple[dict, str | None]:
    """The form's options as suite arguments, and why the suite cannot start (None when it can)."""
    try:
        lab_ui.load_data(source)  # a data problem shows here at once, not minutes later in the worker
    except Exception as exc:
        return {}, str(exc)
    kwargs = {k: (int(v) if k in ("epochs", "subset", "test_subset", "seed") else bool(v)) for k, v in opts.items()}
    try:
        D.suite_configs(suite, **kwargs)
    except D.DegradationError as exc:
        return kwargs, str(exc)
    return kwargs, None


def suite_command(suite: str, s, opts: dict) -> str:
    """The CLI line that runs the same suite (only the options that differ from the suite's own)."""
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


def running_note(elapsed: float) -> str:
    return (f"Running for {int(elapsed) // 60}:{int(elapsed) % 60:02d} min:s. You can leave this page; "
            "the suite keeps running and its result appears here.")


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


def result_picker(title: str, results: list[dict], key: str, shown: str, job, default: str, label) -> dict:
    """A selectbox over saved results (by path). It moves to what this session's ``job`` just finished, once per
    job (noted under ``shown``, so another pick sticks afterwards); a pick whose file is gone falls to ``default``."""
    state = st.session_state
    by_path = {r["path"]: r for r in results}
    if job is not None and not job.active and isinstance(job.result, dict) and job.result.get("path") in by_path \
            and state.get(shown) != job.id:
        state[key] = job.result["path"]
        state[shown] = job.id
    if state.get(key) not in by_path:
        state[key] = default
    return by_path[st.selectbox(title, list(by_path), key=key, format_func=lambda p: label(by_path[p]))]


def shipped(results: list[dict], suite: str) -> dict | None:
    return next((r for r in results if r.get("shipped") and r.get("suite") == suite
                 and not (r.get("settings") or {}).get("zero_init")), None)


def default_result(results: list[dict], cuda: bool) -> str:
    """A result of this machine first; else the shipped GPU result (the paper's regime) when there is one and
    this machine has a GPU, else the shipped CPU result, else the newest."""
    local = [r for r in results if not r.get("shipped")]
    if local:
        return local[0]["path"]
    for name in (("quick", "paper", "cpu") if cuda else ("cpu", "quick", "paper")):
        ref = shipped(results, name)
        if ref is not None:
            return ref["path"]
    return results[0]["path"]


def result_label(r: dict) -> str:
    when = (r.get("created") or "")[:16].replace("T", " ")
    origin = "pre-computed, shipped with the project" if r.get("shipped") else r.get("status", "")
    extra = " · zero-init" if (r.get("settings") or {}).get("zero_init") else ""
    return f"{r['suite']}{extra} · {when} · {r.get('device', '?')} · {origin}"


def shipped_gpu_note(results: list[dict]) -> str | None:
    gpu = [r for r in results if r.get("shipped") and r.get("suite") in ("quick", "paper")]
    if not gpu:
        return None
    return (f"A GPU result ships with the project too ({gpu[0]['suite']} suite, {gpu[0].get('device', '?')}): pick "
            "it in the list to see the paper's regime.")


def shipped_note(result: dict) -> str:
    return (f"**Pre-computed result** of the **{result['suite']}** suite, produced by the project on "
            f"**{result.get('device', '?')}** on {(result.get('created') or '?')[:10]} in "
            f"{(result.get('seconds_total') or 0) / 60:.1f} minutes, with:\n\n`{result.get('command') or '?'}`"
            f"\n\nData: {lab_ui.public(result.get('data_source', '?'))}. Start the same suite above to reproduce it on this "
            "machine.")


def settings_line(result: dict) -> str:
    settings = result.get("settings", {})
    return (f"{result.get('label', '')} · data: {lab_ui.public(result.get('data_source', '?'))} · "
            f"{settings.get('epochs')} epochs, "
            f"batch {settings.get('batch_size')}, LR max {settings.get('lr_max')}, width "
            f"{settings.get('width', 16)}, seed {settings.get('seed', 0)}"
            f"{', zero-init residual branches' if settings.get('zero_init') else ''} · "
            f"{(result.get('seconds_total') or 0):.0f} s in all")


def show_table(result: dict) -> None:
    """The final errors, one row per net."""
    rows = D.table(result)
    if result.get("shipped"):
        for row in rows:
            row.pop("run", None)  # its runs live on the machine that produced it, not here
    st.dataframe(rows, hide_index=True, column_config={
        "parameters": st.column_config.NumberColumn(format="%d"),
        "final train error %": st.column_config.NumberColumn(format="%.1f"),
        "final test error %": st.column_config.NumberColumn(format="%.1f"),
        "seconds": st.column_config.NumberColumn(format="%.0f")})


def zero_init_comparison(result: dict, results: list[dict]) -> str | None:
    """The same suite and seed with the other residual init, when a result of it is at hand: the option's own
    comparison, in numbers taken from both files."""
    s = result.get("settings") or {}

    def recipe(settings: dict) -> dict:  # everything but the option compared: epochs, images, seed, LR ...
        return {k: v for k, v in settings.items() if k != "zero_init"}

    # Only a twin trained with the same recipe is a comparison: a 10-epoch suite against the shipped 12-epoch
    # zero-init result would quote the epochs' effect as the init's.
    twin = next((r for r in results if r.get("suite") == result.get("suite") and r["path"] != result["path"]
                 and recipe(r.get("settings") or {}) == recipe(s)
                 and bool((r.get("settings") or {}).get("zero_init")) != bool(s.get("zero_init"))), None)
    if twin is None:
        return None
    std, zi = (twin, result) if s.get("zero_init") else (result, twin)
    a, b = D.final_errors(std), D.final_errors(zi)
    parts = [f"{D.net_label(m)} {100 * a[m]['train_error']:.1f}% → {100 * b[m]['train_error']:.1f}%"
             for m in a if m.startswith("resnet") and m in b and a[m]["train_error"] is not None
             and b[m]["train_error"] is not None]
    if not parts:
        return None
    gaps = [D.effect(std).get("residual_gap"), D.effect(zi).get("residual_gap")]
    # A stopped suite may lack one of the ResNets: then there is no lead to quote, only the nets both have.
    lead = ("" if None in gaps else f" The deeper ResNet's lead: {-100 * gaps[0]:+.1f} points with the standard "
            f"init, {-100 * gaps[1]:+.1f} with zero-init.")
    return ("**Zero-init comparison** (same suite, seed and recipe; last BN of each residual branch at γ = 0): final "
            "training error " + "; ".join(parts) + "." + lead)


def gradient_spread(series: list[dict]) -> str:
    spread = [f"{sr['label']}: first ÷ last layer {times(sr['values'][0] / sr['values'][-1])}, largest ÷ smallest "
              f"{times(max(sr['values']) / min(sr['values']))}" for sr in series
              if sr["values"] and min(sr["values"]) > 0]
    return "In this result — " + "; ".join(spread) + "."


def runs_note(result: dict) -> str | None:
    """Where the suite's nets can be opened as ordinary runs (not for a shipped result: they are not here)."""
    ids = [n["run_id"] for n in result.get("nets", []) if n.get("run_id")]
    if not ids or result.get("shipped"):
        return None
    return ("Every net is also a normal run in the runs store: " + ", ".join(f"`{i}`" for i in ids) +
            " — open them on the Train, Activations or Misclassified pages, or compare two in the loss "
            "landscape view.")


# ------------------------------------------------------------------------------------------ ③ loss landscape
LANDSCAPE_HOW = ("Li et al. (2018) look at the training loss around the trained weights θ along random directions: "
                 "`loss(θ + α·d₁ + β·d₂)`. Each direction is **filter-normalised** — every filter of d gets the norm "
                 "of the same filter of θ — so nets with different weight scales compare fairly. As in the paper's "
                 "code (`--xignore biasbn`), directions are **zero on biases and BN γ/β**, and BN runs in eval mode "
                 "with the **trained running statistics**. Both nets get the same direction seeds (0 and 1) and the "
                 "same span. Li et al. found the 56-layer plain net's surface chaotic and the ResNet's smooth and "
                 "nearly convex.")
LANDSCAPE_READ = ("Colour and height are log10 of the loss, on one scale for both nets. Non-convex points: the "
                  "finite-difference Hessian of the 2-D grid has a negative eigenvalue there (Li et al. map the "
                  "ratio of the Hessian's extreme eigenvalues for the same question).")


def landscape_default(results: list[dict]) -> str:
    """This machine's newest landscape, else the shipped one."""
    return next((r for r in results if not r.get("shipped")), results[0])["path"]


def landscape_label(r: dict) -> str:
    who = " vs ".join(n["label"] for n in r["nets"])
    return f"{who} · {(r.get('created') or '')[:16].replace('T', ' ')} · " + (
        "pre-computed, shipped with the project" if r.get("shipped") else r.get("status", ""))


def landscape_shipped_note(result: dict) -> str:
    return (f"**Pre-computed** on **{result.get('device', '?')}** in {result.get('seconds_total', 0):.0f} s "
            f"around the deep nets of the shipped CPU suite result, with:\n\n`{result.get('command')}`")


def landscape_settings_line(result: dict) -> str:
    s = result["settings"]
    return (f"{s['images']:,} training images · 1-D: {s['points']} points, 2-D: {s['grid']}×{s['grid']} "
            f"over ±{s['span']:g} · direction seeds {s['direction_seeds']} · status {result['status']}")


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
    v = L.verdict(result)  # the judgement is the library's (tested there); this only words it
    if v is not None:
        names = {"nonconvex_fraction": "more non-convex points", "edge_rise": "steeper walls",
                 "line_excess_variation": "a bumpier 1-D slice"}
        measures = ", ".join(names[k] for k in v["rougher_by"])
        if v["kind"] == "clearly":
            out.append(f"Measured here: **{v['plain']} is clearly the rougher surface** ({measures}) — the picture "
                       "of Li et al.'s Fig. 5.")
        elif v["kind"] == "slightly":
            out.append(f"Measured here: **{v['plain']} is rougher, but only slightly** ({measures}; non-convex "
                       f"points {100 * v['nonconvex_gap']:+.0f} percentage points). Li et al.'s chaotic plain-56 was "
                       "trained to convergence on all 50,000 images; these are short CPU runs on few images, and a "
                       "coarse grid.")
        else:
            out.append(f"Measured here: **{v['plain']} is not rougher** (rougher by {len(v['rougher_by'])} of 3 "
                       f"measures: {measures or 'none'}). Li et al.'s contrast is for nets trained to convergence; "
                       "short CPU runs may not show it.")
        if v["other_steeper"]:
            out.append(f"{v['other']}'s walls rise faster: it sits lower (loss {v['other_loss']:.2f} vs "
                       f"{v['plain_loss']:.2f}) in a narrower valley.")
    return out


def _depth(model) -> int | None:
    try:
        return D.depth_of(model or "")
    except D.DegradationError:
        return None


def run_pickers(runs: list) -> tuple[str, str]:
    """The two runs to compare: by default a plain net and the residual net of the same depth; a pick whose run
    is gone falls back to a default."""
    state = st.session_state
    ids = [r.id for r in runs]
    depth = {r.id: _depth(r.config.get("model")) for r in runs}  # None for nets outside the plain/resnet pairs
    default_a = next((r.id for r in runs if r.config["model"].startswith("plain") and depth[r.id]), ids[0])
    default_b = next((r.id for r in runs if r.config["model"].startswith("resnet") and depth[r.id]
                      and depth[r.id] == depth[default_a]), None)
    state.setdefault("ls_run_a", default_a)
    state.setdefault("ls_run_b", default_b or ids[min(1, len(ids) - 1)])
    if state["ls_run_a"] not in ids:
        state["ls_run_a"] = default_a
    if state["ls_run_b"] not in ids:
        state["ls_run_b"] = ids[0]
    labels = {r.id: r.label for r in runs}
    c1, c2 = st.columns(2)
    return (c1.selectbox("Run A (e.g. the deep plain net)", ids, key="ls_run_a", format_func=labels.get),
            c2.selectbox("Run B (e.g. its residual twin)", ids, key="ls_run_b", format_func=labels.get))


def landscape_options(base: dict) -> tuple[int, int, int]:
    """Images, 2-D grid points per side and 1-D slice points, starting from ``base`` (L.defaults)."""
    o1, o2, o3 = st.columns(3)
    images = o1.number_input("Training images", min_value=10, max_value=50_000, value=base["images"], step=500,
                             key="ls_images")
    grid = o2.number_input("2-D grid points per side (odd)", min_value=3, max_value=51, value=base["grid"], step=2,
                           key="ls_grid")
    points = o3.number_input("1-D slice points (odd)", min_value=3, max_value=101, value=base["points"], step=2,
                             key="ls_points")
    return int(images), int(grid), int(points)


def landscape_problem(images: int, points: int, grid: int) -> str | None:
    try:
        L.check_settings(images, points, grid, 1.0)
    except L.LandscapeError as exc:
        return str(exc)
    return None


def landscape_cost(same_run: bool, images: int, grid: int, points: int) -> str:
    n_eval = (1 if same_run else 2) * (grid ** 2 + points)
    return (f"{n_eval} loss evaluations of {images:,} images each (the 1-D slice shares its β = 0 points with "
            "the grid). Time grows with images × evaluations × the nets' depth and width.")
