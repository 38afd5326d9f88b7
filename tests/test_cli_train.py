"""`python -m resnet_lab train | runs | bench`: JSON last line, invalid settings → exit 2, Ctrl-C keeps the run,
and the training path imports nothing beyond torch, numpy and tqdm."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resnet_lab.cli import main
from resnet_lab.runs import RunStore

ROOT = Path(__file__).resolve().parent.parent
# tiny data: 200 train images, batch 50 → 4 steps per epoch
TINY = ["--preset", "quick-cpu", "--epochs", "1", "--batch-size", "50", "--pipeline", "torch"]
HEAVY = ("streamlit", "captum", "optuna", "albumentations", "cv2", "plotly", "pandas", "torchinfo", "torch_lr_finder",
         "sqlalchemy", "matplotlib")


def last_json(text: str):
    return json.loads(text.strip().splitlines()[-1])


def test_train_json_line_and_saved_run(tiny_data_env, runs_dir, capsys):
    assert main(["train", *TINY, "--json"]) == 0
    out = capsys.readouterr().out
    result = last_json(out)
    assert len(out.strip().splitlines()) == 1  # --json: nothing but the result on stdout
    assert result["status"] == "done" and 0 <= result["test_acc"] <= 1 and result["seconds"] > 0
    run = RunStore().get(result["run_id"])
    assert run.path.parent == runs_dir and run.metrics["top1"] == result["test_acc"]
    assert run.config["epochs"] == 1 and run.config["batch_size"] == 50 and run.config["preset"] == "quick-cpu"
    assert run.config["peak_epoch"] == pytest.approx(0.2)  # the preset's peak at 1 of 5 epochs, scaled to 1 epoch


def test_train_human_output_has_epochs_and_progress(tiny_data_env, runs_dir, capsys):
    assert main(["train", *TINY, "--epochs", "2", "--seed", "1"]) == 0
    captured = capsys.readouterr()
    assert "epoch   1/2  train loss" in captured.out and "epoch   2/2" in captured.out
    assert "test accuracy" in captured.out
    assert "epoch 1/2" in captured.err  # the tqdm bar
    assert last_json(captured.out)["status"] == "done"


@pytest.mark.parametrize("args,needle", [
    (["--lr-max", "0.1", "--lr-min", "0.5"], "--lr-min: LR min (0.5) must be below LR max (0.1)"),
    (["--epochs", "0"], "--epochs"),
    (["--peak-epoch", "9"], "--peak-epoch"),
    (["--model", "resnet9000"], "unknown model"),
    (["--optimizer", "adagrad"], "--optimizer"),
    (["--label-smoothing", "1.5"], "--label-smoothing"),
    (["--weight-decay", "-0.1"], "--weight-decay"),
    (["--lr-max", "nan"], "--lr-max"),
    (["--preset", "fastest"], "unknown preset"),
    (["--batch-size", "1000"], "larger than the 200 training images"),
])
def test_invalid_hyperparameters_exit_2_with_a_message(args, needle, tiny_data_env, runs_dir, capsys):
    assert main(["train", *TINY, *args]) == 2
    err = capsys.readouterr().err
    assert needle in err, err
    assert "Traceback" not in err
    assert RunStore().list() == []


def test_unparseable_numbers_are_argparse_errors(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--epochs", "many"])
    assert info.value.code == 2
    assert "--epochs" in capsys.readouterr().err


def test_bad_data_source_is_a_clear_error(tmp_path, runs_dir, capsys, monkeypatch):
    monkeypatch.setenv("RESNET_LAB_CACHE", str(tmp_path / "cache"))
    assert main(["train", *TINY, "--data", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "RESNET_LAB_DATA" in err


def test_unwritable_runs_dir_is_a_clear_error(tiny_data_env, tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("RESNET_LAB_RUNS", str(tmp_path / "file" / "runs"))
    assert main(["train", *TINY]) == 2
    assert "not writable" in capsys.readouterr().err


def _env(tiny_data_dir, tmp_path) -> dict:
    return dict(os.environ, RESNET_LAB_DATA=str(tiny_data_dir), RESNET_LAB_CACHE=str(tmp_path / "cache"),
                RESNET_LAB_RUNS=str(tmp_path / "runs"), PYTHONUNBUFFERED="1")


def test_train_path_imports_no_heavy_packages(tiny_data_dir, tmp_path):
    code = ("import sys\nfrom resnet_lab.cli import main\n"
            f"rc = main(['train', *{TINY!r}, '--json'])\n"
            f"print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules])\n"
            "sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(tiny_data_dir, tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "HEAVY []" in proc.stdout, proc.stdout


def test_ctrl_c_stops_cooperatively_and_keeps_the_run(tiny_data_dir, tmp_path):
    env = _env(tiny_data_dir, tmp_path)
    cmd = [sys.executable, "-m", "resnet_lab", "train", *TINY, "--epochs", "30", "--batch-size", "20"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    deadline = time.monotonic() + 240
    try:
        for line in proc.stdout:  # wait until the first epoch has finished
            lines.append(line)
            if line.startswith("epoch   1/30"):
                break
            assert time.monotonic() < deadline, "no epoch finished in time"
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "stopping after this batch" in err and "Traceback" not in err
    result = last_json(rest)
    assert result["status"] == "stopped"
    run = RunStore(tmp_path / "runs").get(result["run_id"])
    assert run.status == "stopped" and 1 <= len(run.history) < 30
    assert run.has_checkpoint and run.predictions()["probs"].shape == (100, 10)


def test_runs_list_compare_delete(tiny_data_env, runs_dir, capsys):
    assert main(["runs"]) == 0
    assert "no runs" in capsys.readouterr().out
    ids = []
    for seed in ("0", "1"):
        assert main(["train", *TINY, "--seed", seed, "--json"]) == 0
        ids.append(last_json(capsys.readouterr().out)["run_id"])
    assert main(["runs", "--json"]) == 0
    listed = last_json(capsys.readouterr().out)
    assert [r["run"] for r in listed] == ids[::-1] and all(r["status"] == "done" for r in listed)
    assert main(["runs"]) == 0
    human = capsys.readouterr().out
    assert ids[0] in human and ids[1] in human and "2 run(s)" in human
    assert main(["runs", "--compare", *ids]) == 0
    table = capsys.readouterr().out
    assert "epoch 1 test" in table and "top-1" in table
    assert main(["runs", "--compare", *ids, "--json"]) == 0
    rows = last_json(capsys.readouterr().out)
    assert [r["run"] for r in rows] == ids and [r["seed"] for r in rows] == [0, 1]
    assert main(["runs", "--delete", ids[0]]) == 0
    assert [r.id for r in RunStore().list()] == [ids[1]]
    capsys.readouterr()
    assert main(["runs", "--delete", "no-such-run"]) == 2
    assert "no run 'no-such-run'" in capsys.readouterr().err
    assert main(["runs", "--delete", "../etc"]) == 2


def test_bench_train_prints_one_json_line(tiny_data_env, runs_dir, capsys):
    assert main(["bench", "train", *TINY, "--seeds", "2"]) == 0
    captured = capsys.readouterr()
    result = last_json(captured.out)
    assert len(captured.out.strip().splitlines()) == 1
    assert result["bench"] == "train" and result["seeds"] == 2 and len(result["per_seed"]) == 2
    assert [r["seed"] for r in result["per_seed"]] == [0, 1]
    assert result["accuracy_mean"] == pytest.approx(sum(r["accuracy"] for r in result["per_seed"]) / 2)
    for key in ("seconds_total", "seconds_per_epoch_steady", "images_per_s", "device"):
        assert result[key], key
    assert result["warmup_runs"] == 0 and result["device"].startswith("cpu")
    assert RunStore().list() == []  # bench runs go to a temporary folder
