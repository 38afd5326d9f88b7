"""Explanations measured (resnet_lab.explain, resnet_lab.faithfulness, the new methods of resnet_lab.attributions),
checked against implementations nobody here wrote: captum called directly, scipy.stats.spearmanr, and
pytorch-grad-cam's ROADCombined; the `explain` CLI; the shipped shuffled-label network and measurement."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from resnet_lab import attributions as A
from resnet_lab import explain as E
from resnet_lab import faithfulness as F
from resnet_lab import inspect as I
from resnet_lab.models import build

from conftest import random_image, resnet20_with_bn_stats, save_untrained_run

ROOT = Path(__file__).resolve().parent.parent
MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def resnet20():
    return resnet20_with_bn_stats()


_image = random_image


# ------------------------------------------------------------------------------ methods against captum directly

def test_guided_backprop_and_gradient_x_input_equal_captum_and_the_definition(resnet20):
    from captum.attr import GuidedBackprop

    x = I.to_batch(_image(2), MEAN, STD)
    got = A.attribute(resnet20, _image(2), 3, "layer3", ["Guided Backprop", "Gradient × Input"], mean=MEAN, std=STD)
    direct = GuidedBackprop(resnet20).attribute(x.clone().requires_grad_(True), target=3)[0].sum(0).detach().numpy()
    np.testing.assert_allclose(got["Guided Backprop"].map, direct, rtol=1e-5, atol=1e-7)
    xg = x.clone().requires_grad_(True)
    resnet20(xg)[0, 3].backward()
    np.testing.assert_allclose(got["Gradient × Input"].map, (xg.grad * x)[0].sum(0).numpy(), rtol=1e-5, atol=1e-7)
    # guided backprop is not the plain gradient on a network with ReLU modules
    plain = xg.grad[0].sum(0).numpy()
    assert A.rank_correlation(np.abs(got["Guided Backprop"].map), np.abs(plain)) < 0.99
    assert got["Guided Backprop"].note is None


def test_a_network_with_functional_relus_gets_a_note_on_guided_methods():
    class Functional(nn.Module):  # how students write it: F.relu in forward, no nn.ReLU module
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.fc = nn.Linear(8, 10)

        def forward(self, x):
            return self.fc(torch.nn.functional.relu(self.conv(x)).mean((2, 3)))

    got = A.attribute(Functional().eval(), _image(), 1, "conv", ["Guided Backprop", "Saliency"], mean=MEAN, std=STD)
    assert "no nn.ReLU modules" in got["Guided Backprop"].note and got["Saliency"].note is None


def test_sanity_numbers_equal_captum_and_scipy_computed_directly(resnet20):
    """The first cascade step (the classifier re-initialised) by hand: captum's GuidedBackprop on a copy with the
    same random fc weights, |sum over channels|, scipy's spearmanr."""
    from captum.attr import GuidedBackprop
    from scipy.stats import spearmanr

    image = _image(5)
    check = A.sanity_check(resnet20, image, 7, "layer3", ["Guided Backprop", "Saliency"], mean=MEAN, std=STD,
                           seed=3, steps=["fc"])
    x = I.to_batch(image, MEAN, STD)
    work = copy.deepcopy(resnet20)
    trained = GuidedBackprop(work).attribute(x.clone().requires_grad_(True), target=7)[0].sum(0).detach().numpy()
    A._reinitialise(work.fc, torch.Generator().manual_seed(3))
    random = GuidedBackprop(work).attribute(x.clone().requires_grad_(True), target=7)[0].sum(0).detach().numpy()
    expected = spearmanr(np.abs(trained).ravel(), np.abs(random).ravel()).statistic
    assert check.correlations["Guided Backprop"][1] == pytest.approx(expected, abs=1e-9)
    # and the project's rank correlation is scipy's on tied data too (Grad-CAM's ReLU zeros)
    a = np.r_[np.zeros(50), np.arange(50.0)]
    b = np.r_[np.arange(60.0)[::-1], np.zeros(40)]
    assert A.rank_correlation(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)


def test_the_verdicts_follow_their_bounds_as_shown():
    check = A.SanityCheck(["trained", "fc", "all"], {"GBP": [1, 0.92, 0.2], "IG": [1, 0.55, 0.3],
                                                     "CAM": [1, 0.1, 0.1], "edge": [1, 0.4, 0.6],
                                                     "flat": [1, float("nan"), 0.1], "round": [1, 0.4951, 0.1]})
    v = A.sanity_verdict(check)
    assert v["fail"] == ["GBP", "edge"] and v["partly"] == ["IG", "round"] and v["pass"] == ["CAM"]
    assert v["first"]["GBP"] == 0.92 and v["final"]["edge"] == 0.6
    assert A.data_verdict({"a": 0.7, "b": 0.2, "c": float("nan"), "d": 0.496}) == {"fail": ["a", "d"],
                                                                                  "pass": ["b"]}


def test_data_randomisation_is_one_for_the_same_network_and_lower_for_another(resnet20):
    same = A.data_randomisation(resnet20, copy.deepcopy(resnet20), _image(1), None, "layer3",
                                ["Grad-CAM", "Saliency"], mean=MEAN, std=STD)
    assert all(r == pytest.approx(1.0) for r in same.correlations.values())
    torch.manual_seed(9)
    other = build("resnet20").eval()
    diff = A.data_randomisation(resnet20, other, _image(1), same.target, "layer3", ["Grad-CAM", "Saliency"],
                                mean=MEAN, std=STD)
    assert diff.target == same.target and all(r < 0.9 for r in diff.correlations.values())
    with pytest.raises(I.InspectError):
        A.data_randomisation(resnet20, nn.Sequential(nn.Flatten(), nn.Linear(3072, 10)), _image(1), None, "layer3",
                             ["Saliency"], mean=MEAN, std=STD)


# ------------------------------------------------------------------------------------------------- ROAD

class _Corner(nn.Module):
    """Class 0's score is the brightness of the top-left 8x8 corner: the evidence is known exactly."""

    def forward(self, x):
        corner = x[:, :, :8, :8].mean((1, 2, 3))
        return torch.stack([4 * corner] + [torch.zeros_like(corner)] * 9, 1)


def test_road_equals_pytorch_grad_cams_roadcombined():
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                          nn.Linear(32, 10)).eval()
    images = [_image(1), _image(2)]
    maps = {"a": [np.random.default_rng(i).random((32, 32)) for i in range(2)]}
    ours = F.road_curves(model, images, [2, 5], maps, mean=MEAN, std=STD)["a"]
    x = torch.cat([I.to_batch(img, MEAN, STD) for img in images])
    cams = np.stack([F.order_map(np.abs(m)) for m in maps["a"]])
    torch.manual_seed(0)
    theirs = ROADCombined(percentiles=[10, 20, 30, 40, 50, 60, 70, 80, 90])(
        x, cams, [ClassifierOutputSoftmaxTarget(2), ClassifierOutputSoftmaxTarget(5)], model)
    # the imputation adds 1 % noise drawn in another order there: equal up to that noise
    assert ours.road == pytest.approx(float(np.mean(theirs)), abs=5e-3)
    assert ours.images == 2 and len(ours.morf) == len(F.FRACTIONS)


def test_road_rewards_the_map_that_points_at_the_evidence():
    model = _Corner().eval()
    image = np.full((32, 32, 3), 40, np.uint8)
    image[:8, :8] = 250
    right = np.zeros((32, 32))
    right[:8, :8] = 1.0
    maps = {"right": [right], "wrong": [1.0 - right], "random": [np.random.default_rng(0).random((32, 32))]}
    c = F.road_curves(model, [image], [0], maps, mean=MEAN, std=STD)
    assert c["right"].morf_area < c["random"].morf_area < c["wrong"].morf_area
    assert c["right"].road > c["random"].road > c["wrong"].road
    assert F.rank_methods(c).order == ["right", "random", "wrong"]
    assert "**right** ranks the pixels most faithfully" in F.faithfulness_text(c)
    with pytest.raises(I.InspectError, match="strictly between 0 and 1"):
        F.road_curves(model, [image], [0], maps, mean=MEAN, std=STD, fractions=(0.0, 0.5))


def test_order_map_breaks_ties_so_the_removed_fraction_is_exact():
    values = np.zeros((32, 32))
    values[:4] = 1.0  # 128 pixels at 1, 896 tied at 0 (a ReLU'd Grad-CAM)
    ranks = F.order_map(values)
    assert len(np.unique(ranks)) == 1024 and ranks.min() == 0 and ranks.max() == 1
    assert (ranks[:4] > ranks[4:].max()).all()  # the order of distinct values is kept
    threshold = np.percentile(ranks, 80)
    assert int((ranks >= threshold).sum()) in (204, 205, 206)  # 20 % removed, not 87.5 %


# ------------------------------------------------------------------------------------------------- the CLI

@pytest.fixture
def saved_run(tiny_data_env, runs_dir):
    from resnet_lab.data import load_dataset

    data = load_dataset(str(tiny_data_env))
    return save_untrained_run(data)[0], data


def _cli(capsys, *argv):
    from resnet_lab.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_explain_json_text_and_pngs(saved_run, capsys, tmp_path):
    run, data = saved_run
    code, out, err = _cli(capsys, "explain", "--run", run.id, "--image", "0", "3", "--methods", "grad-cam",
                          "guided-backprop", "--sanity", "--faithfulness", "--json", "--out", str(tmp_path / "x"))
    assert code == 0, err
    r = json.loads(out.strip().splitlines()[-1])
    assert r["images"] == [0, 3] and r["methods"] == ["Grad-CAM", "Guided Backprop"] and r["layer"] == "layer3"
    assert r["sanity"]["steps"] == ["trained", "fc", "layer3", "layer2", "layer1", "stem"]
    assert all(len(v) == 2 for v in r["sanity"]["per_image"].values())
    assert set(r["faithfulness"]["mean"]) == {"Grad-CAM", "Guided Backprop", E.RANDOM_ORDER}
    assert r["data_randomisation"] is None
    # the same numbers as the library on the same image (the page calls the same function)
    model = run.load_model("cpu").eval()
    check = A.sanity_check(model, data.test_x[3], None, "layer3", ["Grad-CAM", "Guided Backprop"], mean=run.config["mean"],
                           std=run.config["std"])
    got = r["sanity"]["per_image"]["Guided Backprop"][1]
    assert got == pytest.approx(check.correlations["Guided Backprop"], nan_ok=True)
    assert sorted(Path(p).name for p in r["files"].values()) == ["faithfulness.png", "image0-methods.png",
                                                                 "image3-methods.png", "sanity.png"]
    code, out, err = _cli(capsys, "explain", "--run", run.id, "--sample", "10", "--methods", "saliency",
                          "--faithfulness")
    assert code == 0, err
    assert "ROAD (pytorch-grad-cam)" in out and "random order" in out and "10 test image(s)" in out


@pytest.mark.parametrize("argv, words", [
    (["--image", "99999"], "test image 99999 does not exist"),
    (["--image", "0", "--methods", "magic"], "unknown method 'magic'"),
    (["--image", "0", "--layer", "nope"], "no layer 'nope'"),
    (["--image", "0", "--target", "10"], "--target must be between 0 and 9"),
    (["--image", "0", "--data-randomisation"], "needs the shipped network trained on shuffled labels"),
    (["--image", "-1"], "must be ≥ 0, got -1"),
])
def test_cli_explain_bad_input_says_what_to_change(saved_run, capsys, argv, words):
    run, _ = saved_run
    try:
        code, _, err = _cli(capsys, "explain", "--run", run.id, *argv)
    except SystemExit as exc:  # argparse's own checks (a type, a choice)
        code, err = exc.code, capsys.readouterr().err
    assert code == 2 and words in err and "Traceback" not in err


def test_cli_explain_refuses_the_data_test_for_another_architecture(saved_run, capsys, monkeypatch):
    monkeypatch.setenv("RESNET_LAB_REFERENCE", str(ROOT / "assets" / "reference"))
    run, data = saved_run
    run.config["model"] = "custom_resnet"  # as if: the message names both architectures
    with pytest.raises(Exception) as exc:
        E.shuffled_run("custom_resnet")
    assert "needs a custom_resnet trained on shuffled labels" in str(exc.value)
    assert "--shuffle-labels" in str(exc.value)


# ------------------------------------------------------------------------------------------ shipped assets

def test_the_shipped_shuffled_label_network_memorised_and_knows_nothing(monkeypatch):
    monkeypatch.setenv("RESNET_LAB_REFERENCE", str(ROOT / "assets" / "reference"))
    run = E.shuffled_run("resnet20")  # checksums verified on the way
    assert run.config["shuffle_labels"] is True and run.config["augment"] is False
    assert run.history[-1]["train_acc"] == pytest.approx(1.0)
    assert 0.05 < run.metrics["top1"] < 0.15  # chance on the true test labels
    assert "--shuffle-labels" in run.about["command"]


def test_the_stored_measurement_shows_the_papers_finding_and_is_reproduced(shared_archive, monkeypatch):
    """assets/explain/reference.json (scripts/explain_asset.py): Guided Backprop barely changes when the classifier
    is re-initialised, Grad-CAM does; and two of its images recomputed here give its numbers."""
    monkeypatch.setenv("RESNET_LAB_REFERENCE", str(ROOT / "assets" / "reference"))
    stored = E.measured()
    r = stored["result"]
    first = r["sanity"]["after_first_step"]
    assert len(r["images"]) >= 6 and first["Guided Backprop"] >= 0.8 and first["Grad-CAM"] <= 0.3
    assert "Guided Backprop" in r["sanity"]["verdict"]["fail"] and "Grad-CAM" in r["sanity"]["verdict"]["pass"]
    assert r["faithfulness"]["ranking"][-1] == E.RANDOM_ORDER  # every method beats a random order
    run = I.open_run("reference", need_checkpoint=True)
    model = run.load_model("cpu").eval()
    data = I.run_dataset(run, str(shared_archive))
    assert E.pick_images(data, sample=len(r["images"])) == r["images"]
    other = E.shuffled_run("resnet20")
    again = E.explain(model, [data.test_x[i] for i in r["images"][:2]], r["images"][:2], [None, None], r["layer"],
                      ["Guided Backprop", "Grad-CAM"], mean=run.config["mean"], std=run.config["std"], sanity=True,
                      shuffled=(other.load_model("cpu").eval(), other.config["mean"], other.config["std"]))
    for m in ("Guided Backprop", "Grad-CAM"):
        np.testing.assert_allclose(again.sanity["per_image"][m], r["sanity"]["per_image"][m][:2], atol=1e-6)
        np.testing.assert_allclose(again.data["per_image"][m], r["data_randomisation"]["per_image"][m][:2],
                                   atol=1e-6)
