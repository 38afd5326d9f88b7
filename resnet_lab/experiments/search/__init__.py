"""Hyperparameter search by a genetic algorithm, on Optuna's NSGA-II sampler, shareable across machines.

Seed 001 evolved LR, weight decay and momentum with a hand-written GA (population 10, 5 generations, the
fittest half kept, mutation, single-point crossover, fitness = top-1 accuracy). Here the same loop is Optuna's
``NSGAIISampler``: each generation of ``population`` trials is bred from the elite of the previous one
(NSGA-II keeps the best ``population`` of parents + children — the seed's "fittest half kept"), by crossover
(single-point by default, as in the seed) and mutation (a mutated gene is redrawn at random). What the seed
lacked: optional pruning (a median pruner stops trials whose per-epoch test accuracy is below the median of
earlier trials at the same epoch, which saves most of a GA's cost), and a study stored in a database, so a
search survives restarts and several worker processes — on several machines — can share one.

Fitness is the test accuracy of a short run of a training preset (``training.train``, one run per trial, kept
in ``<runs root>/search/<study>``). Note: choosing settings by test accuracy makes the best score optimistic;
confirm the winner with a fresh seed. optuna is imported inside functions only: it is never needed to train.

Storage: a SQLite file by default (``<runs root>/search.db``); any SQLAlchemy URL otherwise, e.g.
``postgresql+psycopg://user:pass@host:5432/db`` for workers on several machines (``postgresql://`` is
rewritten to the installed psycopg 3 driver). Every worker counts trials finished or running in the whole
study, so workers together run exactly ``trials`` trials; a worker killed mid-trial leaves that trial
RUNNING until a heartbeat check marks it FAIL (finished trials are never touched).
"""

from __future__ import annotations

from resnet_lab.experiments.search.ga import (
    _single_point_crossover,
    COUNTED_STATES,
    make_pruner,
    make_sampler,
    open_study,
    resume_problem,
    run_search,
    trial_config,
    worker_id,
)
from resnet_lab.experiments.search.space import (
    CONNECT_TIMEOUT_S,
    CROSSOVERS,
    default_config,
    DEFAULT_STUDY,
    HEARTBEAT_S,
    OWNER_ATTR,
    OWNER_NAME_ATTR,
    PARAM_TEXT,
    Range,
    SearchConfig,
    SearchError,
    SETTINGS_ATTR,
    TrialStopped,
)
from resnet_lab.experiments.search.storage import (
    default_storage,
    list_studies,
    mask_url,
    MAX_STUDY_NAME,
    normalize_url,
    open_storage,
    scrub_secrets,
    sqlite_path,
    storage_inside,
    study_name_problem,
)
from resnet_lab.experiments.search.study import load_study, summary, train_prefill, trial_rows

__all__ = [
    "_single_point_crossover",
    "CONNECT_TIMEOUT_S",
    "COUNTED_STATES",
    "CROSSOVERS",
    "default_config",
    "default_storage",
    "DEFAULT_STUDY",
    "HEARTBEAT_S",
    "list_studies",
    "load_study",
    "make_pruner",
    "make_sampler",
    "mask_url",
    "MAX_STUDY_NAME",
    "normalize_url",
    "open_storage",
    "open_study",
    "OWNER_ATTR",
    "OWNER_NAME_ATTR",
    "PARAM_TEXT",
    "Range",
    "resume_problem",
    "run_search",
    "scrub_secrets",
    "SearchConfig",
    "SearchError",
    "SETTINGS_ATTR",
    "sqlite_path",
    "storage_inside",
    "study_name_problem",
    "summary",
    "train_prefill",
    "trial_config",
    "trial_rows",
    "TrialStopped",
    "worker_id",
]
