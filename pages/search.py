"""Hyperparameter Search: a genetic algorithm (Optuna's NSGA-II) over LR, weight decay and momentum.

The search runs as a job in the app-wide registry (resnet_lab.experiments.search); its trials live in a study
database (SQLite by default), so every study can be re-opened later — and workers on other machines can join it.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import streamlit as st

import lab_ui
from resnet_lab import training
from resnet_lab.experiments import search as S

JOB_KEY = "search_job_id"
KIND = "search"
POLL_S = 2.0
TRAIN_PAGE = Path(__file__).resolve().parent / "train.py"
ss = st.session_state
cuda = lab_ui.has_cuda()

lab_ui.page_intro(
    "Hyperparameter Search",
    idea="A **genetic algorithm** treats each setting of learning rate, weight decay and momentum as an individual. "
         "A *generation* of them is trained briefly; the fittest (highest test accuracy) become parents; children "
         "combine their parents' genes (**crossover**: the first genes from one parent, the rest from the other) and "
         "now and then a gene is redrawn at random (**mutation**). Optuna's NSGA-II sampler does exactly this, keeps "
         "the study in a database, and can **prune** trials that are clearly worse than the median after an epoch.",
    try_="Launch the default search (on a CPU: 6 individuals × 3 generations of 2-epoch ResNet-20 runs, 3–4 minutes). "
         "Watch the scatter fill up generation by generation. Then launch it again with pruning on and compare the "
         "time taken, or widen the LR range. Press **Train with these** to train the winner properly.",
    notice="Generation 0 is random and spread out; later generations crowd around the good region, mostly in the "
           "learning rate — it matters far more than weight decay or momentum over so few epochs. In the parallel "
           "coordinates, follow the best lines back to their LR. Pruned trials stop after one epoch.",
)

if not cuda:
    st.info("**No GPU here.** The defaults are a small search: ResNet-20 for 2 epochs on 2,000 training / 500 test "
            "images per trial (batches of 64), 6 per generation × 3 generations — 18 trials of ~10 s each, 3–4 "
            "minutes on 2 free cores. Accuracies of such short runs are low (10–35%); what matters is how they *rank* "
            "the settings: too small a learning rate stays at chance (10%).", icon=":material/developer_board:")

registry = lab_ui.job_registry()
owner = lab_ui.session_owner()
defaults = S.default_config(cuda)


def _init_form() -> None:
    base = defaults
    sp = base.space
    values = {"search_storage": S.default_storage(), "search_study": f"search-{time.strftime('%Y%m%d-%H%M')}",
              "search_preset": base.preset, "search_population": base.population,
              "search_generations": base.generations, "search_epochs": base.epochs or 1,
              "search_subset": base.subset or 0, "search_test_subset": base.test_subset or 0,
              "search_prune": base.prune, "search_crossover": base.crossover,
              "search_lr_low": sp["lr_max"].low, "search_lr_high": sp["lr_max"].high,
              "search_wd_low": sp["weight_decay"].low, "search_wd_high": sp["weight_decay"].high,
              "search_wd_log": sp["weight_decay"].log,
              "search_mom_low": sp["momentum"].low, "search_mom_high": sp["momentum"].high}
    # Back from another page: Streamlit dropped the unrendered widgets' values, the saved copy has them.
    for k, v in ss.get("_search_form", {}).items():
        ss.setdefault(k, v)
    for k, v in values.items():
        ss.setdefault(k, v)


_init_form()


def form_config() -> S.SearchConfig:
    cfg = S.SearchConfig(preset=ss["search_preset"], population=int(ss["search_population"]),
                         generations=int(ss["search_generations"]), epochs=int(ss["search_epochs"]),
                         subset=int(ss["search_subset"]) or None, test_subset=int(ss["search_test_subset"]) or None,
                         prune=bool(ss["search_prune"]), crossover=ss["search_crossover"])
    cfg.space = {"lr_max": S.Range(float(ss["search_lr_low"]), float(ss["search_lr_high"]), log=True),
                 "weight_decay": S.Range(float(ss["search_wd_low"]), float(ss["search_wd_high"]),
                                         log=bool(ss["search_wd_log"])),
                 "momentum": S.Range(float(ss["search_mom_low"]), float(ss["search_mom_high"]), log=False)}
    return cfg


# ------------------------------------------------------------------------------------------------- configure
st.header("Configure and launch", divider="gray")
c1, c2 = st.columns([3, 2])
if lab_ui.data_locked():  # a class server: no page takes a path (or a database URL) from a student
    ss["search_storage"] = S.default_storage()
    c1.caption(":material/lock: Studies are stored where the class server keeps its runs.")
else:
    c1.text_input("Study storage", key="search_storage",
                  help="A SQLAlchemy URL. The default SQLite file lives in the runs folder and survives restarts. "
                       "For workers on several machines use a database server, e.g. "
                       "postgresql+psycopg://user:password@host:5432/dbname.")
c2.text_input("Study name", key="search_study", help="A new name starts a new study; an existing one is resumed.")

with st.container(border=True):
    g1, g2, g3, g4 = st.columns(4)
    g1.selectbox("Training preset per trial", list(training.PRESETS), key="search_preset",
                 help="Everything not searched (model, optimizer, batch, schedule shape) comes from the preset.")
    g2.number_input("Population (trials per generation)", min_value=2, max_value=200, step=1, key="search_population")
    g3.number_input("Generations", min_value=1, max_value=100, step=1, key="search_generations")
    g4.number_input("Epochs per trial", min_value=1, max_value=100, step=1, key="search_epochs")
    h1, h2, h3, h4 = st.columns(4)
    h1.number_input("Training images (0 = all)", min_value=0, step=500, key="search_subset")
    h2.number_input("Test images (0 = all)", min_value=0, step=500, key="search_test_subset")
    h3.selectbox("Crossover", S.CROSSOVERS, key="search_crossover",
                 help="single-point: the seed GA's; uniform: each gene from either parent; sbx/blx: blends values.")
    h4.toggle("Prune hopeless trials", key="search_prune",
              help="Median pruner: after each epoch (but the last), stop a trial whose test accuracy is below the "
                   "median of earlier trials at that epoch.")
    st.markdown("**Search space**")
    r1, r2, r3 = st.columns(3)
    with r1:
        st.caption(f"Peak LR (log scale) — {S.PARAM_TEXT['lr_max']}")
        a, b = st.columns(2)
        a.number_input("LR low", format="%g", step=1e-4, key="search_lr_low")
        b.number_input("LR high", format="%g", step=1e-2, key="search_lr_high")
    with r2:
        st.caption(f"Weight decay — {S.PARAM_TEXT['weight_decay']}")
        a, b = st.columns(2)
        a.number_input("WD low", format="%g", step=1e-4, key="search_wd_low")
        b.number_input("WD high", format="%g", step=1e-2, key="search_wd_high")
        st.checkbox("log scale", key="search_wd_log",
                    help="Spreads trials evenly over orders of magnitude (1e-5 … 1e-1); needs a low bound > 0.")
    with r3:
        st.caption(f"Momentum — {S.PARAM_TEXT['momentum']}")
        a, b = st.columns(2)
        a.number_input("Momentum low", format="%g", step=0.01, key="search_mom_low")
        b.number_input("Momentum high", format="%g", step=0.01, key="search_mom_high")

config = form_config()
errors = config.validate()
_caps = lab_ui.settings()  # a class server's caps apply to every trial
if any(_caps.get(k) for k in ("max_epochs", "max_batch_size", "max_params")):
    from resnet_lab.config import check_caps
    from resnet_lab.models import param_count
    from resnet_lab.training import PRESETS

    _preset = PRESETS.get(config.preset, {})
    _params = param_count(_preset["model"]) if _preset.get("model") else None
    errors.update(check_caps(_caps, epochs=config.epochs, batch_size=_preset.get("batch_size"), params=_params))
for key, msg in errors.items():
    st.error(f"**{key.replace('_', ' ')}:** {msg}", icon=":material/error:")
ss["_search_form"] = {k: ss[k] for k in list(ss.keys()) if isinstance(k, str) and k.startswith("search_")
                      and k not in ("search_start", "search_stop", "search_study_pick", "search_group")}
st.caption(f"{config.n_trials} trials ({config.population} × {config.generations}) of {config.epochs} epoch(s) "
           f"each, fitness = test accuracy after the last epoch.")


def _start() -> None:
    if registry.active(owner, KIND) is not None:
        return
    cfg = form_config()
    if cfg.validate() or errors:
        return
    storage, name = ss["search_storage"], ss["search_study"].strip()
    source = lab_ui.data_source()
    try:
        S.open_storage(storage, heartbeat=None)  # an unreachable server: say so now, not from inside the job
        full = lab_ui.load_data(source)
    except Exception as exc:
        ss["_search_start_error"] = str(exc)
        return

    from resnet_lab import tasks  # a worker process runs the trials and loads the data itself

    job = registry.start(KIND, tasks.search, owner=owner, title=f"search · {name}", config=cfg.to_dict(),
                         storage=storage, study_name=name, source=source)
    ss[JOB_KEY] = job.id
    ss["search_study_pick"] = name


lab_ui.start_stop(KIND, "Launch search", "search", _start, blocked=bool(errors),
                  stop_help="Ends the trial in training after its current batch (it is recorded as failed); "
                            "finished trials stay.")
if ss.get("_search_start_error"):
    st.error(ss.pop("_search_start_error"), icon=":material/error:")


job = lab_ui.session_job(KIND, JOB_KEY)
if job is not None:
    def search_body(j) -> None:
        snap = lab_ui.job_progress(j, "search", "search_queue", with_title=True,
                                   stopped="Stopped on request. The study keeps every finished trial: launch it "
                                           "again with the same name to continue.")
        best = j.result.get("best") if snap and snap["status"] == "done" and isinstance(j.result, dict) else None
        if best:
            st.success(f"Done: {j.result['trials']} trials; best test accuracy {100 * best['value']:.1f}% "
                       f"(trial {best['number']}).", icon=":material/check_circle:")

    lab_ui.live_panel(job, search_body, POLL_S)


# --------------------------------------------------------------------------------------------------- studies
st.header("Studies", divider="gray")
storage = ss["search_storage"]
try:
    studies = S.list_studies(storage)
except S.SearchError as exc:
    st.error(str(exc), icon=":material/cloud_off:")
    st.stop()
if not studies:
    st.info(f"No studies in `{S.mask_url(S.normalize_url(storage))}` yet: launch one above.",
            icon=":material/inventory_2:")
    st.stop()

names = [s["name"] for s in studies]
info = {s["name"]: s for s in studies}
if ss.get("search_study_pick") not in info:
    ss["search_study_pick"] = names[0]


def _study_label(name: str) -> str:
    s = info[name]
    best = f"best {100 * s['best']:.1f}%" if s["best"] is not None else "no finished trial"
    return f"{name} · {s['n_trials']} trials · {best} · {s['started'] or ''}"


pick = st.selectbox("Study", names, key="search_study_pick", format_func=_study_label)
study = S.load_study(storage, pick)
rows = S.trial_rows(study)
settings = study.user_attrs.get(S.SETTINGS_ATTR)
summary = S.summary(study)
if settings:
    st.caption(f"Preset {settings['preset']} · population {settings['population']} × {settings['generations']} "
               f"generations · {settings.get('epochs') or 'preset'} epoch(s) per trial · pruning "
               f"{'on' if settings.get('prune') else 'off'} · crossover {settings.get('crossover')} · states: "
               + ", ".join(f"{n} {k.lower()}" for k, n in summary["states"].items()))

scored = [r for r in rows if r["value"] is not None and r["params"]]
if not scored:
    st.info("No trial of this study has a score yet.", icon=":material/hourglass_top:")
else:
    group = st.radio("Group trials by", ["generation", "ga_generation"], key="search_group", horizontal=True,
                     format_func={"generation": "launch batch (trial number ÷ population)",
                                  "ga_generation": "NSGA-II's own generation"}.get,
                     help="They agree when no trial is pruned or fails; NSGA-II counts only completed trials, so "
                          "pruned ones push its generations later.")

    def scatter():
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

    def parallel():
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

    p1, p2 = st.columns(2)
    with p1:
        st.markdown("**Fitness by generation** — one marker per trial; the dotted line is the best so far")
        st.plotly_chart(scatter(), key="search_scatter")
    with p2:
        st.markdown("**Parallel coordinates** — one line per completed trial, coloured by its accuracy")
        st.plotly_chart(parallel(), key="search_parcoords")

    best = summary["best"]
    if best is not None and settings:
        st.subheader("Best configuration")
        m1, m2, m3, m4 = st.columns(4)
        m1.metric("Test accuracy", f"{100 * best['value']:.1f}%", help=f"trial {best['number']}")
        m2.metric("Peak LR", f"{best['params']['lr_max']:.3g}")
        m3.metric("Weight decay", f"{best['params']['weight_decay']:.3g}")
        m4.metric("Momentum", f"{best['params']['momentum']:.3f}")
        prefill = S.train_prefill(best, settings)
        st.caption(f"From trial {best['number']} (generation {best['generation']}) with preset {settings['preset']}: "
                   f"model {prefill['model']}, optimizer {prefill['optimizer']}. The score is the test accuracy the "
                   "search selected on, so it is optimistic — retrain with another seed to confirm it.")
        if st.button("Train with these", key="train_with_these", type="primary", icon=":material/model_training:",
                     help="Fill the Train page's form with this LR, weight decay, momentum, model and optimizer."):
            ss["train_prefill"] = prefill
            if TRAIN_PAGE.exists():
                st.switch_page("../pages/train.py")
            st.success("Saved for the Train page: open it to train with these settings.",
                       icon=":material/check_circle:")

    with st.expander(f"All {len(rows)} trials"):
        st.dataframe([{"trial": r["number"], "state": r["state"].lower(), "generation": r["generation"],
                       "NSGA-II generation": r["ga_generation"],
                       "accuracy %": None if r["value"] is None else round(100 * r["value"], 2),
                       "LR": r["params"].get("lr_max"), "weight decay": r["params"].get("weight_decay"),
                       "momentum": r["params"].get("momentum"),
                       "seconds": None if r["seconds"] is None else round(r["seconds"], 1),
                       "worker": r["worker"], "note": r["error"] or ""} for r in rows], hide_index=True)

url = S.mask_url(S.normalize_url(storage))
with st.expander("Add workers on other machines"):
    st.markdown(
        "Every worker runs trials of the same study and the database keeps them apart, so the search goes as many "
        "times faster as you have machines. On each machine (with this project installed and the data at hand):\n\n"
        f"```\npython -m resnet_lab search --storage '{url}' --study '{pick}' --data <path or cifar10>\n```\n\n"
        "(with the real `user:password` instead of `***`). A joining worker takes the study's settings; "
        "only `--data` and `--device` are its own. Workers stop together when the study holds its requested "
        "number of trials.")
    if url.startswith("sqlite"):
        st.warning("This study is a SQLite **file** on this machine: other machines cannot reach it. Use a database "
                   "server (PostgreSQL: `postgresql+psycopg://user:password@host:5432/dbname`) for several machines; "
                   "several workers on *this* machine can share the file.", icon=":material/lan:")
