"""Hyperparameter Search: a genetic algorithm (Optuna's NSGA-II) over LR, weight decay and momentum.

The search runs as a job in the app-wide registry (resnet_lab.experiments.search); its trials live in a study
database (SQLite by default), so every study can be re-opened later — and workers on other machines can join it.
"""

from __future__ import annotations


import streamlit as st

import lab_ui
import search_ui as ui

from resnet_lab import tasks, training
from resnet_lab.experiments import search as S

JOB_KEY = "search_job_id"
KIND = "search"
POLL_S = 2.0
ss = st.session_state
cuda = lab_ui.has_cuda()

lab_ui.page_intro(
    "Hyperparameter Search",
    idea="A **genetic algorithm** treats each setting of learning rate, weight decay and momentum as an individual. "
         "A *generation* of them is trained briefly; the fittest (highest test accuracy) become parents; children "
         "combine their parents' genes (**crossover**: the first genes from one parent, the rest from the other) and "
         "now and then a gene is redrawn at random (**mutation**). Optuna's NSGA-II sampler does exactly this, keeps "
         "the study in a database, and can **prune** trials that are clearly worse than the median after an epoch.",
    try_="Launch the default search (its size is under the settings below). "
         "Watch the scatter fill up generation by generation. Then launch it again with pruning on and compare the "
         "time taken, or widen the LR range. Press **Train with these** to train the winner properly.",
    notice="Generation 0 is random and spread out; later generations crowd around the good region, mostly in the "
           "learning rate — it matters far more than weight decay or momentum over so few epochs. In the parallel "
           "coordinates, follow the best lines back to their LR. Pruned trials stop after one epoch.",
)

registry = lab_ui.job_registry()
owner = lab_ui.session_owner()
defaults = S.default_config(cuda)

if not cuda:
    # the figures are the default config's own; no measured time or accuracy is typed here
    model = defaults.model or training.PRESETS[defaults.preset]["model"]
    st.info(f"**No GPU here.** The defaults are a small search: {model} for {defaults.epochs} epochs on "
            f"{defaults.subset:,} training / {defaults.test_subset:,} test images per trial (batches of {defaults.batch_size}), {defaults.population} per generation × {defaults.generations} "
            f"generations — {defaults.population * defaults.generations} short trials, minutes in all on 2 free "
            "cores. Such short runs reach low accuracies; what matters is how they *rank* the settings: too small a "
            "learning rate stays at chance (one class in ten: 10%).", icon=":material/developer_board:")

# Back from another page: Streamlit dropped the unrendered widgets' values, the saved copy has them.
for k, v in {**ui.form_defaults(defaults), **ss.get("_search_form", {})}.items():
    ss.setdefault(k, v)


# ------------------------------------------------------------------------------------------------- configure
st.header("Configure and launch", divider="gray")
c1, c2 = st.columns([3, 2])
class_server = lab_ui.class_server()
if class_server:  # no page takes a path (or a database URL) from a student: the teacher's storage, else the runs folder
    ss["search_storage"] = lab_ui.settings().get("search_storage") or S.default_storage()
    c1.caption(":material/lock: Studies are stored where the class server keeps them; each study belongs to the "
               "student who started it.")
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

config = ui.form_config(ss)
errors = config.validate()
errors.update(ui.cap_errors(lab_ui.settings(), config))  # a class server's caps apply to every trial
for key, msg in errors.items():
    st.error(f"**{key.replace('_', ' ')}:** {msg}", icon=":material/error:")
ss["_search_form"] = ui.form_values(ss)
st.caption(f"{config.n_trials} trials ({config.population} × {config.generations}) of {config.epochs} epoch(s) "
           f"each, fitness = test accuracy after the last epoch.")


def _start() -> None:
    if registry.active(owner, KIND) is not None:
        return
    cfg = ui.form_config(ss)
    # The caps again on this click's values (``errors`` is the previous run's verdict).
    if cfg.validate() or errors or ui.cap_errors(lab_ui.settings(), cfg):
        return
    storage, name = ss["search_storage"], ss["search_study"]
    problem = S.study_name_problem(name)
    if problem:
        ss["_search_start_error"] = problem
        return
    name = name.strip()
    source = lab_ui.data_source()
    try:
        existing = next((s for s in S.list_studies(storage) if s["name"] == name), {})
        problem = None if lab_ui.is_teacher() else S.resume_problem(name, existing.get("owner"), owner)
        if problem:  # said now, not from inside the job (the worker checks it again)
            raise S.SearchError(problem)
        if existing.get("settings"):  # resuming runs the study's own settings: they must fit the caps too
            over = ui.cap_errors(lab_ui.settings(), S.SearchConfig.from_dict(existing["settings"]))
            if over:
                raise S.SearchError(f"the study '{name}' was created with settings this class server does not "
                                    f"allow ({'; '.join(over.values())}); pick another name to start a new one.")
        S.open_storage(storage, heartbeat=None)  # an unreachable server: say so now, not from inside the job
        lab_ui.load_data(source)  # data that cannot load: say so now, not from inside the job
    except Exception as exc:
        ss["_search_start_error"] = str(exc)
        return

    job = registry.start(KIND, tasks.search, owner=owner, owner_name=lab_ui.display_name(),
                         title=f"search · {name}", config=cfg.to_dict(), storage=storage, study_name=name,
                         source=source, any_owner=lab_ui.is_teacher())
    ss[JOB_KEY] = job.id
    ss["search_study_pick"] = name


lab_ui.start_stop(KIND, "Launch search", "search", _start, blocked=bool(errors),
                  stop_help="Ends the trial in training after its current batch (it is recorded as failed); "
                            "finished trials stay.")
if ss.get("_search_start_error"):
    st.error(lab_ui.public(ss.pop("_search_start_error")), icon=":material/error:")


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
    st.error(lab_ui.public(exc), icon=":material/cloud_off:")
    st.stop()
if class_server and not lab_ui.is_teacher():  # yours and the CLI's; the teacher sees every student's
    studies = [s for s in studies if s.get("owner") in (None, owner)]
where = "this class server" if class_server else f"`{S.mask_url(S.normalize_url(storage))}`"
if not studies:
    st.info(f"No studies of yours in {where} yet: launch one above.", icon=":material/inventory_2:")
    st.stop()

names = [s["name"] for s in studies]
info = {s["name"]: s for s in studies}
if ss.get("search_study_pick") not in info:
    ss["search_study_pick"] = names[0]


def _label(name: str) -> str:
    by = f" · by {lab_ui.owner_shown(info[name].get('owner'), info[name].get('owner_name'))}" if class_server else ""
    return ui.study_label(name, info[name]) + by


pick = st.selectbox("Study", names, key="search_study_pick", format_func=_label)
study = S.load_study(storage, pick)
rows = S.trial_rows(study)
settings = study.user_attrs.get(S.SETTINGS_ATTR)
summary = S.summary(study)
if settings:
    st.caption(ui.settings_caption(settings, summary))

scored = [r for r in rows if r["value"] is not None and r["params"]]
if not scored:
    st.info("No trial of this study has a score yet.", icon=":material/hourglass_top:")
else:
    group = st.radio("Group trials by", ["generation", "ga_generation"], key="search_group", horizontal=True,
                     format_func={"generation": "launch batch (trial number ÷ population)",
                                  "ga_generation": "NSGA-II's own generation"}.get,
                     help="They agree when no trial is pruned or fails; NSGA-II counts only completed trials, so "
                          "pruned ones push its generations later.")

    p1, p2 = st.columns(2)
    with p1:
        st.markdown("**Fitness by generation** — one marker per trial; the dotted line is the best so far")
        st.plotly_chart(ui.scatter_figure(scored, group), key="search_scatter")
    with p2:
        st.markdown("**Parallel coordinates** — one line per completed trial, coloured by its accuracy")
        st.plotly_chart(ui.parallel_figure(scored), key="search_parcoords")

    best = summary["best"]
    if best is not None and settings:
        st.subheader("Best configuration")
        m1, m2, m3, m4 = st.columns(4)
        m1.metric("Test accuracy", f"{100 * best['value']:.1f}%", help=f"trial {best['number']}")
        m2.metric("Peak LR", f"{best['params']['lr_max']:.3g}")
        m3.metric("Weight decay", f"{best['params']['weight_decay']:.3g}")
        m4.metric("Momentum", f"{best['params']['momentum']:.3f}")
        prefill = S.train_prefill(best, settings)
        st.caption(ui.best_caption(best, settings, prefill))
        if st.button("Train with these", key="search_train_with_these", type="primary",
                     icon=":material/model_training:",
                     help="Open the Train page with this preset, LR, weight decay, momentum, model and optimizer."):
            ss["train_prefill"] = prefill
            st.switch_page("../pages/train.py")

    with st.expander(f"All {len(rows)} trials"):
        st.dataframe([{**r, "note": lab_ui.public(r["note"])} for r in ui.trials_table(rows)], hide_index=True)

url = S.mask_url(S.normalize_url(storage))
if class_server and S.sqlite_path(storage) is not None:  # a file on the server: its path is the server's business
    url = "sqlite:///<the class server's search.db>"
with st.expander("Add workers on other machines"):
    st.markdown(ui.workers_text(url, pick))
    if url.startswith("sqlite"):
        st.warning("This study is a SQLite **file** on this machine: other machines cannot reach it. Use a database "
                   "server (PostgreSQL: `postgresql+psycopg://user:password@host:5432/dbname`) for several machines; "
                   "several workers on *this* machine can share the file.", icon=":material/lan:")
