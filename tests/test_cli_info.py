"""`python -m resnet_lab info`: versions, device, dataset status; with --json the last stdout line is one object."""

from __future__ import annotations

import json
import subprocess
import sys

from resnet_lab.cli import main
from resnet_lab.data import CLASSES


def info_json(capsys, *extra) -> dict:
    assert main(["info", "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_info_json_reports_the_tiny_dataset(tiny_data_env, capsys):
    info = info_json(capsys)
    ds = info["dataset"]
    assert ds["ok"], ds["error"]
    assert ds["source"] == str(tiny_data_env)
    assert (ds["train_size"], ds["test_size"]) == (200, 100)
    assert ds["classes"] == list(CLASSES)
    assert info["packages"]["torch"] and info["packages"]["numpy"] and info["python"]
    assert "streamlit" in info["optional"]
    assert info["device"]["device"]


def test_info_json_reports_a_missing_source_without_failing(tmp_path, capsys):
    missing = tmp_path / "nothing-here"
    ds = info_json(capsys, "--data", str(missing))["dataset"]
    assert not ds["ok"]
    assert str(missing) in ds["error"] and "RESNET_LAB_DATA" in ds["error"]


def test_info_human_output(tiny_data_env, capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "train:   200 images" in out and "test:    100 images" in out
    assert "airplane, automobile" in out


def test_info_entry_point_and_full_archive(shared_archive):
    # Through the real entry point, as a student types it; RESNET_LAB_DATA (set by make test) is the archive.
    proc = subprocess.run([sys.executable, "-m", "resnet_lab", "info", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    ds = json.loads(proc.stdout.strip().splitlines()[-1])["dataset"]
    assert ds["ok"], ds["error"]
    assert ds["source"] == str(shared_archive) or ds["path"] == str(shared_archive)
    assert (ds["train_size"], ds["test_size"]) == (50_000, 10_000)
    assert ds["classes"] == list(CLASSES)
