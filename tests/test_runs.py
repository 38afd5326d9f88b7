"""The runs store without training: layout, atomic writes, safe loading of foreign or tampered files."""

from __future__ import annotations

import os
import pickle
import time

import numpy as np
import pytest
import torch

from resnet_lab.models import build
from resnet_lab.runs import RunError, RunStore, atomic_write_json, load_state_dict

CONFIG = {"model": "resnet20", "classes": [f"c{i}" for i in range(10)], "lr_max": 0.1, "optimizer": "sgd"}


def finished_run(store: RunStore, top1: float = 0.5, config: dict | None = None):
    run = store.create(dict(config or CONFIG))
    store.save_history(run, [{"epoch": 1, "train_loss": 2.0, "train_acc": 0.2, "test_loss": 1.9, "test_acc": top1}])
    store.save_checkpoint(run, build("resnet20").state_dict())
    probs = np.full((4, 10), 0.1, np.float32)
    store.save_predictions(run, probs, [0, 1, 2, 3], [10, 11, 12, 13])
    store.save_metrics(run, {"top1": top1, "top5": 0.9, "seconds_total": 1.5})
    store.set_status(run, "done")
    return run


class Boom:
    """A pickle that runs code when loaded by an unsafe loader: it creates a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_create_list_get_compare_delete(tmp_path):
    store = RunStore(tmp_path / "runs")
    a = finished_run(store, 0.4)
    time.sleep(0.01)
    b = finished_run(store, 0.6)
    assert a.id != b.id
    assert [r.id for r in store.list()] == [b.id, a.id]  # newest first
    assert store.latest().id == b.id and store.latest(with_predictions=True).id == b.id
    got = store.get(a.id)
    assert got.config == CONFIG and got.status == "done" and got.metrics["top1"] == 0.4
    assert got.history[0]["test_acc"] == 0.4 and got.has_checkpoint and got.has_predictions
    preds = got.predictions()
    assert preds["probs"].shape == (4, 10) and list(preds["indices"]) == [10, 11, 12, 13]
    rows = store.compare([a.id, b.id])
    assert [r["top1"] for r in rows] == [0.4, 0.6] and rows[0]["test_acc"] == [0.4]
    assert "resnet20" in got.label and "40.0%" in got.label
    store.delete(a.id)
    assert [r.id for r in store.list()] == [b.id]
    assert not a.path.exists()
    with pytest.raises(RunError, match="no run"):
        store.get(a.id)


def test_runs_dir_comes_from_the_environment(runs_dir):
    run = RunStore().create(CONFIG)
    assert run.path.parent == runs_dir


def test_reloaded_model_gives_identical_outputs(tmp_path):
    store = RunStore(tmp_path)
    model = build("resnet20").eval()
    run = store.create(CONFIG)
    store.save_checkpoint(run, model.state_dict())
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(store.get(run.id).load_model("cpu")(x), model(x))


def test_atomic_write_keeps_the_old_file_when_a_write_fails(tmp_path):
    path = tmp_path / "history.json"
    atomic_write_json(path, [1, 2, 3])
    with pytest.raises(TypeError):
        atomic_write_json(path, [object()])  # not serialisable: fails during the write
    assert path.read_text().replace("\n", "").replace(" ", "") == "[1,2,3]"
    assert [p.name for p in tmp_path.iterdir()] == ["history.json"]  # no temp file left behind


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    store = RunStore(tmp_path)
    run = finished_run(store)
    data = run.checkpoint_path.read_bytes()
    run.checkpoint_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RunError, match="truncated, corrupt"):
        store.get(run.id).load_model()
    run.checkpoint_path.write_bytes(b"")
    with pytest.raises(RunError, match="not a loadable"):
        load_state_dict(run.checkpoint_path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note about pickle.dump's protocol
@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
def test_checkpoint_with_code_in_it_is_refused_and_the_code_never_runs(tmp_path, how):
    store = RunStore(tmp_path / "runs")
    run = finished_run(store)
    marker = tmp_path / "pwned"
    payload = {"conv.weight": torch.zeros(1), "evil": Boom(marker)}
    with open(run.checkpoint_path, "wb") as fh:
        torch.save(payload, fh) if how == "torch.save" else pickle.dump(payload, fh)
    with pytest.raises(RunError, match="refused for safety"):
        store.get(run.id).load_model()
    assert not marker.exists(), "loading the checkpoint ran code from it"
    # the control: an unsafe loader would have run it
    with open(run.checkpoint_path, "rb") as fh:
        torch.load(fh, weights_only=False) if how == "torch.save" else pickle.load(fh)
    assert marker.exists()


def test_foreign_checkpoints_are_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save([torch.zeros(2)], path)  # tensors, but not a state_dict
    with pytest.raises(RunError, match="does not hold a state_dict"):
        load_state_dict(path)
    path.write_text("hello, I am text")
    with pytest.raises(RunError, match="not a loadable"):
        load_state_dict(path)
    with pytest.raises(RunError, match="no checkpoint"):
        load_state_dict(tmp_path / "missing.pt")


def test_checkpoint_of_another_model_does_not_fit(tmp_path):
    store = RunStore(tmp_path)
    run = store.create(CONFIG)
    store.save_checkpoint(run, build("resnet32").state_dict())
    with pytest.raises(RunError, match="does not fit model resnet20"):
        store.get(run.id).load_model()


def test_tampered_config_and_predictions_are_clear_errors(tmp_path):
    store = RunStore(tmp_path)
    run = finished_run(store, config={**CONFIG, "model": "no-such-net"})
    with pytest.raises(RunError, match="cannot build model"):
        store.get(run.id).load_model()
    np.savez(run.path / "predictions.npz", probs=np.array([object()], dtype=object), labels=[0], indices=[0])
    with pytest.raises(RunError, match="damaged"):
        store.get(run.id).predictions()
    (run.path / "metrics.json").write_text("{ not json")
    with pytest.raises(RunError, match="not readable JSON"):
        store.get(run.id)
    # a damaged run does not break the listing, and is listed as damaged (issue 12 case 16), not hidden
    assert store.list() == []  # pages pick from readable runs only
    (listed,) = store.list(include_damaged=True)
    assert listed.status == "damaged" and "metrics.json" in listed.error and "model.pt" in listed.intact


def test_invalid_run_ids_never_leave_the_runs_folder(tmp_path):
    store = RunStore(tmp_path / "runs")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "config.json").write_text("{}")
    for bad in ("../outside", "..", "/etc", "a/b", "", ".hidden"):
        with pytest.raises(RunError, match="not a valid run id"):
            store.get(bad)
        with pytest.raises(RunError):
            store.delete(bad)
    assert (tmp_path / "outside" / "config.json").exists()


def test_a_run_whose_process_died_reads_interrupted(tmp_path):
    store = RunStore(tmp_path)
    run = store.create(CONFIG)
    assert store.get(run.id).status == "running"  # this process is alive
    with pytest.raises(RunError, match="still training"):
        store.delete(run.id)
    status = (run.path / "status.json").read_text().replace(f'"pid": {os.getpid()}', '"pid": 999999999')
    (run.path / "status.json").write_text(status)
    assert store.get(run.id).status == "interrupted"
    store.delete(run.id)  # an interrupted run can be deleted


def test_unwritable_runs_folder_is_reported(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunError, match="not writable.*RESNET_LAB_RUNS"):
        RunStore(tmp_path / "file" / "runs").create(CONFIG)
    assert RunStore(tmp_path / "missing").list() == []
