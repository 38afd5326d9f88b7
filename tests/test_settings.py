"""One definition drives every surface: each TrainConfig / LRFindConfig field's metadata gives the CLI flag, the
Train page widget, the range check and the docs/settings.md table row. These tests enumerate the fields, so a field added
without a flag, a widget or a table row fails here."""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import pytest

from resnet_lab import lr_finder, settings, training
from resnet_lab.settings import specs

ROOT = Path(__file__).resolve().parent.parent
TRAIN = specs(training.TrainConfig)
LRF = specs(lr_finder.LRFindConfig)


def help_text(command: str) -> str:
    from resnet_lab.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command].format_help()


@pytest.mark.parametrize("command,table", [("train", TRAIN), ("lr-find", LRF)])
def test_every_field_has_a_cli_flag_with_its_help(command, table):
    text = help_text(command)
    for name, spec in table.items():
        assert re.search(rf"{re.escape(spec.flag)}\b", text), f"{command} --help lacks {spec.flag} ({name})"
        assert spec.meta.help.split()[0] in text, f"{command} --help lacks the help of {name}"


def a_value(spec, current):
    """A valid value for the field that differs from ``current``, as CLI text and as the parsed value."""
    if spec.name == "model":
        return "resnet32", "resnet32"
    if spec.name == "model_options":
        return "width=8", {"width": 8}
    if spec.name == "device":
        return "cpu", "cpu"
    if spec.name == "data":
        return "some/folder", "some/folder"
    if spec.name == "preset":
        return "paper-resnet20", "paper-resnet20"
    if spec.meta.choices:
        value = next(c for c in spec.meta.choices if c != current)
        return str(value), value
    if spec.kind == "int":
        value = int(spec.meta.lo or 0) + 3 if current != int(spec.meta.lo or 0) + 3 else int(spec.meta.lo or 0) + 4
        return str(value), value
    if spec.kind == "float":
        hi = spec.meta.hi if spec.meta.hi is not None else 1.0
        value = (spec.meta.lo or 0) + (hi - (spec.meta.lo or 0)) / 7
        return repr(value), value
    raise AssertionError(f"no test value for {spec.name}")


@pytest.mark.parametrize("name", list(TRAIN))
def test_each_train_flag_sets_its_field(name):
    from resnet_lab.cli.train import add_train_args, config_from_args

    spec = TRAIN[name]
    base = training.preset("quick-cpu")
    parser = argparse.ArgumentParser()
    add_train_args(parser)
    if spec.kind == "bool":
        argv = [spec.flag if not getattr(base, name) else "--no-" + spec.flag[2:]]
        expected = not getattr(base, name)
    else:
        text, expected = a_value(spec, getattr(base, name))
        argv = [spec.flag, text]
    # fields that must agree with another: give the other too (the relation itself is tested in test_training)
    argv += {"optimizer": ["--no-nesterov"], "momentum_max": ["--momentum-min", "0.1"], "tta_shift": ["--tta"],
             # NLL loss needs a network that returns probabilities: a student's softmax net
             "loss": ["--model", str(ROOT / "tests" / "data" / "student_nets" / "small_softmax.py") + ":TinyNet"],
             }.get(name, [])
    args = parser.parse_args(["--preset", "quick-cpu", *argv] if name != "preset" else argv)
    if name in ("device", "data"):  # parsed as given; validate() decides whether it is usable here
        assert getattr(args, name) == expected
        return
    if name == "peak_epoch":  # must stay before the end of quick-cpu's 5 epochs
        args.peak_epoch, expected = 2.5, 2.5
    config = config_from_args(args)
    assert getattr(config, name) == expected, (name, argv)


def test_none_on_the_command_line_means_the_fields_empty_value():
    from resnet_lab.cli.train import add_train_args, config_from_args

    parser = argparse.ArgumentParser()
    add_train_args(parser)
    config = config_from_args(parser.parse_args(["--preset", "quick-cpu", "--subset", "none"]))
    assert config.subset is None and config.test_subset == training.PRESETS["quick-cpu"]["test_subset"]
    assert config_from_args(parser.parse_args(["--preset", "quick-cpu"])).subset == 4000  # omitted: the preset's


@pytest.mark.parametrize("table,cls", [(TRAIN, training.TrainConfig), (LRF, lr_finder.LRFindConfig)])
def test_range_messages_come_from_the_metadata(table, cls):
    checked = 0
    for name, spec in table.items():
        m = spec.meta
        if spec.kind not in ("int", "float") or (m.lo is None and m.hi is None):
            continue
        bad = (m.hi + 1 if m.hi is not None else m.lo - 1) if spec.kind == "int" else \
            (m.hi * 2 + 1 if m.hi is not None else m.lo - 1.0)
        problems = settings.check(cls(**{name: bad}))
        assert name in problems, name
        assert problems[name].startswith(f"{spec.label} must be {spec.range_text()}"), problems[name]
        assert cls(**{name: math.nan}).validate().get(name), f"{name} accepted NaN"
        checked += 1
    assert checked >= 8


def test_choices_and_whole_numbers_are_checked():
    problems = training.TrainConfig(optimizer="rmsprop", epochs=2.5, flip="sideways", augment="yes").validate()
    assert problems["optimizer"] == "optimizer must be one of adam, adamw, sgd"
    assert problems["epochs"].startswith("epochs must be a whole number from 1 to 10,000")
    assert "flip" in problems and "augment" in problems


def test_a_field_without_metadata_is_refused():
    from dataclasses import dataclass

    @dataclass
    class Loose:
        x: int = 1

    with pytest.raises(TypeError, match="no setting metadata"):
        specs(Loose)


def test_readme_table_is_the_generated_one():
    """The settings tables of docs/settings.md are generated (scripts/docs_generated.py); a field or preset change
    must be carried into them by re-running it."""
    readme = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    for table in (settings.markdown_table(training.TrainConfig, training.PRESETS),
                  settings.markdown_table(lr_finder.LRFindConfig, lr_finder.DEFAULTS)):
        assert table in readme, "docs/settings.md is stale: run python scripts/docs_generated.py"
    assert readme.count("| `--") >= len(TRAIN) + len(LRF)


def test_train_page_shows_every_field(tiny_data_env, runs_dir):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file("../app/Home.py", default_timeout=60).run()
    at.switch_page("../pages/train.py").run()
    assert not at.exception
    widgets = {}
    for kind in ("number_input", "selectbox", "checkbox", "text_input"):
        for w in getattr(at, kind):
            if w.key and w.key.startswith("train_"):
                widgets[w.key] = w
    for name, spec in TRAIN.items():
        if name == "model_options":
            options = [k for k in widgets if k.startswith("train_model_options.")]
            assert options, "no model option widgets"
            continue
        key = f"train_{name}"
        assert key in widgets, f"the Train page has no widget for {name}"
        if name != "preset":
            assert widgets[key].label.startswith(spec.title), (widgets[key].label, spec.title)
    # a generated widget drives the config: the shortcut option reaches validation and the run's config
    at.selectbox(key="train_model_options.shortcut").set_value("B").run()
    at.number_input(key="train_crop_pad").set_value(40).run()
    assert "crop padding must be a whole number from 0 to 16 (got 40)" in " ".join(e.value for e in at.error)
