"""The Depth Degradation and Hyperparameter Search pages: AppTest (widgets, jobs, hand-over) and browser screenshots."""

from __future__ import annotations

import time

import pytest
import torch

from conftest import assert_no_exception, wait_for_script

DEG = "../pages/degradation.py"
SEARCH = "../pages/search.py"
TINY_SEARCH = dict(preset="quick-cpu", model="resnet20", epochs=1, subset=100, test_subset=50, batch_size=25)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches; two threads only spin-wait on a busy machine
    yield
    torch.set_num_threads(before)


def app():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file("../app/Home.py", default_timeout=60)


def text(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def wait_job(kind: str, timeout: float = 120):
    import lab_ui

    jobs = [j for j in lab_ui.job_registry().all() if j.kind == kind]
    assert jobs, f"no {kind} job was started"
    assert jobs[0].wait(timeout), f"the {kind} job did not end within {timeout} s"
    return jobs[0]


def test_degradation_page_shows_the_shipped_result_at_once(tiny_data_env, runs_dir):
    at = app().run()
    at.switch_page(DEG).run()
    assert not at.exception, text(at.exception)
    assert at.title[0].value == "Depth Degradation"
    assert at.selectbox(key="deg_suite").value == ("quick" if torch.cuda.is_available() else "mini")
    # nothing run here yet: the project's pre-computed mini result is listed and labelled as such
    assert "shipped with the project" in at.selectbox(key="deg_result").format_func(at.selectbox(key="deg_result").value)
    assert "Pre-computed result" in text(at.info) and "python -m resnet_lab degradation --suite mini" in text(at.info)
    assert at.dataframe, "no table of final errors"
    at.radio(key="deg_when").set_value("init").run()
    assert not at.exception, text(at.exception)


def test_degradation_page_runs_and_stops_a_suite(tiny_data_env, runs_dir):
    at = app().run()
    at.switch_page(DEG).run()
    at.number_input(key="deg_epochs_mini").set_value(1).run()
    at.number_input(key="deg_subset_mini").set_value(100).run()
    at.number_input(key="deg_test_subset_mini").set_value(50).run()
    at.button(key="deg_start").click().run()
    assert not at.exception, text(at.exception)
    import lab_ui

    job = next(j for j in lab_ui.job_registry().all() if j.kind == "degradation")
    deadline = time.monotonic() + 60
    while not job.events("epoch") and job.active and time.monotonic() < deadline:
        time.sleep(0.2)  # let the first net finish an epoch, then press Stop
    at.button(key="deg_stop").click().run()
    job = wait_job("degradation")
    assert job.status == "stopped", job.error
    assert job.result["status"] == "stopped" and 1 <= len(job.result["nets"]) < 4
    at.run()
    assert not at.exception, text(at.exception)
    # the stopped suite is the result shown, marked as such
    assert at.selectbox(key="deg_result").value == job.result["path"]
    assert "ended **stopped**" in text(at.warning)


def test_search_page_validates_launches_and_hands_over_to_train(tiny_data_env, runs_dir):
    at = app().run()
    at.switch_page(SEARCH).run()
    assert not at.exception, text(at.exception)
    assert at.title[0].value == "Hyperparameter Search"
    # bad input is explained and blocks the launch
    at.checkbox(key="search_wd_log").check().run()
    assert "log scale needs a low bound > 0" in text(at.error)
    assert at.button(key="search_start").disabled
    at.checkbox(key="search_wd_log").uncheck().run()
    at.number_input(key="search_lr_low").set_value(0.5).run()
    assert "inverted" in text(at.error)
    at.number_input(key="search_lr_low").set_value(0.01).run()
    assert not at.error, text(at.error)
    # a tiny search: 2 trials of 1 epoch on all 200 tiny images (the preset's batch of 128 needs more than 100)
    at.text_input(key="search_study").set_value("apptest").run()
    at.number_input(key="search_population").set_value(2).run()
    at.number_input(key="search_generations").set_value(1).run()
    at.number_input(key="search_epochs").set_value(1).run()
    at.number_input(key="search_subset").set_value(0).run()
    at.number_input(key="search_test_subset").set_value(50).run()
    at.button(key="search_start").click().run()
    job = wait_job("search")
    assert job.status == "done", job.error
    at.run()
    assert not at.exception, text(at.exception)
    assert at.selectbox(key="search_study_pick").value == "apptest"
    best = job.result["best"]
    assert best is not None and "Test accuracy" in [m.label for m in at.metric]
    at.button(key="train_with_these").click().run()
    assert not at.exception, text(at.exception)
    assert at.title[0].value == "Train"  # switched to the Train page, which read the hand-over
    assert at.session_state["lr_max"] == pytest.approx(best["params"]["lr_max"])
    assert at.session_state["model"] == "resnet20"


def test_search_page_reports_an_unreachable_storage(tiny_data_env, runs_dir):
    at = app().run()
    at.switch_page(SEARCH).run()
    at.text_input(key="search_storage").set_value("postgresql://lab:pw@127.0.0.1:9/none").run()
    assert not at.exception, text(at.exception)
    assert "cannot open the study storage" in text(at.error) and "pw@" not in text(at.error)


# ---------------------------------------------------------------------------------------------- browser

@pytest.mark.browser
def test_degradation_page_in_a_browser(goto_page, screenshot):
    page = goto_page("degradation")
    assert_no_exception(page)
    assert page.get_by_text("Pre-computed result").count() >= 1
    page.locator(".js-plotly-plot").nth(2).wait_for(timeout=30_000)  # Fig. 6, responses, gradient norms
    screenshot("degradation")


@pytest.mark.browser
def test_search_page_in_a_browser(app_server, goto_page, screenshot):
    from resnet_lab.experiments import search as S
    from resnet_lab.data import load_dataset

    cfg = S.SearchConfig(population=3, generations=2, **TINY_SEARCH)
    S.run_search(cfg, storage=str(app_server.runs_dir / "search.db"), study_name="browser-demo",
                 dataset=load_dataset(str(app_server.data_dir)), runs_root=app_server.runs_dir / "search-runs")
    page = goto_page("search")
    assert_no_exception(page)
    # the generation scatter and the parallel coordinates (plotly draws them just after the script ends)
    page.locator(".js-plotly-plot").nth(1).wait_for(timeout=30_000)
    screenshot("search")
    page.get_by_role("button", name="Train with these").click()
    wait_for_script(page)
    assert_no_exception(page)
    assert page.url.rstrip("/").endswith("/train")
    screenshot("search-train-with-these")
