"""resnet_lab.data: class-folder dirs and archives, the decode cache, subsets, errors, the cifar10 source."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tarfile
import time
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnet_lab import data as D

SMALL_CLASSES = ("cat", "dog", "frog")
# Read before the fixtures below hide them: the full-archive test uses the caller's settings.
ENV_DATA = os.environ.get("RESNET_LAB_DATA", "")
ENV_CACHE = os.environ.get("RESNET_LAB_CACHE", "")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test gets its own cache dir, no data setting from the environment and an empty memo."""
    monkeypatch.setenv("RESNET_LAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RESNET_LAB_DATA", raising=False)
    D.clear_memory_cache()
    yield
    D.clear_memory_cache()


@pytest.fixture
def folder(tmp_path) -> Path:
    return D.make_class_folder_dataset(tmp_path / "tiny", 6, 3, classes=SMALL_CLASSES)


def helpful_load_error(path) -> str:
    """Loading ``path`` fails with a DataError whose message names the path, the layout expected and both fixes;
    the message, for the case's own checks."""
    with pytest.raises(D.DataError) as err:
        D.load_dataset(str(path))
    msg = str(err.value)
    assert str(path) in msg
    assert "train/<class>/" in msg and "test/<class>/" in msg
    assert "--data" in msg and "RESNET_LAB_DATA" in msg and ".tar.gz" in msg
    assert "cifar10" in msg and "internet" in msg
    return msg


def test_library_imports_stay_light():
    code = ("import sys, resnet_lab.data; "
            "bad = [m for m in ('torch', 'torchvision', 'albumentations', 'streamlit') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_classes_are_torchvisions_order_and_sorted():
    assert D.CLASSES[0] == "airplane" and D.CLASSES[-1] == "truck" and len(D.CLASSES) == 10
    assert list(D.CLASSES) == sorted(D.CLASSES)


# --------------------------------------------------------------------------------------------------
# Loading class folders


def test_load_directory(folder):
    ds = D.load_dataset(str(folder))
    assert ds.train_x.shape == (18, 32, 32, 3) and ds.test_x.shape == (9, 32, 32, 3)
    assert ds.train_x.dtype == np.uint8 and ds.train_y.dtype == np.int64 and ds.test_y.dtype == np.int64
    assert ds.classes == list(SMALL_CLASSES)
    assert (ds.n_train, ds.n_test, ds.num_classes) == (18, 9, 3)
    # Sorted by class, then file name: image 7 is dog/0001.png.
    assert list(ds.train_y) == [0] * 6 + [1] * 6 + [2] * 6
    assert np.array_equal(ds.train_x[7], np.asarray(Image.open(folder / "train" / "dog" / "0001.png")))
    assert np.array_equal(ds.train_index, np.arange(18)) and np.array_equal(ds.test_index, np.arange(9))
    assert str(folder) in ds.source and "27 images" in ds.source
    assert ds.path == str(folder)


def test_env_var_selects_the_source(folder, monkeypatch):
    monkeypatch.setenv("RESNET_LAB_DATA", str(folder))
    assert D.load_dataset().n_train == 18


@pytest.mark.parametrize("name,wrap", [("data.tar.gz", None), ("data.tgz", "cifar-tiny"), ("data.tar", "x")])
def test_archives_match_the_directory(folder, tmp_path, name, wrap):
    archive = D.archive_class_folders(folder, tmp_path / name, wrap=wrap)
    a, b = D.load_dataset(str(folder)), D.load_dataset(str(archive))
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert b.classes == list(SMALL_CLASSES) and "archive" in b.source


def test_directory_wrapped_in_one_folder(tmp_path):
    D.make_class_folder_dataset(tmp_path / "outer" / "cifar", 2, 1, classes=SMALL_CLASSES)
    assert D.load_dataset(str(tmp_path / "outer")).n_train == 6


def test_jpeg_and_resize(tmp_path):
    root = D.make_class_folder_dataset(tmp_path / "big", 2, 1, classes=SMALL_CLASSES, size=48, fmt="jpg")
    ds = D.load_dataset(str(root))
    assert ds.train_x.shape == (6, 32, 32, 3)
    assert "9 resized to 32x32" in ds.source


def test_mean_std_match_numpy(folder):
    ds = D.load_dataset(str(folder))
    x = ds.train_x.astype(np.float64) / 255
    assert np.allclose(ds.mean, x.mean(axis=(0, 1, 2)), atol=1e-12)
    assert np.allclose(ds.std, x.std(axis=(0, 1, 2)), atol=1e-12)
    assert len(ds.mean) == 3 and all(isinstance(v, float) for v in ds.mean + ds.std)
    # Stored with the cache and restored on a later load.
    D.clear_memory_cache()
    again = D.load_dataset(str(folder))
    assert again._stats is not None and np.allclose(again.mean, ds.mean)


def test_progress_reports_decoding(folder):
    calls = []
    D.load_dataset(str(D.archive_class_folders(folder, folder.parent / "a.tar.gz")),
                   progress=lambda done, total, msg: calls.append((done, total, msg)))
    assert any("Reading" in m for _, _, m in calls) and any("Decoding" in m for _, _, m in calls)
    assert calls[-1][:2] == (27, 27)
    assert all(0 <= done <= total for done, total, _ in calls)


# --------------------------------------------------------------------------------------------------
# Cache and memo


def test_decoded_once_then_read_from_cache(folder, tmp_path):
    archive = D.archive_class_folders(folder, tmp_path / "a.tar.gz")
    before = D.decode_count()
    first = D.load_dataset(str(archive))
    assert D.decode_count() == before + 1
    cached = list((tmp_path / "cache" / "decoded").glob("*.npz"))
    assert len(cached) == 1 and not list((tmp_path / "cache" / "decoded").glob("*.tmp"))
    assert D.load_dataset(str(archive)) is first  # in-process memo
    D.clear_memory_cache()
    second = D.load_dataset(str(archive))  # a new process would do this: read the .npz, no decode
    assert D.decode_count() == before + 1
    assert second is not first and np.array_equal(second.train_x, first.train_x)
    assert D.dataset_status(str(archive))["cached"] is True


def test_changed_archive_is_decoded_again(folder, tmp_path):
    archive = D.archive_class_folders(folder, tmp_path / "a.tar.gz")
    first = D.load_dataset(str(archive))
    other = D.make_class_folder_dataset(tmp_path / "other", 4, 2, classes=SMALL_CLASSES, seed=1)
    time.sleep(0.01)  # so the mtime differs even on coarse clocks
    D.archive_class_folders(other, archive)
    D.clear_memory_cache()
    second = D.load_dataset(str(archive))
    assert (first.n_train, second.n_train) == (18, 12)


def test_damaged_cache_file_is_replaced(folder, tmp_path):
    D.load_dataset(str(folder))
    (cache,) = (tmp_path / "cache" / "decoded").glob("*.npz")
    cache.write_bytes(b"garbage")
    D.clear_memory_cache()
    before = D.decode_count()
    assert D.load_dataset(str(folder)).n_train == 18
    assert D.decode_count() == before + 1


# --------------------------------------------------------------------------------------------------
# Subsets


def test_subset_is_class_balanced_and_indexed(folder):
    full = D.load_dataset(str(folder))
    sub = full.subset(train=9, test=3, seed=0)
    assert list(sub.class_counts("train")) == [3, 3, 3] and list(sub.class_counts("test")) == [1, 1, 1]
    assert list(full.subset(train=10).class_counts("train")) == [4, 3, 3]  # remainder to the lowest ids
    assert np.array_equal(sub.train_x, full.train_x[sub.train_index])
    assert np.array_equal(sub.test_y, full.test_y[sub.test_index])
    assert np.all(np.diff(sub.train_index) > 0)
    assert "subset 9 train / 3 test" in sub.source
    # A subset of a subset still indexes the full set.
    subsub = sub.subset(train=3, seed=5)
    assert np.array_equal(subsub.train_x, full.train_x[subsub.train_index])
    assert set(subsub.train_index) <= set(sub.train_index)


def test_subset_is_seeded(folder):
    full = D.load_dataset(str(folder))
    a, b, c = full.subset(9, 3, seed=0), full.subset(9, 3, seed=0), full.subset(9, 3, seed=1)
    assert np.array_equal(a.train_index, b.train_index) and np.array_equal(a.test_index, b.test_index)
    assert not np.array_equal(a.train_index, c.train_index)
    # The test pick does not depend on the train size.
    assert np.array_equal(full.subset(6, 3).test_index, full.subset(12, 3).test_index)


def test_subset_edges(folder):
    full = D.load_dataset(str(folder))
    assert full.subset() is full and full.subset(train=1000, test=1000) is full
    assert full.subset(train=1000, test=3).n_train == 18
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ValueError):
            full.subset(train=bad)
    with pytest.raises(ValueError):
        full.subset(test=0)


def test_uneven_classes_fill_the_request(tmp_path):
    root = D.make_class_folder_dataset(tmp_path / "d", 6, 1, classes=SMALL_CLASSES)
    for f in sorted((root / "train" / "cat").iterdir())[1:]:
        f.unlink()  # cat keeps 1 train image
    ds = D.load_dataset(str(root)).subset(train=9)
    assert list(ds.class_counts("train")) == [1, 4, 4]


def test_load_dataset_subset_args(folder):
    ds = D.load_dataset(str(folder), subset=6, test_subset=3, seed=2)
    assert (ds.n_train, ds.n_test) == (6, 3)
    assert np.array_equal(ds.train_index, D.load_dataset(str(folder)).subset(6, 3, seed=2).train_index)


# --------------------------------------------------------------------------------------------------
# Errors


def test_missing_path(tmp_path):
    path = tmp_path / "nope.tar.gz"
    assert "no such file" in helpful_load_error(path)


def test_empty_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    helpful_load_error(tmp_path / "empty")


def test_directory_without_train(tmp_path):
    root = D.make_class_folder_dataset(tmp_path / "d", 1, 1, classes=SMALL_CLASSES)
    for f in (root / "train").rglob("*.png"):
        f.unlink()
    for d in sorted((root / "train").iterdir()):
        d.rmdir()
    (root / "train").rmdir()
    assert "no train/<class>/ folders" in helpful_load_error(root)


def test_archive_without_train(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "readme.txt").write_text("hello")
    Image.new("RGB", (32, 32)).save(tmp_path / "src" / "a.png")
    archive = tmp_path / "bad.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tmp_path / "src", arcname="stuff")
    msg = helpful_load_error(archive)
    assert "no train/<class>/" in msg and "ignored" in msg


def test_text_file_named_like_an_archive(tmp_path):
    path = tmp_path / "fake.tar.gz"
    path.write_text("this is not an archive\n" * 20)
    assert "not a readable tar archive" in helpful_load_error(path)


def test_truncated_archive(folder, tmp_path):
    archive = D.archive_class_folders(folder, tmp_path / "a.tar.gz")
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    assert "truncated or corrupt" in helpful_load_error(cut)


def test_empty_file(tmp_path):
    path = tmp_path / "zero.tar.gz"
    path.write_bytes(b"")
    helpful_load_error(path)


@pytest.mark.parametrize("as_archive", [False, True])
def test_mismatched_classes(tmp_path, as_archive):
    root = D.make_class_folder_dataset(tmp_path / "d", 1, 1, classes=SMALL_CLASSES)
    (root / "test" / "frog").rename(root / "test" / "horse")
    path = D.archive_class_folders(root, tmp_path / "d.tar.gz") if as_archive else root
    msg = helpful_load_error(path)
    assert "only in train/: frog" in msg and "only in test/: horse" in msg


def files_only_archive(root: Path, archive: Path) -> Path:
    """A tar with file entries only (no folder entries), as some tools write them."""
    with tarfile.open(archive, "w:gz") as tf:
        for f in sorted(root.rglob("*")):
            if f.is_file():
                tf.add(f, arcname=str(f.relative_to(root)))
    return archive


def test_archive_without_folder_entries(folder, tmp_path):
    ds = D.load_dataset(str(files_only_archive(folder, tmp_path / "f.tar.gz")))
    assert (ds.n_train, ds.n_test, ds.classes) == (18, 9, list(SMALL_CLASSES))


@pytest.mark.parametrize("kind", ["dir", "archive", "files-only archive"])
def test_class_folder_without_images(tmp_path, kind):
    root = D.make_class_folder_dataset(tmp_path / "d", 1, 1, classes=SMALL_CLASSES)
    (root / "train" / "dog" / "0000.png").unlink()
    (root / "train" / "dog" / "notes.txt").write_text("no images here")
    path = {"dir": lambda: root,
            "archive": lambda: D.archive_class_folders(root, tmp_path / "d.tar.gz"),
            "files-only archive": lambda: files_only_archive(root, tmp_path / "f.tar.gz")}[kind]()
    assert "train/dog/" in helpful_load_error(path)


def test_archive_with_two_layouts(folder, tmp_path):
    archive = tmp_path / "two.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(folder / "train", arcname="a/train")
        tf.add(folder / "test", arcname="a/test")
        tf.add(folder / "train", arcname="b/train")
    with pytest.raises(D.DataError) as err:
        D.load_dataset(str(archive))
    # issue 12 case 22: the places are counted, not named (names inside an archive are not echoed)
    assert "several places (under 2 different top-level folders" in str(err.value)


def test_a_few_corrupt_images_are_skipped(folder):
    (folder / "train" / "cat" / "0002.png").write_bytes(b"not a png")
    (folder / "test" / "dog" / "0000.png").write_bytes(b"\x89PNG broken")
    ds = D.load_dataset(str(folder))
    assert (ds.n_train, ds.n_test) == (17, 8)
    assert list(ds.class_counts("train")) == [5, 6, 6]
    assert "2 unreadable skipped" in ds.source


def test_unreadable_class_is_an_error(folder):
    for f in (folder / "test" / "frog").iterdir():
        f.write_bytes(b"garbage")
    assert "test/frog/" in helpful_load_error(folder)


def test_nothing_decodes_is_an_error(folder):
    for f in folder.rglob("*.png"):
        f.write_bytes(b"garbage")
    with pytest.raises(D.DataError) as err:
        D.load_dataset(str(folder))
    assert "could be decoded" in str(err.value)


# --------------------------------------------------------------------------------------------------
# dataset_status


def test_status_before_and_after_loading(folder):
    status = D.dataset_status(str(folder))
    assert status["ok"] is True and status["cached"] is False and status["error"] is None
    assert (status["train_size"], status["test_size"], status["classes"]) == (18, 9, list(SMALL_CLASSES))
    assert status["path"] == str(folder) and status["source"] == str(folder)
    D.load_dataset(str(folder))
    D.clear_memory_cache()
    status = D.dataset_status(str(folder))
    assert status["ok"] is True and status["cached"] is True and status["train_size"] == 18


def test_status_never_raises(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_text("nope")
    for source in (str(tmp_path / "missing"), str(bad)):
        status = D.dataset_status(source)
        assert status["ok"] is False and source in status["error"] and "--data" in status["error"]


# --------------------------------------------------------------------------------------------------
# torchvision's cifar10


def test_cifar10_offline_is_a_clear_error(monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    calls = []

    def no_network(*args, **kwargs):
        calls.append(args)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", no_network)
    with pytest.raises(D.DataError) as err:
        D.load_dataset("cifar10")
    assert len(calls) == 1  # one attempt, no retry loop that keeps a student waiting
    msg = str(err.value)
    assert "could not download CIFAR-10" in msg and "name resolution" in msg
    assert "--data" in msg and "RESNET_LAB_DATA" in msg and ".tar.gz" in msg and "internet" in msg
    status = D.dataset_status("cifar10")  # cheap, no network, never raises
    assert status["ok"] is True and status["cached"] is False and "downloaded" in status["note"]


def test_cifar10_from_a_torchvision_folder(monkeypatch, tmp_path):
    """The conversion of torchvision's arrays, on a tiny folder in torchvision's own pickle format."""
    import torchvision.datasets.cifar as tv_cifar

    folder = tmp_path / "cache" / "torchvision" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{i}", 2) for i in range(1, 6)] + [("test_batch", 3)]:
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": list(rng.integers(0, 10, n))}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list(D.CLASSES)}))
    # The md5 checks are torchvision's business; the files here are ours, not the real ones.
    monkeypatch.setattr(tv_cifar.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)
    ds = D.load_dataset("cifar10")
    assert ds.train_x.shape == (10, 32, 32, 3) and ds.test_x.shape == (3, 32, 32, 3)
    assert ds.train_x.dtype == np.uint8 and ds.train_y.dtype == np.int64 and ds.classes == list(D.CLASSES)
    first = pickle.loads((folder / "data_batch_1").read_bytes())["data"][0]
    assert np.array_equal(ds.train_x[0], first.reshape(3, 32, 32).transpose(1, 2, 0))
    assert "torchvision CIFAR-10" in ds.source
    assert D.dataset_status("cifar10")["cached"] is True


# --------------------------------------------------------------------------------------------------
# Utilities


def test_make_class_folder_dataset_layout(tmp_path):
    root = D.make_class_folder_dataset(tmp_path / "d", 2, 1, size=32, fmt="jpeg")
    assert sorted(p.name for p in (root / "train").iterdir()) == list(D.CLASSES)
    assert sorted(p.name for p in (root / "test" / "cat").iterdir()) == ["0000.jpg"]
    ds = D.load_dataset(str(root))
    # Classes differ clearly in colour, so a model can learn them.
    means = np.array([ds.train_x[ds.train_y == k].reshape(-1, 3).mean(0) for k in range(10)])
    dists = np.linalg.norm(means[:, None] - means[None], axis=-1)
    assert dists[~np.eye(10, dtype=bool)].min() > 10


# --------------------------------------------------------------------------------------------------
# The full CIFAR-10 archive (when RESNET_LAB_DATA points at it)


def test_full_archive(monkeypatch):
    if not ENV_DATA or ENV_DATA == "cifar10" or not Path(ENV_DATA).is_file():
        pytest.skip("RESNET_LAB_DATA does not point at an archive file "
                    "(set it to ../shared/data/cifar10-jpeg.tar.gz to run this test)")
    # The caller's cache (CI sets RESNET_LAB_CACHE), so the 60,000 images are decoded once per run.
    if ENV_CACHE:
        monkeypatch.setenv("RESNET_LAB_CACHE", ENV_CACHE)
    else:
        monkeypatch.delenv("RESNET_LAB_CACHE", raising=False)
    ds = D.load_dataset(ENV_DATA)
    assert (ds.n_train, ds.n_test) == (50_000, 10_000)
    assert ds.classes == list(D.CLASSES)
    assert list(ds.class_counts("train")) == [5000] * 10 and list(ds.class_counts("test")) == [1000] * 10
    assert ds.train_x.shape == (50_000, 32, 32, 3) and ds.train_x.dtype == np.uint8
    assert np.allclose(ds.mean, (0.4914, 0.4822, 0.4465), atol=0.01)
    sub = ds.subset(train=5000, test=1000)
    assert list(sub.class_counts("train")) == [500] * 10 and list(sub.class_counts("test")) == [100] * 10
