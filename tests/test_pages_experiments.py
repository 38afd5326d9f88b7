"""The Depth Degradation and Hyperparameter Search pages: AppTest (widgets, jobs, hand-over) and browser screenshots."""

from __future__ import annotations

import time

import pytest
import torch

from conftest import assert_no_exception, wait_for_script, settle

DEG = "../pages/degradation.py"
SEARCH = "../pages/search.py"
TINY_SEARCH = dict(preset="quick-cpu", model="resnet20", epochs=1, subset=100, test_subset=50, batch_size=25)


pytestmark = pytest.mark.usefixtures("one_thread")


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


def open_degradation(view: str, **state):
    """The Depth Degradation page on ``view``, with any other session state given, rendered without an exception."""
    at = app().run()
    at.switch_page(DEG)
    at.session_state["deg_view"] = view
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, text(at.exception)
    return at


def set_numbers(at, **values) -> None:
    """Type into each keyed number input in turn, rerunning the script after each as a user's edit does."""
    for key, value in values.items():
        at.number_input(key=key).set_value(value).run()


def run_job(at, button: str, kind: str):
    """Press ``button``, wait for the ``kind`` job it starts to succeed, and rerun the page without an exception."""
    at.button(key=button).click().run()
    job = wait_job(kind)
    assert job.status == "done", job.error
    at.run()
    assert not at.exception, text(at.exception)
    return job


def test_degradation_page_opens_on_the_mechanism_at_initialisation(tiny_data_env, runs_dir, monkeypatch):
    import lab_ui

    from resnet_lab.experiments import degradation as D

    def in_the_script_thread(*args, **kwargs):
        raise AssertionError("the initialisation view was computed in the page's script thread")

    real = D.init_profile
    monkeypatch.setattr(D, "init_profile", in_the_script_thread)  # the app process must never compute it
    at = app().run()
    at.switch_page(DEG).run()
    assert not at.exception, text(at.exception)
    jobs = [j for j in lab_ui.job_registry().all() if j.kind == "init_profile"]
    assert len(jobs) == 1 and jobs[0].device == "quick"  # submitted as a job in the quick lane
    settle(at)  # 18 freshly built nets (20/56/110 layers x 2 families x 3 seeds), in a worker process
    assert not at.exception, text(at.exception)
    assert at.title[0].value == "Depth Degradation"
    assert at.radio(key="deg_view").value == "init"
    shown = text(at.markdown)
    assert "first ÷ last layer" in shown and "110 layers — plain" in shown
    # a second student asking for the same setting gets the stored result: no second job
    other = app().run()
    other.switch_page(DEG).run()
    assert "first ÷ last layer" in text(other.markdown)
    assert len([j for j in lab_ui.job_registry().all() if j.kind == "init_profile"]) == 1
    # the numbers quoted are the profile's own (computed, not typed)
    monkeypatch.setattr(D, "init_profile", real)
    prof = D_init_profile()
    plain110 = next(n for n in prof["nets"] if n["model"] == "plain110")
    v = plain110["grad_first_over_last"]
    assert f"{float(f'{v:.3g}'):,.0f}×" in shown  # e.g. 4,410,000×
    at.number_input(key="deg_init_seeds").set_value(1)
    settle(at)
    at.checkbox(key="deg_init_zero").check()
    settle(at)
    assert not at.exception, text(at.exception)
    assert "Zero-init: the last conv of each residual branch" in text(at.caption)


def D_init_profile():
    """The profile the page computed with its defaults (16 images, seeds 0-2), recomputed here."""
    from resnet_lab.data import load_dataset
    from resnet_lab.experiments import degradation as D

    x, y = D.init_batch(load_dataset(), 16)
    return D.init_profile(x, y, seeds=(0, 1, 2))


def test_degradation_page_shows_the_shipped_result_at_once(tiny_data_env, runs_dir):
    at = open_degradation("training")
    assert at.selectbox(key="deg_suite").value == ("quick" if torch.cuda.is_available() else "cpu")
    # nothing run here yet: a pre-computed result is listed and labelled as such
    chosen = at.selectbox(key="deg_result")
    assert "shipped with the project" in chosen.format_func(chosen.value)
    if not torch.cuda.is_available():
        assert chosen.value.endswith("cpu.json")
        assert "Pre-computed result" in text(at.info)
        assert "python -m resnet_lab degradation --suite cpu" in text(at.info)
        assert "points above plain-8" in text(at.markdown) and "**shown**" in text(at.markdown)
        # the zero-init option's own comparison, from the two shipped files
        assert "Zero-init comparison" in text(at.caption) and "ResNet-32" in text(at.caption)
    assert at.dataframe, "no table of final errors"
    at.radio(key="deg_when").set_value("init").run()
    assert not at.exception, text(at.exception)
    # the old mini result (format 1, as shipped before) still reads, verdict computed by today's rule
    from resnet_lab.experiments import degradation as D

    at.selectbox(key="deg_result").set_value(str(D.ASSETS_DIR / "mini.json")).run()
    assert not at.exception, text(at.exception)
    assert "points above plain-20" in text(at.markdown)


def test_a_shipped_gpu_result_is_offered_and_labelled(tiny_data_env, runs_dir, tmp_path, monkeypatch):
    """quick.json, as the lead engineer ships it (today's result format), is listed, labelled and chosen on a GPU."""
    import json
    import shutil

    from resnet_lab.experiments import degradation as D

    assets = tmp_path / "assets"
    assets.mkdir()
    shutil.copy(D.ASSETS_DIR / "cpu.json", assets / "cpu.json")
    quick = json.loads((D.ASSETS_DIR / "mini.json").read_text())  # format 1, the same fields the GPU run writes
    quick.update(suite="quick", label=D.SUITES["quick"].label, device="NVIDIA H200",
                 command="python -m resnet_lab degradation --suite quick --device cuda --output "
                         "assets/degradation/quick.json")
    (assets / "quick.json").write_text(json.dumps(quick))
    monkeypatch.setattr(D.results, "ASSETS_DIR", assets)  # where the shipped results are listed
    at = open_degradation("training")
    box = at.selectbox(key="deg_result")
    if torch.cuda.is_available():
        assert box.value == str(assets / "quick.json")
    else:
        assert box.value == str(assets / "cpu.json")
        assert "A GPU result ships with the project too (quick suite, NVIDIA H200)" in text(at.caption)
        box.set_value(str(assets / "quick.json")).run()
    info = text(at.info)
    assert "**NVIDIA H200**" in info and "--suite quick --device cuda --output assets/degradation/quick.json" in info


def test_degradation_page_runs_and_stops_a_suite(tiny_data_env, runs_dir):
    at = open_degradation("training")
    set_numbers(at, deg_epochs_cpu=1, deg_subset_cpu=100, deg_test_subset_cpu=50)
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


def test_a_stopped_suite_beside_its_zero_init_twin_shows_without_the_missing_lead(tiny_data_env, runs_dir):
    """A suite stopped after ResNet-8 but before ResNet-32 has no "deeper ResNet's lead"; the zero-init comparison
    with the shipped twin still lists the nets both files have, and the page does not crash (CI found this)."""
    import json

    from resnet_lab.experiments import degradation as D

    result = json.loads((D.ASSETS_DIR / "cpu.json").read_text())
    for net in result["nets"]:
        if net["model"] == "resnet32":
            net.update(status="stopped", final_train_error=None, final_test_error=None)
    result.update(status="stopped", created="2099-01-01T00:00:00", effect=None)
    folder = D.results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "stopped.json").write_text(json.dumps(result))
    at = open_degradation("training", deg_result=str(folder / "stopped.json"))
    captions = text(at.caption)
    assert "Zero-init comparison" in captions and "ResNet-8" in captions
    assert "lead" not in captions.split("Zero-init comparison")[1].split("\n")[0]


def test_a_suite_of_other_epochs_is_not_compared_with_the_shipped_zero_init_twin(tiny_data_env, runs_dir):
    """Issue 20: a 10-epoch cpu suite was "compared" with the shipped 12-epoch zero-init result. Only results of the
    same recipe are twins."""
    import json

    from resnet_lab.experiments import degradation as D

    result = json.loads((D.ASSETS_DIR / "cpu.json").read_text())
    result["settings"]["epochs"] = 10
    result.update(created="2099-01-01T00:00:00")
    folder = D.results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ten-epochs.json").write_text(json.dumps(result))
    at = open_degradation("training", deg_result=str(folder / "ten-epochs.json"))
    assert "Zero-init comparison" not in text(at.caption)
    at = open_degradation("training", deg_result=str(D.ASSETS_DIR / "cpu.json"))  # the shipped pair still is
    assert "Zero-init comparison" in text(at.caption)


def test_landscape_view_shows_the_shipped_one_and_computes_a_new_one(tiny_data_env, runs_dir):
    from resnet_lab.training import TrainConfig, train

    for name, opts in (("plain8", {"width": 4}), ("resnet8", {"width": 4})):
        train(TrainConfig(model=name, model_options=opts, epochs=1, peak_epoch=0.5, lr_max=0.05, lr_min=0.005,
                          optimizer="sgd", batch_size=25, subset=100, test_subset=50, augment=False, cutout=0,
                          pipeline="torch", checkpoint_every=0, device="cpu"))
    at = open_degradation("landscape")
    shipped = at.selectbox(key="ls_result")
    assert "shipped with the project" in shipped.format_func(shipped.value)
    assert "Measured here" in text(at.markdown)
    at.radio(key="ls_style").set_value("surface").run()
    assert not at.exception, text(at.exception)
    # the picker defaults to a plain net and a residual one of the same depth
    assert "plain8" in at.selectbox(key="ls_run_a").value and "resnet8" in at.selectbox(key="ls_run_b").value
    at.number_input(key="ls_grid").set_value(4).run()
    assert "odd" in text(at.error)
    set_numbers(at, ls_grid=3, ls_points=3, ls_images=40)
    job = run_job(at, "ls_start", "landscape")
    assert at.selectbox(key="ls_result").value == job.result["path"]
    assert "Measured here" in text(at.markdown)


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
    set_numbers(at, search_population=2, search_generations=1, search_epochs=1, search_subset=0,
                search_test_subset=50)
    job = run_job(at, "search_start", "search")
    assert at.selectbox(key="search_study_pick").value == "apptest"
    best = job.result["best"]
    assert best is not None and "Test accuracy" in [m.label for m in at.metric]
    at.button(key="search_train_with_these").click().run()
    assert not at.exception, text(at.exception)
    assert at.title[0].value == "Train"  # switched to the Train page, which read the hand-over: every gene
    assert at.session_state["train_lr_max"] == pytest.approx(best["params"]["lr_max"])
    assert at.session_state["train_weight_decay"] == pytest.approx(best["params"]["weight_decay"])
    assert at.session_state["train_momentum_max"] == pytest.approx(best["params"]["momentum"])
    assert at.session_state["train_model"] == "resnet20" and at.session_state["train_preset"] == "quick-cpu"
    assert "From the search (trial" in text(at.success)


def test_search_page_reports_an_unreachable_storage(tiny_data_env, runs_dir):
    at = app().run()
    at.switch_page(SEARCH).run()
    at.text_input(key="search_storage").set_value("postgresql://lab:pw@127.0.0.1:9/none").run()
    assert not at.exception, text(at.exception)
    assert "cannot open the study storage" in text(at.error) and "pw@" not in text(at.error)


# ---------------------------------------------------------------------------------------------- browser

@pytest.mark.browser
def test_degradation_page_in_a_browser(goto_page, screenshot):
    page = goto_page("degradation", timeout_s=300)
    assert_no_exception(page)
    page.locator(".js-plotly-plot").nth(1).wait_for(timeout=120_000)  # gradient norms, block outputs
    screenshot("degradation-1-init")
    for label, name, charts in (("② Training: depth degradation", "degradation-2-training", 3),
                                ("③ Loss landscape", "degradation-3-landscape", 2)):
        page.get_by_text(label, exact=True).first.click()
        time.sleep(1)
        wait_for_script(page, 120)
        assert_no_exception(page)
        page.locator(".js-plotly-plot").nth(charts - 1).wait_for(state="attached", timeout=60_000)
        screenshot(name)
    assert page.get_by_text("Pre-computed").count() >= 1


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
    for _ in range(3):  # a click that lands during a rerun can be swallowed (conftest): click until the page switches
        page.get_by_role("button", name="Train with these").click()
        try:
            page.wait_for_url(lambda url: url.split("?")[0].rstrip("/").endswith("/train"), timeout=30_000)
            break
        except Exception:
            wait_for_script(page)
    wait_for_script(page)
    assert_no_exception(page)
    assert page.url.split("?")[0].rstrip("/").endswith("/train")  # the query keeps the session id (?sid=)
    screenshot("search-train-with-these")
