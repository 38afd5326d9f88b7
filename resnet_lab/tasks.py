"""Module-level job functions for ``JobRegistry.start`` (see resnet_lab/jobs.py for the contract).

Each runs in a worker process: it receives the worker-side job and plain, picklable arguments (a data *source*
string, a config dict), loads what it needs there (the decoded-data cache makes that quick) and reports through
``job.emit`` / ``job.stop_event``. Pages start jobs with these instead of closures over loaded objects, which
cannot cross a process boundary.
"""

from __future__ import annotations


def train(job, config: dict, source: str | None = None):
    """One training run (``resnet_lab.training.train``); returns the ``Run``."""
    from resnet_lab import training

    cfg = training.TrainConfig.from_dict({**config, **({"data": source} if source else {})})
    return training.train(cfg, callback=job.emit, stop_event=job.stop_event)


def lr_find(job, config: dict, source: str | None = None):
    """The LR range test (``resnet_lab.lr_finder.find_lr``); returns the ``LRFindResult``."""
    from resnet_lab import lr_finder

    cfg = lr_finder.LRFindConfig.from_dict({**config, **({"data": source} if source else {})})
    return lr_finder.find_lr(cfg, callback=job.emit, stop_event=job.stop_event)


def degradation(job, suite: str, source: str | None = None, **kwargs):
    """A depth-degradation suite (``resnet_lab.experiments.degradation.run_suite``); returns its result dict."""
    from resnet_lab.experiments import degradation as D

    return D.run_suite(suite, data=source, callback=job.emit, stop_event=job.stop_event, **kwargs)


def search(job, config: dict, storage: str, study_name: str, source: str | None = None, any_owner: bool = False):
    """Optuna trials (``resnet_lab.experiments.search.run_search``); returns the study summary. ``any_owner``: the
    teacher may resume any student's study."""
    from resnet_lab.experiments import search as S

    return S.run_search(S.SearchConfig.from_dict(config), storage=storage, study_name=study_name, data=source,
                        callback=job.emit, stop_event=job.stop_event, any_owner=any_owner)
