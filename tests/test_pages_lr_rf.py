"""The LR Finder and Receptive Field pages: AppTest (widgets by key, the job run directly, finished results
injected through session state — AppTest cannot fire run_every or click plotly) and the real app in Chromium."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from conftest import ROOT, assert_no_exception, wait_for_count, wait_for_script

if str(ROOT / "app") not in sys.path:  # the page scripts import lab_ui from app/; so does this test
    sys.path.insert(0, str(ROOT / "app"))

LR_PAGE = "../pages/lr_finder.py"
RF_PAGE = "../pages/receptive_field.py"


def app(page: str):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file("../app/Home.py", default_timeout=120).run()
    at.switch_page(page).run()
    return at


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def no_exception(at) -> None:
    assert not at.exception, texts(at.exception)


def synthetic_result(label_model="resnet20", optimizer="sgd", batch=64, shift=0.0, rising=False, **config):
    from resnet_lab import lr_finder as lrf

    x = np.linspace(-6, 1, 80)
    if rising:
        loss = 2.3 + 0.3 * (x + 6) / 7
    else:
        loss = 2.3 - 1.5 / (1 + np.exp(-(x + 3 - shift) * 2.0)) + 0.9 * np.maximum(x + 0.5, 0) ** 2
    lrs = list(10 ** x)
    suggestions, message = lrf.suggest(lrs, loss)
    return lrf.LRFindResult(lrs, list(loss), list(loss + 0.05), suggestions, message=message,
                            descended=not rising,
                            config={**lrf.LRFindConfig(model=label_model, optimizer=optimizer, batch_size=batch,
                                                       **config).to_dict()},
                            device="cpu", seconds=12.0, images_per_s=400.0, n_train=1000)


def curve_entry(i, result):
    return {"id": f"test{i}", "label": f"#{i} {result.label}", "result": result.to_dict()}


# ------------------------------------------------------------------------------------------------- LR Finder

def test_lr_settings_are_validated_next_to_the_fields(tiny_data_env, runs_dir):
    at = app(LR_PAGE)
    no_exception(at)
    assert not at.button(key="lrf_start").disabled
    at.text_input(key="lrf_start_lr").set_value("1").run()
    at.text_input(key="lrf_end_lr").set_value("0.1").run()
    at.number_input(key="lrf_iterations").set_value(0).run()
    no_exception(at)
    errors = texts(at.error)
    assert "must be larger than the start LR" in errors and "whole number ≥ 2 (got 0)" in errors
    assert at.button(key="lrf_start").disabled
    at.text_input(key="lrf_start_lr").set_value("abc").run()
    assert "'abc' is not a number" in texts(at.error)
    at.text_input(key="lrf_start_lr").set_value("1e-5").run()
    at.text_input(key="lrf_end_lr").set_value("10").run()
    at.number_input(key="lrf_iterations").set_value(30).run()
    at.number_input(key="lrf_subset").set_value(100).run()
    at.number_input(key="lrf_batch_size").set_value(128).run()
    assert "larger than the subset" in texts(at.error) and at.button(key="lrf_start").disabled


def test_lr_start_runs_a_job_then_the_curve_carries_over_to_training(tiny_data_env, runs_dir):
    import lab_ui

    at = app(LR_PAGE)
    at.number_input(key="lrf_subset").set_value(100).run()
    at.number_input(key="lrf_batch_size").set_value(16).run()
    at.number_input(key="lrf_iterations").set_value(15).run()
    at.text_input(key="lrf_start_lr").set_value("1e-3").run()
    at.checkbox(key="lrf_augment").uncheck().run()
    at.button(key="lrf_start").click().run()
    no_exception(at)
    job = lab_ui.job_registry().get(at.session_state["lrf_job_id"])
    assert job is not None and job.kind == "lr_find"
    assert job.wait(180) and job.status == "done", job.error
    assert len(job.events("batch")) == job.result.iterations
    at.run()  # what the fragment's final st.rerun() does in the browser
    no_exception(at)
    curves = at.session_state["lrf_curves"]
    assert len(curves) == 1 and curves[0]["result"]["config"]["iterations"] == 15
    result = job.result
    assert result.config["preset"] == "quick-cpu" and result.config["nesterov"]  # swept for the preset's run
    if result.suggestions:
        best = result.suggestion("minimum").lr  # pre-selected for SGD (lr_finder.recommended)
        assert at.session_state["lrf_lr_max"] == pytest.approx(best, rel=1e-2)
    at.number_input(key="lrf_lr_max").set_value(0.04).run()
    assert at.session_state["lrf_lr_min"] == pytest.approx(0.004)  # the seed's rule: max / 10
    at.number_input(key="lrf_lr_min").set_value(0.001).run()  # ... and editable
    assert "the settings this curve was swept with: resnet20, sgd (Nesterov), batch 16" in texts(at.caption)
    at.button(key="lrf_use_for_training").click().run()
    no_exception(at)
    assert at.title[0].value == "Train"
    shown = texts(at.success)
    assert "From the LR Finder" in shown and "0.04" in shown and "0.001" in shown
    # the run is the one the curve was measured for: its batch size, optimizer and augmentation come along
    assert at.number_input(key="train_batch_size").value == 16 and at.number_input(key="train_lr_max").value == 0.04
    assert at.checkbox(key="train_augment").value is False
    assert at.selectbox(key="train_preset").value == "quick-cpu"


def test_use_for_training_carries_the_swept_run_and_its_preset(tiny_data_env, runs_dir):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file("../app/Home.py", default_timeout=120)
    swept = synthetic_result(label_model="resnet32", optimizer="adam", batch=64, preset="paper-resnet20",
                             weight_decay=1e-4, momentum=0.9, cutout=0)
    at.session_state["lrf_curves"] = [curve_entry(1, swept)]
    at.run()
    at.switch_page(LR_PAGE).run()
    no_exception(at)
    assert "gets the preset **paper-resnet20**" in texts(at.caption)
    at.button(key="lrf_use_for_training").click().run()
    no_exception(at)
    assert at.title[0].value == "Train"
    assert at.selectbox(key="train_preset").value == "paper-resnet20"
    assert at.number_input(key="train_batch_size").value == 64
    assert at.selectbox(key="train_model").value == "resnet32" and at.selectbox(key="train_optimizer").value == "adam"
    assert at.number_input(key="train_lr_max").value == pytest.approx(swept.suggestion().lr, rel=1e-2)
    assert swept.suggestion().name == "steepest"  # Adam's pre-selected rule
    assert "Batch size = 64" in texts(at.success)


def test_a_sweep_that_cannot_be_the_presets_run_is_not_handed_over(tiny_data_env, runs_dir):
    """The speed preset's label smoothing, lookahead and 64x batch-norm LR are not in the range test: the page says
    so and refuses the hand-over instead of carrying an LR measured for another run."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file("../app/Home.py", default_timeout=120)
    at.session_state["lrf_curves"] = [curve_entry(1, synthetic_result(label_model="speednet", batch=1024,
                                                                        preset="speed", nesterov=True))]
    at.run()
    at.switch_page(LR_PAGE).run()
    no_exception(at)
    warning = texts(at.warning)
    assert "Not handed over" in warning and "label smoothing 0.2" in warning and "lookahead" in warning
    assert at.button(key="lrf_use_for_training").disabled


def test_choosing_a_preset_sets_the_sweep_up_for_its_run(tiny_data_env, runs_dir):
    at = app(LR_PAGE)
    no_exception(at)
    assert at.selectbox(key="lrf_preset").value == "quick-cpu"
    assert (at.selectbox(key="lrf_optimizer").value, at.number_input(key="lrf_batch_size").value,
            at.checkbox(key="lrf_nesterov").value) == ("sgd", 128, True)
    at.selectbox(key="lrf_preset").set_value("assignment").run()
    no_exception(at)
    assert (at.selectbox(key="lrf_model").value, at.selectbox(key="lrf_optimizer").value,
            at.number_input(key="lrf_batch_size").value, at.checkbox(key="lrf_nesterov").value,
            at.number_input(key="lrf_momentum").value) == ("custom_resnet", "adam", 512, False, 0.85)
    at.number_input(key="lrf_batch_size").set_value(64).run()
    at.button(key="lrf_reset_preset").click().run()
    assert at.number_input(key="lrf_batch_size").value == 512


def test_finished_curves_render_overlay_and_the_rule_buttons(tiny_data_env, runs_dir):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file("../app/Home.py", default_timeout=120)
    first, second = synthetic_result(), synthetic_result(optimizer="adam", shift=-1.5)
    at.session_state["lrf_curves"] = [curve_entry(1, first), curve_entry(2, second)]
    at.run()
    at.switch_page(LR_PAGE).run()
    no_exception(at)
    assert at.checkbox(key="lrf_show_test1").value and at.checkbox(key="lrf_show_test2").value
    assert at.selectbox(key="lrf_current").value == "#2 resnet20 · adam · batch 64"
    table = at.table[0].value
    assert list(table.index) == ["steepest", "minimum", "torch-lr-finder", "valley", "minimum/10", "slide"]
    lrs_ = [s.lr for s in second.suggestions]
    captions = texts(at.caption)
    assert f"the rules span a factor of {max(lrs_) / min(lrs_):,.0f} in LR" in captions  # computed, not typed
    assert "Cost: 80 steps × batch 64 = 5,120 images (5.1 passes over 1,000 training images)" in captions
    low = min(second.losses)
    assert f"back up to {max(second.losses[second.losses.index(low):]):.2f}" in captions
    assert np.allclose(table["LR"].astype(float), [s.lr for s in second.suggestions], rtol=1e-2)
    assert at.session_state["lrf_lr_max"] == pytest.approx(second.suggestion("steepest").lr, rel=1e-2)
    at.button(key="lrf_use_valley").click().run()
    valley = second.suggestion("valley").lr
    assert at.session_state["lrf_lr_max"] == pytest.approx(valley, rel=1e-2)
    assert at.session_state["lrf_lr_min"] == pytest.approx(valley / 10, rel=1e-2)
    at.selectbox(key="lrf_current").set_value("#1 resnet20 · sgd · batch 64").run()
    no_exception(at)
    assert at.session_state["lrf_lr_max"] == pytest.approx(first.suggestion("minimum").lr, rel=1e-2)  # SGD's rule
    at.checkbox(key="lrf_show_test2").uncheck().run()
    no_exception(at)


def test_a_curve_without_descent_says_so(tiny_data_env, runs_dir):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file("../app/Home.py", default_timeout=120)
    at.session_state["lrf_curves"] = [curve_entry(1, synthetic_result(rising=True))]
    at.run()
    at.switch_page(LR_PAGE).run()
    no_exception(at)
    assert "never went down" in texts(at.warning)
    assert not at.table  # no suggestion table to mislead anyone


# -------------------------------------------------------------------------------------------- Receptive Field

def test_rf_page_table_metrics_and_errors(tiny_data_env, runs_dir):
    at = app(RF_PAGE)
    no_exception(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["RF, longest path"] == "88 px"  # custom_resnet
    assert metrics["RF, shortest path"] == "48 px" and metrics["Jump (effective stride)"] == "32 px"
    assert at.selectbox(key="rf_layer").value == "layer2.conv"  # the first layer seeing half the image (18 px)
    assert "RF is more than the size of the image!" in texts(at.markdown)
    table = at.dataframe[0].value
    assert "layer3.res.conv1" in set(table["layer"])
    at.selectbox(key="rf_model").set_value("torchvision:vgg16").run()
    no_exception(at)
    assert at.number_input(key="rf_input_size").value == 224
    assert {m.label: m.value for m in at.metric}["RF, longest path"] == "212 px"
    at.number_input(key="rf_input_size").set_value(16).run()
    no_exception(at)
    assert "features.30" in texts(at.error) and "too small" in texts(at.error)


@pytest.mark.parametrize("class_server", [False, True])
def test_rf_page_on_a_students_own_file(tiny_data_env, runs_dir, monkeypatch, class_server):
    """The hand-written assignment net has the lab's custom_resnet RF (88 px longest path, 48 shortest). On a class
    server the table is traced in a job's worker and the effective RF (which runs the file) is left out."""
    from conftest import settle

    from resnet_lab.models import files

    if class_server:  # with the teacher's permission for model files
        monkeypatch.setenv("RESNET_LAB_MAX_EPOCHS", "3")
        monkeypatch.setenv("RESNET_LAB_MODEL_FILES", "true")
    text = (ROOT / "tests" / "data" / "student_nets" / "functional_style.py").read_text()
    spec = files.save_upload(text, "my_net.py", "Net")
    at = app(RF_PAGE)
    at.session_state["my_models"] = {spec: {"label": "my_net.py:Net (yours)", "params": 6573120}}
    at.run()
    at.selectbox(key="rf_model").set_value(spec).run()
    settle(at)
    no_exception(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["RF, longest path"] == "88 px" and metrics["RF, shortest path"] == "48 px"
    assert ("left out here" in texts(at.info)) is class_server
    assert "upload:" not in texts(at.markdown) + texts(at.caption)


def test_rf_page_unit_position_and_trained_run(tiny_data_env, runs_dir):
    import torch

    from resnet_lab.models import build
    from resnet_lab.runs import RunStore

    store = RunStore(runs_dir)
    run = store.create({"model": "resnet20", "classes": [str(i) for i in range(10)]})
    torch.manual_seed(1)
    store.save_checkpoint(run, build("resnet20").state_dict())
    store.set_status(run, "done")

    at = app(RF_PAGE)
    at.selectbox(key="rf_model").set_value("resnet20").run()
    no_exception(at)
    at.selectbox(key="rf_layer").set_value("layer2.0.conv1").run()
    assert at.number_input(key="rf_row").value == 7  # the centre of a 16×16 map
    at.number_input(key="rf_row").set_value(0).run()
    no_exception(at)
    assert "Unit (0, 7) of `layer2.0.conv1`: rows 0–8, cols 6–22" in texts(at.caption)
    assert at.selectbox(key="rf_main_run").value.startswith(run.id)  # the trained effective RF is offered
    assert "No trained" not in texts(at.info)


# --------------------------------------------------------------------------------------------------- browser

@pytest.mark.browser
def test_lr_finder_in_the_browser(goto_page, screenshot):
    page = goto_page("lr_finder")
    assert_no_exception(page)
    # A sweep small enough for 2 busy CPU cores: 25 steps of resnet20 on 8 images each.
    for label, value in (("Training images (0 = all 200)", "200"), ("Batch size", "8"), ("Iterations", "25"),
                         ("Start LR", "1e-3")):
        box = page.get_by_label(label, exact=True)
        box.fill(value)
        box.press("Enter")
        wait_for_script(page)
    page.get_by_role("button", name="Start", exact=True).click()
    page.wait_for_selector("[data-testid='stProgress']", timeout=30_000)  # the fragment polls the running job
    # when the job ends the fragment reruns the whole page and the results appear
    page.wait_for_selector("text=to make its LR the maximum", timeout=300_000)
    wait_for_script(page)
    assert page.locator("[data-testid='stProgress']").count() == 0
    assert_no_exception(page)
    screenshot("lr_finder-curve")
    before = page.get_by_label("LR max", exact=True).input_value()
    chart = page.locator("[data-testid='stPlotlyChart']").first
    chart.scroll_into_view_if_needed()
    points = chart.locator(".scatterlayer .trace").nth(1).locator("path.point")  # the smoothed curve's markers
    assert points.count() > 10
    points.nth(points.count() // 3).click(force=True)
    wait_for_script(page)
    assert_no_exception(page)
    after = page.get_by_label("LR max", exact=True).input_value()
    assert after != before, "clicking a point on the curve did not change LR max"
    lr_max = float(after)
    assert float(page.get_by_label("LR min", exact=True).input_value()) == pytest.approx(lr_max / 10, rel=0.02)
    screenshot("lr_finder-picked")


@pytest.mark.browser
def test_receptive_field_in_the_browser(goto_page, screenshot):
    page = goto_page("receptive_field")
    assert_no_exception(page)
    assert page.get_by_text("RF is more than the size of the image!").count()
    assert wait_for_count(page, "[data-testid='stPlotlyChart'] .js-plotly-plot", 3) >= 3  # depth chart, RF box, effective RF
    screenshot("receptive_field-custom_resnet")
