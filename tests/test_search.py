"""The GA hyperparameter search: settings checks, NSGA-II bookkeeping, NaN trials, resume after SIGKILL, bad storage."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")

from resnet_lab.experiments import search as S  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# Tiny trials: ResNet-20 for 1 epoch on 100 images — a second or two each on 2 CPU cores.
TINY = dict(preset="quick-cpu", model="resnet20", epochs=1, subset=100, test_subset=50, batch_size=25)


pytestmark = pytest.mark.usefixtures("one_thread")


def _worker_env(tiny_data_dir, tmp_path) -> dict:
    return dict(os.environ, RESNET_LAB_DATA=str(tiny_data_dir), RESNET_LAB_CACHE=str(tmp_path / "cache"),
                RESNET_LAB_RUNS=str(tmp_path / "runs"), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def test_space_validation_explains_each_problem():
    assert S.SearchConfig().validate() == {}
    cfg = S.SearchConfig()
    cfg.space["lr_max"] = S.Range(0.1, 0.001, log=True)
    cfg.space["momentum"] = S.Range(0.9, 0.9)
    cfg.space["weight_decay"] = S.Range(0.0, 0.1, log=True)
    err = cfg.validate()
    assert "inverted" in err["lr_max"]
    assert "empty" in err["momentum"]
    assert "log scale needs a low bound > 0" in err["weight_decay"]
    cfg.space["weight_decay"] = S.Range(1e-6, 0.1, log=True)  # the fix the message suggests
    assert "weight_decay" not in cfg.validate()
    assert "population" in S.SearchConfig(population=1).validate()
    assert "preset" in S.SearchConfig(preset="nope").validate()


def test_urls_are_normalised_and_masked(tmp_path):
    assert S.normalize_url(str(tmp_path / "s.db")) == f"sqlite:///{tmp_path / 's.db'}"
    assert S.normalize_url("postgresql://u:p@h/db").startswith("postgresql+psycopg://")
    # issue 12 case 20: everything between // and the last @ is masked (a password may contain '@')
    assert S.mask_url("postgresql+psycopg://user:secret@host:5432/db") == "postgresql+psycopg://***@host:5432/db"


def test_single_point_crossover_takes_a_prefix_and_a_suffix():
    cx = S._single_point_crossover()
    rng = np.random.RandomState(0)
    parents = np.array([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    cuts = set()
    for _ in range(50):
        child = cx.crossover(parents, rng, None, np.array([[0, 1]] * 4))
        cut = int((child == 0).sum())
        assert list(child) == [0.0] * cut + [1.0] * (4 - cut)  # one crossing point, never all of one parent
        cuts.add(cut)
    assert cuts == {1, 2, 3}


def test_unreachable_storage_fails_fast_with_a_clear_message():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(S.SearchError) as info:
        S.open_storage(f"postgresql://lab:hunter2@127.0.0.1:{port}/optuna")
    assert time.monotonic() - t0 < 15
    msg = str(info.value)
    assert "cannot open the study storage" in msg and "hunter2" not in msg and "***" in msg


def test_generations_bookkeeping_and_children_bred_from_parents(tiny_data_env, runs_dir):
    # mutation_prob 0: every gene of a generation-1 child must come from a generation-0 parent (crossover only).
    cfg = S.SearchConfig(population=3, generations=2, mutation_prob=0.0, **TINY)
    out = S.run_search(cfg, storage=str(runs_dir / "s.db"), study_name="ga", sampler_seed=1)
    assert out["status"] == "done" and out["trials"] == 6 and out["requested"] == 6
    rows = S.trial_rows(S.load_study(str(runs_dir / "s.db"), "ga"))
    assert [r["number"] for r in rows] == list(range(6))
    assert [r["generation"] for r in rows] == [0, 0, 0, 1, 1, 1]
    assert all(r["state"] == "COMPLETE" and 0 <= r["value"] <= 1 for r in rows)
    assert [r["ga_generation"] for r in rows] == [0, 0, 0, 1, 1, 1]  # NSGA-II agrees when nothing fails
    parents = rows[:3]
    for child in rows[3:]:
        for gene, value in child["params"].items():
            assert any(value == pytest.approx(p["params"][gene], rel=1e-9) for p in parents), (gene, value)
    # each trial is a normal run, kept under runs/search/<study>
    assert all((runs_dir / "search" / "ga" / r["run_id"] / "config.json").exists() for r in rows)
    # a rerun of a finished study adds nothing
    again = S.run_search(None, storage=str(runs_dir / "s.db"), study_name="ga")
    assert again["trials"] == 6 and sum(again["this_worker"].values()) == 0
    prefill = S.train_prefill(out["best"], out["settings"])
    assert set(prefill) >= {"lr_max", "weight_decay", "momentum_max", "optimizer", "model"}
    assert prefill["model"] == "resnet20" and prefill["optimizer"] == "sgd"


def test_diverging_trials_are_scored_failed_and_the_search_goes_on(tiny_data_env, runs_dir, monkeypatch):
    # BN keeps these small nets from diverging at any LR the trainer accepts, so NaN is fed in instead: trials
    # with a high LR get images normalised with a NaN mean, and the real trainer meets a NaN loss at step 1.
    from resnet_lab import training
    from resnet_lab.data import Dataset, load_dataset

    class NaNMean(Dataset):
        def _stats_pair(self):
            return (float("nan"),) * 3, super()._stats_pair()[1]

    real_train = training.train

    def train(config, data=None, **kw):
        if config.lr_max > 0.01:
            data = data.subset(train=config.subset, test=config.test_subset, seed=config.seed)
            data = NaNMean(data.train_x, data.train_y, data.test_x, data.test_y, data.classes, data.source)
            config.subset = config.test_subset = None
            config.augment, config.pipeline = False, "torch"  # straight to normalisation (x - NaN) / std
        return real_train(config, data=data, **kw)

    monkeypatch.setattr(training, "train", train)
    cfg = S.SearchConfig(population=4, generations=1, **TINY)
    cfg.space["lr_max"] = S.Range(1e-3, 1e-1, log=True)
    out = S.run_search(cfg, storage=str(runs_dir / "s.db"), study_name="nan", sampler_seed=3,
                       dataset=load_dataset(str(tiny_data_env)))
    assert out["status"] == "done" and out["trials"] == 4
    rows = S.trial_rows(S.load_study(str(runs_dir / "s.db"), "nan"))
    for r in rows:
        if r["params"]["lr_max"] > 0.01:
            assert r["state"] == "FAIL" and "loss became nan" in r["error"].lower()
        else:
            assert r["state"] == "COMPLETE" and r["value"] is not None
    assert {r["state"] for r in rows} == {"FAIL", "COMPLETE"}  # a failure did not end the search


def test_joining_worker_adopts_the_studys_settings(tiny_data_env, runs_dir):
    storage = str(runs_dir / "s.db")
    S.open_study(S.SearchConfig(population=4, generations=1, **TINY), storage, "shared")
    study, cfg = S.open_study(None, storage, "shared")
    assert cfg.population == 4 and cfg.subset == 100
    with pytest.raises(S.SearchError, match="no study 'other'"):
        S.open_study(None, storage, "other")


def _trials(storage: str, name: str):
    try:
        study = optuna.load_study(study_name=name, storage=S.open_storage(storage, heartbeat=None))
    except KeyError:
        return []
    return study.get_trials(deepcopy=True)


def test_a_trial_left_running_without_a_heartbeat_is_failed_by_the_next_worker(tiny_data_env, runs_dir):
    """A worker killed between ask() and its first heartbeat leaves a RUNNING trial that optuna's stale check
    skips; the next worker records it as failed instead of counting it as running forever."""
    from resnet_lab.data import load_dataset

    storage = str(runs_dir / "s.db")
    study, _ = S.open_study(S.SearchConfig(population=2, generations=1, **TINY), storage, "orphan", heartbeat=1)
    with pytest.warns(UserWarning, match="Heartbeat"):  # optuna: ask() outside optimize() gets no heartbeat
        orphan = study.ask()  # RUNNING, no heartbeat, no genes: what the kill leaves
    time.sleep(2.2)  # older than the grace period (2 x 1 s)
    out = S.run_search(None, storage=storage, study_name="orphan", heartbeat=1,
                       dataset=load_dataset(str(tiny_data_env)))
    trials = {t.number: t for t in _trials(S.normalize_url(storage), "orphan")}
    assert trials[orphan.number].state.name == "FAIL"
    assert all(t.state.is_finished() for t in trials.values()) and out["trials"] == 2
    assert out["this_worker"]["COMPLETE"] == 1


def test_resume_after_sigkill_loses_no_finished_trial(tiny_data_dir, tmp_path):
    storage = f"sqlite:///{tmp_path / 'search.db'}"
    env = _worker_env(tiny_data_dir, tmp_path)
    args = [sys.executable, "-m", "resnet_lab", "search", "--storage", storage, "--study", "resume",
            "--heartbeat", "1", "--json"]
    settings = ["--population", "2", "--generations", "3", "--preset", TINY["preset"], "--model", TINY["model"],
                "--epochs", "1", "--subset", "100", "--test-subset", "50", "--batch-size", "25"]
    first = subprocess.Popen(args + settings, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            done = [t for t in _trials(storage, "resume") if t.state.name == "COMPLETE"]
            if len(done) >= 2:
                break
            assert first.poll() is None, first.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "the first worker finished no trial within 120 s"
            time.sleep(0.2)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    before = {t.number: (t.state.name, t.value, t.params) for t in _trials(storage, "resume")
              if t.state.is_finished()}
    assert len(before) >= 2
    time.sleep(2.5)  # past the heartbeat grace period (2 x 1 s): the killed worker's trial is now stale
    # The second worker names only the storage and the study: it adopts the study's settings.
    second = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert second.returncode == 0, second.stderr[-2000:]
    summary = json.loads(second.stdout.strip().splitlines()[-1])
    trials = _trials(storage, "resume")
    assert sorted(t.number for t in trials) == list(range(6)) and summary["trials"] == 6
    # every trial ended; a trial the kill caught before it sampled its genes is a FAIL without params
    assert all(t.state.is_finished() and (t.params or t.state.name == "FAIL") for t in trials), \
        [(t.number, t.state.name, t.params) for t in trials]
    after = {t.number: (t.state.name, t.value, t.params) for t in trials}
    for number, record in before.items():
        assert after[number] == record  # nothing finished was lost or rewritten
    assert summary["this_worker"]["COMPLETE"] >= 1


def test_cli_lists_studies(tiny_data_env, runs_dir, capsys):
    from resnet_lab.cli import main

    storage = str(runs_dir / "s.db")
    assert main(["search", "--list", "--storage", storage]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("no studies in sqlite:") and json.loads(out[-1]) == []
    S.open_study(S.SearchConfig(population=2, generations=1, **TINY), storage, "listed")
    assert main(["search", "--list", "--storage", storage, "--json"]) == 0
    studies = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [s["name"] for s in studies] == ["listed"] and studies[0]["n_trials"] == 0
