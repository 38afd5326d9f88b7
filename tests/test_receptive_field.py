"""Analytic receptive fields (hand-computed cases, real architectures, branches) and the effective RF."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from resnet_lab import receptive_field as rf
from resnet_lab.cli import main


def row(table, name):
    return table.layer(name)


# ----------------------------------------------------------------------------------------------- formulas by hand

class Chain(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.c3 = nn.Conv2d(4, 4, 3, padding=2, dilation=2)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.c3(self.pool(self.c2(self.c1(x)))))


def test_single_path_matches_hand_computation():
    t = rf.receptive_fields(Chain(), 32)
    # (rf, jump, start = centre of unit 0, output side), worked out with r += (k'-1) j, start += ((k'-1)/2 - p) j
    expected = {"c1": (3, 1, 0, 32), "c2": (5, 2, 0, 16), "pool": (7, 4, 1, 8), "c3": (23, 4, 1, 8), "bn": (23, 4, 1, 8)}
    for name, (r, j, start, side) in expected.items():
        got = row(t, name)
        assert got.rf_max == (r, r) and got.rf_min == (r, r), name
        assert got.jump == (j, j), name
        assert got.start == (start, start), name
        assert got.out_size == (side, side), name
    assert row(t, "c3").kernel == (3, 3) and row(t, "c3").dilation == (2, 2)
    assert row(t, "bn").op == "pass" and not row(t, "bn").geometric


def test_vgg16_conv5_3_is_196_and_pool5_is_212():
    t = rf.receptive_fields("torchvision:vgg16", 224)
    conv5_3, pool5 = row(t, "features.28"), row(t, "features.30")
    assert conv5_3.type == "Conv2d" and conv5_3.rf_max == (196, 196) and conv5_3.jump == (16, 16)
    assert pool5.type == "MaxPool2d" and pool5.rf_max == (212, 212) and pool5.jump == (32, 32)
    assert pool5.out_size == (7, 7)
    assert pool5.rf_min == pool5.rf_max  # a single path


def test_resnet50_final_stage_is_427_at_jump_32():
    t = rf.receptive_fields("torchvision:resnet50", 224)
    last = row(t, "layer4.2.relu_2")  # output of the last bottleneck
    assert last.rf_max == (427, 427) and last.jump == (32, 32) and last.out_size == (7, 7)
    # The shortest path skips every block through the 1x1 projections: stem 7x7/2 + 3x3/2 max-pool = 11 px.
    assert last.rf_min == (11, 11)
    assert t.final.name == "layer4.2.relu_2"
    glob = row(t, "avgpool")
    assert glob.op == "global" and glob.fixed and "whole input" in glob.note


class TwoBranch(nn.Module):
    """Branch a: two 3x3 convs (RF 5); branch b: a 1x1 conv (RF 1); joined by + and by cat."""

    def __init__(self, merge="add"):
        super().__init__()
        self.a1 = nn.Conv2d(3, 4, 3, padding=1)
        self.a2 = nn.Conv2d(4, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 1)
        self.merge = merge

    def forward(self, x):
        a, b = self.a2(self.a1(x)), self.b(x)
        return a + b if self.merge == "add" else torch.cat([a, b], 1)


@pytest.mark.parametrize("merge,op", [("add", "add"), ("cat", "cat")])
def test_two_branches_give_different_max_and_min(merge, op):
    t = rf.receptive_fields(TwoBranch(merge), 16)
    joined = t.layers[-1]
    assert joined.op == op
    assert joined.rf_max == (5, 5) and joined.rf_min == (1, 1)
    assert joined.jump == (1, 1)
    box = t.box(joined.name, (8, 8))
    assert (box["top"], box["bottom"], box["min_top"], box["min_bottom"]) == (6, 10, 8, 8)


class Misaligned(nn.Module):
    """Two branches that land on the same 8x8 grid with different strides (2 and 3): Distill's 'not aligned'."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.b = nn.Conv2d(3, 4, 1, stride=3, padding=4)

    def forward(self, x):
        return self.a(x) + self.b(x)


def test_branches_with_different_jumps_are_flagged_not_aligned():
    t = rf.receptive_fields(Misaligned(), 16)
    add = t.layers[-1]
    assert row(t, "a").out_size == row(t, "b").out_size == (8, 8)
    assert "not aligned" in add.note and "2, 3" in add.note
    assert add.jump == (3, 3) and add.rf_max == (3, 3) and add.rf_min == (1, 1)


def test_cifar_resnet_shortest_path_and_plain_twin():
    res, plain = rf.receptive_fields("resnet20", 32), rf.receptive_fields("plain20", 32)
    # Same layers: the longest path is identical; option-A shortcuts are 1x1 subsampling, so the shortest
    # path of resnet20 is the stem conv alone, while plain20 has only one path.
    assert res.final.rf_max == plain.final.rf_max == (81, 81)  # 3 + 3·4 + (2+4+2·8) + (4+8+2·16)
    assert res.final.rf_min == (3, 3)
    assert plain.final.rf_min == (81, 81)
    assert any(r.op == "slice" for r in res.layers)  # x[:, :, ::2, ::2] in the shortcut, read as stride 2


def test_custom_resnet_exceeds_the_image_from_layer3_res_conv1():
    t = rf.receptive_fields("custom_resnet", 32)
    exceed = [r for r in t.exceeding() if r.spatial and not r.fixed]
    assert exceed[0].name == "layer3.res.conv1" and exceed[0].rf_max == (48, 48)
    assert t.final.name == "pool" and t.final.rf_max == (88, 88) and t.final.rf_min == (48, 48)


def test_every_registry_model_traces_without_opaque_layers():
    from resnet_lab.models import list_models

    for name in list_models():
        t = rf.receptive_fields(name, 32)
        assert not t.notes and not t.leaves, name
        assert not [r.name for r in t.layers if r.op == "opaque"], name
        f = t.final
        assert f.rf_max[0] >= f.rf_min[0] >= 3, name
        assert t.layers[-1].spatial is False  # the classifier ends the spatial part


def test_googlenet_inception_concat_has_range():
    t = rf.receptive_fields("torchvision:googlenet", 224)
    cats = [r for r in t.layers if r.op == "cat"]
    assert len(cats) == 9  # nine inception modules
    assert all(r.rf_min[0] < r.rf_max[0] for r in cats)
    assert t.final.jump == (32, 32)


def test_caller_model_is_untouched():
    model = Chain().train()
    model.c1.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rf.receptive_fields(model, 32)
    assert model.training and not model.c1.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ------------------------------------------------------------------------------------------------ bad input

def test_too_small_input_names_the_layer():
    with pytest.raises(rf.RFError, match=r"too small.*features\.30.*MaxPool2d.*0×0"):
        rf.receptive_fields("torchvision:vgg16", 16)


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 5, stride=2, padding=2)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent Python: torch.fx cannot follow it
            return self.conv(x)
        return self.conv(-x)


class WithUntraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.weird = Untraceable()
        self.head = nn.Conv2d(4, 4, 3)

    def forward(self, x):
        return self.head(self.weird(self.stem(x)))


def test_untraceable_submodule_becomes_a_leaf_with_estimated_geometry():
    t = rf.receptive_fields(WithUntraceable(), 32)
    assert t.leaves == ["weird"]
    assert "weird" in t.notes[0] and "Untraceable" in t.notes[0]
    weird = row(t, "weird")
    assert weird.op == "opaque" and "estimated" in weird.note
    assert (weird.kernel, weird.stride, weird.padding) == ((5, 5), (2, 2), (2, 2))
    assert weird.rf_max == (7, 7) and row(t, "head").rf_max == (11, 11) and row(t, "head").jump == (2, 2)


def test_untraceable_root_says_so():
    class Root(nn.Module):
        def forward(self, x):
            return x if x.mean() > 0 else -x

    with pytest.raises(rf.RFError, match="cannot trace Root.forward"):
        rf.receptive_fields(Root(), 8)


# ------------------------------------------------------------------------------------------- gradients agree

def positive(model: nn.Module) -> nn.Module:
    model = model.double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.abs() + 0.05)
    return model


STACKS = {
    "convs": lambda: nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 5, stride=2, padding=2),
                                   nn.Conv2d(2, 1, 3, stride=2)),
    "conv_pool": lambda: nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.AvgPool2d(2),
                                       nn.Conv2d(2, 2, 3, padding=1), nn.AvgPool2d(3, stride=2, padding=1),
                                       nn.Conv2d(2, 1, 3, padding=1)),
    "branches": lambda: TwoBranch("add"),
}


@pytest.mark.parametrize("name", list(STACKS))
def test_gradient_support_equals_the_analytic_rf(name):
    """With positive weights and no nonlinearity every input pixel inside the RF has a non-zero gradient and
    every pixel outside has exactly zero: the support *is* the receptive field (clipped to the image)."""
    in_ch = 3 if name == "branches" else 1
    model = positive(STACKS[name]())
    side = 29
    table = rf.receptive_fields(model, side, in_channels=in_ch)
    x = torch.rand(2, in_ch, side, side, dtype=torch.float64) + 0.1
    last = table.layers[-1]
    h, w = last.out_size
    for pos in [(0, 0), (h - 1, w - 1), ((h - 1) // 2, (w - 1) // 2), (1, w - 2)]:
        heat = rf.effective_rf(model, x, last.name, pos, table=table)["raw"]
        box = table.box(last.name, pos)
        expected = np.zeros((side, side), bool)
        expected[box["top"]:box["bottom"] + 1, box["left"]:box["right"] + 1] = True
        assert np.array_equal(heat > 0, expected), (name, pos)


def test_dilated_stack_support_fits_the_box():
    model = positive(nn.Sequential(nn.Conv2d(1, 1, 3, padding=2, dilation=2), nn.Conv2d(1, 1, 3, stride=2)))
    table = rf.receptive_fields(model, 20, in_channels=1)
    heat = rf.effective_rf(model, torch.rand(1, 1, 20, 20, dtype=torch.float64) + 0.1, "1", (4, 4),
                           table=table)["raw"]
    rows, cols = np.nonzero(heat)
    box = table.box("1", (4, 4))
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (box["top"], box["bottom"], box["left"], box["right"])
    assert table.layer("1").rf_max == (7, 7)


def test_effective_rf_is_concentrated_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = rf.load_model("resnet20").eval()
    model.train()
    table = rf.receptive_fields(model, 32)
    out = rf.effective_rf(model, torch.randn(4, 3, 32, 32), "layer2.2.relu2", table=table)
    heat = out["heatmap"]
    assert heat.shape == (32, 32) and heat.max() == pytest.approx(1.0)
    assert out["position"] == (7, 7)
    assert model.training and all(p.grad is None for p in model.parameters())
    row_ = table.layer("layer2.2.relu2")
    centre = (row_.start[0] + 7 * row_.jump[0], row_.start[1] + 7 * row_.jump[1])
    assert np.unravel_index(heat.argmax(), heat.shape) in {(r, c) for r in range(12, 20) for c in range(12, 20)}
    assert rf.erf_extent(heat, centre, 0.9) < row_.rf_max[0]  # the effective RF is smaller than the analytic one


def test_erf_extent_of_a_square():
    heat = np.zeros((21, 21))
    heat[8:13, 8:13] = 1.0
    assert rf.erf_extent(heat, (10, 10), 1.0) == 5
    assert rf.erf_extent(heat, (10, 10), 0.2) in (1, 3)


# ------------------------------------------------------------------------------------------------------ CLI

def test_cli_json_last_line_is_a_list_of_layers(capsys):
    assert main(["rf", "--model", "torchvision:vgg16", "--input-size", "224", "--json"]) == 0
    records = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    by_name = {r["name"]: r for r in records}
    assert by_name["features.28"]["rf_max"] == 196 and by_name["features.30"]["rf_max"] == 212
    for key in ("name", "kernel", "stride", "jump", "rf_max", "rf_min", "start", "out_size"):
        assert key in records[1]


def test_cli_table_and_errors(capsys):
    assert main(["rf", "--model", "resnet20"]) == 0
    out = capsys.readouterr().out
    assert "layer3.2.relu2" in out and "109" in out and "> image" in out
    assert main(["rf", "--model", "torchvision:vgg16", "--input-size", "16"]) == 2
    assert "features.30" in capsys.readouterr().err
    assert main(["rf", "--model", "nosuchnet"]) == 2
    assert "unknown model" in capsys.readouterr().err
