"""The LR range test: state restored exactly, events and stop, bad curves, the four rules, the CLI."""

from __future__ import annotations

import copy
import json
import threading

import numpy as np
import pytest
import torch
from torch import nn

from resnet_lab import lr_finder as lrf
from resnet_lab.cli import main
from resnet_lab.events import Collector


@pytest.fixture
def tiny(tiny_data_env):
    from resnet_lab.data import load_dataset

    return load_dataset(str(tiny_data_env))


def small_net() -> nn.Module:
    """Conv + BN + pool + linear: every kind of state (weights, BN running stats) in a fast model."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(4),
                         nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 10))


FAST = dict(batch_size=16, subset=100, iterations=25, start_lr=1e-4, end_lr=10.0, augment=False)


# ------------------------------------------------------------------------------------------- state restored

def test_model_and_optimizer_come_back_exactly(tiny):
    model = small_net()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    for _ in range(2):  # give Adam real state and BN non-trivial running statistics
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    model.eval()
    model[1].train()  # a mixed train/eval state must survive too
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 10)  # adds 'initial_lr', which LRFinder refuses
    model_before = copy.deepcopy(model.state_dict())
    opt_before = copy.deepcopy(optimizer.state_dict())
    grads_before = [p.grad.clone() for p in model.parameters()]
    modes_before = [m.training for m in model.modules()]
    first = next(model.parameters())
    changed = []

    def watch(event):  # proof that the test really trains the caller's model while it runs
        if event["type"] == "batch" and event["step"] == 5:
            changed.append(not torch.equal(first.detach(), model_before["0.weight"]))

    result = lrf.find_lr(lrf.LRFindConfig(**FAST, optimizer="adam"), data=tiny, model=model, optimizer=optimizer,
                         callback=watch)
    assert changed == [True]
    assert result.iterations > 5
    after = model.state_dict()
    assert set(after) == set(model_before)
    for key, value in model_before.items():  # weights and BN running_mean / running_var / num_batches_tracked
        assert torch.equal(after[key], value), key
    opt_after = optimizer.state_dict()
    assert opt_after["param_groups"] == opt_before["param_groups"]
    for pid, state in opt_before["state"].items():
        for key, value in state.items():
            assert torch.equal(opt_after["state"][pid][key], value), (pid, key)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads_before))
    assert [m.training for m in model.modules()] == modes_before
    scheduler.step()  # the scheduler still works with the restored optimizer


def test_a_failure_before_the_sweep_still_gives_the_optimizer_back(tiny, monkeypatch):
    """LRFinder refuses an optimizer with 'initial_lr', so it is lifted off first; when LRFinder itself then fails
    (an out-of-memory while copying the weights, say) the caller's optimizer must get it back."""
    import torch_lr_finder

    model = small_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.optim.lr_scheduler.StepLR(optimizer, 10)  # adds 'initial_lr'

    class Broken:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(torch_lr_finder, "LRFinder", Broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        lrf.find_lr(lrf.LRFindConfig(**FAST), data=tiny, model=model, optimizer=optimizer)
    assert optimizer.param_groups[0]["initial_lr"] == 0.1


def test_torch_lr_finder_is_used_as_is_and_prints_nothing(tiny, capfd):
    """No monkeypatching of the dependency: its module keeps the builtins print and tqdm; its bar and its
    "See the graph" line are captured while it runs, so a sweep writes nothing to the terminal itself."""
    from torch_lr_finder import lr_finder as module

    lrf.find_lr(lrf.LRFindConfig(**FAST), data=tiny, model=small_net())
    out = capfd.readouterr()
    assert out.out == "" and out.err == ""
    assert "print" not in vars(module) and not hasattr(module, "_resnet_lab_quiet")
    assert module.tqdm.__module__.startswith("tqdm")


# ------------------------------------------------------------------------------------------- events and stop

def test_events_progress_and_stop(tiny):
    stop = threading.Event()
    events = Collector()

    def callback(event):
        events(event)
        if event["type"] == "batch" and event["step"] == 5:
            stop.set()

    result = lrf.find_lr(lrf.LRFindConfig(**{**FAST, "iterations": 50}), data=tiny, model=small_net(),
                         callback=callback, stop_event=stop)
    assert result.stopped and "Stopped by you" in result.message
    batches = events.of("batch")
    assert [e["step"] for e in batches] == list(range(len(batches)))
    assert len(batches) == result.iterations == 6  # steps 0..5: the stop is honoured before step 6 starts
    first = batches[0]
    assert set(first) >= {"type", "step", "total", "lr", "loss", "progress"}
    assert first["total"] == 50 and first["lr"] == pytest.approx(1e-4)
    assert batches[1]["progress"] > first["progress"] and batches[1]["lr"] > first["lr"]
    assert events.events[0]["type"] == "start" and events.events[-1]["type"] == "end"


def find_lr_small_net(job, source: str):
    """A job function (module level, picklable arguments: it runs in a worker process)."""
    return lrf.find_lr(lrf.LRFindConfig(**FAST, data=source), model=small_net(), callback=job.emit,
                       stop_event=job.stop_event)


def test_a_job_runs_it_in_the_background(tiny, tiny_data_env):
    from resnet_lab import tasks
    from resnet_lab.jobs import JobRegistry

    registry = JobRegistry(jobs_per_device=2)
    job = registry.start("lr_find", find_lr_small_net, source=str(tiny_data_env))
    # the page's own task: the registry model named in the config, data loaded in the worker
    page_job = registry.start("lr_find", tasks.lr_find, config={**FAST, "model": "resnet20"},
                              source=str(tiny_data_env))
    assert page_job.wait(240) and page_job.status == "done", page_job.error
    assert isinstance(page_job.result, lrf.LRFindResult) and page_job.result.config["model"] == "resnet20"
    assert job.wait(120) and job.status == "done", job.error
    assert job.progress == 1.0 and len(job.events("batch")) == job.result.iterations
    assert isinstance(job.result, lrf.LRFindResult)


def test_the_mixed_precision_path_runs_and_restores(tiny, monkeypatch):
    """On CUDA the test runs under bf16 autocast through LRFinder's torch-amp branch; that branch is
    exercised here on the CPU (bf16 autocast exists there too) since this machine may have no GPU."""
    real = lrf.sweep._amp_kwargs
    used = []
    monkeypatch.setattr(lrf.sweep, "_amp_kwargs", lambda enabled, device: used.append(device) or real(True, device))
    model = small_net()
    before = copy.deepcopy(model.state_dict())
    result = lrf.find_lr(lrf.LRFindConfig(**{**FAST, "iterations": 12}), data=tiny, model=model)
    assert used and result.iterations == 12 and all(np.isfinite(result.losses))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


# ------------------------------------------------------------------------------------------------ bad input

def test_validation_names_each_field():
    cfg = lrf.LRFindConfig(start_lr=1.0, end_lr=0.1, iterations=0, batch_size=512, subset=100, smooth=1.0,
                           diverge=1.0, optimizer="rmsprop", model="nosuchnet", mode="cosine")
    problems = cfg.validate()
    assert set(problems) == {"end_lr", "iterations", "batch_size", "smooth", "diverge", "optimizer", "model", "mode"}
    assert "larger than the start LR" in problems["end_lr"]
    assert "whole number ≥ 2 (got 0)" in problems["iterations"]
    assert "larger than the subset" in problems["batch_size"]
    assert lrf.LRFindConfig(batch_size=64).validate(n_train=50)["batch_size"].endswith("50 training images")
    with pytest.raises(lrf.LRFinderError, match="larger than the start LR"):
        lrf.find_lr(lrf.LRFindConfig(start_lr=1.0, end_lr=0.1))


class NaNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, 10)

    def forward(self, x):
        return self.fc(x.flatten(1)) * float("nan")


def test_nan_from_the_first_step_is_a_clear_error(tiny):
    model = NaNNet()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(lrf.LRFinderError, match="NaN from the very first step"):
        lrf.find_lr(lrf.LRFindConfig(**FAST), data=tiny, model=model)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_a_curve_that_never_descends_gets_no_suggestions(tiny):
    # LRs so small that nothing is learnt: the loss only wanders around ln(10).
    result = lrf.find_lr(lrf.LRFindConfig(**{**FAST, "start_lr": 1e-9, "end_lr": 1e-8, "iterations": 20}),
                         data=tiny, model=small_net())
    assert result.iterations == 20 and not result.diverged
    assert result.suggestions == [] and not result.descended
    assert "never went down" in result.message


def test_divergence_stops_early_and_linear_mode(tiny):
    result = lrf.find_lr(lrf.LRFindConfig(**{**FAST, "start_lr": 0.01, "end_lr": 1e4, "mode": "linear",
                                             "optimizer": "sgd", "iterations": 40}), data=tiny, model=small_net())
    assert result.diverged and result.iterations < 40
    assert "diverged" in result.message
    steps = np.diff(result.lrs)
    assert np.allclose(steps, steps[0])  # linear: equal steps


# ------------------------------------------------------------------------------------------------ the rules

def synthetic(n=100, noise=0.0, seed=0):
    """A textbook curve on LRs 1e-7..10: flat, a sigmoid fall centred at 1e-3, then an explosion past 0.3."""
    x = np.linspace(-7, 1, n)
    loss = 2.3 - 1.6 / (1 + np.exp(-(x + 3) * 2.0)) + 0.9 * np.maximum(x + 0.5, 0) ** 2
    loss += np.random.default_rng(seed).normal(0, noise, n)
    return 10 ** x, loss


def test_rules_land_where_expected_on_a_synthetic_curve():
    lrs, losses = synthetic()
    found, message = lrf.suggest(lrs, losses)
    assert message == ""
    by = {s.name: s for s in found}
    assert list(by) == ["steepest", "minimum", "torch-lr-finder", "valley", "minimum/10", "slide"]
    assert 10 ** -3.2 <= by["steepest"].lr <= 10 ** -2.8  # the sigmoid's steepest point is at 1e-3
    lr_min = lrs[np.argmin(losses)]
    assert by["minimum"].lr == pytest.approx(lr_min)  # Smith's bound: where the loss stops falling
    assert by["minimum/10"].lr == pytest.approx(lr_min / 10)  # fastai's: a tenth of it
    assert 10 ** -3.3 <= by["torch-lr-finder"].lr <= 10 ** -2.7
    assert 1e-6 < by["valley"].lr < lr_min  # on the descent
    assert by["slide"].lr < lr_min
    for s in found:
        assert s.reason and np.isfinite(s.loss)
        if s.index is not None:
            assert lrs[s.index] == pytest.approx(s.lr) and losses[s.index] == pytest.approx(s.loss)


def test_rules_ignore_noise_after_the_minimum():
    lrs, losses = synthetic(noise=0.02, seed=3)
    smoothed = np.copy(losses)
    for i in range(1, len(smoothed)):  # what LRFinder records: an exponential moving average
        smoothed[i] = 0.05 * losses[i] + 0.95 * smoothed[i - 1]
    found, _ = lrf.suggest(lrs, smoothed)
    steepest = next(s for s in found if s.name == "steepest")
    assert steepest.lr < lrs[np.argmin(smoothed)]


def test_rising_flat_and_short_curves_give_reasons_not_numbers():
    lrs = np.logspace(-7, 1, 60)
    for losses in (np.linspace(2.3, 5.0, 60), np.full(60, 2.3)):
        found, message = lrf.suggest(lrs, losses)
        assert found == [] and "never went down" in message
    found, message = lrf.suggest(lrs[:6], np.linspace(2.3, 2.0, 6))
    assert found == [] and "too few" in message
    # a NaN tail is cut off, the finite part still counts
    lrs2, losses2 = synthetic()
    losses2[80:] = np.nan
    found, _ = lrf.suggest(lrs2, losses2)
    assert len(found) == 6


def test_result_round_trips_through_a_dict():
    lrs, losses = synthetic()
    found, _ = lrf.suggest(lrs, losses)
    res = lrf.LRFindResult(list(lrs), list(losses), list(losses), found, config={"model": "m", "optimizer": "sgd",
                                                                                 "batch_size": 4})
    again = lrf.LRFindResult.from_dict(json.loads(json.dumps(res.to_dict())))
    assert again.suggestion("valley") == res.suggestion("valley") and again.label == "m · sgd · batch 4"
    assert lrf.lr_pair(0.02) == {"lr_max": 0.02, "lr_min": 0.002}


# ------------------------------------------------------------------------------------------------------ CLI

def test_cli_json_last_line(tiny_data_env, capsys):
    rc = main(["lr-find", "--model", "resnet20", "--subset", "100", "--batch-size", "16", "--iters", "12",
               "--start-lr", "1e-3", "--no-augment", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(out["lrs"]) == len(out["losses"]) == out["iterations"] > 0
    assert out["lrs"][0] == pytest.approx(1e-3)
    assert out["config"]["model"] == "resnet20" and out["device"] == "cpu"
    for s in out["suggestions"]:
        assert set(s) >= {"name", "lr", "loss", "reason"}
    assert out["suggestions"] or out["message"]


def test_cli_prints_the_command_of_the_run_it_swept(tiny_data_env, capsys):
    """The human output ends with the train command of the swept run (its preset and settings) at the pick of the
    rule recommended for its optimizer, so the CLI's suggested path trains what was measured, as the page's does."""
    rc = main(["lr-find", "--subset", "100", "--batch-size", "16", "--iters", "30", "--start-lr", "1e-4"])
    assert rc == 0
    out = capsys.readouterr().out
    if "One-cycle range" not in out:  # a curve without descent gives reasons, not numbers
        assert "never went down" in out or "too few" in out
        return
    assert "rule 'minimum', the one recommended for sgd" in out
    command = out.strip().splitlines()[-1]
    assert command.strip().startswith("python -m resnet_lab train --preset quick-cpu --model resnet20 --optimizer "
                                      "sgd --batch-size 16 --weight-decay 0.0005 --momentum-min 0.85 --nesterov "
                                      "--crop-pad 4 --cutout 8 --lr-max ")


@pytest.mark.parametrize("sweep", [
    dict(preset="quick-cpu"),
    dict(preset="assignment", momentum=0.97, flip="none", weight_decay=1e-4),   # momentum above the preset's top
    dict(preset="paper-resnet20", optimizer="adam", augment=False),             # Adam: no Nesterov; no augmentation
    dict(preset=None, model="resnet32", optimizer="sgd", nesterov=True, batch_size=64, flip="alternate"),
])
def test_the_printed_train_command_trains_the_swept_run(sweep):
    """One hand-over rule for the CLI and the page: the train command printed for a sweep, parsed by the train
    command itself, is the run run_settings names: same preset, same shared settings, the picked LRs, and a cycle
    whose top momentum is not below the swept one."""
    from resnet_lab.cli import build_parser
    from resnet_lab.cli.train import config_from_args
    from resnet_lab.training import PRESETS, default_preset, preset

    base = lrf.for_training(preset(sweep.get("preset") or default_preset()))
    config = lrf.LRFindConfig(**{**base.to_dict(), **sweep}).to_dict()
    settings = lrf.run_settings(config, 0.0123)
    command = lrf.train_command(settings)
    assert command.startswith("python -m resnet_lab train ")
    run = config_from_args(build_parser().parse_args(command.split()[3:]))
    assert run.preset == (config["preset"] or default_preset())
    for train_field, sweep_field in lrf.HANDED_OVER.items():
        if train_field == "nesterov":
            assert run.nesterov == (config["nesterov"] and config["optimizer"] == "sgd")
        elif config["augment"] or train_field not in ("crop_pad", "cutout", "flip"):
            assert getattr(run, train_field) == config[sweep_field], train_field
    assert (run.lr_max, run.lr_min) == (pytest.approx(0.0123), pytest.approx(0.00123))
    top = PRESETS[run.preset]["momentum_max"]
    assert run.momentum_max == pytest.approx(max(top, config["momentum"])) and run.momentum_max >= run.momentum_min


def test_cli_rejects_bad_settings(tiny_data_env, capsys):
    assert main(["lr-find", "--start-lr", "1", "--end-lr", "0.1"]) == 2
    assert "--end-lr" in capsys.readouterr().err
    assert main(["lr-find", "--iters", "0"]) == 2
    assert "--iters" in capsys.readouterr().err
    assert main(["lr-find", "--batch-size", "500", "--subset", "100"]) == 2
    assert "larger than the subset" in capsys.readouterr().err


# --------------------------------------------------------------------- fastai's and torch-lr-finder's own answers
# A line-by-line transcription of fastai's published rules (fastai/callback/schedule.py: lr_find's window,
# valley, slide, minimum), on plain Python lists: the reference the library's numpy versions must equal.

def fastai_reference(lrs, losses, num_it):
    lrs, losses = list(lrs)[num_it // 10:-5], list(losses)[num_it // 10:-5]
    nan = [i for i, v in enumerate(losses) if v != v]
    if nan:
        lrs, losses = lrs[:nan[0]], losses[:nan[0]]
    n = len(losses)
    max_start, max_end = 0, 0
    lds = [1] * n
    for i in range(1, n):
        for j in range(0, i):
            if (losses[i] < losses[j]) and (lds[i] < lds[j] + 1):
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    valley = float(lrs[max_start + int(sections) + int(sections / 2)])
    minimum = lrs[int(np.argmin(losses))] / 10
    if len(losses) < 16:  # fastai's slide raises IndexError here (lrs[-16]); the library leaves the rule out
        return {"valley": valley, "slide": None, "minimum/10": minimum}
    loss_grad = np.gradient(np.array(losses))
    r_idx, lr_diff, thresh = -1, 15, 0.005
    l_idx = r_idx - lr_diff
    local_min_lr = lrs[l_idx]
    while (l_idx >= -len(losses)) and (abs(loss_grad[r_idx] - loss_grad[l_idx]) > thresh):
        local_min_lr = lrs[l_idx]
        r_idx -= 1
        l_idx -= 1
    return {"valley": valley, "slide": float(local_min_lr), "minimum/10": minimum}


def torch_lr_finder_reference(lrs, losses):
    """torch-lr-finder 0.2.2's plot(): lrs[10:-5][argmin(np.gradient(losses[10:-5]))]."""
    return float(lrs[10:-5][int(np.argmin(np.gradient(np.array(losses[10:-5]))))])


def _curves():
    rng = np.random.default_rng(7)
    for seed in range(25):
        n = int(rng.integers(30, 160))
        lrs, losses = synthetic(n=n, noise=float(rng.choice([0.0, 0.01, 0.05, 0.2])), seed=seed)
        if seed % 3 == 0:  # smoothed like LRFinder records it
            for i in range(1, n):
                losses[i] = 0.05 * losses[i] + 0.95 * losses[i - 1]
        num_it = n if seed % 4 else n + int(rng.integers(1, 60))  # stopped early: fastai windows with num_it
        yield lrs, losses, num_it


def test_valley_slide_and_minimum_are_exactly_fastais():
    compared = 0
    for lrs, losses, num_it in _curves():
        expected = fastai_reference(lrs, losses, num_it)
        found, message = lrf.suggest(lrs, losses, num_it=num_it)
        if not found:
            continue
        by = {s.name: s.lr for s in found}
        for name in ("valley", "slide", "minimum/10"):
            assert by.get(name) == expected[name], (name, num_it, len(lrs))
        compared += 1
    assert compared >= 20


def test_valley_keeps_fastais_details():
    pad = np.ones(5)  # fastai drops the last 5 points; num_it=0 keeps the first
    for losses in ([3.0, 2.0, 1.0, 1.5, 2.5, 3.5],        # a run from index 0: max_start is -1
                   [3.0, 2.0, 4.0, 5.0, 6.0, 7.0],        # the same, short: the index wraps to the last point
                   [1.0, 1.0, 1.0, 3.0, 5.0, 8.0],        # never decreasing: index 0
                   [5.0, 4.0, 9.0, 8.0, 7.0, 2.0, 9.5]):  # two runs of equal length: the earlier end wins
        losses = np.array(losses)
        lrs = np.logspace(-5, 0, len(losses))
        ref = fastai_reference(np.r_[lrs, pad], np.r_[losses, pad], 0)["valley"]
        assert lrs[lrf.fastai_valley_index(losses)] == ref, losses


def test_torch_lr_finder_rule_is_the_librarys_own():
    for lrs, losses, _ in _curves():
        found, _ = lrf.suggest(lrs, losses)
        by = {s.name: s for s in found}
        if "torch-lr-finder" in by:
            assert by["torch-lr-finder"].lr == torch_lr_finder_reference(list(lrs), list(losses))
            assert lrs[by["torch-lr-finder"].index] == by["torch-lr-finder"].lr


def test_cli_sweep_valley_and_slide_equal_fastais_on_its_arrays(tiny_data_env, capsys):
    rc = main(["lr-find", "--device", "cpu", "--model", "resnet20", "--subset", "100", "--batch-size", "10",
               "--iters", "40", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    by = {s["name"]: s["lr"] for s in out["suggestions"]}
    if not by:
        pytest.skip(f"this tiny sweep did not descend: {out['message']}")
    expected = fastai_reference(out["lrs"], out["losses"], out["config"]["iterations"])
    assert by["valley"] == expected["valley"] and by.get("slide") == expected["slide"]


# ------------------------------------------------------------------------------------ the sweep of the run it is for

def test_the_default_sweep_is_the_default_presets_run():
    """The LR test sweeps what the run it hands its LR to will use (a class once clicked an Adam/batch-32 curve and
    trained the SGD/batch-128 preset with it: 30.1 % instead of 42-45 %)."""
    from resnet_lab.training import preset

    for cuda, name in ((False, "quick-cpu"), (True, "assignment")):
        sweep, run = lrf.default_config(cuda=cuda), preset(name)
        assert sweep.preset == name
        assert (sweep.model, sweep.optimizer, sweep.batch_size, sweep.weight_decay, sweep.augment, sweep.cutout,
                sweep.crop_pad) == (run.model, run.optimizer, run.batch_size, run.weight_decay, run.augment,
                                    run.cutout, run.crop_pad)
        assert sweep.nesterov == (run.nesterov and run.optimizer == "sgd")
        assert sweep.momentum == run.momentum_min  # the momentum one-cycle runs at its LR peak
    assert lrf.default_config(cuda=False).subset == preset("quick-cpu").subset


def test_for_training_follows_any_run_and_names_what_it_cannot_sweep():
    from resnet_lab.training import TrainConfig, preset

    run = TrainConfig(model="resnet32", optimizer="adamw", batch_size=64, weight_decay=0.01, momentum_min=0.8,
                      augment=False, cutout=0, preset="paper-resnet20")
    sweep = lrf.for_training(run, iterations=30)
    assert (sweep.model, sweep.optimizer, sweep.batch_size, sweep.weight_decay, sweep.momentum, sweep.augment,
            sweep.iterations, sweep.nesterov) == ("resnet32", "adamw", 64, 0.01, 0.8, False, 30, False)
    assert lrf.not_swept(run) == []
    assert lrf.not_swept("speed") == ["label smoothing 0.2", "lookahead", "batch-norm parameters at 64× the LR"]
    assert lrf.for_training(preset("speed")).flip == "alternate"  # the sweep flips as the run does
    assert lrf.not_swept(preset("quick-cpu", model_options={"width": 8})) == ["model options width=8"]
    assert lrf.LRFindConfig(optimizer="adam", nesterov=True).validate()["nesterov"]
    assert "unknown preset" in lrf.LRFindConfig(preset="fastest").validate()["preset"]


def test_where_a_picked_lr_lies_on_the_curve():
    """The LR Finder's note on a pick reads LRFindResult.position: nearest step on a log scale, and past the lowest
    loss or not (ties at the minimum count as not past)."""
    r = lrf.LRFindResult(lrs=[1e-4, 1e-3, 1e-2, 1e-1, 1.0], losses=[2.3, 2.0, 1.2, 1.5, 4.0],
                         raw_losses=[2.3, 2.0, 1.2, 1.5, 4.0], suggestions=[], config={"optimizer": "adam"})
    assert r.position(0.011) == {"index": 2, "lr": 1e-2, "loss": 1.2, "past_minimum": False}
    assert r.position(0.05)["past_minimum"] is True and r.position(0.05)["index"] == 3
    assert r.position(4e-4)["index"] == 1 and r.position(2e-4)["index"] == 0 and r.position(1e3)["index"] == 4


def test_the_preselected_rule_follows_the_optimizer():
    curve = dict(lrs=[1e-3, 1e-2], losses=[2.0, 1.0], raw_losses=[2.0, 1.0],
                 suggestions=[lrf.Suggestion("steepest", 0.01, 1.5, "r"), lrf.Suggestion("minimum", 0.1, 1.0, "r")])
    assert lrf.LRFindResult(**curve, config={"optimizer": "sgd"}).suggestion().name == "minimum"
    assert lrf.LRFindResult(**curve, config={"optimizer": "adam"}).suggestion().name == "steepest"
    assert lrf.LRFindResult(**curve, config={"optimizer": "adamw"}).suggestion().name == "steepest"


def test_the_sweep_uses_nesterov_and_the_runs_cutout(tiny, monkeypatch):
    """The sweep's optimizer and augmentation are the run's: Nesterov momentum reaches torch's SGD, and the crop
    padding and cutout size reach the augmentation."""
    import torch

    from resnet_lab import transforms as T

    seen = {}
    real_sgd, real_aug = torch.optim.SGD, T.augment_batch

    def sgd(*args, **kwargs):
        seen["nesterov"] = kwargs.get("nesterov")
        return real_sgd(*args, **kwargs)

    def aug(x, params, *args, **kwargs):
        seen["pad"], seen["cutout"] = kwargs.get("pad"), kwargs.get("cutout")
        return real_aug(x, params, *args, **kwargs)

    monkeypatch.setattr(torch.optim, "SGD", sgd)
    monkeypatch.setattr(T, "augment_batch", aug)
    lrf.find_lr(lrf.LRFindConfig(**{**FAST, "iterations": 3, "augment": True}, optimizer="sgd", nesterov=True,
                                 crop_pad=2, cutout=4, device="cpu"), data=tiny, model=small_net())
    assert seen == {"nesterov": True, "pad": 2, "cutout": 4}
