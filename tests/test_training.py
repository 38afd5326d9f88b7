"""The one-cycle trainer: schedule, validation, end-to-end runs on tiny and shared data, events, stop, faults.

Every run here is ResNet-20 on at most a few hundred images for 1–2 epochs, so the file stays well under a minute
on 2 CPU cores.
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading

import numpy as np
import pytest
import torch

from conftest import load_with_own_cache
from resnet_lab import training
from resnet_lab.events import Collector
from resnet_lab.runs import RunError, RunStore

BATCH_KEYS = {"epoch", "step", "steps_per_epoch", "total_steps", "loss", "acc", "lr", "momentum", "images_per_s",
              "eta_s"}
EPOCH_KEYS = {"epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds"}


@pytest.fixture(scope="module")
def tiny(tiny_data_dir, tmp_path_factory):
    """The tiny class-folder dataset (200 train / 100 test), decoded once for this module."""
    return load_with_own_cache(tiny_data_dir, tmp_path_factory.mktemp("cache"))


def tiny_config(**overrides) -> training.TrainConfig:
    values = dict(model="resnet20", epochs=1, peak_epoch=0.5, lr_max=0.1, lr_min=0.01, optimizer="sgd",
                  momentum_max=0.9, momentum_min=0.85, weight_decay=5e-4, batch_size=50, pipeline="torch")
    values.update(overrides)
    return training.TrainConfig(**values)


# ------------------------------------------------------------------------------------------------- schedule

def test_assignment_schedule_peaks_at_epoch_5_and_ends_at_lr_min():
    cfg = training.preset("assignment", lr_max=0.04, lr_min=0.004)
    spe = 97  # 50,000 // 512
    lrs, moms = training.schedule(cfg, spe)
    assert len(lrs) == len(moms) == 24 * spe
    assert int(np.argmax(lrs)) == 5 * spe - 1  # the last step of epoch 5
    assert lrs.max() == pytest.approx(0.04)
    assert lrs[0] == pytest.approx(0.004)
    assert lrs[-1] == pytest.approx(0.004)  # no annihilation: the run ends at LR min
    assert lrs.min() == pytest.approx(0.004)
    # momentum mirrors the LR: high at the ends, lowest at the peak
    assert moms[0] == pytest.approx(0.95) and moms[-1] == pytest.approx(0.95)
    assert int(np.argmin(moms)) == 5 * spe - 1 and moms.min() == pytest.approx(0.85)
    assert np.all(np.diff(lrs[:5 * spe]) > 0) and np.all(np.diff(lrs[5 * spe - 1:]) < 0)


def test_annihilation_ends_far_below_lr_min():
    cfg = training.preset("assignment", annihilation=True)
    lrs, _ = training.schedule(cfg, 10)
    assert lrs[-1] == pytest.approx(cfg.lr_min / 1000)
    assert int(np.argmax(lrs)) == 5 * 10 - 1


@pytest.mark.parametrize("epochs,peak,spe,annihilation", [(24, 5, 97, False), (4, 1, 15, True), (7, 2.5, 33, False)])
def test_schedule_matches_torch_one_cycle(epochs, peak, spe, annihilation):
    cfg = training.TrainConfig(epochs=epochs, peak_epoch=peak, lr_max=0.3, lr_min=0.01, annihilation=annihilation,
                               momentum_max=0.95, momentum_min=0.85)
    lrs, moms = training.schedule(cfg, spe)
    total = epochs * spe
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.01, momentum=0.95)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=0.3, total_steps=total, pct_start=peak / epochs, anneal_strategy="linear",
        base_momentum=0.85, max_momentum=0.95, div_factor=30, final_div_factor=1000 if annihilation else 1)
    ref_lr, ref_m = [], []
    for i in range(total):
        ref_lr.append(opt.param_groups[0]["lr"])
        ref_m.append(opt.param_groups[0]["momentum"])
        if i < total - 1:
            opt.step()
            sched.step()
    np.testing.assert_allclose(lrs, ref_lr, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(moms, ref_m, rtol=1e-9, atol=1e-12)


def test_schedule_with_peak_on_the_first_step_does_not_break():
    # 1 epoch of 4 steps peaking at 0.25: torch's OneCycleLR divides by zero here
    lrs, moms = training.schedule(tiny_config(epochs=1, peak_epoch=0.25), 4)
    assert lrs[0] == pytest.approx(0.1) and lrs[-1] == pytest.approx(0.01)
    assert np.all(np.isfinite(lrs)) and np.all(np.isfinite(moms))


def test_preset_epochs_override_moves_the_peak_with_it():
    assert training.preset("assignment", epochs=12).peak_epoch == pytest.approx(2.5)
    assert training.preset("assignment", epochs=12, peak_epoch=3).peak_epoch == 3
    assert training.preset("assignment").peak_epoch == 5
    assert training.preset("assignment", lr_max=None).lr_max == training.PRESETS["assignment"]["lr_max"]
    with pytest.raises(training.TrainingError, match="unknown preset"):
        training.preset("nope")


def test_presets_are_valid_and_as_documented():
    for name in training.PRESETS:
        assert training.preset(name).validate() == {}, name
    a = training.preset("assignment")
    assert (a.model, a.epochs, a.peak_epoch, a.batch_size, a.optimizer, a.annihilation, a.cutout, a.label_smoothing) \
        == ("custom_resnet", 24, 5, 512, "adam", False, 8, 0.0)
    p = training.preset("paper-resnet20")
    assert (p.optimizer, p.lr_max, p.momentum_max, p.weight_decay, p.batch_size) == ("sgd", 0.1, 0.9, 1e-4, 128)
    assert "not a real result" in training.preset_note("quick-cpu")


def test_a_preset_note_reads_its_figures_from_the_preset_and_the_stored_measurement(tmp_path, monkeypatch):
    """No figure is typed into the note: the recipe comes from PRESETS, the parameter count from the registry and
    the accuracy and time from assets/presets/<preset>.json; a damaged file is ignored, not shown."""
    from resnet_lab.models import param_count
    from resnet_lab.train import notes

    monkeypatch.setattr(notes, "MEASURED_DIR", tmp_path)
    note = training.preset_note("quick-cpu")
    assert f"{param_count('resnet20') / 1e6:.2f} M parameters" in note and "5 epochs" in note
    assert "4,000 training / 1,000 test images" in note and "bench_presets.py --preset quick-cpu" in note
    (tmp_path / "quick-cpu.json").write_text(json.dumps({
        "format": notes.FORMAT, "hardware": "CPU: test box", "date": "2026-01-02", "command": "python x",
        "runs": [{"seed": 0, "top1": 0.431, "seconds": 120.0}, {"seed": 1, "top1": 0.4462, "seconds": 300.0}]}))
    note = training.preset_note("quick-cpu")
    assert "43.1–44.6% test accuracy in 2 runs (seeds 0, 1), 2.0–5.0 min each" in note and "CPU: test box" in note
    monkeypatch.setitem(training.PRESETS, "quick-cpu", {**training.PRESETS["quick-cpu"], "epochs": 7})
    assert "7 epochs" in training.preset_note("quick-cpu")
    (tmp_path / "quick-cpu.json").write_text('{"format": "%s", "runs": [{"top1": NaN, "seconds": 1}]}' % notes.FORMAT)
    assert "Not measured yet" in training.preset_note("quick-cpu")


@pytest.mark.parametrize("change,field", [
    (dict(lr_min=0.2, lr_max=0.1), "lr_min"), (dict(lr_max=-1.0), "lr_max"), (dict(lr_max=float("nan")), "lr_max"),
    (dict(epochs=0), "epochs"), (dict(epochs=2.5), "epochs"), (dict(peak_epoch=1), "peak_epoch"),
    (dict(optimizer="rmsprop"), "optimizer"), (dict(batch_size=1), "batch_size"), (dict(model="nope"), "model"),
    (dict(momentum_min=0.99), "momentum_min"), (dict(label_smoothing=1.0), "label_smoothing"),
    (dict(weight_decay=-1e-4), "weight_decay"), (dict(subset=5), "subset"), (dict(nesterov=True, optimizer="adam"),
                                                                              "nesterov"),
    (dict(pipeline="dali"), "pipeline"), (dict(cutout=40), "cutout"), (dict(model_options={"depth": 3}),
                                                                       "model_options"),
])
def test_validate_names_the_bad_field(change, field):
    problems = tiny_config(**change).validate()
    assert field in problems, problems
    assert problems[field]  # a message, not just a flag


def test_batch_larger_than_the_data_is_invalid():
    assert "batch_size" in tiny_config(batch_size=512).validate(n_train=200)
    assert tiny_config(batch_size=200).validate(n_train=200) == {}


def test_train_refuses_invalid_settings_before_creating_a_run(tiny, tmp_path):
    store = RunStore(tmp_path / "runs")
    with pytest.raises(training.TrainingError, match="lr_min"):
        training.train(tiny_config(lr_min=1.0), data=tiny, store=store)
    with pytest.raises(training.TrainingError, match="batch_size"):
        training.train(tiny_config(batch_size=400), data=tiny, store=store)
    assert store.list() == []


# ------------------------------------------------------------------------------------------- end to end

def check_run_end_to_end(run, events: Collector, data, store: RunStore, cfg) -> None:
    """Everything a finished run promises: events, metrics, predictions, atomic files, identical reload."""
    types = [e["type"] for e in events.events if e["type"] != "log"]
    assert types[0] == "start" and types[-1] == "end"
    batches, epochs = events.of("batch"), events.of("epoch")
    steps = training.steps_per_epoch(len(data.train_y), cfg.batch_size)
    assert len(batches) == cfg.epochs * steps  # CPU: one batch event per step
    for b in batches:
        assert BATCH_KEYS <= set(b), set(b)
        assert math.isfinite(b["loss"]) and 0 <= b["acc"] <= 1 and b["images_per_s"] > 0 and b["eta_s"] >= 0
    assert [b["step"] for b in batches] == list(range(1, cfg.epochs * steps + 1))
    lrs, moms = training.schedule(cfg, steps)
    np.testing.assert_allclose([b["lr"] for b in batches], lrs)  # the run used the previewed schedule
    np.testing.assert_allclose([b["momentum"] for b in batches], moms)
    assert len(epochs) == cfg.epochs
    for e in epochs:
        assert EPOCH_KEYS <= set(e), set(e)
    end = events.of("end")[0]
    assert end["status"] == "done" and end["run_id"] == run.id

    n_test = len(data.test_y)
    m = run.metrics
    assert 0 <= m["top1"] <= m["top3"] <= m["top5"] <= 1
    assert len(m["per_class_acc"]) == 10 and np.array(m["confusion"]).sum() == n_test
    assert m["top1"] == pytest.approx(epochs[-1]["test_acc"])
    assert m["seconds_total"] > 0 and m["status"] == "done"

    files = sorted(p.name for p in run.path.iterdir())
    assert files == sorted(["config.json", "status.json", "history.json", "metrics.json", "predictions.npz",
                            "model.pt"])  # and no temp file left behind by the atomic writes
    for name in ("config.json", "status.json", "history.json", "metrics.json"):
        json.loads((run.path / name).read_text())

    again = store.get(run.id)
    assert again.status == "done" and again.history == run.history and again.metrics == run.metrics
    assert again.config["model"] == cfg.model and again.config["n_train"] == len(data.train_y)
    names = {f.name for f in dataclasses.fields(training.TrainConfig)}
    assert training.TrainConfig.from_dict({k: v for k, v in again.config.items() if k in names}) == cfg
    preds = again.predictions()
    assert preds["probs"].shape == (n_test, 10) and preds["probs"].dtype == np.float32
    np.testing.assert_allclose(preds["probs"].sum(1), 1, atol=1e-5)
    np.testing.assert_array_equal(preds["labels"], data.test_y)
    np.testing.assert_array_equal(preds["indices"], data.test_index)
    assert (preds["preds"] == preds["labels"]).mean() == pytest.approx(m["top1"])
    # the reloaded weights give the stored predictions again
    model = again.load_model("cpu")
    probs = training.predict(model, data.test_x, again.config["mean"], again.config["std"], "cpu")
    np.testing.assert_allclose(probs, preds["probs"], atol=1e-5)


@pytest.mark.parametrize("pipeline", ["torch", "albumentations"])
def test_tiny_run_end_to_end(pipeline, tiny, tmp_path):
    if pipeline == "albumentations":
        pytest.importorskip("albumentations")
    store = RunStore(tmp_path / "runs")
    cfg = tiny_config(pipeline=pipeline)
    events = Collector()
    run = training.train(cfg, data=tiny, callback=events, store=store)
    assert run.config["pipeline"] == pipeline
    check_run_end_to_end(run, events, tiny, store, cfg)


def test_both_pipelines_learn_the_tiny_classes(tiny, tmp_path):
    """The tiny classes differ in colour and stripes: 4 epochs take either pipeline far above chance (10%).
    (Measured 66–88% test accuracy over seeds 0–2 for both; per-epoch train loss is too noisy at batch 20 to use.)"""
    pytest.importorskip("albumentations")
    for pipeline in ("torch", "albumentations"):
        cfg = tiny_config(pipeline=pipeline, epochs=4, peak_epoch=1, lr_max=0.05, lr_min=0.005, batch_size=20,
                          eval_every=0, checkpoint_every=0)
        run = training.train(cfg, data=tiny, store=RunStore(tmp_path / pipeline))
        assert run.metrics["top1"] > 0.4, (pipeline, run.metrics["top1"])


def test_pipelines_feed_the_same_kind_of_batches(tiny):
    pytest.importorskip("albumentations")
    cfg = tiny_config()
    device = torch.device("cpu")
    for cls in (training._TorchBatches, training._AlbumentationsBatches):
        batches = list(cls(tiny, cfg, device, seed=0).epoch(steps=4, batch_size=50))
        assert len(batches) == 4
        xs = torch.cat([x for x, _ in batches])
        ys = torch.cat([y for _, y in batches])
        assert xs.shape == (200, 3, 32, 32) and xs.dtype == torch.float32
        assert sorted(ys.tolist()) == sorted(tiny.train_y.tolist())  # an epoch is a permutation of the data
        assert abs(float(xs.mean())) < 0.3 and 0.6 < float(xs.std()) < 1.4, cls  # normalized with the data's stats


def test_same_seed_same_run_different_seed_different_run(tiny, tmp_path):
    def losses(seed, name):
        run = training.train(tiny_config(seed=seed, checkpoint_every=0), data=tiny, store=RunStore(tmp_path / name))
        return [h["train_loss"] for h in run.history] + [run.metrics["test_loss"]]

    first = losses(3, "a")
    assert losses(3, "b") == first
    assert losses(4, "c") != first


def test_shared_archive_one_epoch_end_to_end(shared_archive, tmp_path):
    from resnet_lab.data import load_dataset

    full = load_dataset(str(shared_archive))
    store = RunStore(tmp_path / "runs")
    cfg = tiny_config(subset=400, test_subset=200)
    events = Collector()
    run = training.train(cfg, data=full, callback=events, store=store)
    part = full.subset(train=400, test=200, seed=training.SUBSET_SEED)
    check_run_end_to_end(run, events, part, store, cfg)
    preds = run.predictions()
    # indices point into the full test set, so pages can show the original image of every prediction
    np.testing.assert_array_equal(full.test_y[preds["indices"]], preds["labels"])
    assert run.config["n_train"] == 400 and run.config["n_test"] == 200


# ----------------------------------------------------------------------------------------- stop and faults

def test_stop_mid_epoch_keeps_a_stopped_run(tiny, tmp_path):
    store = RunStore(tmp_path / "runs")
    stop = threading.Event()
    events = Collector()

    def callback(event):
        events(event)
        if event["type"] == "batch" and event["step"] == 6:  # epoch 2 of 3, step 2 of 4
            stop.set()

    run = training.train(tiny_config(epochs=3, peak_epoch=1), data=tiny, callback=callback, stop_event=stop,
                         store=store)
    assert run.status == "stopped"
    assert events.of("end")[0]["status"] == "stopped"
    assert [b["step"] for b in events.of("batch")][-1] == 6  # ended right after the batch it was asked in
    again = store.get(run.id)
    assert again.status == "stopped"
    assert [h["epoch"] for h in again.history] == [1, 2]
    assert again.history[-1]["partial"] and again.history[-1]["images"] == 100
    assert again.metrics["steps_done"] == 6 and again.metrics["epochs_done"] == 2
    assert again.predictions()["probs"].shape == (100, 10)  # evaluated after stopping
    again.load_model("cpu")  # and the checkpoint is there


def test_callbacks_steer_the_loop_skip_an_epoch_then_stop(tiny, tmp_path):
    """A callback's return value steers: SKIP_EPOCH ends epoch 1 after its 2nd step (epoch 2 runs in full),
    STOP ends the run after step 9; the strongest request of chained callbacks wins."""
    from resnet_lab.events import SKIP_EPOCH, STOP, chain

    events = Collector()

    def skipper(event):
        return SKIP_EPOCH if event["type"] == "batch" and event["step"] == 2 else None

    def stopper(event):
        return STOP if event["type"] == "batch" and event["step"] == 2 + 4 + 1 else None

    run = training.train(tiny_config(epochs=3, peak_epoch=1), data=tiny, callback=chain(events, skipper, stopper),
                         store=RunStore(tmp_path / "runs"))
    rows = run.history
    assert [r["epoch"] for r in rows] == [1, 2, 3] and run.status == "stopped"
    assert [r["images"] for r in rows] == [100, 200, 50]  # 2 of 4 steps, 4 of 4, 1 (then STOP)
    assert [r["partial"] for r in rows] == [True, False, True]
    assert "test_acc" in rows[0]  # a skipped epoch is still evaluated
    assert [b["step"] for b in events.of("batch")][-1] == 7
    assert chain(skipper, stopper)({"type": "batch", "step": 2}) is SKIP_EPOCH
    assert chain(lambda e: STOP, skipper)({"type": "batch", "step": 2}) is STOP  # STOP outranks SKIP_EPOCH


def _failing_build(monkeypatch, exc_factory, at_call: int):
    """Make the k-th forward pass of the next built model raise (or return NaN)."""
    import resnet_lab.models as models

    real_build = models.build
    calls = {"n": 0}

    def build(*args, **kwargs):
        model = real_build(*args, **kwargs)
        forward = model.forward

        def patched(x):
            if model.training:
                calls["n"] += 1
                if calls["n"] == at_call:
                    result = exc_factory(x)
                    if isinstance(result, BaseException):
                        raise result
                    return result
            return forward(x)

        model.forward = patched
        return model

    monkeypatch.setattr(models, "build", build)
    return calls


def test_cuda_out_of_memory_ends_the_run_cleanly(tiny, tmp_path, monkeypatch):
    store = RunStore(tmp_path / "runs")
    earlier = training.train(tiny_config(), data=tiny, store=store)  # another run must not be touched
    _failing_build(monkeypatch, lambda x: torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"),
                   at_call=6)  # epoch 2, step 2
    events = Collector()
    with pytest.raises(training.TrainingError, match="smaller batch size") as info:
        training.train(tiny_config(epochs=2, peak_epoch=1), data=tiny, callback=events, store=store)
    assert "out of memory" in str(info.value)
    end = events.of("end")[0]
    assert end["status"] == "failed" and "smaller batch" in end["error"]
    failed = store.get(end["run_id"])
    assert failed.status == "failed" and "smaller batch" in failed.error
    assert [h["epoch"] for h in failed.history] == [1]  # the finished epoch is kept ...
    failed.load_model("cpu")  # ... with its checkpoint
    assert store.get(earlier.id).status == "done" and store.get(earlier.id).predictions()["probs"].shape == (100, 10)
    assert {r.id for r in store.list()} == {earlier.id, failed.id}


def test_a_diverging_loss_fails_with_advice(tiny, tmp_path, monkeypatch):
    _failing_build(monkeypatch, lambda x: torch.full((len(x), 10), float("nan"), requires_grad=True), at_call=2)
    store = RunStore(tmp_path / "runs")
    with pytest.raises(training.TrainingError, match="lower LR max"):
        training.train(tiny_config(), data=tiny, store=store)
    (run,) = store.list()
    assert run.status == "failed" and "diverged" in run.error


def test_runs_dir_not_writable_fails_before_training(tiny, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    events = Collector()
    with pytest.raises(RunError, match="not writable"):
        # a folder below a plain file can't be created, even by root (chmod would not stop root)
        training.train(tiny_config(), data=tiny, callback=events, store=RunStore(blocker / "runs"))
    assert events.of("batch") == []


def test_runs_dir_becoming_unwritable_mid_run_marks_nothing_as_done(tiny, tmp_path, monkeypatch):
    store = RunStore(tmp_path / "runs")
    real = RunStore.save_predictions

    def broken(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(RunStore, "save_predictions", broken)
    with pytest.raises(training.TrainingError, match="No space left"):
        training.train(tiny_config(), data=tiny, store=store)
    monkeypatch.setattr(RunStore, "save_predictions", real)
    (run,) = store.list()
    assert run.status == "failed" and len(run.history) == 1


def test_host_stats_on_cpu_are_immediate():
    stats = training._HostStats(torch.device("cpu"))
    stats.push(torch.tensor([1.0, 2.0]), {"step": 1})
    assert stats.ready() == [([1.0, 2.0], {"step": 1})]
    assert stats.ready() == []
