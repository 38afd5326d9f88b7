"""Issue 12: every bad input a clear message, every fault a clean recovery.

One test (or a few) per case of the probe's catalogue; docs/reliability.md lists the same cases. Each test drives
the library or the CLI the way the probe did and checks the user gets a message (never a traceback) and loses
nothing. Faults are injected by monkeypatching (no real full disk, no chmod: the tests run as root too).
"""

from __future__ import annotations

import errno
import io
import os
import tarfile
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

from resnet_lab import data as D
from resnet_lab.cli import build_parser, main
from resnet_lab.runs import RunError, RunStore

CLASSES2 = ["cat", "dog"]


def cli(capsys, *argv) -> tuple[int, str, str]:
    """Run the CLI in-process: (exit code, stdout, stderr); an argparse exit counts as its code."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out
    return rc, out, err


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("RESNET_LAB_CACHE", str(path))
    D.clear_memory_cache()
    yield path
    D.clear_memory_cache()


def small_dataset(root: Path, classes=CLASSES2, n_train: int = 4, n_test: int = 2) -> Path:
    return D.make_class_folder_dataset(root, n_train, n_test, classes=classes, seed=1)


def png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")  # uint16 (H, W) -> a 16-bit grayscale PNG
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ data sources

def _deny_listing(monkeypatch, denied: Path) -> None:
    """Listing `denied` raises PermissionError, as for a folder without read permission (we may run as root)."""
    real_scandir, real_listdir = os.scandir, os.listdir

    def check(path):
        if Path(os.fspath(path)).resolve() == denied.resolve():
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))

    def scandir(path="."):
        check(path)
        return real_scandir(path)

    def listdir(path="."):
        check(path)
        return real_listdir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "listdir", listdir)


def test_case01_unreadable_class_folder_is_a_data_error_naming_it(tmp_path, cache, monkeypatch):
    root = small_dataset(tmp_path / "src")
    _deny_listing(monkeypatch, root / "train" / "dog")
    with pytest.raises(D.DataError) as err:
        D.load_dataset(str(root))
    assert "train/dog" in str(err.value) and "cannot be read" in str(err.value)
    status = D.dataset_status(str(root))
    assert not status["ok"] and "train/dog" in status["error"] and "PermissionError" not in status["error"]


def _corrupt(file: Path, how: str) -> None:
    raw = bytearray(file.read_bytes())
    if how == "truncate":
        file.write_bytes(bytes(raw[: len(raw) // 2]))
    else:  # 16 bytes overwritten in the middle of the pixels
        mid = len(raw) // 3
        raw[mid:mid + 16] = bytes((b ^ 0x5A) for b in raw[mid:mid + 16])
        file.write_bytes(bytes(raw))


@pytest.mark.parametrize("how", ["truncate", "overwrite16"])
def test_case02_damaged_decoded_cache_is_discarded_and_decoded_again_once(tmp_path, cache, how):
    root = small_dataset(tmp_path / "src")
    first = D.load_dataset(str(root))
    files = list((cache / "decoded").glob("*.npz"))
    assert len(files) == 1
    _corrupt(files[0], how)
    D.clear_memory_cache()
    before = D.decode_count()
    with pytest.warns(D.DataWarning, match="damaged"):
        again = D.load_dataset(str(root))
    assert D.decode_count() == before + 1
    assert np.array_equal(again.train_x, first.train_x) and np.array_equal(again.test_y, first.test_y)
    D.clear_memory_cache()
    with warnings.catch_warnings():
        warnings.simplefilter("error", D.DataWarning)  # said once: the fresh cache is fine
        D.load_dataset(str(root))
    assert D.decode_count() == before + 1


def test_case03_cache_env_pointing_at_a_file_is_a_clear_message(tmp_path, monkeypatch, capsys):
    root = small_dataset(tmp_path / "src")
    not_a_dir = tmp_path / "cachefile"
    not_a_dir.write_text("x")
    monkeypatch.setenv("RESNET_LAB_CACHE", str(not_a_dir))
    D.clear_memory_cache()
    with pytest.raises(D.DataError, match="RESNET_LAB_CACHE"):
        D.load_dataset(str(root))
    rc, out, err = cli(capsys, "info", "--data", root)
    assert rc == 0 and "RESNET_LAB_CACHE" in out
    rc, out, err = cli(capsys, "train", "--data", root, "--epochs", "1", "--model", "resnet20")
    assert rc == 2 and "RESNET_LAB_CACHE" in err


def test_case04_a_non_dataset_folder_is_never_walked_deeply(tmp_path, cache, monkeypatch):
    top = tmp_path / "everything"
    for branch in ("x", "y"):
        deep = top / branch / "deeper" / "deepest"
        deep.mkdir(parents=True)
        (deep / "file.txt").write_text("x")
    listed: list[Path] = []
    real_scandir, real_listdir = os.scandir, os.listdir

    def scandir(path="."):
        listed.append(Path(os.fspath(path)))
        return real_scandir(path)

    def listdir(path="."):
        listed.append(Path(os.fspath(path)))
        return real_listdir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "listdir", listdir)
    with pytest.raises(D.DataError, match="no train/"):
        D.load_dataset(str(top))
    assert listed, "the scan lists the folder itself"
    assert not [p for p in listed if "deeper" in p.parts], "stopped at the first level that isn't the layout"


def test_case04_no_module_wide_lock_while_one_source_is_read(tmp_path, cache, monkeypatch):
    fast = small_dataset(tmp_path / "fast")
    slow = small_dataset(tmp_path / "slow", n_train=3)
    D.load_dataset(str(fast))  # memoised: a later load is instant
    entered, release, fast_done = threading.Event(), threading.Event(), threading.Event()
    real_scan = D.layout._scan_directory

    def scan(path, *a, **k):
        if Path(path).resolve() == slow.resolve():
            entered.set()
            release.wait(60)
        return real_scan(path, *a, **k)

    for module in (D.cache, D.sources):  # where a folder's layout is read
        monkeypatch.setattr(module, "_scan_directory", scan)
    errors = []

    def load(src, done=None):
        try:
            D.load_dataset(str(src))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        if done:
            done.set()

    t_slow = threading.Thread(target=load, args=(slow,))
    t_slow.start()
    assert entered.wait(60)
    t_fast = threading.Thread(target=load, args=(fast, fast_done))
    t_fast.start()
    finished_while_slow_was_reading = fast_done.wait(30)
    release.set()
    t_slow.join(60)
    t_fast.join(60)
    assert finished_while_slow_was_reading, "another source's load waited for a lock held during I/O"
    assert not errors


def test_case05_16bit_grayscale_png_is_converted_like_an_upload(tmp_path, cache):
    from resnet_lab.uploads import load_upload

    root = small_dataset(tmp_path / "src")
    gray16 = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 64)  # 0 .. 65472: mean ~ 32736
    data = png_bytes(gray16)
    (root / "train" / "cat" / "zz-16bit.png").write_bytes(data)
    ds = D.load_dataset(str(root))
    idx = [i for i in range(ds.n_train) if ds.train_y[i] == 0][-1]  # sorted by name: zz- is the cat's last
    pixels = ds.train_x[idx]
    upload, _notes = load_upload(data, "x.png")
    assert 120 < pixels.mean() < 136
    assert np.array_equal(pixels, upload)


def test_case06_escape_codes_in_class_names_are_not_printed_raw(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RESNET_LAB_RUNS", str(tmp_path / "runs"))
    store = RunStore()
    evil = "cat\x1b[2J\x1b]0;pwned\x07"
    run = store.create({"model": "resnet20", "classes": [evil, "dog"]})
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]], np.float32)
    store.save_predictions(run, probs, [0, 1, 1], [0, 1, 2])
    store.set_status(run, "done")
    rc, out, err = cli(capsys, "errors", "--run", run.id)
    assert rc == 0
    assert "\x1b" not in out and "\x07" not in out and "cat" in out
    # and a data error naming such a folder
    root = small_dataset(tmp_path / "src")
    (root / "train" / "bad\x1b[31m").mkdir()
    with pytest.raises(D.DataError) as exc:
        D.load_dataset(str(root))
    assert "\x1b" not in str(exc.value)


def test_case07_oversized_members_and_images_are_refused_with_a_message(tmp_path, cache, monkeypatch):
    for module in (D.dataset, D.layout, D.cache):  # the limits, where each is read
        for name, value in (("MAX_IMAGE_BYTES", 20_000), ("MAX_IMAGE_PIXELS", 64 * 64)):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, value)
    root = small_dataset(tmp_path / "src")
    noise = np.random.default_rng(0).integers(0, 256, (100, 100, 3), dtype=np.uint8)
    big = png_bytes(noise)
    assert len(big) > 20_000
    (root / "train" / "cat" / "zz-big-file.png").write_bytes(big)
    wide = png_bytes(np.zeros((70, 70, 3), np.uint8))
    assert len(wide) < 20_000
    (root / "train" / "dog" / "zz-wide.png").write_bytes(wide)
    archive = D.archive_class_folders(root, tmp_path / "src.tar")
    opened: list[str] = []
    real_extract = tarfile.TarFile.extractfile

    def extractfile(self, member):
        opened.append(member.name if hasattr(member, "name") else str(member))
        return real_extract(self, member)

    monkeypatch.setattr(tarfile.TarFile, "extractfile", extractfile)
    for source in (root, archive):
        D.clear_memory_cache()
        with pytest.warns(D.DataWarning, match="limit"):
            ds = D.load_dataset(str(source))
        assert ds.n_train == 8  # the 8 normal images; both oversized ones refused
        assert "over the per-image limit" in ds.source
    assert not [n for n in opened if "zz-big-file" in n], "an oversized member is never read"


def test_case08_fewer_than_two_classes_refused_and_imbalance_warned(tmp_path, cache):
    one = small_dataset(tmp_path / "one", classes=["cat"])
    with pytest.raises(D.DataError, match="at least 2 classes"):
        D.load_dataset(str(one))
    lop = small_dataset(tmp_path / "lop", n_train=12)
    for f in sorted((lop / "train" / "dog").iterdir())[1:]:
        f.unlink()
    with pytest.warns(D.DataWarning, match="imbalance"):
        ds = D.load_dataset(str(lop))
    assert any("imbalance" in n for n in ds.notes)


# ------------------------------------------------------------------------------------------------ CLI arguments

def test_case09_absurd_epochs_rejected_before_anything_is_allocated(tmp_path, cache, monkeypatch, capsys):
    from resnet_lab.training import TrainConfig

    assert "epochs" in TrainConfig(epochs=10**12).validate()
    monkeypatch.setenv("RESNET_LAB_RUNS", str(tmp_path / "runs"))
    root = small_dataset(tmp_path / "src")
    rc, out, err = cli(capsys, "train", "--data", root, "--epochs", "1000000000000", "--model", "resnet20")
    assert rc == 2 and "--epochs" in err


@pytest.mark.parametrize("command", ["train", "lr-find"])
def test_case10_seed_out_of_range_is_an_argument_error(command, tmp_path, monkeypatch, capsys):
    from resnet_lab.training import TrainConfig

    monkeypatch.setenv("RESNET_LAB_RUNS", str(tmp_path / "runs"))
    rc, out, err = cli(capsys, command, "--seed", "1180591620717411303424", "--data", tmp_path)
    assert rc == 2 and "seed" in err and str(2**63 - 1) in err
    assert "seed" in TrainConfig(seed=2**63).validate() and "seed" not in TrainConfig(seed=2**63 - 1).validate()


@pytest.mark.parametrize("name", ["torchvision:get_model", "torchvision:list_models", "torchvision:ResNet",
                                  "torchvision:Weights"])
def test_case11_rf_accepts_only_model_builders(name, capsys):
    from resnet_lab.receptive_field import RFError, receptive_fields

    with pytest.raises(RFError, match="resnet50"):
        receptive_fields(name, 224)
    rc, out, err = cli(capsys, "rf", "--model", name)
    assert rc == 2 and "vgg16" in err


def test_case12_one_device_parser_for_every_command(capsys):
    from resnet_lab.config import parse_device

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    with_device = [name for name, p in sub.choices.items()
                   if any("--device" in a.option_strings for a in p._actions)]
    assert {"train", "lr-find", "degradation", "search", "bench"} <= set(with_device)
    for name in with_device:
        extra = {"bench": ["train"], "landscape": ["--run", "some-run"]}.get(name, [])
        with pytest.raises(SystemExit) as exc:
            parser.parse_args([name, *extra, "--device", "tpu"])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "auto, cpu or cuda" in err, name
        assert parser.parse_args([name, *extra, "--device", "cpu"]).device == "cpu"
    for bad in ("tpu", "cuda:x", "cuda:-1", "", "cpu:0:1"):
        with pytest.raises(ValueError, match="auto, cpu or cuda"):
            parse_device(bad if bad else "   ")


# ------------------------------------------------------------------------------------------------ runs store

def _run_with_predictions(store: RunStore, probs, labels, classes=("a", "b", "c")):
    run = store.create({"model": "resnet20", "classes": list(classes)})
    store.save_predictions(run, probs, labels, list(range(len(labels))))
    store.save_metrics(run, {"top1": 0.5, "seconds_total": 1.0})
    store.set_status(run, "done")
    return run


def test_case13_predictions_with_labels_out_of_range_are_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RESNET_LAB_RUNS", str(tmp_path / "runs"))
    store = RunStore()
    run = _run_with_predictions(store, np.full((3, 3), 1 / 3, np.float32), [0, 7, 1])
    with pytest.raises(RunError, match="label"):
        store.get(run.id).predictions()
    rc, out, err = cli(capsys, "errors", "--run", run.id)
    assert rc == 2 and "label" in err


def test_case14_non_finite_probabilities_are_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RESNET_LAB_RUNS", str(tmp_path / "runs"))
    store = RunStore()
    run = _run_with_predictions(store, np.full((3, 3), np.nan, np.float32), [0, 1, 2])
    with pytest.raises(RunError, match="not finite"):
        store.get(run.id).predictions()
    rc, out, err = cli(capsys, "errors", "--run", run.id)
    assert rc == 2 and "not finite" in err and "airplane" not in out


def test_case15_one_run_with_wrong_types_never_hides_the_others(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RESNET_LAB_RUNS", str(tmp_path / "runs"))
    store = RunStore()
    good = _run_with_predictions(store, np.eye(3, dtype=np.float32), [0, 1, 2])
    bad = _run_with_predictions(store, np.eye(3, dtype=np.float32), [0, 1, 2])
    store.save_metrics(bad, {"top1": "high", "seconds_total": "fast"})
    (bad.path / "history.json").write_text('{"epoch": "one"}')
    rc, out, err = cli(capsys, "runs")
    assert rc == 0 and good.id in out and bad.id in out
    rc, out, err = cli(capsys, "runs", "--compare", good.id, bad.id)
    assert rc == 0 and good.id in out


def test_case16_damaged_runs_are_listed_deletable_and_recoverable(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RESNET_LAB_RUNS", str(tmp_path / "runs"))
    store = RunStore()
    probs = np.eye(3, dtype=np.float32)[[0, 1, 1]]
    damaged = _run_with_predictions(store, probs, [0, 1, 2])
    (damaged.path / "metrics.json").write_text("{ not json")
    (damaged.path / "status.json").write_bytes(b"\x00" * 16)
    gone = _run_with_predictions(store, probs, [0, 1, 2])
    (gone.path / "config.json").write_text("[1, 2")
    listed = {r.id: r for r in store.list(include_damaged=True)}
    assert listed[damaged.id].status == "damaged" and "metrics.json" in listed[damaged.id].error
    assert "predictions.npz" in listed[damaged.id].intact
    rc, out, err = cli(capsys, "runs")
    assert rc == 0 and "damaged" in out and damaged.id in out and gone.id in out
    rc, out, err = cli(capsys, "runs", "--recover", damaged.id)
    assert rc == 0, err
    fixed = store.get(damaged.id)
    assert fixed.status != "damaged" and abs(fixed.metrics["top1"] - 2 / 3) < 1e-9
    assert fixed.predictions()["probs"].shape == (3, 3)
    rc, out, err = cli(capsys, "runs", "--delete", gone.id)
    assert rc == 0 and not gone.path.exists()


def test_case17_delete_on_a_read_only_folder_or_a_symlink_is_a_clear_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RESNET_LAB_RUNS", str(tmp_path / "runs"))
    store = RunStore()
    run = _run_with_predictions(store, np.eye(3, dtype=np.float32), [0, 1, 2])
    import shutil

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(a[0]) if a else "")

    with monkeypatch.context() as m:
        m.setattr(os, "rename", denied)
        m.setattr(os, "replace", denied)
        m.setattr(shutil, "rmtree", denied)
        rc, out, err = cli(capsys, "runs", "--delete", run.id)
    assert rc == 2 and "cannot delete" in err and "ermission denied" in err
    assert (run.path / "predictions.npz").exists()  # nothing lost
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "config.json").write_text("{}")
    (outside / "keep.txt").write_text("keep")
    (store.root / "20990101-000000-link-abcd").symlink_to(outside)
    rc, out, err = cli(capsys, "runs", "--delete", "20990101-000000-link-abcd")
    assert rc == 2 and "symbolic link" in err
    assert (outside / "keep.txt").read_text() == "keep"
    rc, out, err = cli(capsys, "runs")
    assert rc == 0 and run.id in out


def test_case18_disk_full_says_so_keeps_the_last_checkpoint_and_leaves_no_debris(tmp_path, cache, monkeypatch):
    import torch

    from resnet_lab import training

    torch.set_num_threads(1)
    root = small_dataset(tmp_path / "src", n_train=16, n_test=4)
    store = RunStore(tmp_path / "runs")
    saved = {"model.pt": 0}
    full = {"on": False}
    real_fsync = os.fsync

    def fsync(fd):
        target = os.readlink(f"/proc/self/fd/{fd}")
        if full["on"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)
        if ".model.pt." in target:
            saved["model.pt"] += 1
            if saved["model.pt"] == 2:
                full["on"] = True  # the disk fills up right after the epoch-2 checkpoint

    monkeypatch.setattr(os, "fsync", fsync)
    config = training.TrainConfig(model="resnet20", epochs=4, peak_epoch=1, batch_size=16, data=str(root),
                                  device="cpu", pipeline="torch", augment=False, eval_every=0)
    with pytest.raises(training.TrainingError) as exc:
        training.train(config, store=store)
    msg = str(exc.value)
    assert "is full" in msg and "MB free" in msg and "epoch 2" in msg and str(store.root) in msg
    (run_dir,) = [p for p in store.root.iterdir() if not p.name.startswith(".write-test")]
    assert (run_dir / "model.pt").exists()
    assert not list(store.root.rglob("*.tmp"))
    # full from the start: no half-created (hidden, empty) run folder is left behind
    full["on"] = True
    with pytest.raises((training.TrainingError, RunError), match="is full"):
        training.train(config, store=store)
    assert [p.name for p in store.root.iterdir()] == [run_dir.name]
    assert not list(store.root.rglob("*.tmp"))


def test_case18_torch_save_errors_on_a_full_disk_read_as_disk_full(tmp_path, monkeypatch):
    """torch.save straight into a file reports a full disk as '[enforce fail at inline_container.cc]'."""
    import torch

    store = RunStore(tmp_path / "runs")
    run = store.create({"model": "resnet20"})

    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(RunError, match="is full"):
        store.save_checkpoint(run, {"w": torch.zeros(3)})
    assert not list(run.path.glob("*.tmp")) and not list(run.path.glob(".*.tmp"))


def test_case19_inspect_out_that_cannot_be_written_is_a_clear_message(tmp_path, cache, monkeypatch, capsys):
    from resnet_lab.models import build

    monkeypatch.setenv("RESNET_LAB_RUNS", str(tmp_path / "runs"))
    root = small_dataset(tmp_path / "src")
    store = RunStore()
    run = store.create({"model": "resnet20", "classes": CLASSES2, "data": str(root), "data_source": str(root)})
    store.save_checkpoint(run, build("resnet20", num_classes=2).state_dict())
    store.save_predictions(run, np.full((4, 2), 0.5, np.float32), [0, 0, 1, 1], [0, 1, 2, 3])
    store.set_status(run, "done")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "image0.png").mkdir()  # the file to write is a folder: the write fails like a read-only folder
    rc, out, err = cli(capsys, "inspect", "--run", run.id, "--image", "0", "--data", root, "--out", out_dir)
    assert rc == 2 and "--out" in err


# ------------------------------------------------------------------------------------------------ search storage

def test_case20_the_whole_password_is_masked():
    from resnet_lab.experiments.search import mask_url

    masked = mask_url("postgresql://lab:sec@retpw@127.0.0.1:5999/optuna")
    assert "sec" not in masked and "retpw" not in masked
    assert masked.endswith("@127.0.0.1:5999/optuna") and masked.startswith("postgresql://")
    assert "hunter2" not in mask_url("postgresql+psycopg://u:hun/ter2@h/db") and "ter2" not in \
        mask_url("postgresql+psycopg://u:hun/ter2@h/db")


def test_case20_a_driver_error_never_quotes_part_of_the_password():
    pytest.importorskip("optuna")
    from resnet_lab.experiments import search as S

    # psycopg splits at the first '@' and reports host 'tPw9@127.0.0.1' as unresolvable
    with pytest.raises(S.SearchError) as exc:
        S.open_storage("postgresql://lab:s3cr@tPw9@127.0.0.1:5999/optuna", heartbeat=None)
    assert "s3cr" not in str(exc.value) and "tPw9" not in str(exc.value) and "***" in str(exc.value)


@pytest.fixture
def study(tmp_path, monkeypatch):
    pytest.importorskip("optuna")
    from resnet_lab.experiments import search as S

    monkeypatch.setenv("RESNET_LAB_RUNS", str(tmp_path / "runs"))
    storage = f"sqlite:///{tmp_path / 'search.db'}"
    S.open_study(S.default_config(cuda=False), storage=storage, study_name="s1")
    calls = []
    monkeypatch.setattr(S, "run_search", lambda config, **k: calls.append(config) or {
        "best": None, "states": {}, "status": "done", "study": "s1", "trials": 0, "this_worker": {}, "seconds": 0})
    return storage, calls


def test_case21_joining_a_study_with_invalid_settings_is_refused(study, capsys):
    storage, calls = study
    rc, out, err = cli(capsys, "search", "--storage", storage, "--study", "s1", "--lr-range", "5", "1",
                       "--device", "cpu")
    assert rc == 2 and "lr-range" in err.replace("lr_max", "lr-range") and not calls


def test_case21_joining_with_other_valid_settings_says_which_win(study, capsys):
    storage, calls = study
    rc, out, err = cli(capsys, "search", "--storage", storage, "--study", "s1", "--lr-range", "0.001", "0.5",
                       "--device", "cpu")
    assert rc == 0 and calls
    assert "study's settings win" in err and "you gave 0.001" in err
    assert calls[0].space["lr_max"].high != 0.5  # the study's range is the one searched


# ------------------------------------------------------------------------------------------------ server paths

def test_case22_messages_name_only_what_the_user_typed(tmp_path, cache, monkeypatch):
    from resnet_lab.config import cache_dir

    # a link: the message names the link as typed, never where it points
    target = tmp_path / "hidden-target-dir"
    target.mkdir()
    (target / "notes.txt").write_text("x")
    link = tmp_path / "typed-link"
    link.symlink_to(target)
    with pytest.raises(D.DataError) as exc:
        D.load_dataset(str(link))
    assert str(link) in str(exc.value) and "hidden-target-dir" not in str(exc.value)
    assert str(cache_dir()) not in str(exc.value)
    # /proc/self resolves to /proc/<pid>
    with pytest.raises(D.DataError) as exc:
        D.load_dataset("/proc/self/environ")
    assert "/proc/self/environ" in str(exc.value) and f"/proc/{os.getpid()}" not in str(exc.value)
    # member names inside a tar are not echoed
    src = tmp_path / "m"
    for prefix in ("alpha-secret", "beta-secret"):
        small_dataset(src / prefix)
    archive = tmp_path / "two.tar"
    with tarfile.open(archive, "w") as tf:
        tf.add(src / "alpha-secret", arcname="alpha-secret")
        tf.add(src / "beta-secret", arcname="beta-secret")
    with pytest.raises(D.DataError) as exc:
        D.load_dataset(str(archive))
    assert "secret" not in str(exc.value)
    status = D.dataset_status(str(link))
    assert "hidden-target-dir" not in str(status)
    # a good source's description names it as typed
    good = small_dataset(tmp_path / "good")
    typed = os.path.relpath(good)
    ds = D.load_dataset(typed)
    assert f": {typed} (" in ds.source and f": {good.resolve()}" not in ds.source


def test_case22_a_memoised_source_is_described_with_each_callers_spelling(tmp_path, cache):
    good = small_dataset(tmp_path / "good")
    first = D.load_dataset(str(good))
    alias = tmp_path / "alias-link"
    alias.symlink_to(good)
    second = D.load_dataset(str(alias))  # same files: served from the memo, arrays shared
    assert second.train_x is first.train_x
    assert f": {alias} (" in second.source and f": {good} (" not in second.source
    assert f": {good} (" in first.source


# ================================================================================================================
# Probe of issue 19: the CLI and the library. Each test failed on the code before issue 19.

def _tiny_run(store: RunStore, root: Path, classes=CLASSES2, weights=None):
    """A done run of resnet20 on `root` with a checkpoint and predictions (no training: built weights)."""
    from resnet_lab.models import build

    run = store.create({"model": "resnet20", "classes": list(classes), "data": str(root), "data_source": str(root)})
    store.save_checkpoint(run, weights or build("resnet20", num_classes=len(classes)).state_dict())
    n = len(classes) * 2
    store.save_predictions(run, np.full((n, len(classes)), 1 / len(classes), np.float32),
                           [i % len(classes) for i in range(n)], list(range(n)))
    store.set_status(run, "done")
    return run


def test_probe19_compile_on_a_cpu_is_ignored_with_a_note(tmp_path, cache, monkeypatch, capsys):
    """Like mixed precision and channels-last (CUDA only, ignored on a CPU), --compile is ignored on a CPU."""
    import torch

    monkeypatch.setenv("RESNET_LAB_RUNS", str(tmp_path / "runs"))
    root = small_dataset(tmp_path / "src")

    def no_compile(*a, **k):
        raise AssertionError("torch.compile was called on a CPU")

    monkeypatch.setattr(torch, "compile", no_compile)
    rc, out, err = cli(capsys, "train", "--data", root, "--model", "resnet20", "--epochs", "1", "--peak-epoch",
                       "0.5", "--batch-size", "4", "--device", "cpu", "--pipeline", "torch", "--compile",
                       "--no-augment")
    assert rc == 0, err
    assert "--compile" in err and "ignored" in err and "GPU" in err


def test_probe19_lr_find_range_is_refused_up_front(tmp_path, cache, monkeypatch, capsys):
    from resnet_lab.lr_finder import LRFindConfig

    root = small_dataset(tmp_path / "src")
    loaded = []
    from resnet_lab.lr_finder import sweep

    monkeypatch.setattr(sweep, "load_dataset", lambda *a, **k: loaded.append(a) or pytest.fail("data was loaded"))
    common = ["--data", root, "--device", "cpu", "--iters", "10", "--batch-size", "2", "--subset", "none"]
    for extra, flag in ((["--end-lr", "1e300", "--mode", "linear"], "--end-lr"),
                        (["--end-lr", "1e300"], "--end-lr"),
                        (["--start-lr", "1e-320"], "--start-lr")):
        rc, out, err = cli(capsys, "lr-find", *common, *extra)
        assert rc == 2 and flag in err and "unexpected" not in err, (extra, err)
    assert not loaded
    assert "end_lr" in LRFindConfig(end_lr=1e300).validate()
    assert "start_lr" in LRFindConfig(start_lr=1e-320).validate()
    from resnet_lab.lr_finder import default_config

    assert not default_config(cuda=False).validate() and not default_config(cuda=True, device="cpu").validate()


def test_probe19_every_json_line_is_strict_json(capsys):
    import json

    from resnet_lab.cli.common import print_json

    print_json({"a": float("nan"), "b": [float("inf"), 1.5], "c": np.float32("nan"), "d": np.array([np.inf, 2.0]),
                "e": (float("-inf"),)})
    line = capsys.readouterr().out.strip()

    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")

    value = json.loads(line, parse_constant=refuse)
    assert value == {"a": None, "b": [None, 1.5], "c": None, "d": [None, 2.0], "e": [None]}


def test_probe19_errors_on_odd_stored_runs_say_what_is_wrong(tmp_path, monkeypatch, capsys):
    import shutil

    monkeypatch.setenv("RESNET_LAB_RUNS", str(tmp_path / "runs"))
    store = RunStore()
    # "classes": 5 in config.json
    odd = store.create({"model": "resnet20", "classes": 5})
    store.save_predictions(odd, np.eye(5, dtype=np.float32), [0, 1, 2, 3, 4], list(range(5)))
    store.set_status(odd, "done")
    rc, out, err = cli(capsys, "errors", "--run", odd.id)
    assert rc == 2 and "classes" in err and "config.json" in err and "unexpected" not in err
    # zero stored predictions: no "top-1 0.00%"
    empty = store.create({"model": "resnet20", "classes": ["a", "b", "c"]})
    store.save_predictions(empty, np.zeros((0, 3), np.float32), [], [])
    store.set_status(empty, "done")
    rc, out, err = cli(capsys, "errors", "--run", empty.id)
    assert rc == 2 and "no predictions" in err and "0.00%" not in out
    # a run deleted after it was read
    gone = _run_with_predictions(store, np.eye(3, dtype=np.float32), [0, 1, 2])
    run = store.get(gone.id)
    shutil.rmtree(gone.path)
    with pytest.raises(RunError) as exc:
        run.predictions()
    assert "deleted" in str(exc.value) and "failed before" not in str(exc.value)
    with pytest.raises(RunError, match="deleted"):
        run.state_dict()


def test_probe19_nan_weights_make_no_prediction(tmp_path, cache, monkeypatch, capsys):
    import torch

    from resnet_lab.models import build

    monkeypatch.setenv("RESNET_LAB_RUNS", str(tmp_path / "runs"))
    root = small_dataset(tmp_path / "src")
    state = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
             for k, v in build("resnet20", num_classes=2).state_dict().items()}
    run = _tiny_run(RunStore(), root, weights=state)
    rc, out, err = cli(capsys, "inspect", "--run", run.id, "--image", "0", "--data", root, "--out", tmp_path / "o")
    assert rc == 2 and "non-finite" in err and "NaN" in err
    assert "predicted" not in out and "nan%" not in out


def _status(run) -> dict:
    import json

    return json.loads((run.path / "status.json").read_text())


def _set_status_fields(run, **fields) -> None:
    import json

    status = {**_status(run), **fields}
    (run.path / "status.json").write_text(json.dumps(status))


def test_probe19_a_running_run_is_alive_only_if_host_pid_and_start_time_match(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RESNET_LAB_RUNS", str(tmp_path / "runs"))
    store = RunStore()
    live = store.create({"model": "resnet20"})
    recorded = _status(live)
    assert recorded["pid"] == os.getpid() and recorded["host"] and recorded.get("started") is not None
    assert store.get(live.id).status == "running"  # this very process: alive
    rc, out, err = cli(capsys, "runs", "--delete", live.id, "--force")
    assert rc == 2 and "still training" in err and live.path.exists()  # --force never deletes a live run

    # pid reuse: a live pid (ours) whose process started at another time is not the run's process
    reused = store.create({"model": "resnet20"})
    store.save_history(reused, [{"epoch": 1, "train_loss": 1.0}])
    _set_status_fields(reused, started=(recorded["started"] or 0) + 12345)
    assert store.get(reused.id).status == "interrupted"
    rc, out, err = cli(capsys, "runs", "--recover", reused.id)
    assert rc == 0 and "interrupted" in out
    assert _status(reused)["status"] == "interrupted" and store.get(reused.id).history  # kept what it had
    rc, out, err = cli(capsys, "runs", "--delete", reused.id)
    assert rc == 0 and not reused.path.exists()

    # written on another host (a copied or shared runs folder): cannot be checked from here
    foreign = store.create({"model": "resnet20"})
    store.save_history(foreign, [{"epoch": 1, "train_loss": 1.0}])
    _set_status_fields(foreign, host="some-other-machine", pid=4242)
    assert store.get(foreign.id).status == "running"
    rc, out, err = cli(capsys, "runs")
    assert rc == 0 and "some-other-machine" in out and "--force" in out
    rc, out, err = cli(capsys, "runs", "--delete", foreign.id)
    assert rc == 2 and "some-other-machine" in err and "--force" in err and "--recover" in err
    assert foreign.path.exists()
    rc, out, err = cli(capsys, "runs", "--recover", foreign.id)
    assert rc == 0 and "interrupted" in out
    assert store.get(foreign.id).status == "interrupted" and store.get(foreign.id).history

    other = store.create({"model": "resnet20"})
    _set_status_fields(other, host="some-other-machine", pid=4242)
    rc, out, err = cli(capsys, "runs", "--delete", other.id, "--force")
    assert rc == 0 and not other.path.exists()


@pytest.mark.parametrize("command", ["degradation", "landscape"])
def test_probe19_output_is_checked_before_any_work(command, tmp_path, monkeypatch, capsys):
    from resnet_lab import landscape as L
    from resnet_lab.experiments import degradation as X

    monkeypatch.setenv("RESNET_LAB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(X, "run_suite", lambda *a, **k: pytest.fail("the suite started"))
    monkeypatch.setattr(L, "compute", lambda *a, **k: pytest.fail("the landscape started"))
    argv = {"degradation": ["degradation", "--device", "cpu", "--data", tmp_path],
            "landscape": ["landscape", "--run", "some-run", "--device", "cpu"]}[command]
    folder = tmp_path / "existing"
    folder.mkdir()
    rc, out, err = cli(capsys, *argv, "--output", folder)
    assert rc == 2 and "--output" in err and "folder" in err
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    rc, out, err = cli(capsys, *argv, "--output", a_file / "result.json")
    assert rc == 2 and "--output" in err and "cannot be written" in err


def test_probe19_landscape_seed_uses_the_shared_seed_type(capsys):
    rc, out, err = cli(capsys, "landscape", "--run", "some-run", "--seed", str(2**70))
    assert rc == 2 and "seed" in err and str(2**63 - 1) in err
    from resnet_lab import landscape as L

    with pytest.raises(L.LandscapeError, match="seed"):
        L.check_settings(100, 5, 5, 1.0, seed=2**63 - 1)  # the second direction uses seed + 1


def test_probe19_bench_warmup_must_not_be_negative(tmp_path, capsys):
    rc, out, err = cli(capsys, "bench", "train", "--warmup", "-1", "--data", tmp_path / "nothing-here")
    assert rc == 2 and "--warmup" in err


def test_probe19_an_empty_run_id_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RESNET_LAB_RUNS", str(tmp_path / "runs"))
    _run_with_predictions(RunStore(), np.eye(3, dtype=np.float32), [0, 1, 2])
    for command in ("errors", "inspect"):
        extra = ["--image", "0", "--out", tmp_path / "o"] if command == "inspect" else []
        rc, out, err = cli(capsys, command, "--run", "", *extra)
        assert rc == 2 and "--run" in err and "empty" in err, command
    from resnet_lab import inspect as I

    with pytest.raises(I.InspectError, match="empty"):
        I.open_run("  ")


def test_probe19_runs_folder_naming_a_file_is_an_error(tmp_path, monkeypatch, capsys):
    a_file = tmp_path / "runs-file"
    a_file.write_text("not a folder")
    monkeypatch.setenv("RESNET_LAB_RUNS", str(a_file))
    rc, out, err = cli(capsys, "runs")
    assert rc == 2 and "RESNET_LAB_RUNS" in err and "file" in err


def test_probe19_inspect_data_with_other_classes_is_refused(tmp_path, cache, monkeypatch, capsys):
    monkeypatch.setenv("RESNET_LAB_RUNS", str(tmp_path / "runs"))
    own = small_dataset(tmp_path / "own")
    other = small_dataset(tmp_path / "other", classes=["bird", "frog", "ship"])
    run = _tiny_run(RunStore(), own)
    rc, out, err = cli(capsys, "inspect", "--run", run.id, "--image", "0", "--data", other, "--out", tmp_path / "o")
    assert rc == 2 and "--data" in err and "bird" in err and "cat" in err


def _reference_folder(tmp_path) -> Path:
    from resnet_lab.runs.reference import write_checksums

    store = RunStore(tmp_path / "ref-src", reference_root="")
    run = _run_with_predictions(store, np.eye(3, dtype=np.float32), [0, 1, 2])
    store.save_history(run, [{"epoch": 1, "train_loss": 1.25, "test_acc": 0.5}])
    (run.path / "about.json").write_text('{"title": "test reference"}')
    folder = tmp_path / "reference" / run.id
    folder.parent.mkdir()
    os.rename(run.path, folder)
    write_checksums(folder)
    return folder


def test_probe19_a_modified_reference_run_is_listed_with_a_note(tmp_path, monkeypatch, capsys):
    folder = _reference_folder(tmp_path)
    monkeypatch.setenv("RESNET_LAB_REFERENCE", str(folder.parent))
    monkeypatch.setenv("RESNET_LAB_RUNS", str(tmp_path / "runs"))
    rc, out, err = cli(capsys, "runs")
    assert rc == 0 and folder.name in out
    history = folder / "history.json"
    history.write_text(history.read_text().replace("1.25", "9.75"))
    rc, out, err = cli(capsys, "runs")
    assert rc == 0 and folder.name in out and "checksum" in out and "history.json" in out


def test_probe19_a_same_size_edit_with_the_mtime_restored_fails_the_checksum(tmp_path, monkeypatch):
    import time

    from resnet_lab.runs import reference as R

    folder = _reference_folder(tmp_path)
    R.verify_reference(folder)  # verified (and cached) in this process
    history = folder / "history.json"
    stat = history.stat()
    time.sleep(0.05)  # past the file system's timestamp granularity
    history.write_text(history.read_text().replace("1.25", "9.75"))
    os.utime(history, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert history.stat().st_size == stat.st_size and history.stat().st_mtime_ns == stat.st_mtime_ns
    with pytest.raises(RunError, match="history.json"):
        R.verify_reference(folder)


def test_probe19_an_event_that_cannot_be_pickled_fails_the_job_naming_it():
    import multiprocessing
    import threading as th

    from resnet_lab.jobs import WorkerJob

    channel = multiprocessing.get_context("spawn").Queue()
    job = WorkerJob({"id": "j1", "kind": "test", "owner": "me", "title": "t", "threads": 1}, channel, th.Event())
    job.emit({"type": "tick", "i": 1})
    with pytest.raises(TypeError, match="'custom'"):
        job.emit({"type": "custom", "fn": lambda: 0})
    assert channel.get(timeout=10)[1]["type"] == "tick"
    channel.close()
    channel.join_thread()


def test_probe19_a_png_with_a_bad_crc_is_a_damaged_png():
    from resnet_lab.uploads import UploadError, load_upload

    data = bytearray(png_bytes(np.zeros((8, 8, 3), np.uint8)))
    data[29] ^= 0x01  # the IHDR chunk's CRC
    with pytest.raises(UploadError) as exc:
        load_upload(bytes(data), "photo.png")
    assert "damaged PNG" in str(exc.value) and "not a PNG" not in str(exc.value)


def _cli_subprocess(argv, stdout, env_extra) -> tuple[int, str]:
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent), **env_extra}
    proc = subprocess.run([sys.executable, "-m", "resnet_lab", *argv], stdout=stdout, stderr=subprocess.PIPE,
                          env=env, timeout=120)
    return proc.returncode, proc.stderr.decode()


def test_probe19_stdout_on_a_full_disk_or_a_closed_pipe(tmp_path):
    env = {"RESNET_LAB_RUNS": str(tmp_path / "runs"), "RESNET_LAB_REFERENCE": "none"}
    with open("/dev/full", "wb") as full:
        rc, err = _cli_subprocess(["runs"], full, env)
    assert rc == 2 and "could not be written" in err and "report it" not in err and "Traceback" not in err
    read, write = os.pipe()
    os.close(read)  # the reader has gone, as with `| head` after its lines
    try:
        rc, err = _cli_subprocess(["runs"], write, env)
    finally:
        os.close(write)
    assert rc == 0 and err == ""


def test_probe19_messages_name_flags_not_fields(tmp_path, cache, monkeypatch, capsys):
    monkeypatch.setenv("RESNET_LAB_RUNS", str(tmp_path / "runs"))
    root = small_dataset(tmp_path / "src")  # 8 training images
    cases = [
        (["degradation", "--device", "cpu", "--batch-size", "1", "--data", root], "--batch-size", "batch_size"),
        (["bench", "train", "--data", root, "--model", "resnet20", "--batch-size", "64", "--device", "cpu",
          "--subset", "none", "--test-subset", "none"], "--batch-size", "batch_size"),
        (["train", "--data", root, "--model", "resnet20", "--batch-size", "64", "--device", "cpu",
          "--subset", "none", "--test-subset", "none"], "--batch-size", "batch_size"),
        (["lr-find", "--data", root, "--batch-size", "64", "--device", "cpu", "--subset", "none"],
         "--batch-size", "batch_size"),
        (["landscape", "--run", "some-run", "--points", "4", "--device", "cpu"], "--points", "points and grid"),
        (["train", "--data", root, "--tta-shift", "--no-tta", "--device", "cpu"], "--tta-shift", "tta too"),
    ]
    for argv, flag, field in cases:
        rc, out, err = cli(capsys, *argv)
        assert rc == 2 and flag in err and field not in err, (argv, err)
    rc, out, err = cli(capsys, "--threads", "0", "info")
    assert rc == 2 and "--threads" in err
