"""resnet_lab.attributions (methods side by side, the randomisation sanity check) and resnet_lab.channels."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from resnet_lab import attributions as A
from resnet_lab import channels as C
from resnet_lab import inspect as I
from resnet_lab.models import build

from conftest import random_image, resnet20_with_bn_stats

MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def resnet20():
    return resnet20_with_bn_stats()


_image = random_image


def test_every_method_gives_one_map_per_pixel(resnet20):
    before = {k: v.clone() for k, v in resnet20.state_dict().items()}
    out = A.attribute(resnet20, _image(), None, "layer3", mean=MEAN, std=STD)
    assert list(out) == list(A.METHODS)
    target = out["Grad-CAM"].target
    with torch.no_grad():
        assert target == int(resnet20(I.to_batch(_image(), MEAN, STD)).argmax())
    for name, a in out.items():
        assert a.map.shape == (32, 32) and np.isfinite(a.map).all() and np.abs(a.map).max() > 0, name
        assert a.magnitude.min() >= 0 and a.magnitude.max() == pytest.approx(1.0), name
        assert a.target == target
    assert (out["Grad-CAM"].map >= 0).all() and (out["Saliency"].map >= 0).all()
    assert all(torch.equal(before[k], v) for k, v in resnet20.state_dict().items())
    assert all(p.requires_grad for p in resnet20.parameters())
    with pytest.raises(I.InspectError, match="unknown attribution"):
        A.attribute(resnet20, _image(), 1, "layer3", ["Magic"], mean=MEAN, std=STD)


def test_saliency_is_the_input_gradient(resnet20):
    """Saliency by hand: |d logit_t / d x|, max over colour channels."""
    x = I.to_batch(_image(1), MEAN, STD).requires_grad_(True)
    resnet20(x)[0, 4].backward()
    expected = x.grad[0].abs().amax(0).numpy()
    got = A.attribute(resnet20, _image(1), 4, "layer3", ["Saliency"], mean=MEAN, std=STD)["Saliency"].map
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)


def test_occlusion_is_the_score_drop_of_a_grey_square(resnet20):
    x = I.to_batch(_image(2), MEAN, STD)
    got = A.attribute(resnet20, _image(2), 3, "layer3", ["Occlusion"], mean=MEAN, std=STD)["Occlusion"].map
    with torch.no_grad():
        base = resnet20(x)[0, 3]
        hidden = x.clone()
        hidden[:, :, 0:8, 0:8] = 0  # the first window, alone: pixel (0, 0) is covered by it only
        drop = float(base - resnet20(hidden)[0, 3])
    assert got[0, 0] == pytest.approx(3 * drop, rel=1e-4, abs=1e-5)  # summed over the 3 colour channels


def test_rank_correlation_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.normal(size=(8, 8))
        b = a + rng.normal(scale=rng.uniform(0.1, 3), size=(8, 8))
        a[a < 0] = 0  # ReLU'd maps: many ties
        assert A.rank_correlation(a, b) == pytest.approx(stats.spearmanr(a.ravel(), b.ravel())[0], abs=1e-12)
    assert np.isnan(A.rank_correlation(np.zeros(5), np.arange(5)))


def test_sanity_check_randomises_from_the_top_on_a_copy(resnet20):
    before = {k: v.clone() for k, v in resnet20.state_dict().items()}
    rng_state = torch.get_rng_state()
    assert A.randomisation_steps(resnet20) == ["fc", "layer3", "layer2", "layer1", "stem"]
    assert A.randomisation_steps(resnet20, blocks=True)[:3] == ["fc", "layer3.2", "layer3.1"]
    result = A.sanity_check(resnet20, _image(3), None, "layer3", ["Grad-CAM", "Saliency"], mean=MEAN, std=STD)
    assert result.steps == ["trained", "fc", "layer3", "layer2", "layer1", "stem"]
    for method in ("Grad-CAM", "Saliency"):
        rho = result.correlations[method]
        assert len(rho) == 6 and rho[0] == 1.0 and len(result.maps[method]) == 6
        assert all(np.isnan(r) or -1 <= r <= 1 for r in rho)
        assert rho[-1] < 0.9  # a fully random network explains nothing the trained one did
    assert all(torch.equal(before[k], v) for k, v in resnet20.state_dict().items())  # the shared model untouched
    assert torch.equal(torch.get_rng_state(), rng_state)  # and the global RNG too


def test_the_sanity_verdict_and_the_agreement_words_follow_their_bounds():
    """The judgement the Grad-CAM page prints is the library's: FAIL_RHO after the first step or SANITY_RHO at the
    end fails, SANITY_RHO after the first step partly survives, below both passes, an undefined rho is in none;
    two maps' agreement follows AGREEMENT's bounds."""
    check = A.SanityCheck(steps=["trained", "fc", "stem"], correlations={
        "Grad-CAM": [1.0, 0.7, 0.1], "Saliency": [1.0, 0.9, A.SANITY_RHO], "Occlusion": [1.0, float("nan"), float("nan")],
        "IG": [1.0, 0.3, 0.2]})
    v = A.sanity_verdict(check)
    assert v["fail"] == ["Saliency"] and v["partly"] == ["Grad-CAM"] and v["pass"] == ["IG"]
    assert v["final"]["Grad-CAM"] == 0.1 and v["first"]["Saliency"] == 0.9
    assert A.sanity_verdict(check, ["IG"]) == {"first": {"IG": 0.3}, "final": {"IG": 0.2}, "fail": [], "partly": [],
                                               "pass": ["IG"]}
    assert A.agreement(0.95) == "nearly the same picture" and A.agreement(0.9) == "related but different pictures"
    assert A.agreement(0.2) == "different pictures" == A.agreement(-1.0)
    assert A.agreement(float("nan")) is None


def test_channel_examples_are_each_channels_top_images(resnet20):
    images = np.random.default_rng(4).integers(0, 256, (37, 32, 32, 3), dtype=np.uint8)
    got = C.channel_examples(resnet20, images, "layer2.0", mean=MEAN, std=STD, k=5, batch=8)
    with I.capture(resnet20, ["layer2.0"]) as store, torch.no_grad():
        resnet20(I.to_batch(images, MEAN, STD))
    fmap = store["layer2.0"].numpy()                      # (37, 32, 16, 16)
    scores = fmap.max(axis=(2, 3)).T                      # (32 channels, 37 images)
    assert got.rows.shape == (32, 5) and got.maps.shape == (32, 5, 16, 16) and got.n_images == 37
    for ch in range(32):
        np.testing.assert_allclose(got.scores[ch], np.sort(scores[ch])[::-1][:5], rtol=1e-5)
        np.testing.assert_allclose(scores[ch, got.rows[ch]], got.scores[ch], rtol=1e-5)  # rows carry those scores
        for j in range(5):
            np.testing.assert_allclose(got.maps[ch, j], fmap[got.rows[ch, j], ch], rtol=1e-5, atol=1e-6)
    assert sum(len(m._forward_hooks) for m in resnet20.modules()) == 0


def test_channel_examples_cache_round_trip_and_job(tiny_data_dir, tmp_path, monkeypatch):
    from resnet_lab.data import load_dataset
    from resnet_lab.jobs import JobRegistry
    from resnet_lab.runs import RunStore
    from resnet_lab.training import predict

    monkeypatch.setenv("RESNET_LAB_CACHE", str(tmp_path / "cache"))
    data = load_dataset(str(tiny_data_dir))
    torch.manual_seed(0)
    model = build("resnet20").eval()
    store = RunStore(tmp_path / "runs", reference_root="")
    run = store.create({"model": "resnet20", "classes": data.classes, "data": str(tiny_data_dir),
                        "mean": list(data.mean), "std": list(data.std)})
    store.save_checkpoint(run, model.state_dict())
    store.save_predictions(run, predict(model, data.test_x, data.mean, data.std, torch.device("cpu")),
                           data.test_y, data.test_index)
    store.set_status(run, "done")
    n = len(data.test_y)
    assert C.cached(run, "layer3", n) is None
    job = JobRegistry().start("channels", _partial(run, tmp_path), owner="t", title="channels")
    assert job.wait(300) and job.status == "done", job.error
    got = C.cached(run, "layer3", n)
    assert got is not None and got.rows.shape == (64, 9) and got.n_images == n
    direct = C.channel_examples(model, I.run_images(run.predictions(), data), "layer3", mean=data.mean,
                                std=data.std)
    np.testing.assert_array_equal(got.rows, direct.rows)


def _partial(run, tmp_path):
    import functools

    return functools.partial(C.examples_job, run_path=str(run.path), reference=False, layer="layer3", source=None)
