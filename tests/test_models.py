"""The model registry: every model's shape, the paper's parameter counts, options, names, summary, CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from resnet_lab import models
from resnet_lab.cli import main
from resnet_lab.models.cifar_resnet import PadShortcut

CIFAR_DEPTHS = (8, 14, 20, 32, 44, 56, 110)
IMAGENET_DEPTHS = (18, 34, 50, 101, 152)
EXPECTED = (["custom_resnet"] + [f"resnet{d}" for d in CIFAR_DEPTHS] + [f"plain{d}" for d in CIFAR_DEPTHS]
            + [f"resnet{d}" for d in IMAGENET_DEPTHS] + [f"preact_resnet{d}" for d in IMAGENET_DEPTHS] + ["speednet"])


def test_registry_lists_every_family():
    assert models.list_models() == EXPECTED
    families = {models.model_info(n)["family"] for n in EXPECTED}
    assert families == {"assignment", "resnet-cifar", "plain-cifar", "resnet", "preact-resnet", "speed"}


@pytest.mark.parametrize("name", EXPECTED)
def test_every_model_maps_a_32px_batch_to_logits(name):
    torch.manual_seed(0)
    model = models.build(name).eval()
    batch = 1 if name.endswith(("101", "152")) else 2
    with torch.no_grad():
        out = model(torch.randn(batch, 3, 32, 32))
    assert out.shape == (batch, 10)
    assert torch.isfinite(out).all()
    assert model.registry_name == name
    info = models.model_info(name)
    assert model.num_classes == 10
    assert model.build_options == {k: o["default"] for k, o in info["options"].items()}
    assert info["description"] and info["input_size"] == (3, 32, 32)


@pytest.mark.parametrize("name", ["resnet18", "preact_resnet50"])
def test_imagenet_stem_takes_224px(name):
    model = models.build(name, num_classes=5, stem="imagenet").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 5)
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 5)


@pytest.mark.parametrize("name, expected", [
    ("custom_resnet", 6_573_130),
    ("resnet20", 269_722),
    ("resnet56", 853_018),
    ("resnet110", 1_727_962),
    ("resnet18", 11_173_962),
])
def test_parameter_counts_match_the_known_values(name, expected):
    assert models.param_count(name) == expected
    assert models.count_params(models.build(name)) == expected


def test_custom_resnet_fc_has_a_bias():
    fc = models.build("custom_resnet").fc
    assert fc.bias is not None and tuple(fc.weight.shape) == (10, 512)


@pytest.mark.parametrize("depth", CIFAR_DEPTHS)
def test_plain_twin_has_the_same_weights_as_option_a(depth):
    assert models.param_count(f"plain{depth}") == models.param_count(f"resnet{depth}", shortcut="A")


def test_projection_shortcuts_add_parameters():
    a, b, c = (models.param_count("resnet20", shortcut=s) for s in "ABC")
    assert a < b < c
    # B projects only at the two stage transitions: 16->32 and 32->64, each a 1x1 conv plus BN.
    assert b - a == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


def test_option_a_subsamples_and_zero_pads():
    x = torch.randn(2, 16, 8, 8)
    out = PadShortcut(16, 2)(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, :16], x[:, :, ::2, ::2])
    assert not out[:, 16:].any()


def test_plain_blocks_have_no_shortcut_and_residual_blocks_do():
    plain, res = models.build("plain20"), models.build("resnet20")
    assert plain.layer2[0].shortcut is None
    assert isinstance(res.layer2[0].shortcut, PadShortcut)
    x = torch.randn(1, 3, 32, 32)
    # Same weights, different wiring: only the shortcuts change the output.
    plain.load_state_dict(res.state_dict())
    with torch.no_grad():
        assert not torch.allclose(plain.eval()(x), res.eval()(x))


def test_custom_resnet_layers_have_readable_names():
    names = {n for n, _ in models.build("custom_resnet").named_modules()}
    for expected in ("prep", "layer1", "layer1.res", "layer2", "layer3", "layer3.res", "pool", "fc",
                     "prep.conv", "layer1.pool", "layer1.res.conv1", "layer3.res.bn2", "layer3.relu"):
        assert expected in names


def test_block_names_follow_torchvision():
    cifar = {n for n, _ in models.build("resnet20").named_modules()}
    assert {"stem.conv", "layer1.0.conv1", "layer2.0.shortcut", "layer3.2.bn2", "fc"} <= cifar
    big = {n for n, _ in models.build("resnet50").named_modules()}
    assert {"layer1.0.conv3", "layer1.0.shortcut.conv", "layer4.2.bn3"} <= big
    pre = {n for n, _ in models.build("preact_resnet18").named_modules()}
    assert {"layer2.0.bn1", "layer2.0.shortcut.conv", "final_bn"} <= pre


def test_no_relu_is_inplace_by_default_and_inplace_is_an_option():
    for name in ("custom_resnet", "resnet20", "resnet50", "preact_resnet18"):
        relus = [m for m in models.build(name).modules() if isinstance(m, torch.nn.ReLU)]
        assert relus and not any(r.inplace for r in relus)
    model = models.build("custom_resnet", inplace_relu=True)
    assert model.prep.relu.inplace and model.build_options["inplace_relu"] is True
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert model.prep.conv.weight.grad is not None


def test_backward_hooks_see_the_residual_blocks():
    model = models.build("custom_resnet").eval()
    seen = []
    model.layer3.res.register_full_backward_hook(lambda m, gin, gout: seen.append(gout[0].shape))
    model.layer1.res.conv1.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    model(torch.randn(2, 3, 32, 32))[:, 3].sum().backward()
    assert seen == [(2, 128, 16, 16), (2, 512, 4, 4)]


def test_grad_cam_runs_on_the_custom_resnet():
    captum_attr = pytest.importorskip("captum.attr")
    model = models.build("custom_resnet").eval()
    cam = captum_attr.LayerGradCam(model, model.layer3).attribute(torch.randn(2, 3, 32, 32), target=1)
    assert cam.shape == (2, 1, 4, 4)


def test_width_and_zero_init_leave_the_paper_nets_as_they_were():
    torch.manual_seed(0)
    default = models.build("resnet20")
    torch.manual_seed(0)
    explicit = models.build("resnet20", shortcut="A", width=16, zero_init_residual=False)
    for (k, a), b in zip(default.state_dict().items(), explicit.state_dict().values()):
        assert torch.equal(a, b), k  # same weights from the same seed: old seeded runs are unchanged
    assert models.param_count("resnet20") == 269_722
    narrow = models.param_count("resnet20", width=8)
    assert narrow < models.param_count("resnet20") / 3.5  # weights scale with width squared
    assert models.param_count("plain32", width=8) == models.param_count("resnet32", width=8)


def test_build_options_rebuild_the_same_architecture():
    model = models.build("resnet32", num_classes=4, shortcut="C")
    again = models.build(model.registry_name, num_classes=model.num_classes, **model.build_options)
    assert model.build_options == {"shortcut": "C", "width": 16, "zero_init_residual": False}
    assert json.loads(json.dumps(model.build_options))
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in again.state_dict().items()}
    again.load_state_dict(model.state_dict())


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown model 'resnet19'") as err:
        models.build("resnet19")
    assert "resnet20" in str(err.value) and "custom_resnet" in str(err.value)
    with pytest.raises(ValueError, match="valid names"):
        models.model_info("vgg16")


@pytest.mark.parametrize("name, options, fragment", [
    ("plain20", {"shortcut": "A"}, "accepted options: width in [4, 8, 16, 32] (default 16)"),
    ("plain20", {"width": 12}, "must be one of [4, 8, 16, 32]"),
    ("resnet20", {"stem": "cifar"}, "shortcut in ['A', 'B', 'C']"),
    ("resnet20", {"shortcut": "D"}, "must be one of ['A', 'B', 'C']"),
    ("resnet18", {"stem": "tiny"}, "must be one of ['cifar', 'imagenet']"),
    ("custom_resnet", {"inplace_relu": 1}, "must be one of [False, True]"),
    ("resnet20", {"num_classes": 0}, "num_classes"),
])
def test_bad_options_say_what_is_accepted(name, options, fragment):
    with pytest.raises(ValueError) as err:
        models.build(name, **options)
    assert fragment in str(err.value)


def test_summary_rows_add_up_and_leave_the_model_as_it_was():
    pytest.importorskip("torchinfo")
    model = models.build("resnet20")
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = models.summary(model)
    assert rows and {"name", "type", "output_shape", "params", "macs"} <= set(rows[0])
    assert sum(r["params"] for r in rows) == models.count_params(model) == rows.totals["params"]
    by_name = {r["name"]: r for r in rows}
    assert by_name["layer1.0.conv1"]["output_shape"] == [1, 16, 32, 32]
    assert by_name["layer3"]["output_shape"] == [1, 64, 8, 8]
    assert by_name["fc"]["macs"] > 0 and rows.totals["macs"] >= sum(r["macs"] for r in rows)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_summary_at_224_for_the_imagenet_stem():
    pytest.importorskip("torchinfo")
    rows = models.summary(models.build("resnet18", stem="imagenet"), (1, 3, 224, 224))
    by_name = {r["name"]: r for r in rows}
    assert by_name["stem.maxpool"]["output_shape"] == [1, 64, 56, 56]
    assert rows.totals["output_shape"] == [1, 10]


def test_the_registry_imports_without_optional_packages():
    code = ("import sys, resnet_lab.models as m; m.build('resnet20'); "
            "heavy = {'torchinfo', 'captum', 'streamlit', 'pandas', 'plotly'} & set(sys.modules); "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_json_lists_every_model(capsys):
    assert main(["models", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [row["name"] for row in listed] == EXPECTED
    by_name = {row["name"]: row for row in listed}
    assert by_name["resnet56"]["params"] == 853_018 and by_name["resnet56"]["family"] == "resnet-cifar"
    assert all(row["description"] for row in listed)


def test_cli_table_and_summary(capsys):
    assert main(["models"]) == 0
    table = capsys.readouterr().out
    assert "custom_resnet" in table and "6,573,130" in table
    pytest.importorskip("torchinfo")
    assert main(["models", "--summary", "resnet20", "--option", "shortcut=B"]) == 0
    out = capsys.readouterr().out
    assert "Total params: 272,474" in out and "'shortcut': 'B'" in out


def test_cli_errors_are_readable(capsys):
    assert main(["models", "--summary", "resnet19"]) == 2
    assert "valid names" in capsys.readouterr().err
    assert main(["models", "--summary", "custom_resnet", "--input-size", "16"]) == 2
    assert "cannot take a 16x16 image" in capsys.readouterr().err


def test_custom_resnet_keeps_its_seeded_weights_and_loads_the_earlier_layout():
    """custom_resnet's stages became Residual modules (branch at ``layer1.res``); the seeded initial weights
    must not change (same parameters created in the same order) and checkpoints of the earlier layout, whose
    branches were ``layer1_res``/``layer3_res``, must load. The fingerprint (shape and sum of every tensor
    under the earlier names, seed 0) was written by the earlier code."""
    import json
    from pathlib import Path

    old = json.loads((Path(__file__).parent / "data" / "custom_resnet_seed0_layout.json").read_text())
    torch.manual_seed(0)
    model = models.build("custom_resnet")
    assert models.count_params(model) == 6_573_130
    earlier = {k.replace("layer1.res.", "layer1_res.").replace("layer3.res.", "layer3_res."): v
               for k, v in model.state_dict().items()}
    assert list(earlier) == list(old)
    for key, (shape, total) in old.items():
        assert list(earlier[key].shape) == shape and math.isclose(float(earlier[key].double().sum()), total,
                                                                  rel_tol=1e-9, abs_tol=1e-9), key
    fresh = models.build("custom_resnet")
    fresh.load_state_dict({k: v.half() for k, v in earlier.items()})  # fp16, earlier names: both load
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(fresh.eval()(x), model.eval()(x), atol=1e-2)
    assert torch.equal(fresh.layer3.res.conv2.weight, earlier["layer3_res.conv2.weight"].half().float())
