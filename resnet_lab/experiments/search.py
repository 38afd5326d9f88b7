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

import math
import os
import re
import socket
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from resnet_lab import training
from resnet_lab.config import resolve_data_source, resolve_device, runs_dir
from resnet_lab.data import load_dataset
from resnet_lab.events import Callback, emit, STOP
from resnet_lab.runs import RunStore
from resnet_lab.settings import check as check_settings
from resnet_lab.settings import invalid, setting
from resnet_lab.training import preset, PRESETS

SETTINGS_ATTR = "resnet_lab_search"  # study user attr holding the SearchConfig the study was created with
DEFAULT_STUDY = "resnet-lab-search"
OWNER_ATTR, OWNER_NAME_ATTR = "owner", "owner_name"  # study user attrs: who started it in the app (like a run's)
CROSSOVERS = ("single-point", "uniform", "sbx", "blx")
CONNECT_TIMEOUT_S = 5
HEARTBEAT_S = 30  # a worker's trial is declared dead (FAIL) after 2 heartbeats without news


class SearchError(Exception):
    """A search that cannot start or continue; the message says what to change."""


class TrialStopped(Exception):
    """The user pressed Stop during this trial: Optuna records it as failed (its run did not finish), and the
    per-trial callback then ends the search with ``study.stop()``."""


# -- the search space and settings ----------------------------------------------------------------------


@dataclass
class Range:
    low: float
    high: float
    log: bool = False


def _default_space() -> dict:
    return {"lr_max": Range(1e-4, 1e-1, log=True), "weight_decay": Range(0.0, 0.1, log=False),
            "momentum": Range(0.8, 0.99, log=False)}


PARAM_TEXT = {
    "lr_max": "peak learning rate of the one-cycle schedule (LR min = the preset's fraction of it)",
    "weight_decay": "L2 weight decay",
    "momentum": "SGD momentum / Adam β1 at the low-LR ends of the cycle (the preset's dip at the peak is kept)",
}


@dataclass
class SearchConfig:
    """Everything that defines what a study optimises; stored in the study so joining workers agree."""

    preset: str = setting("quick-cpu", help="the training preset each trial runs (quick-cpu, paper-resnet20, "
                                            "assignment)")
    population: int = setting(10, lo=2, help="trials per generation (default 10 on a GPU, 6 on a CPU)")
    generations: int = setting(5, lo=1, help="generations (default 5 on a GPU, 3 on a CPU)")
    trials: int | None = setting(None, lo=1, empty="population × generations", help="total trials")
    epochs: int | None = setting(None, lo=1, empty="the preset's", help="epochs per trial")
    subset: int | None = setting(None, label="training images", lo=10, hint="one per class at least",
                                 empty="the preset's", help="class-balanced training images per trial")
    test_subset: int | None = setting(None, label="test images", lo=10, hint="one per class at least",
                                      empty="the preset's", help="class-balanced test images per trial")
    model: str | None = setting(None, empty="the preset's", help="the model each trial trains")
    batch_size: int | None = setting(None, label="batch size", lo=2, empty="the preset's", help="images per step")
    prune: bool = setting(False, help="stop trials whose test accuracy after an epoch is below the median of "
                                      "earlier trials")
    crossover: str = setting("single-point", choices=CROSSOVERS,
                             help="how two parents' genes mix (single-point is the seed's)")
    mutation_prob: float | None = setting(None, label="mutation probability", lo=0, hi=1,
                                          empty="1 / number of genes, Optuna's default",
                                          help="probability that each gene is redrawn")
    space: dict = setting(factory=_default_space, help="the genes and their ranges (--lr-range, --wd-range, "
                                                       "--wd-log, --momentum-range)")

    @property
    def n_trials(self) -> int:
        return self.trials if self.trials is not None else self.population * self.generations

    def to_dict(self) -> dict:
        d = asdict(self)
        d["space"] = {k: asdict(v) if isinstance(v, Range) else dict(v) for k, v in self.space.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SearchConfig":
        d = dict(d)
        space = {k: Range(**v) if isinstance(v, dict) else v for k, v in (d.pop("space", None) or {}).items()}
        known = {f for f in cls.__dataclass_fields__}
        cfg = cls(**{k: v for k, v in d.items() if k in known})
        if space:
            cfg.space = {**_default_space(), **space}
        return cfg

    def validate(self) -> dict[str, str]:
        """Setting -> what is wrong, in words a student understands. Empty when valid."""

        err = check_settings(self)
        if self.preset not in PRESETS:
            err["preset"] = f"unknown preset '{self.preset}'; choose one of {', '.join(PRESETS)}"
        for name in ("lr_max", "weight_decay", "momentum"):
            r = self.space.get(name)
            if r is None:
                err[name] = "missing from the search space"
                continue
            problem = _range_problem(name, r)
            if problem:
                err[name] = problem
        return err


def default_config(cuda: bool | None = None) -> SearchConfig:
    """The seed's GA (population 10, 5 generations) on a GPU; a small version that ends in minutes on a CPU."""
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    if cuda:
        return SearchConfig(preset="paper-resnet20", population=10, generations=5, epochs=5)
    # ResNet-20, 2 epochs on 2,000 images in batches of 64 (62 steps: enough to rank LRs): 18 trials in a few minutes.
    return SearchConfig(preset="quick-cpu", population=6, generations=3, epochs=2, subset=2000, test_subset=500,
                        batch_size=64)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _range_problem(name: str, r: Range) -> str | None:
    if not (_finite(r.low) and _finite(r.high)):
        return "both ends of the range must be numbers"
    if r.low > r.high:
        return f"the range is inverted: low ({r.low:g}) is above high ({r.high:g}); swap them"
    if r.low == r.high:
        return (f"the range is empty (low = high = {r.low:g}): give it some width, or fix the value in the "
                "preset instead of searching it")
    if r.log and r.low <= 0:
        return (f"a log scale needs a low bound > 0 (log of {r.low:g} is undefined): a log scale spreads trials "
                "evenly over orders of magnitude (1e-5, 1e-4, 1e-3 ... equally often), and there are infinitely "
                "many orders of magnitude above 0. Use e.g. 1e-6 as the low bound, or a linear scale to include 0")
    if name == "lr_max" and r.low <= 0:
        return "learning rates must be > 0"
    if name == "weight_decay" and r.low < 0:
        return "weight decay must be ≥ 0"
    if name == "momentum" and not (0 <= r.low and r.high < 1):
        return "momentum must lie in [0, 1)"
    return None


# -- storage ------------------------------------------------------------------------------------------


def default_storage() -> str:
    return f"sqlite:///{(runs_dir() / 'search.db').resolve()}"


def normalize_url(url: str | None) -> str:
    """None -> the default SQLite file; a bare path -> sqlite:///<abs path>; ``postgresql://`` -> psycopg 3."""
    if url is None or not str(url).strip():
        return default_storage()
    url = str(url).strip()
    if "://" not in url:  # a file path
        return f"sqlite:///{Path(url).expanduser().resolve()}"
    scheme, rest = url.split("://", 1)
    if scheme in ("postgresql", "postgres"):
        import importlib.util

        # SQLAlchemy's plain "postgresql://" means psycopg2; this project installs psycopg 3.
        if importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg") is not None:
            return f"postgresql+psycopg://{rest}"
        return f"postgresql://{rest}"
    return url


def mask_url(url: str) -> str:
    """The URL with everything between ``//`` and the last ``@`` replaced by ***, for messages and the page.
    A password may itself hold '@', ':' or '/', so nothing of the credentials part is kept (the user neither)."""
    return re.sub(r"://.*@", "://***@", str(url), flags=re.DOTALL)


def scrub_secrets(text: str, url: str) -> str:
    """``text`` (a driver's error message) without any piece of the URL's password: a driver that splits
    ``user:pa@ss@host`` at the first '@' quotes the rest of the password as part of the host name."""
    match = re.search(r"://(.*)@", str(url), flags=re.DOTALL)
    if not match or ":" not in match.group(1):
        return text
    password = match.group(1).split(":", 1)[1]
    pieces = {password, *re.split(r"[@:/]", password)}
    for piece in sorted((p for p in pieces if len(p) >= 3), key=len, reverse=True):
        text = text.replace(piece, "***")
    return text


def _engine_kwargs(url: str) -> dict:
    if url.startswith("sqlite"):
        # Several local workers write one file: wait for the lock instead of failing at once.
        return {"connect_args": {"timeout": 60}}
    if url.startswith("postgresql") or url.startswith("mysql"):
        # Fail in seconds, not minutes, when the server is unreachable; recycle dropped connections.
        return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}, "pool_pre_ping": True}
    return {}


_STORAGES: dict = {}
_STORAGES_LOCK = threading.Lock()


def sqlite_path(url: str | None) -> Path | None:
    """The file of a SQLite storage URL (None for a server database or an in-memory one)."""
    url = normalize_url(url)
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///"):].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def storage_inside(url: str | None, root: str | Path) -> bool:
    """True when ``url`` is a SQLite file inside the folder ``root`` (symlinks resolved, no ``..`` escape): the only
    storages a student may name on a class server, besides the one the teacher configured."""
    path = sqlite_path(url)
    if path is None:
        return False
    try:
        return Path(os.path.realpath(path)).is_relative_to(Path(os.path.realpath(root)))
    except (OSError, ValueError):
        return False


def open_storage(url: str | None = None, heartbeat: int | None = HEARTBEAT_S, create: bool = True):
    """An Optuna RDBStorage for ``url``, or SearchError saying why it cannot be reached (within seconds).

    A SQLite file is created only with ``create`` (starting or joining a study; listing and reading never write),
    and only in a folder that exists: a mistyped path must not leave folders behind. The one folder made on
    demand is the runs folder of the default storage, which is the project's own."""
    url = normalize_url(url)
    path = sqlite_path(url)
    if path is not None:
        if not create and not path.exists():
            raise SearchError(f"there is no study database at {mask_url(url)} yet")
        if create and not path.parent.is_dir():
            if path == sqlite_path(default_storage()):
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise SearchError(f"cannot create the runs folder for the study file: {exc.strerror or exc}")
            else:
                raise SearchError(f"the folder of the study file {path} does not exist: create it first, or give a "
                                  "file in an existing folder (the default is search.db in the runs folder)")
    kwargs = {}
    if heartbeat:
        kwargs = {"heartbeat_interval": int(heartbeat), "grace_period": 2 * int(heartbeat)}
    key = (url, heartbeat)
    with _STORAGES_LOCK:
        if key in _STORAGES:
            return _STORAGES[key]
    try:
        storage = _rdb_storage(url, kwargs)
    except ImportError as exc:
        raise SearchError(f"no database driver for {mask_url(url)}: {exc.__cause__ or exc}. For PostgreSQL use "
                          "postgresql+psycopg://user:password@host:5432/dbname (pip install 'psycopg[binary]')")
    except Exception as exc:  # sqlalchemy OperationalError/ArgumentError, psycopg errors, ...
        reason = scrub_secrets(str(getattr(exc, "orig", None) or exc), url).strip().splitlines()
        raise SearchError(
            f"cannot open the study storage {mask_url(url)}: {reason[0] if reason else type(exc).__name__}. "
            "Check the URL (dialect+driver://user:password@host:port/dbname), that the database server is running "
            "and reachable from this machine (host, port, firewall, pg_hba.conf), and the user name and password."
        ) from None
    with _STORAGES_LOCK:
        # One engine (and connection pool) per URL for the whole process: the app reopens studies on every rerun.
        return _STORAGES.setdefault(key, storage)


def _rdb_storage(url: str, kwargs: dict):
    import optuna
    import sqlalchemy.exc

    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat is "experimental"
                return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url), **kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            # Workers started together on an empty database race to create Optuna's tables ("duplicate key",
            # "already exists"); the loser finds them on the next try. Connection errors are not retried.
            if attempt == 4:
                raise
            time.sleep(0.3 * (attempt + 1))


def list_studies(storage: str | None = None) -> list[dict]:
    """Every study in the storage: name, owner, settings, trial counts by state, best accuracy, start time. A SQLite
    file that does not exist yet holds no study (and is not created by looking)."""
    import optuna

    path = sqlite_path(storage)
    if path is not None and not path.exists():
        return []
    st = open_storage(storage, heartbeat=None, create=False)
    out = []
    for s in optuna.study.get_all_study_summaries(st, include_best_trial=True):
        counts = {}
        for t in optuna.load_study(study_name=s.study_name, storage=st).get_trials(deepcopy=False):
            counts[t.state.name] = counts.get(t.state.name, 0) + 1
        out.append({"name": s.study_name, "settings": s.user_attrs.get(SETTINGS_ATTR),
                    "owner": s.user_attrs.get(OWNER_ATTR), "owner_name": s.user_attrs.get(OWNER_NAME_ATTR),
                    "n_trials": s.n_trials, "states": counts,
                    "best": s.best_trial.value if s.best_trial is not None else None,
                    "started": s.datetime_start.isoformat(timespec="seconds") if s.datetime_start else None})
    return sorted(out, key=lambda r: r["started"] or "", reverse=True)


MAX_STUDY_NAME = 100


def study_name_problem(name) -> str | None:
    """Why ``name`` cannot name a study ('' would silently be the default study in some callers); None if fine."""
    if not isinstance(name, str) or not name.strip():
        return "the study needs a name (--study NAME; any text, e.g. lr-wd)"
    if len(name.strip()) > MAX_STUDY_NAME:
        return f"a study name may have at most {MAX_STUDY_NAME} characters (got {len(name.strip()):,})"
    if any(not ch.isprintable() for ch in name):
        return "a study name may not hold control characters"
    return None


# -- the GA -------------------------------------------------------------------------------------------


def _single_point_crossover():
    """The seed's single-point crossover as an Optuna crossover: genes before a random cut come from one
    parent, the rest from the other (in Optuna's internal, log-transformed coordinates)."""
    from optuna.samplers.nsgaii import BaseCrossover

    class SinglePointCrossover(BaseCrossover):
        n_parents = 2

        def crossover(self, parents_params, rng, study, search_space_bounds):
            n = parents_params.shape[1]
            if n < 2:
                return parents_params[rng.randint(2)].copy()
            cut = rng.randint(1, n)  # 1..n-1: each child takes at least one gene from each parent
            child = parents_params[1].copy()
            child[:cut] = parents_params[0][:cut]
            return child

    return SinglePointCrossover()


def make_sampler(config: SearchConfig, seed: int | None = None):
    import optuna
    from optuna.samplers import nsgaii

    crossover = {"single-point": _single_point_crossover, "uniform": nsgaii.UniformCrossover,
                 "sbx": nsgaii.SBXCrossover, "blx": nsgaii.BLXAlphaCrossover}[config.crossover]()
    return optuna.samplers.NSGAIISampler(population_size=config.population, crossover=crossover,
                                         mutation_prob=config.mutation_prob, seed=seed)


def make_pruner(config: SearchConfig):
    import optuna

    if not config.prune:
        return optuna.pruners.NopPruner()
    # Compare against at least half a generation before pruning anything: the first trials set the bar.
    return optuna.pruners.MedianPruner(n_startup_trials=max(2, config.population // 2), n_warmup_steps=0)


def resume_problem(name: str, theirs: str | None, owner: str | None) -> str | None:
    """Why ``owner`` may not resume the study ``name`` started by ``theirs`` (None: they may). Studies have owners
    like runs: resuming one adds trials to it (and spends its owner's budget). Ownerless (CLI) studies are open."""
    if theirs and owner and theirs != owner:
        return (f"the study '{name}' was started by another student; only they (or the teacher) can resume it. "
                "Pick another name to start your own.")
    return None


def open_study(config: SearchConfig | None, storage: str | None = None, study_name: str | None = None,
               sampler_seed: int | None = None, heartbeat: int | None = HEARTBEAT_S, owner: str | None = None,
               owner_name: str | None = None, any_owner: bool = False):
    """Create the study, or join it when it exists. Returns ``(study, config)``: a joining worker adopts the
    settings the study was created with (``config`` may then be None), so every worker optimises the same thing.
    ``owner`` (default: the job's ``RESNET_LAB_OWNER``) is recorded on a new study; joining one of another owner is
    refused unless ``any_owner`` (the teacher). Studies without an owner (the CLI's) are open to all."""
    import optuna

    name = DEFAULT_STUDY if study_name is None else study_name
    problem = study_name_problem(name)
    if problem:
        raise SearchError(problem)
    name = name.strip()
    st = open_storage(storage, heartbeat=heartbeat)
    existing = None
    try:
        existing = optuna.load_study(study_name=name, storage=st)
    except KeyError:
        pass
    if existing is not None and not any_owner:
        problem = resume_problem(name, existing.user_attrs.get(OWNER_ATTR), owner)
        if problem:
            raise SearchError(problem)
    stored = existing.user_attrs.get(SETTINGS_ATTR) if existing is not None else None
    if stored:
        effective = SearchConfig.from_dict(stored)
    elif config is not None:
        effective = config
    else:
        raise SearchError(f"there is no study '{name}' in {mask_url(normalize_url(storage))} to join; "
                          "start it first with its settings (preset, population, ranges ...)")
    problems = effective.validate()
    if problems:
        raise SearchError("invalid search settings: " + "; ".join(f"{k}: {v}" for k, v in problems.items()))
    study = optuna.create_study(study_name=name, storage=st, direction="maximize", load_if_exists=True,
                                sampler=make_sampler(effective, sampler_seed), pruner=make_pruner(effective))
    if not stored:
        study.set_user_attr(SETTINGS_ATTR, effective.to_dict())
    if existing is None and owner:
        # Two launches of one new name can both find no study and both "create" it (load_if_exists): the first
        # owner written wins, and the other launch is refused like any resume of another's study.
        theirs = study.user_attrs.get(OWNER_ATTR)
        if theirs is None:
            study.set_user_attr(OWNER_ATTR, owner)
            study.set_user_attr(OWNER_NAME_ATTR, owner_name or None)
        elif theirs != owner and not any_owner:
            raise SearchError(f"the study '{name}' was just started by another student; pick another name")
    return study, effective


COUNTED_STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


def _counted(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=tuple(TrialState[s] for s in COUNTED_STATES)))


def _finished(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)))


def trial_config(config: SearchConfig, params: dict, device: str = "auto", data: str | None = None):
    """The TrainConfig of one trial: the preset, shortened as asked, with the trial's genes."""

    base = PRESETS[config.preset]
    epochs = config.epochs or base.get("epochs", 24)
    peak = base.get("peak_epoch", 5.0) * epochs / base.get("epochs", 24)  # keep the warm-up fraction
    lr_ratio = base.get("lr_min", 0.002) / base.get("lr_max", 0.02)
    spread = max(0.0, base.get("momentum_max", 0.95) - base.get("momentum_min", 0.85))
    mom = float(params["momentum"])
    return preset(config.preset, model=config.model, epochs=epochs, peak_epoch=round(max(peak, 1e-3), 4),
                  lr_max=float(params["lr_max"]), lr_min=float(params["lr_max"]) * lr_ratio,
                  weight_decay=float(params["weight_decay"]), momentum_max=mom,
                  momentum_min=max(0.0, mom - spread), subset=config.subset, test_subset=config.test_subset,
                  batch_size=config.batch_size, device=device, data=data, eval_every=1, checkpoint_every=0)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_search(config: SearchConfig | None = None, *, storage: str | None = None, study_name: str | None = None,
               device: str = "auto", data: str | None = None, dataset=None, callback: Callback | None = None,
               stop_event=None, sampler_seed: int | None = None, heartbeat: int | None = HEARTBEAT_S,
               runs_root: str | Path | None = None, any_owner: bool = False) -> dict:
    """Run trials of the study until it holds ``config.n_trials`` trials (counting every worker's) or Stop.

    Joins the study when it exists (its stored settings win). Events: the trainer's own with ``trial`` added
    and ``progress`` over the whole study, and a ``log`` event per finished trial (``trial_done``: number,
    state, value, params). Returns ``summary(study)`` plus this worker's counts.
    """
    import optuna

    # Optuna logs every failed trial with its traceback at WARNING; the events below say it in one line.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    # A job of the app runs with its owner in the environment (resnet_lab.jobs), as runs record theirs.
    study, config = open_study(config, storage, study_name, sampler_seed, heartbeat,
                               owner=os.environ.get("RESNET_LAB_OWNER") or None,
                               owner_name=os.environ.get("RESNET_LAB_OWNER_NAME") or None, any_owner=any_owner)
    source = _source_of(data, dataset)
    if dataset is None:
        emit(callback, "log", message=f"loading {source}")
        dataset = load_dataset(source)
    _check_trial_settings(config, dataset, device, source)
    store = RunStore(Path(runs_root) if runs_root else runs_dir() / "search" / re.sub(r"[^A-Za-z0-9_.-]", "-",
                                                                                       study.study_name))
    me = worker_id()
    mine = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0}
    t0 = time.perf_counter()
    objective = _objective(study, config, dataset, source, device, store, me, callback, stop_event)
    after_trial = _after_trial(config.n_trials, mine, heartbeat, callback, stop_event)
    if heartbeat:
        # A worker killed mid-trial left it RUNNING; once its heartbeat is stale, record it as failed now, so the
        # study does not show it as running forever (it still counts towards the requested trials).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        _fail_orphans(study, 2 * int(heartbeat))
    status = "done"
    if _counted(study) < config.n_trials and not (stop_event is not None and stop_event.is_set()):
        emit(callback, "log", message=f"study {study.study_name}: {_finished(study)}/{config.n_trials} trials "
                                      f"finished; this worker is {me}",
             progress=min(1.0, _finished(study) / config.n_trials))
        # Count running trials too: with several workers, finished-only counting lets each start one more.
        limit = optuna.study.MaxTrialsCallback(config.n_trials, states=tuple(
            optuna.trial.TrialState[s] for s in COUNTED_STATES))
        study.optimize(objective, n_trials=None, catch=(Exception,), callbacks=[after_trial, limit])
    if stop_event is not None and stop_event.is_set():
        status = "stopped"
    out = summary(study)
    out.update(status=status, worker=me, this_worker=mine, seconds=time.perf_counter() - t0,
               storage=mask_url(normalize_url(storage)))
    return out


def _check_trial_settings(config: SearchConfig, dataset, device: str, source: str) -> None:
    """Fail on bad settings now, not as n failed trials: the trial configs at both corners of the space."""
    for end in ("low", "high"):
        probe_cfg = trial_config(config, {k: getattr(r, end) for k, r in config.space.items()}, device, source)
        n_train = len(dataset.train_y) if probe_cfg.subset is None else min(probe_cfg.subset, len(dataset.train_y))
        problems = probe_cfg.validate(n_train=n_train)
        if problems:  # by field; the CLI names its own option for each (problems)

            raise invalid(SearchError, problems, "settings for the trials")
    try:
        resolve_device(device)
    except ValueError as exc:
        raise SearchError(str(exc)) from None


def _objective(study, config: SearchConfig, dataset, source, device, store, me: str, callback, stop_event):
    """Optuna's objective: one trial is one training run of the preset with the trial's genes; the trainer's
    events go on with the trial's number, test accuracy is reported per epoch for the pruner."""
    import optuna


    def objective(trial):
        generation = trial.number // config.population
        trial.set_user_attr("worker", me)  # first: marks the trial as alive (see _fail_orphans)
        trial.set_user_attr("generation", generation)
        params = {}
        for name in ("lr_max", "weight_decay", "momentum"):
            r = config.space[name]
            params[name] = trial.suggest_float(name, r.low, r.high, log=r.log)
        cfg = trial_config(config, params, device, source)
        pruned = []
        done_before = _finished(study)

        def forward(event):
            e = dict(event, trial=trial.number, generation=generation)
            if "progress" in e:
                e["progress"] = min(1.0, (done_before + float(e["progress"])) / config.n_trials)
            # A partial epoch (the batch run after a stop) would report a meaningless accuracy.
            if e["type"] == "epoch" and "test_acc" in e and not e.get("partial"):
                trial.report(float(e["test_acc"]), e["epoch"])
                # Pruning at the last epoch would save nothing: let the trial finish and get its real score.
                if config.prune and e["epoch"] < cfg.epochs and trial.should_prune():
                    pruned.append(e["epoch"])
                e["message"] = (f"trial {trial.number} (generation {generation}) epoch {e['epoch']}/{cfg.epochs}: "
                                f"test accuracy {e['test_acc']:.1%}")
            if callback is not None:
                callback(e)
            return STOP if pruned else None  # the pruner steers the trainer: end this trial's run now

        t_trial = time.perf_counter()
        try:
            run = training.train(cfg, data=dataset, callback=forward, stop_event=stop_event, store=store)
        except Exception as exc:  # a NaN loss (TrainingError), or anything else: this trial fails, the search goes on
            trial.set_user_attr("error", (str(exc) or type(exc).__name__).splitlines()[0][:500])
            trial.set_user_attr("seconds", time.perf_counter() - t_trial)
            raise
        trial.set_user_attr("run_id", run.id)
        trial.set_user_attr("seconds", time.perf_counter() - t_trial)
        if stop_event is not None and stop_event.is_set():
            trial.set_user_attr("error", "stopped by the user before the trial finished")
            raise TrialStopped("stopped by the user")
        if pruned:
            raise optuna.TrialPruned(f"test accuracy {run.history[-1].get('test_acc', 0):.1%} at epoch "
                                     f"{len(run.history)} is below the median of earlier trials")
        return float(run.metrics["top1"])

    return objective


def _after_trial(n_total: int, mine: dict, heartbeat, callback, stop_event):
    """Optuna's per-trial callback: count this worker's outcomes, say how the trial ended, honour Stop."""

    def after_trial(study_, frozen):
        if frozen.state.name in mine:
            mine[frozen.state.name] += 1
        value = frozen.value if frozen.value is not None else (
            frozen.intermediate_values[max(frozen.intermediate_values)] if frozen.intermediate_values else None)
        done = _finished(study_)
        emit(callback, "log", trial_done={"number": frozen.number, "state": frozen.state.name, "value": value,
                                          "params": dict(frozen.params), "error": frozen.user_attrs.get("error"),
                                          "generation": frozen.user_attrs.get("generation"),
                                          "seconds": frozen.user_attrs.get("seconds")},
             message=f"trial {frozen.number}: {frozen.state.name.lower()}"
                     + (f", accuracy {value:.1%}" if value is not None else "")
                     + f" — {done}/{n_total} trials finished", progress=min(1.0, done / n_total))
        if heartbeat:
            _fail_orphans(study_, 2 * int(heartbeat))
        if stop_event is not None and stop_event.is_set():
            study_.stop()

    return after_trial


def _fail_orphans(study, grace_s: float) -> int:
    """Record as failed the trials a killed worker left RUNNING before its first heartbeat.

    Optuna's ``fail_stale_trials`` skips a RUNNING trial that has no heartbeat at all, which is what a worker
    killed between ``ask()`` and its heartbeat thread's first beat leaves: it would stay RUNNING forever and
    count towards the requested trials. Every live trial sets its "worker" attribute within milliseconds of
    starting, so a RUNNING trial without it, older than the grace period, is dead. Returns how many were failed.
    """
    from datetime import datetime, timedelta

    from optuna.trial import TrialState

    now, failed = datetime.now(), 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if "worker" in t.user_attrs or t.datetime_start is None or now - t.datetime_start < timedelta(seconds=grace_s):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna's notes on tell() outside optimize(): expected here
                study.tell(t.number, state=TrialState.FAIL)
            failed += 1
        except (RuntimeError, ValueError):
            pass  # another worker recorded it first
    return failed


def _source_of(data: str | None, dataset) -> str:
    """The data setting to record in each trial's config: the argument, else the loaded dataset's path."""

    if data is None and dataset is not None and getattr(dataset, "path", None):
        return str(dataset.path)
    return resolve_data_source(data)


# -- reading a study ------------------------------------------------------------------------------------


def load_study(storage: str | None, study_name: str):
    import optuna

    st = open_storage(storage, heartbeat=None, create=False)
    try:
        return optuna.load_study(study_name=study_name, storage=st)
    except KeyError:
        raise SearchError(f"no study '{study_name}' in {mask_url(normalize_url(storage))}") from None


def trial_rows(study) -> list[dict]:
    """One plain dict per trial (for tables, plots and tests), in trial-number order.

    ``value`` is the fitness (final test accuracy) of COMPLETE trials, or the last reported accuracy of a pruned
    one; ``generation`` = number // population (launch batch); ``ga_generation`` is the generation NSGA-II itself
    assigned (it counts only completed trials, so pruned/failed trials push later ones back).
    """
    rows = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        inter = dict(sorted(t.intermediate_values.items()))
        value = t.value if t.value is not None else (inter[max(inter)] if inter else None)
        rows.append({"number": t.number, "state": t.state.name, "value": value, "params": dict(t.params),
                     "generation": t.user_attrs.get("generation"),
                     "ga_generation": t.system_attrs.get("NSGAIISampler:generation"),
                     "worker": t.user_attrs.get("worker"), "run_id": t.user_attrs.get("run_id"),
                     "seconds": t.user_attrs.get("seconds"), "error": t.user_attrs.get("error"),
                     "intermediate": {int(k): float(v) for k, v in inter.items()},
                     "started": t.datetime_start.isoformat(timespec="seconds") if t.datetime_start else None})
    return rows


def summary(study) -> dict:
    rows = trial_rows(study)
    states = {}
    for r in rows:
        states[r["state"]] = states.get(r["state"], 0) + 1
    complete = [r for r in rows if r["state"] == "COMPLETE" and r["value"] is not None]
    best = max(complete, key=lambda r: r["value"]) if complete else None
    settings = study.user_attrs.get(SETTINGS_ATTR)
    return {"study": study.study_name, "settings": settings, "trials": len(rows), "states": states,
            "best": best, "requested": SearchConfig.from_dict(settings).n_trials if settings else None}


def train_prefill(best: dict, settings: dict) -> dict:
    """What the Train page needs to rerun the winner: the genes plus the preset's optimizer and model."""
    cfg = SearchConfig.from_dict(settings)
    p = best["params"]
    # lr_min / momentum_min: what trial_config derived from the genes, so the Train page reruns the same schedule.
    tc = trial_config(cfg, p)
    return {"lr_max": float(p["lr_max"]), "weight_decay": float(p["weight_decay"]),
            "momentum_max": float(p["momentum"]), "optimizer": tc.optimizer, "model": tc.model,
            "lr_min": float(tc.lr_min), "momentum_min": float(tc.momentum_min), "preset": cfg.preset,
            "source": f"the search (trial {best.get('number')})"}
