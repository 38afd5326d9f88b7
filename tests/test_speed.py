"""The speed preset's pieces, each checked on the CPU against what it claims to do.

The GPU figures (time-to-accuracy next to the public record) come from benchmarks/bench_speed.py; here every
switch is exercised on a few images so a broken one fails fast.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from resnet_lab import training
from resnet_lab.models import build, count_params


def test_whitening_layer_decorrelates_patches():
    torch.manual_seed(0)
    # correlated channels and neighbouring pixels, like natural images
    base = torch.randn(64, 1, 33, 33)
    x = torch.cat([base, 0.8 * base + 0.2 * torch.randn_like(base), -0.5 * base + 0.5 * torch.randn_like(base)], 1)
    x = (x[:, :, 1:, 1:] + x[:, :, :-1, :-1]) / 2
    net = build("speednet")
    net.init_from_data(x)
    with torch.no_grad():
        out = torch.nn.functional.conv2d(x, net.whiten.weight[:12])  # the + half; the - half mirrors it
    flat = out.permute(0, 2, 3, 1).reshape(-1, 12)
    cov = flat.T @ flat / len(flat)
    # whitened: the covariance is diagonal, each entry lambda / (lambda + eps) <= 1
    off = cov - torch.diag(torch.diagonal(cov))
    assert off.abs().max() < 1e-3
    assert torch.all(torch.diagonal(cov) <= 1.0 + 1e-4) and torch.diagonal(cov).max() > 0.5
    assert torch.allclose(net.whiten.weight[12:], -net.whiten.weight[:12])
    assert not net.whiten.weight.requires_grad


def test_whitening_off_is_an_ordinary_trained_conv():
    net = build("speednet", whiten=False)
    before = net.whiten.weight.clone()
    net.init_from_data(torch.randn(4, 3, 32, 32))
    assert torch.equal(before, net.whiten.weight) and net.whiten.weight.requires_grad
    assert count_params(build("speednet")) == count_params(net)


def test_whitening_bias_learns_only_in_the_first_epochs():
    net = build("speednet")
    net.epoch_start(1)
    assert net.whiten.bias.requires_grad
    net.epoch_start(4)
    assert not net.whiten.bias.requires_grad


def test_final_lr_is_configurable_and_validated():
    cfg = training.preset("speed")
    lrs, moms = training.schedule(cfg, 48)
    assert lrs[0] == pytest.approx(0.3) and lrs[-1] == pytest.approx(0.105)
    assert lrs.max() == pytest.approx(1.5, rel=5e-3)  # the peak falls between two steps (2.3 epochs)
    assert int(np.argmax(lrs)) in (109, 110)  # either side of step 109.4
    assert np.all(moms == pytest.approx(0.85))
    assert "lr_end" in dataclasses.replace(cfg, lr_end=2.0).validate()
    assert "tta_shift" in dataclasses.replace(cfg, tta=False).validate()
    assert "flip" in dataclasses.replace(cfg, pipeline="albumentations").validate()
    assert "amp_dtype" in dataclasses.replace(cfg, amp_dtype="fp8").validate()
    assert cfg.validate() == {}


def test_batchnorm_parameters_get_the_scaled_lr_and_the_same_decay_per_step():
    cfg = training.preset("speed")
    model = build("speednet")
    opt = training._make_optimizer(cfg, training._param_groups(cfg, model))
    training._set_lr_momentum(opt, 0.5, 0.85)
    rest, norm = opt.param_groups
    assert rest["lr"] == pytest.approx(0.5) and norm["lr"] == pytest.approx(32.0)
    assert rest["lr"] * rest["weight_decay"] == pytest.approx(norm["lr"] * norm["weight_decay"])
    bn_params = {id(p) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()}
    assert {id(p) for p in norm["params"]} == bn_params
    # scale 1 (every other preset): one group, exactly as before
    assert len(training._param_groups(training.preset("assignment"), build("custom_resnet"))) == 1


class _Data:
    def __init__(self, n=64):
        rng = np.random.default_rng(0)
        self.train_x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        self.train_y = np.arange(n) % 10
        self.mean, self.std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def test_alternating_flips_show_every_image_both_ways_in_two_epochs():
    data = _Data()
    cfg = training.TrainConfig(model="resnet20", flip="alternate", cutout=0, crop_pad=0, pipeline="torch",
                               batch_size=64, device="cpu")
    batches = training._TorchBatches(data, cfg, torch.device("cpu"), seed=0)
    plain = training._TorchBatches(data, dataclasses.replace(cfg, augment=False), torch.device("cpu"), seed=0)

    def flipped_per_image():
        # with no crop and no hole, an augmented image equals the normalized original or its mirror
        (xb, yb), = list(batches.epoch(1, 64))
        ref = torch.stack([plain.T.normalize_batch(torch.from_numpy(data.train_x[i:i + 1]), data.mean, data.std)[0]
                           for i in range(64)])
        out = {}
        for img in xb:
            match = [i for i in range(64) if torch.allclose(img, ref[i])]
            mirror = [i for i in range(64) if torch.allclose(img, ref[i].flip(2))]
            if match:
                out[match[0]] = False
            else:
                out[mirror[0]] = True
        return out

    first, second, third = flipped_per_image(), flipped_per_image(), flipped_per_image()
    assert len(first) == 64
    assert all(first[i] != second[i] for i in range(64))  # each image is seen both ways over two epochs
    assert first == third
    assert 10 < sum(first.values()) < 54  # the starting orientation is random per image


def test_lookahead_ends_on_the_slow_weights():
    model = torch.nn.Linear(3, 2)
    la = training._Lookahead(model, total_steps=10)
    slow_before = [t.clone() for t in la.slow]
    with torch.no_grad():
        model.weight.add_(1.0)
    la.step(4)  # not a sync step
    assert torch.equal(la.slow[0], slow_before[0])
    la.step(10)  # decay 0.95**5: slow moves a little towards fast, fast restarts from slow
    expected = slow_before[0] + (1 - 0.95 ** 5) * 1.0
    assert torch.allclose(model.weight, expected) and torch.allclose(la.slow[0], expected)
    with torch.no_grad():
        model.weight.add_(5.0)
    la.finish()
    assert torch.allclose(model.weight, expected)


def test_shift_tta_averages_mirror_and_shifted_views():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(10))
    x = torch.randint(0, 256, (5, 32, 32, 3), dtype=torch.uint8)
    mean, std = (0.5,) * 3, (0.25,) * 3
    p0 = training._predict_tensor(model, x, mean, std, 8, False, False)
    p1 = training._predict_tensor(model, x, mean, std, 8, False, False, tta=True)
    p2 = training._predict_tensor(model, x, mean, std, 8, False, False, tta=True, tta_shift=True)
    assert not torch.allclose(p0, p1) and not torch.allclose(p1, p2)
    for p in (p0, p1, p2):
        assert torch.allclose(p.sum(1), torch.ones(5))
    from resnet_lab import transforms as T

    xb = T.normalize_batch(x, mean, std)
    with torch.no_grad():
        mirror = (model(xb) + model(xb.flip(3))) / 2
        pad = torch.nn.functional.pad(xb, (1, 1, 1, 1), mode="reflect")
        up_left = (model(pad[:, :, :32, :32]) + model(pad[:, :, :32, :32].flip(3))) / 2
        down_right = (model(pad[:, :, 2:, 2:]) + model(pad[:, :, 2:, 2:].flip(3))) / 2
    assert torch.allclose(p2, torch.softmax(0.5 * mirror + 0.25 * (up_left + down_right), 1), atol=1e-6)


def test_speed_preset_trains_end_to_end_on_cpu(tmp_path):
    """Every switch on at once (whitening, lookahead, alternating flips, shift TTA, BN LR scale) on 256 images."""
    from resnet_lab.data import CLASSES, Dataset
    from resnet_lab.events import Collector
    from resnet_lab.runs import RunStore

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (256, 32, 32, 3), dtype=np.uint8)
    y = np.arange(256, dtype=np.int64) % 10
    data = Dataset(x, y, x[:40], y[:40], list(CLASSES), "random")
    cfg = training.preset("speed", epochs=2, batch_size=64, device="cpu")
    events = Collector()
    run = training.train(cfg, data=data, callback=events, store=RunStore(tmp_path))
    assert run.status == "done"
    assert run.metrics["epochs_done"] == 2 and np.isfinite(run.metrics["train_loss"])
    assert json.loads((run.path / "config.json").read_text())["lookahead"] is True
    assert len(events.of("epoch")) == 2
