"""The Hyperparameter Search page's form model, figures, tables and texts, built from
resnet_lab.experiments.search results. No Streamlit here: the page (pages/search.py) lays them out."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

from resnet_lab.config import check_caps
from resnet_lab.experiments import search as S
from resnet_lab.models import param_count
from resnet_lab.training import PRESETS

# Search widgets whose values are not kept across page switches (buttons, and picks made below the form).
# Not form values: buttons (Streamlit refuses a button's value set through session_state) and pickers of results.
NOT_KEPT = ("search_start", "search_stop", "search_queue_cancel", "search_train_with_these", "search_study_pick",
            "search_group")


def form_defaults(base: S.SearchConfig) -> dict:
    """The form's initial widget values (keys ``search_*``) from a default SearchConfig."""
    sp = base.space
    return {"search_storage": S.default_storage(), "search_study": f"search-{time.strftime('%Y%m%d-%H%M')}",
            "search_preset": base.preset, "search_population": base.population,
            "search_generations": base.generations, "search_epochs": base.epochs or 1,
            "search_subset": base.subset or 0, "search_test_subset": base.test_subset or 0,
            "search_prune": base.prune, "search_crossover": base.crossover,
            "search_lr_low": sp["lr_max"].low, "search_lr_high": sp["lr_max"].high,
            "search_wd_low": sp["weight_decay"].low, "search_wd_high": sp["weight_decay"].high,
            "search_wd_log": sp["weight_decay"].log,
            "search_mom_low": sp["momentum"].low, "search_mom_high": sp["momentum"].high}


def form_config(values: Mapping) -> S.SearchConfig:
    """The SearchConfig that the form's values (``search_*`` keys) describe."""
    cfg = S.SearchConfig(preset=values["search_preset"], population=int(values["search_population"]),
                         generations=int(values["search_generations"]), epochs=int(values["search_epochs"]),
                         subset=int(values["search_subset"]) or None,
                         test_subset=int(values["search_test_subset"]) or None,
                         prune=bool(values["search_prune"]), crossover=values["search_crossover"])
    cfg.space = {"lr_max": S.Range(float(values["search_lr_low"]), float(values["search_lr_high"]), log=True),
                 "weight_decay": S.Range(float(values["search_wd_low"]), float(values["search_wd_high"]),
                                         log=bool(values["search_wd_log"])),
                 "momentum": S.Range(float(values["search_mom_low"]), float(values["search_mom_high"]), log=False)}
    return cfg


def form_values(values: Mapping) -> dict:
    """The form's widget values to keep: Streamlit drops an unrendered widget's value on another page."""
    return {k: values[k] for k in list(values.keys()) if isinstance(k, str) and k.startswith("search_")
            and k not in NOT_KEPT}


def cap_errors(caps: dict, config: S.SearchConfig) -> dict:
    """A class server's caps (max epochs, batch size, parameters) checked against every trial of ``config``."""
    if not any(caps.get(k) for k in ("max_epochs", "max_batch_size", "max_params")):
        return {}

    preset = PRESETS.get(config.preset, {})
    params = param_count(preset["model"]) if preset.get("model") else None
    return check_caps(caps, epochs=config.epochs, batch_size=preset.get("batch_size"), params=params)


# ---------------------------------------------------------------------------------------------------- a study

def study_label(name: str, study: dict) -> str:
    best = f"best {100 * study['best']:.1f}%" if study["best"] is not None else "no finished trial"
    return f"{name} · {study['n_trials']} trials · {best} · {study['started'] or ''}"


def settings_caption(settings: dict, summary: dict) -> str:
    return (f"Preset {settings['preset']} · population {settings['population']} × {settings['generations']} "
            f"generations · {settings.get('epochs') or 'preset'} epoch(s) per trial · pruning "
            f"{'on' if settings.get('prune') else 'off'} · crossover {settings.get('crossover')} · states: "
            + ", ".join(f"{n} {k.lower()}" for k, n in summary["states"].items()))


def scatter_figure(scored: list[dict], group: str):
    """Accuracy per trial against its generation (``group``: "generation" or "ga_generation"), and the best so
    far."""
    import plotly.graph_objects as go

    fig = go.Figure()
    symbols = {"COMPLETE": "circle", "PRUNED": "x", "FAIL": "triangle-down"}
    colors = {"COMPLETE": "#1f77b4", "PRUNED": "#ff7f0e", "FAIL": "#d62728"}
    for state in ("COMPLETE", "PRUNED"):
        pts = [r for r in scored if r["state"] == state and r[group] is not None]
        if not pts:
            continue
        # A small deterministic jitter so trials of one generation don't hide each other.
        x = [r[group] + ((r["number"] * 0.618) % 1 - 0.5) * 0.35 for r in pts]
        fig.add_trace(go.Scatter(
            x=x, y=[100 * r["value"] for r in pts], mode="markers", name=state.lower(),
            marker=dict(symbol=symbols[state], size=10, color=colors[state], line=dict(width=1, color="white")),
            text=[f"trial {r['number']}<br>LR {r['params']['lr_max']:.2e}<br>WD {r['params']['weight_decay']:.2e}"
                  f"<br>momentum {r['params']['momentum']:.3f}" for r in pts],
            hovertemplate="%{text}<br>accuracy %{y:.1f}%<extra></extra>"))
    best_by_gen = {}
    for r in scored:
        if r["state"] == "COMPLETE" and r[group] is not None:
            best_by_gen[r[group]] = max(best_by_gen.get(r[group], 0), r["value"])
    if best_by_gen:
        gens = sorted(best_by_gen)
        running = [100 * max(best_by_gen[g] for g in gens[:i + 1]) for i in range(len(gens))]
        fig.add_trace(go.Scatter(x=gens, y=running, mode="lines+markers", name="best so far",
                                 line=dict(color="#2ca02c", width=2, dash="dot")))
    fig.update_layout(height=360, margin=dict(l=10, r=10, t=10, b=10),
                      xaxis=dict(title="generation", dtick=1), yaxis=dict(title="test accuracy (%)"),
                      legend=dict(orientation="h", yanchor="top", y=-0.2))
    return fig


def parallel_figure(scored: list[dict]):
    """Parallel coordinates of the completed trials (all scored ones if none completed), coloured by accuracy."""
    import plotly.graph_objects as go

    done = [r for r in scored if r["state"] == "COMPLETE"] or scored
    dims = [dict(label="log10 LR", values=[math.log10(r["params"]["lr_max"]) for r in done]),
            dict(label="weight decay", values=[r["params"]["weight_decay"] for r in done]),
            dict(label="momentum", values=[r["params"]["momentum"] for r in done]),
            dict(label="accuracy %", values=[100 * r["value"] for r in done])]
    fig = go.Figure(go.Parcoords(line=dict(color=[100 * r["value"] for r in done], colorscale="Viridis",
                                           showscale=True, colorbar=dict(title="acc %")), dimensions=dims))
    # The axis labels sit above the plot: leave them room at the top.
    fig.update_layout(height=340, margin=dict(l=60, r=40, t=50, b=20))
    return fig


def best_caption(best: dict, settings: dict, prefill: dict) -> str:
    return (f"From trial {best['number']} (generation {best['generation']}) with preset {settings['preset']}: "
            f"model {prefill['model']}, optimizer {prefill['optimizer']}. The score is the test accuracy the "
            "search selected on, so it is optimistic — retrain with another seed to confirm it.")


def trials_table(rows: list[dict]) -> list[dict]:
    """One row per trial, rounded for reading."""
    return [{"trial": r["number"], "state": r["state"].lower(), "generation": r["generation"],
             "NSGA-II generation": r["ga_generation"],
             "accuracy %": None if r["value"] is None else round(100 * r["value"], 2),
             "LR": r["params"].get("lr_max"), "weight decay": r["params"].get("weight_decay"),
             "momentum": r["params"].get("momentum"),
             "seconds": None if r["seconds"] is None else round(r["seconds"], 1),
             "worker": r["worker"], "note": r["error"] or ""} for r in rows]


def workers_text(url: str, study: str) -> str:
    """How to join study ``study`` at the (password-masked) database ``url`` from another machine."""
    return ("Every worker runs trials of the same study and the database keeps them apart, so the search goes as many "
            "times faster as you have machines. On each machine (with this project installed and the data at hand):\n\n"
            f"```\npython -m resnet_lab search --storage '{url}' --study '{study}' --data <path or cifar10>\n```\n\n"
            "(with the real `user:password` instead of `***`). A joining worker takes the study's settings; "
            "only `--data` and `--device` are its own. Workers stop together when the study holds its requested "
            "number of trials.")
