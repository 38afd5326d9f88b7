"""Reference runs shipped with the app (resnet_lab.runs.reference): listed read-only, checksummed, fp16 weights.

A reference-format folder is made here from a tiny CPU training; only the last test looks at the real shipped
asset (and skips, saying why, while it is absent)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import load_with_own_cache
from resnet_lab.cli import main
from resnet_lab.runs.reference import open_reference, verify_reference, write_checksums
from resnet_lab.runs import RunError, RunStore

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_data_dir):
    from resnet_lab.training import preset, train

    base = tmp_path_factory.mktemp("reference-src")
    data = load_with_own_cache(tiny_data_dir, base / "cache")
    run = train(preset("quick-cpu", subset=100, test_subset=100, epochs=1, peak_epoch=0.5, batch_size=20,
                       model="resnet20"), data=data, store=RunStore(base / "runs", reference_root=""))
    assert run.status == "done"
    return run


def make_reference(run, dest: Path, half: bool) -> Path:
    """The shipping format: the run folder, weights optionally as fp16, about.json and checksums.json."""
    folder = dest / "reference"
    shutil.copytree(run.path, folder)
    if half:
        state = torch.load(folder / "model.pt", weights_only=True)
        torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, folder / "model.pt")
    (folder / "about.json").write_text(json.dumps({
        "title": "tiny test reference", "command": "python -m resnet_lab train --preset quick-cpu ...",
        "data": "tiny class folders", "hardware": "CPU", "date": "2026-11-30", "top1": run.metrics["top1"],
        "notes": "made by tests/test_reference.py"}))
    write_checksums(folder)
    return folder


@pytest.fixture
def reference(trained, tmp_path, monkeypatch):
    folder = make_reference(trained, tmp_path / "assets", half=True)
    monkeypatch.setenv("RESNET_LAB_REFERENCE", str(folder.parent))
    monkeypatch.setenv("RESNET_LAB_RUNS", str(tmp_path / "empty-runs"))
    return folder


def test_listed_read_only_after_the_users_runs(reference, trained):
    store = RunStore()
    runs = store.list()
    assert [r.id for r in runs] == ["reference"] and runs[0].reference
    assert store.latest(with_predictions=True).id == "reference"  # no run of one's own: the reference
    assert "shipped reference" in runs[0].label and runs[0].about["command"].startswith("python -m resnet_lab")
    with pytest.raises(RunError, match="read-only"):
        store.delete("reference")
    assert (reference / "model.pt").exists()
    # with a run of one's own, that run comes first and the reference stays listed after it
    mine = RunStore(trained.path.parent, reference_root=reference.parent).list()
    assert [r.id for r in mine] == [trained.id, "reference"]


def test_fp16_weights_load_into_the_fp32_model(reference, trained):
    run = RunStore().get("reference")
    assert all(v.dtype == torch.float16 for k, v in run.state_dict().items() if "num_batches" not in k)
    model = run.load_model("cpu")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    original = trained.load_model("cpu")
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), original(x), rtol=3e-3, atol=5e-2)  # fp16 rounding only
    np.testing.assert_array_equal(run.predictions()["probs"], trained.predictions()["probs"])


@pytest.mark.parametrize("damage", ["model.pt", "predictions.npz", "about.json", "added", "no-checksums"])
def test_a_modified_file_is_refused_with_a_clear_message(reference, damage):
    if damage == "added":
        (reference / "extra.txt").write_text("hi")
        expect = "not listed"
    elif damage == "no-checksums":
        (reference / "checksums.json").unlink()
        expect = "missing or empty"
    else:
        with open(reference / damage, "ab") as fh:
            fh.write(b"\0")
        expect = f"{damage} was modified"
    with pytest.raises(RunError, match=expect):
        RunStore().get("reference")
    assert RunStore().list() == []  # left out of the list, never shown as the reference


def test_errors_cli_refuses_a_modified_reference(reference, capsys):
    with open(reference / "predictions.npz", "ab") as fh:
        fh.write(b"\0")
    assert main(["errors", "--run", "reference", "--json"]) != 0
    assert "predictions.npz was modified" in capsys.readouterr().err


def test_a_pickle_with_code_is_refused_even_with_a_matching_checksum(reference):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(reference / "model.pt", "wb") as fh:
        pickle.dump({"w": Evil()}, fh)
    write_checksums(reference)  # someone "fixed" the checksums too: weights_only still refuses code
    verify_reference(reference)
    with pytest.raises(RunError, match="weights_only=True"):
        open_reference(reference).load_model()


def test_errors_cli_opens_the_reference_with_an_empty_runs_folder(reference, trained, capsys):
    assert main(["errors", "--run", "reference", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["run"] == "reference" and out["n"] == len(trained.predictions()["labels"])
    assert out["top1"] == pytest.approx(trained.metrics["top1"], abs=1e-6)
    assert main(["errors", "--json"]) == 0  # "latest" is the reference when the user has no run
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run"] == "reference"


def test_checksum_script_rewrites_and_verifies(reference):
    (reference / "about.json").write_text(json.dumps({"title": "edited on purpose"}))
    with pytest.raises(RunError):
        verify_reference(reference)
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "reference_checksums.py"), str(reference)],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert out.returncode == 0, out.stderr
    verify_reference(reference)
    assert set(json.loads((reference / "checksums.json").read_text())) == {
        "config.json", "status.json", "history.json", "metrics.json", "predictions.npz", "model.pt", "about.json"}


def test_shipped_reference_reaches_85_percent(tmp_path):
    """The real asset: python -m resnet_lab errors --run reference --json on an empty runs folder."""
    folder = ROOT / "assets" / "reference" / "reference"
    assert (folder / "config.json").exists(), "the reference run ships in assets/reference/reference"
    verify_reference(folder)  # the committed files are the checksummed ones
    env = {**os.environ, "RESNET_LAB_RUNS": str(tmp_path / "runs"), "PYTHONPATH": str(ROOT)}
    env.pop("RESNET_LAB_REFERENCE", None)
    out = subprocess.run([sys.executable, "-m", "resnet_lab", "errors", "--run", "reference", "--json"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["n"] == 10_000 and summary["top1"] >= 0.85
