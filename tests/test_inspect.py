"""resnet_lab.inspect: hooks, activations, Grad-CAM, and the misclassification arithmetic."""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
from collections import OrderedDict
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from resnet_lab import inspect as I
from resnet_lab import metrics as M
from resnet_lab.models import build

MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules())


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as fh:
            import os

            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def resnet20():
    torch.manual_seed(0)
    return build("resnet20").eval()


@pytest.fixture(scope="module")
def custom_pair():
    """custom_resnet with and without in-place ReLUs, same weights (BN statistics made non-trivial)."""
    torch.manual_seed(0)
    plain = build("custom_resnet")
    with torch.no_grad():
        for m in plain.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.bias.uniform_(-0.3, 0.3)
    inplace = build("custom_resnet", inplace_relu=True)
    inplace.load_state_dict(plain.state_dict())
    return plain.eval(), inplace.eval()


# ---------------------------------------------------------------------------------------------------------- layers

def test_list_layers_names_shapes_and_stages(custom_pair):
    model = custom_pair[0]
    layers = {layer.name: layer for layer in I.list_layers(model)}
    assert layers["prep"].shape == (64, 32, 32)
    assert layers["layer1"].shape == (128, 16, 16)
    assert layers["layer1.res.conv1"].kind == "conv" and layers["layer1.res.conv1"].shape == (128, 16, 16)
    assert layers["layer3.res"].shape == (512, 4, 4) and layers["layer3.res"].kind == "block"
    assert layers["layer3.res"].order < layers["layer3"].order  # the branch runs, then the stage adds it
    assert "pool" not in layers and "fc" not in layers and "prep.bn" not in layers
    assert I.stages(model) == ["prep", "layer1", "layer2", "layer3"]  # the sums, not the branches
    assert I.get_layer(model, "layer3_res") is model.layer3.res  # the branch's earlier name still works
    assert _hook_count(model) == 0
    with pytest.raises(I.InspectError, match="no layer named"):
        I.get_layer(model, "layer9")


# ------------------------------------------------------------------------------------------------ hooks and memory

def test_capture_removes_hooks_even_when_the_forward_fails(resnet20):
    with I.capture(resnet20, ["layer1", "layer2.0.conv1"]) as store:
        assert _hook_count(resnet20) == 2
        resnet20(torch.zeros(1, 3, 32, 32))
    assert set(store) == {"layer1", "layer2.0.conv1"} and store["layer1"].shape == (1, 16, 32, 32)
    assert _hook_count(resnet20) == 0
    with pytest.raises(RuntimeError):
        with I.capture(resnet20, ["layer1"]):
            resnet20(torch.zeros(1, 5, 32, 32))  # wrong channel count: the forward raises inside the hooks
    assert _hook_count(resnet20) == 0


def _small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(
        stem=nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True)),
        stage=nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(inplace=True)),
        pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(16, 10))).eval()


def test_repeated_calls_leave_no_hooks_and_flat_memory():
    # A small CNN keeps 100 rounds quick; the hook and captum machinery is the same as for the big models.
    model, image, names = _small_cnn(), _image(), ["stem", "stage", "stage.0"]
    for _ in range(10):  # warm-up: allocator caches, captum import, lazy tables
        I.activations(model, image, names, MEAN, STD)
        I.gradcam(model, image, "stage", mean=MEAN, std=STD)
    rss0 = _rss_bytes()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        for _ in range(100):
            I.activations(model, image, names, MEAN, STD)
            I.gradcam(model, image, "stage", mean=MEAN, std=STD)
            assert _hook_count(model) == 0
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown < 500_000, f"Python heap grew by {grown:,} bytes over 100 calls"
    if rss0 is not None:
        assert _rss_bytes() - rss0 < 32 * 2**20, "resident memory grew by more than 32 MiB over 100 calls"
    assert all(p.requires_grad for p in model.parameters())  # Grad-CAM's freeze is undone
    assert all(p.grad is None for p in model.parameters())


def test_model_mode_is_restored(resnet20):
    resnet20.train()
    try:
        I.activations(resnet20, _image(), ["layer1"], MEAN, STD)
        I.gradcam(resnet20, _image(), "layer2", mean=MEAN, std=STD)
        assert resnet20.training and all(m.training for m in resnet20.modules())
    finally:
        resnet20.eval()


# ------------------------------------------------------------------------------------------------ in-place ReLUs

def test_activations_with_inplace_relu_match_the_plain_model(custom_pair):
    plain, inplace = custom_pair
    image = _image(1)
    names = ["prep.bn", "layer1.res.bn1", "layer1", "layer3.res"]
    a = I.activations(plain, image, names, MEAN, STD)
    b = I.activations(inplace, image, names, MEAN, STD)
    for name in names:
        np.testing.assert_allclose(a.maps[name], b.maps[name], atol=1e-5, err_msg=name)
    # the BN output is read before its in-place ReLU overwrites it: negatives must survive in the copy
    assert (b.maps["prep.bn"] < 0).any() and (b.maps["layer1.res.bn1"] < 0).any()
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)


@pytest.mark.parametrize("layer", ["prep.bn", "layer1", "layer1.res", "layer3.res", "layer3"])
def test_gradcam_with_inplace_relu_matches_the_plain_model(custom_pair, layer):
    plain, inplace = custom_pair
    image = _image(2)
    a = I.gradcam(plain, image, layer, 3, mean=MEAN, std=STD, relu=False)
    b = I.gradcam(inplace, image, layer, 3, mean=MEAN, std=STD, relu=False)
    assert np.abs(a.cells).max() > 0
    np.testing.assert_allclose(a.cells, b.cells, rtol=1e-4, atol=1e-6 * np.abs(a.cells).max())
    assert _hook_count(inplace) == 0


# ------------------------------------------------------------------------------------------------------ Grad-CAM

def test_gradcam_shapes_signed_and_relu(custom_pair):
    model = custom_pair[0]
    image = _image(3)
    signed = I.gradcams(model, image, "layer3", list(range(10)), MEAN, STD, relu=False)
    relu = I.gradcams(model, image, "layer3", list(range(10)), MEAN, STD, relu=True)
    for s, r in zip(signed, relu):
        assert s.cells.shape == (4, 4) and s.cam.shape == (32, 32) and s.grid == (4, 4)
        np.testing.assert_allclose(r.cells, np.maximum(s.cells, 0), rtol=1e-4, atol=1e-8)
        assert r.cells.min() >= 0
        assert s.normalized.min() >= -1 and s.normalized.max() <= 1
        assert r.normalized.min() >= 0 and r.normalized.max() <= 1
    assert any((s.cells < 0).any() for s in signed), "a signed map should show evidence against some class"
    pred = I.gradcam(model, image, "layer3", mean=MEAN, std=STD)
    assert pred.target == int(np.argmax(pred.probs))
    assert np.isclose(pred.probs.sum(), 1, atol=1e-5)
    with pytest.raises(I.InspectError, match="does not exist"):
        I.gradcam(model, image, "layer3", 10, mean=MEAN, std=STD)


class _LeftHalf(nn.Module):
    """A net that blanks the right half of its input: only the left half can reach the classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False), nn.ReLU())
        self.head = nn.Linear(4, 2)
        with torch.no_grad():
            self.features[0].weight.fill_(0.1)
            self.head.weight.copy_(torch.tensor([[1.0, 1, 1, 1], [-1, -1, -1, -1]]))

    def forward(self, x):
        mask = torch.zeros_like(x)
        mask[..., :16] = 1
        return self.head(self.features(x * mask).mean((2, 3)))


def test_gradcam_finds_the_half_the_network_looks_at():
    model = _LeftHalf().eval()
    image = np.random.default_rng(4).integers(180, 256, (32, 32, 3), dtype=np.uint8)  # bright: positive inputs
    cam = I.gradcam(model, image, "features", 0, mean=MEAN, std=STD, relu=True)
    assert cam.cells.shape == (16, 16)
    # output column 8 still sees input column 15 through its 3x3 kernel; from column 9 on there is nothing
    assert cam.cells[:, 9:].max() == 0 and cam.cells[:, :8].min() > 0
    left = cam.normalized[:, :16].sum() / cam.normalized.sum()
    assert left > 0.9, f"only {left:.1%} of the Grad-CAM mass is on the left half"
    assert cam.peak_cell()[1] < 8
    against = I.gradcam(model, image, "features", 1, mean=MEAN, std=STD, relu=True)
    assert against.constant and "zero everywhere" in against.note  # class 1 has only evidence against it


def test_constant_and_degenerate_maps_are_explained_not_raised():
    for values, signed, words in [(np.zeros((4, 4)), False, "zero everywhere"), (np.zeros((4, 4)), True, "exactly zero"),
                                  (np.full((4, 4), 2.5), True, "same value"),
                                  (np.array([[np.nan, 1.0], [0.0, 1.0]]), True, "NaN")]:
        norm, constant, note = I.normalize_cam(values, signed)
        assert constant and words in note and not np.any(norm)
        assert I.overlay(_image(), norm, 0.7, signed=signed).shape == (256, 256, 3)
    norm, constant, note = I.normalize_cam(np.array([[1.0]]), True, cells=(1, 1))
    assert constant and "1×1" in note
    norm, constant, note = I.normalize_cam(np.array([[0.0, -2.0], [1.0, 0.5]]), True)
    assert not constant and note is None and norm.min() == -1 and np.isclose(norm.max(), 0.5)


def test_gradcam_of_a_layer_the_score_ignores_is_a_constant_map():
    model = nn.Sequential()
    model.add_module("conv", nn.Conv2d(3, 4, 3, padding=1))
    model.add_module("pool", nn.AdaptiveAvgPool2d(1))
    model.add_module("flat", nn.Flatten())
    model.add_module("fc", nn.Linear(4, 3))
    with torch.no_grad():
        model.fc.weight.zero_()
    for relu in (True, False):
        cam = I.gradcam(model.eval(), _image(), "conv", 1, mean=MEAN, std=STD, relu=relu)
        assert cam.constant and cam.note and not np.any(cam.normalized)


def test_layer_sweep_gets_coarser_and_boxes_fit_the_image(custom_pair):
    model = custom_pair[0]
    sweep = I.layer_sweep(model, _image(5), mean=MEAN, std=STD)
    assert [c.layer for c in sweep] == I.stages(model)
    assert [c.grid for c in sweep] == [(32, 32), (16, 16), (8, 8), (4, 4)]
    assert len({c.target for c in sweep}) == 1
    table = I.receptive_field_table(model)
    if table is None:
        pytest.skip("resnet_lab.receptive_field is not available")
    assert I.layer_rf(table, "prep.conv")["size"] == (3, 3)
    assert I.layer_rf(table, "layer1")["jump"] == (2.0, 2.0)
    top, bottom, left, right = I.cell_box(table, "layer2", (0, 0))
    assert 0 == top <= bottom < 32 and 0 == left <= right < 32 and bottom - top + 1 < 32
    picture = I.draw_box(I.overlay(_image(), sweep[3].normalized, size=256), (top, bottom, left, right), scale=8)
    assert picture.shape == (256, 256, 3)


# ------------------------------------------------------------------------------------------------- pictures

def test_feature_grid_and_overlay_shapes():
    fmap = np.random.default_rng(0).normal(size=(20, 4, 4)).astype(np.float32)
    fmap[3] = 1.0  # a constant channel must not divide by zero
    grid = I.feature_grid(fmap, I.top_channels(fmap, 12), cols=4, cell=64, pad=4)
    assert grid.dtype == np.uint8 and grid.shape == (3 * 68 + 4, 4 * 68 + 4, 3)
    assert list(I.top_channels(fmap, 3)) == list(np.argsort(-fmap.mean((1, 2)))[:3])
    stats = I.channel_stats(fmap)
    np.testing.assert_allclose(stats["active"], (fmap > 0).mean((1, 2)))
    assert I.upscale(np.arange(4, dtype=np.uint8).reshape(2, 2), 3).shape == (6, 6)
    over = I.overlay(_image(), np.ones((32, 32), np.float32), alpha=1.0)
    assert (over == I.colorize(np.ones(1), "jet")[0]).all()  # alpha 1: only the map
    assert (I.overlay(_image(), np.zeros((32, 32)), alpha=0.0) == I.upscale(_image(), 8)).all()


# ------------------------------------------------------------------------------------------------ mistakes

def _synthetic_predictions(n: int = 2000, c: int = 10, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)) + 2.0 * np.eye(c)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return {"probs": probs.astype(np.float32), "labels": labels, "indices": rng.permutation(10 * n)[:n]}


def test_confusion_matrix_equals_a_direct_count():
    pred = I.enrich(_synthetic_predictions())
    cm = M.confusion_matrix(pred["labels"], pred["preds"], 10)
    direct = np.zeros((10, 10), int)
    for t, p in zip(pred["labels"], pred["preds"]):
        direct[t, p] += 1
    assert (cm == direct).all() and cm.sum() == 2000
    np.testing.assert_allclose(M.per_class_accuracy(cm), np.diag(direct) / direct.sum(1))
    np.testing.assert_allclose(M.normalize_confusion(cm).sum(1), 1)
    with pytest.raises(ValueError):
        M.confusion_matrix([0, 11], [0, 1], 10)
    empty = M.per_class_accuracy(np.zeros((3, 3)))
    assert np.isnan(empty).all()


def test_most_confused_is_sorted_and_filtered():
    classes = ["a", "b", "c"]
    cm = np.array([[9, 3, 1], [5, 7, 0], [3, 2, 8]])
    assert M.most_confused(cm, classes) == [("b", "a", 5), ("a", "b", 3), ("c", "a", 3), ("c", "b", 2), ("a", "c", 1)]
    assert M.most_confused(cm, classes, min_count=3) == [("b", "a", 5), ("a", "b", 3), ("c", "a", 3)]
    assert M.most_confused(np.diag([4, 4, 4]), classes) == []


def test_topk_accuracy_matches_argsort():
    pred = _synthetic_predictions(seed=1)
    order = np.argsort(-pred["probs"], axis=1)
    acc = M.topk_accuracy(pred["probs"], pred["labels"], (1, 3, 5, 10))
    for k in (1, 3, 5):
        assert acc[k] == pytest.approx((order[:, :k] == pred["labels"][:, None]).any(1).mean())
    assert acc[10] == 1.0 and acc[1] < acc[3] < acc[5]
    tied = np.zeros((4, 5), np.float32)
    tied[:, 0] = 1.0  # a saturated softmax: every other class ties at 0
    order = np.argsort(-tied, axis=1, kind="stable")
    for k in (1, 2, 3):
        labels = np.array([0, 1, 2, 4])
        assert M.topk_accuracy(tied, labels, (k,))[k] == (order[:, :k] == labels[:, None]).any(1).mean()


def test_filter_predictions_filters_and_sorts():
    pred = I.enrich(_synthetic_predictions(seed=2))
    rows = I.filter_predictions(pred, true=3, predicted=5, only_wrong=True, sort="loss")
    expected = [i for i in range(2000) if pred["labels"][i] == 3 and pred["preds"][i] == 5]
    assert sorted(rows.tolist()) == expected and len(rows)
    assert (np.diff(pred["loss"][rows]) <= 0).all()
    rows = I.filter_predictions(pred, true=None, predicted=2, only_wrong=False, sort="confidence")
    assert (pred["preds"][rows] == 2).all() and (np.diff(pred["confidence"][rows]) <= 0).all()
    assert pred["correct"][rows].any()  # right ones are kept when only_wrong is off
    rows = I.filter_predictions(pred, only_wrong=True, sort="index")
    assert (np.diff(pred["indices"][rows]) > 0).all() and not pred["correct"][rows].any()
    assert len(rows) == int((~pred["correct"]).sum())
    with pytest.raises(ValueError):
        I.filter_predictions(pred, sort="random")


def test_workbench_arithmetic_on_10000_predictions():
    """Speed is benchmarks/bench_misclassified.py's job; here the 10,000-row filters must agree with a count."""
    pred = I.enrich(_synthetic_predictions(10_000, seed=3))
    s = I.summary(pred, [str(i) for i in range(10)])
    assert s["n"] == 10_000
    for true in (None, 1, 2):
        expected = int(((~pred["correct"]) & ((pred["labels"] == true) if true is not None else True)).sum())
        for sort in I.SORTS:
            rows = I.filter_predictions(pred, true=true, predicted=None, only_wrong=True, sort=sort)
            assert len(rows) == expected


def test_predictions_csv_round_trips_and_defuses_formulas():
    pred = I.enrich(_synthetic_predictions(50, c=3, seed=4))
    classes = ["cat", "=HYPERLINK(1)", "a,b"]
    rows = I.filter_predictions(pred, only_wrong=False, sort="index")
    table = list(csv.DictReader(io.StringIO(I.predictions_csv(pred, rows, classes))))
    assert len(table) == 50
    assert [int(r["test_index"]) for r in table] == sorted(pred["indices"].tolist())
    names = {r["true"] for r in table} | {r["predicted"] for r in table}
    assert names <= {"cat", "'=HYPERLINK(1)", "a,b"}
    first = rows[0]
    assert float(table[0]["confidence"]) == pytest.approx(pred["confidence"][first], abs=1e-6)
    assert table[0]["correct"] == str(bool(pred["correct"][first]))


def test_summary_is_json_serialisable():
    s = I.summary(_synthetic_predictions(300, seed=5), list("abcdefghij"), min_count=2)
    again = json.loads(json.dumps(s))
    assert again["n"] == 300 and len(again["confusion"]) == 10
    assert all(c >= 2 for _, _, c in again["most_confused"])


# --------------------------------------------------------------------------------------------- runs and images

class _Run:
    def __init__(self, config):
        self.config = config


def test_run_data_source_reads_what_the_trainer_stores():
    assert I.run_data_source(_Run({"data": "/x/y.tar.gz"})) == "/x/y.tar.gz"
    assert I.run_data_source(_Run({"data": None, "data_source": "class folders: /d/tiny (300 images)"})) == "/d/tiny"
    assert I.run_data_source(_Run({"data_source": "class-folder archive: /a b/c.tar.gz (60,000 images; 3 resized "
                                                  "to 32x32); subset 2,000 train / 1,000 test"})) == "/a b/c.tar.gz"
    assert I.run_data_source(_Run({"data_source": "torchvision CIFAR-10: /c (60,000 images)"})) == "cifar10"
    assert I.run_data_source(_Run({})) is None


def test_run_images_follow_the_stored_indices(tiny_data_dir, tmp_path, monkeypatch):
    from resnet_lab.data import load_dataset

    monkeypatch.setenv("RESNET_LAB_CACHE", str(tmp_path / "cache"))
    full = load_dataset(str(tiny_data_dir))
    sub = full.subset(test=30, seed=3)
    pred = {"indices": sub.test_index[::-1].copy(), "labels": sub.test_y[::-1].copy()}
    from_full = I.run_images(pred, full)
    from_sub = I.run_images(pred, sub)
    assert (from_full == full.test_x[pred["indices"]]).all() and (from_sub == from_full).all()
    with pytest.raises(I.InspectError, match="labels disagree"):
        I.run_images({"indices": pred["indices"], "labels": (pred["labels"] + 1) % 10}, full)
    with pytest.raises(I.InspectError, match="not in"):
        I.run_images({"indices": np.array([0, 10_000]), "labels": np.array([0, 0])}, full)
    missing = np.setdiff1d(full.test_index, sub.test_index)[:2]
    with pytest.raises(I.InspectError, match="not in"):
        I.run_images({"indices": missing, "labels": full.test_y[missing]}, sub)


# ---------------------------------------------------------------------------------------------------------- CLI

@pytest.fixture
def saved_run(tiny_data_env, runs_dir):
    """A real resnet20 (untrained) and its real predictions on the tiny data, saved like the trainer saves a run."""
    from resnet_lab.data import load_dataset

    from conftest import save_untrained_run

    data = load_dataset(str(tiny_data_env)).subset(test=60, seed=1)
    run, probs = save_untrained_run(data)
    return SimpleNamespace(run=run, probs=probs, labels=data.test_y, indices=data.test_index, classes=data.classes)


def _cli(capsys, *argv):
    from resnet_lab.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_errors_json_and_text(saved_run, capsys):
    code, out, err = _cli(capsys, "errors", "--run", "latest", "--json")
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    preds = saved_run.probs.argmax(1)
    assert result["run"] == saved_run.run.id and result["n"] == 60
    assert result["top1"] == pytest.approx((preds == saved_run.labels).mean())
    direct = np.zeros((10, 10), int)
    for t, p in zip(saved_run.labels, preds):
        direct[t, p] += 1
    assert result["confusion"] == direct.tolist()
    code, out, err = _cli(capsys, "errors", "--run", saved_run.run.id, "--normalize", "--min-count", "2")
    assert code == 0 and "confusion matrix (% of each true class" in out and "most confused" in out
    assert "top-1" in out and saved_run.classes[0] in out


def test_cli_inspect_writes_pngs(saved_run, capsys, tmp_path):
    out_dir = tmp_path / "out"
    code, out, err = _cli(capsys, "inspect", "--run", "latest", "--image", str(int(saved_run.indices[0])),
                          "--layer", "layer2", "--top-k", "8", "--out", str(out_dir), "--json")
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["layer"] == "layer2" and result["layer_shape"] == [32, 16, 16]
    assert result["true"] == saved_run.classes[saved_run.labels[0]]
    sizes = {k: Image.open(v).size for k, v in result["files"].items()}
    assert sizes["image"] == (256, 256)
    assert sizes["activations"] == (8 * 68 + 4, 68 + 4)  # 8 tiles of 64 px + 4 px gaps, one row
    assert sizes["gradcam"][0] == 3 * 256 + 4 * 8 and sizes["sweep"][0] == 4 * 256 + 5 * 8  # resnet20: 4 stages
    code, out, err = _cli(capsys, "inspect", "--image", "0", "--out", str(out_dir))
    assert code == 0 and "Grad-CAM" in out and "layer3" in out  # default layer: the last stage


@pytest.mark.parametrize("argv, words", [
    (["errors", "--run", "no-such-run"], "no run 'no-such-run'"),
    (["inspect", "--image", "100000", "--out", "x"], "--image must be between 0 and"),
    (["inspect", "--image", "0", "--layer", "layer9", "--out", "x"], "no layer 'layer9'"),
])
def test_cli_errors_are_explained(saved_run, capsys, argv, words):
    code, out, err = _cli(capsys, *argv)
    assert code == 2 and words in err and "Traceback" not in err


def test_cli_without_runs_says_how_to_get_one(tiny_data_env, runs_dir, capsys):
    code, out, err = _cli(capsys, "errors")
    assert code == 2 and "no run with stored predictions" in err and "train" in err


@pytest.mark.parametrize("command", ["inspect", "errors"])
def test_cli_help(command, capsys):
    from resnet_lab.cli import main

    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0 and "--run" in capsys.readouterr().out


# ------------------------------------------------------------------------------- Grad-CAM where the network adds

def _gradcam_by_hand(model, x, target):
    """custom_resnet's forward written out here, with the addition done on explicit tensors: Grad-CAM of the
    *sum* h + res(h) at layer3 (mean gradient per channel as weights, ReLU), independent of hooks and captum."""
    with torch.enable_grad():
        h = model.layer3.relu(model.layer3.bn(model.layer3.pool(model.layer3.conv(
            model.layer2(model.layer1(model.prep(x)))))))
        total = h + model.layer3.res(h)
        logits = model.fc(torch.flatten(model.pool(total), 1))
        (grad,) = torch.autograd.grad(logits[0, target], total)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    return torch.relu((weights * total).sum(1))[0].detach().numpy()


def test_gradcam_at_layer3_includes_the_shortcut(custom_pair):
    model = custom_pair[0]
    image = _image(5)
    x = I.to_batch(image, MEAN, STD)
    for target in (2, 7):
        cam = I.gradcam(model, image, "layer3", target, mean=MEAN, std=STD)
        expected = _gradcam_by_hand(model, x, target)
        assert cam.cells.shape == (4, 4)
        np.testing.assert_allclose(cam.cells, expected, rtol=1e-4, atol=1e-6 * max(np.abs(expected).max(), 1e-12))
    # and it is not the branch's map: the shortcut term h changes what the classifier sees
    branch = I.gradcam(model, image, "layer3.res", 7, mean=MEAN, std=STD, relu=False)
    total = I.gradcam(model, image, "layer3", 7, mean=MEAN, std=STD, relu=False)
    assert not np.allclose(branch.cells, total.cells, rtol=1e-3, atol=1e-6)


def test_branch_of_names_the_residual_branch(custom_pair, resnet20):
    model = custom_pair[0]
    assert I.branch_of(model, "layer3") == "layer3.res" and I.branch_of(model, "layer1") == "layer1.res"
    assert I.branch_of(model, "layer2") is None and I.branch_of(model, "prep") is None
    assert I.branch_of(resnet20, "layer2.0") == "layer2.0.bn2"  # relu(bn2 + shortcut): bn2 is the branch
    assert I.branch_of(resnet20, "layer2") == "layer2.2.bn2"    # a stage ends with its last block's sum
    assert I.branch_of(build("plain20"), "layer2.0") is None     # no shortcut, nothing is added
