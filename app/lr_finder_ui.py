"""The LR Finder page's figures, texts and small computations (plotly, no Streamlit): the page lays them out.
Curves are the dicts the page keeps (``{"id", "label", "result": LRFindResult.to_dict()}``)."""

from __future__ import annotations

import math

from resnet_lab import lr_finder as lrf
from resnet_lab.config import check_caps
from resnet_lab.models import param_count
from resnet_lab.training import preset

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]
MARKERS = {"steepest": "star", "minimum": "x", "torch-lr-finder": "circle", "valley": "diamond",
           "minimum/10": "triangle-down", "slide": "square"}
RULE_COLORS = {"steepest": "#111111", "minimum": "#d62728", "torch-lr-finder": "#e377c2", "valley": "#ff7f0e",
               "minimum/10": "#17becf", "slide": "#bcbd22"}
INTRO = dict(  # the page's three-part lesson (lab_ui.page_intro)
    idea="Before a one-cycle run you need its **maximum learning rate**. The range test trains for ~100 steps while "
         "the LR grows from tiny (nothing happens) to huge (the loss climbs back up, and may blow up). In between "
         "the loss falls. With Adam the LR you want is where it falls *fastest*: Adam blows up soon after the "
         "lowest point. With SGD, Smith's rule for one-cycle takes the LR where the loss *stops falling*: the cycle "
         "only touches its peak briefly. The test must sweep the run you will train — same network, optimizer, "
         "batch size, weight decay and augmentation — so it starts from a Train preset.",
    try_="Press **Start** (the sweep is set up for the preset's run) and watch the curve draw. Click a point on it "
         "(or type a value) to choose LR max; LR min follows at max/10. **Use for training** carries the pick *and* "
         "the swept settings to the Train page, so the run is the one the curve was measured for. Then change the "
         "optimizer (Adam ↔ SGD) or the batch size and run again: the curves overlay.",
    notice="The six rules disagree, and the table under the curve says by how much on *your* curve. Whether SGD "
           "wants larger LRs than Adam, and how a larger batch moves the curve, is for your own overlaid sweeps to "
           "show: compare one change at a time. The test's cost (steps × batch images) is printed under the curve; "
           "the model is restored afterwards, so it does not count as training.",
)
FORM = ("model", "optimizer", "batch_size", "subset", "start_lr", "end_lr", "iterations", "mode", "smooth", "diverge",
        "momentum", "weight_decay", "nesterov", "augment", "crop_pad", "cutout", "flip")  # widget key: lrf_<field>


def form_values(config: lrf.LRFindConfig) -> dict:
    """The form's values for a config: the LRs as text (typed like 1e-7), 0 for "all images"."""
    return {**{f: getattr(config, f) for f in FORM}, "subset": config.subset or 0,
            "start_lr": f"{config.start_lr:g}", "end_lr": f"{config.end_lr:g}"}


def cpu_note(defaults: lrf.LRFindConfig) -> str:
    """Why the defaults are small on a CPU, and what the sweep they set up costs."""
    cost = lrf.sweep_cost(defaults)
    return (f"**No GPU here.** The defaults are sized for a CPU: `{defaults.model}` with {defaults.optimizer} on a "
            f"class-balanced subset of {defaults.subset:,} images, batch {defaults.batch_size}, "
            f"{defaults.iterations} steps from LR {defaults.start_lr:g} to {defaults.end_lr:g}: "
            f"{cost['images']:,} images through forward and backward ({cost['passes']:.1f} passes over the "
            "subset), meant to take under a minute on 2 free CPU cores and several times longer while other work "
            "shares them — the time it really took is printed under the curve. On a GPU the page defaults to the "
            "assignment's `custom_resnet` at batch 512 on all the training images.")


def preset_form(name: str, cuda: bool) -> dict:
    """The form's values for sweeping preset ``name``'s run (lr_finder.for_training), sized for this machine: on a
    CPU the default sweep's length and range."""

    machine = "GPU" if cuda else "CPU"
    cfg = lrf.for_training(preset(name), **lrf.SWEEP[machine])
    if not cuda and cfg.subset is None:
        cfg.subset = lrf.CPU_SUBSET
    return form_values(cfg)


def config_from_form(values: dict, source: str, n_train: int, caps: dict,
                     params_of=param_count) -> tuple[lrf.LRFindConfig, dict[str, str]]:
    """The form's values (config field -> value, the LRs as typed) as a config, and field -> message for
    everything that is wrong with them, the class server's caps included (``params_of(model)``: its parameter count,
    None when unknown)."""
    problems: dict[str, str] = {}
    values = dict(values)
    for field in ("start_lr", "end_lr"):
        try:
            values[field] = float(str(values[field]).strip())
        except ValueError:
            problems[field] = f"'{values[field]}' is not a number (write it like 1e-7 or 0.001)"
            values[field] = float("nan")
    values["subset"] = int(values["subset"]) or None
    config = lrf.LRFindConfig(**values, data=source)
    for field, message in config.validate(n_train=min(config.subset or n_train, n_train)).items():
        problems.setdefault(field, message)
    params = None
    if caps.get("max_params") and "model" not in problems:
        params = params_of(config.model)
        if params is None:
            problems["model"] = UNCOUNTED
    for field, message in check_caps(caps, batch_size=config.batch_size, params=params).items():
        problems.setdefault(field, message)
    return config, problems


UNCOUNTED = ("this class server caps the model size: check your file on Data & Models first, where its parameters "
             "are counted")


def start_note(n_problems: int, job_status: str | None, config: lrf.LRFindConfig, n_train: int) -> str:
    """The line next to Start: what blocks it, what the running job does, or what the test will cost."""
    if n_problems:
        return f":red[{n_problems} setting{'s' if n_problems > 1 else ''} to fix before starting.]"
    if job_status == "pending":
        return "Your test is waiting for its turn; it starts by itself."
    if job_status:
        return "A test is running; you can switch pages, it keeps going."
    n = min(config.subset or n_train, n_train)
    return (f"{config.iterations} steps × {config.batch_size} images ≈ "
            f"{config.iterations * config.batch_size / n:.1f} passes over {n:,} images.")


def progress_text(batches: list[dict], message: str) -> str:
    last = batches[-1] if batches else None
    return (f"step {last['step'] + 1}/{last['total']} · LR {last['lr']:.2e} · loss {last['loss']:.3f} · "
            f"{last['images_per_s']:,.0f} images/s" if last else message or "starting …")


def live_figure(batches: list[dict]):
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(x=[e["lr"] for e in batches], y=[e["loss"] for e in batches], mode="lines+markers",
                               marker={"size": 4}, name="smoothed loss"))
    fig.update_layout(height=260, margin={"l": 10, "r": 10, "t": 10, "b": 10}, xaxis_title="learning rate (log)",
                      yaxis_title="loss", showlegend=False)
    fig.update_xaxes(type="log")
    return fig


def add_curve(curves: list[dict], job_id: str, result: lrf.LRFindResult) -> dict:
    """Append a finished test to the curve store, numbered in order of arrival; returns the new curve."""
    curves.append({"id": job_id, "label": f"#{len(curves) + 1} {result.label}", "result": result.to_dict()})
    return curves[-1]


def recommended_lr(curve: dict) -> float | None:
    """The LR of the rule recommended for the curve's optimizer (lr_finder.recommended), where it has one."""
    best = lrf.LRFindResult.from_dict(curve["result"]).suggestion()
    return best.lr if best is not None else None


def rounded_pair(lr_max: float) -> tuple[float, float]:
    """LR max and the seed's LR min (library's ``lr_pair``: max / 10), each to 3 significant digits."""
    pair = lrf.lr_pair(lr_max)
    return float(f"{pair['lr_max']:.3g}"), float(f"{pair['lr_min']:.3g}")


def clicked_lr(event) -> float | None:
    """The x of the point clicked on the chart (the LR, in data units also on a log axis), if it is a usable LR.
    The selection event is read both as a dict and as an object with attributes."""
    points = (event or {}).get("selection", {}).get("points", []) if isinstance(event, dict) else \
        getattr(getattr(event, "selection", None), "points", [])
    x = points[0].get("x") if points else None
    return float(x) if isinstance(x, (int, float)) and x > 0 and math.isfinite(x) else None


def curve_figure(curves: list[dict], shown: list[int], current_label: str, result: lrf.LRFindResult,
                 lr_max: float, lr_min: float):
    """The shown curves overlaid (the current one thick, with its raw loss), the current one's rule markers and
    the picked LR range."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for i in shown:
        c = curves[i]
        r = c["result"]
        is_current = c["label"] == current_label
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
    for value, text, style, anchor in ((lr_max, "LR max", {"color": "black", "width": 2}, "left"),
                                       (lr_min, "LR min", {"color": "gray", "width": 1.5, "dash": "dash"}, "right")):
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


def curve_caption(result: lrf.LRFindResult) -> str:
    """Under the curve: what the test cost, how far the loss fell and rose again, and how to read the chart."""
    cost = lrf.sweep_cost({**result.config, "iterations": result.iterations}, result.n_train)
    rise = ""
    if result.losses:
        low = min(result.losses)
        after = result.losses[result.losses.index(low):]
        rise = (f" The smoothed loss went from {result.losses[0]:.2f} down to {low:.2f} and back up to "
                f"{max(after):.2f} ({max(after) / low:.1f}× its minimum"
                + (f"; the sweep stopped at the {result.config.get('diverge', 5):g}× divergence threshold)."
                   if result.diverged else ", below the divergence threshold, so all steps ran)."))
    return (f"Cost: {result.iterations} steps × batch {result.config.get('batch_size')} = {cost['images']:,} images "
            f"({cost['passes']:.1f} passes over {result.n_train:,} training images) in {result.seconds:.1f} s on "
            f"{result.device} ({result.images_per_s:,.0f} images/s).{rise} Click a point to make its LR the maximum; "
            "the faint line is the raw loss of each step, the thick one its running average.")


def suggestion_table(result: lrf.LRFindResult):
    import pandas as pd

    return pd.DataFrame([{"rule": s.name, "LR": f"{s.lr:.2e}", "loss there": f"{s.loss:.3f}", "why": s.reason}
                         for s in result.suggestions]).set_index("rule")


def rules_caption(result: lrf.LRFindResult) -> str:
    spread = max(s.lr for s in result.suggestions) / min(s.lr for s in result.suggestions)
    return (f"On this curve the rules span a factor of {spread:,.0f} in LR (largest ÷ smallest). The seed's rule "
            "is **steepest**: the middle of the sharpest fall, its slope taken over several steps and only "
            "before the minimum — so it can differ from **torch-lr-finder**'s own answer (the steepest "
            "step-to-step drop anywhere in its window). **minimum** is Smith's bound for one-cycle: where the "
            "smoothed loss stops falling. **valley**, **minimum/10** and **slide** are fastai's, computed exactly as "
            f"fastai does. Pre-selected for {result.config.get('optimizer')}: **{lrf.recommended(result.config.get('optimizer'))}**"
            " (lr_finder.recommended says which rule trained better, measured). Buttons below copy any of them.")


def pick_problems(lr_max: float, lr_min: float) -> list[str]:
    out = []
    if not lr_max > 0:
        out.append("LR max must be > 0")
    if not 0 < lr_min < lr_max:
        out.append("LR min must be > 0 and below LR max")
    return out


def pick_note(result: lrf.LRFindResult, lr_max: float) -> str:
    """Where on this (non-empty) curve the picked LR max lies (LRFindResult.position), in words."""
    at = result.position(lr_max)
    where = ("past the lowest loss — training will likely diverge" if at["past_minimum"]
             else "on the falling part of the curve")
    return f"At LR {lr_max:.3g} this curve's loss is {at['loss']:.3f}, {where}."


def handover_note(curve: dict) -> str:
    """What *Use for training* carries to the Train page, read from the curve's own settings."""
    cfg = curve["result"]["config"]
    parts = [f"{cfg['model']}", f"{cfg['optimizer']}{' (Nesterov)' if cfg.get('nesterov') else ''}",
             f"batch {cfg['batch_size']}", f"weight decay {cfg['weight_decay']:g}",
             f"momentum {cfg['momentum']:g} at the peak",
             (f"crop (pad {cfg.get('crop_pad', 4)} px) + {cfg.get('flip', 'random')} flip + cutout "
              f"{cfg.get('cutout', 8)} px" if cfg["augment"]
              else "no augmentation")]
    preset = cfg.get("preset")
    return (("The Train page gets the preset **" + preset + "** and " if preset else "The Train page gets ")
            + "the settings this curve was swept with: " + ", ".join(parts) + ", with your LR max and LR min — the "
            "best LR depends on each of them, so the run trains exactly what was measured.")


def train_prefill(curve: dict, lr_max: float, lr_min: float) -> dict:
    """What the Train page reads from ``session_state["train_prefill"]``: the sweep's preset, the pick and every
    setting the sweep shares with the run (``lr_finder.run_settings``), so the run is the one the curve was measured
    for."""
    cfg = curve["result"]["config"]
    prefill = lrf.run_settings(cfg, lr_max, lr_min)
    if cfg.get("optimizer") != "sgd":
        prefill.pop("nesterov", None)
    prefill["tested_batch_size"] = int(cfg["batch_size"])
    result = curve["result"]  # the curve itself travels too: the run's report shows it with the picked LRs
    prefill["lr_test"] = {"lrs": list(result["lrs"]), "losses": list(result["losses"]), "label": curve.get("label"),
                          "config": cfg}
    return prefill
