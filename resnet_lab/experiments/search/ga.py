"""``run_search``: the genetic algorithm of the student report on Optuna (NSGA-II's sampler with single-point
crossover, a median pruner), each trial a real training run, resumable, owned, stoppable.
"""

from __future__ import annotations

import os
import re
import socket
import time
import warnings
from pathlib import Path

from resnet_lab import training
from resnet_lab.config import resolve_data_source, resolve_device, runs_dir
from resnet_lab.data import load_dataset
from resnet_lab.events import Callback, emit, STOP
from resnet_lab.experiments.search.space import (
    DEFAULT_STUDY,
    HEARTBEAT_S,
    OWNER_ATTR,
    OWNER_NAME_ATTR,
    SearchConfig,
    SearchError,
    SETTINGS_ATTR,
    trial_config,
    TrialStopped,
)
from resnet_lab.experiments.search.storage import mask_url, normalize_url, open_storage, study_name_problem
from resnet_lab.experiments.search.study import summary
from resnet_lab.runs import RunStore
from resnet_lab.settings import invalid

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
