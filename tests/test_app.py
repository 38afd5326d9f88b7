"""The app through Streamlit's AppTest: Home and every page listed in Home's PAGES that exists run cleanly with the
tiny data, and a broken data source is reported without breaking what does not need data."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conftest import ROOT, app_pages, home_pages

if str(ROOT / "app") not in sys.path:  # the page scripts import lab_ui from app/; so do the tests of its state
    sys.path.insert(0, str(ROOT / "app"))
EXISTING = app_pages()


def app():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file("../app/Home.py", default_timeout=60)


def messages(elements) -> str:
    # Without markdown escapes: the app shows paths and globs literally (lab_ui.md_escape).
    return "\n".join(str(e.value) for e in elements).replace("\\", "")


def test_pages_list_is_well_formed():
    pages = home_pages()
    assert ("pages/data_models.py", "Data & Models") in [(p, t) for p, t, _ in pages]
    for path, title, icon in pages:
        assert path.startswith("pages/") and path.endswith(".py") and title and icon


def test_home_shows_data_device_and_links(tiny_data_env, runs_dir):
    at = app().run()
    assert not at.exception, messages(at.exception)
    assert not at.error, messages(at.error)
    assert at.title[0].value.startswith("resnet_lab")
    text = messages(at.markdown) + messages(at.caption)
    assert str(tiny_data_env) in text  # dataset source
    assert "**200** training images · **100** test images · **10** classes" in messages(at.markdown)  # 20+10 per class x 10 classes
    assert "airplane" in text and "truck" in text
    assert at.sidebar.text_input(key="data_source").value == str(tiny_data_env)
    # Device: on this CPU machine an honest note, on a GPU machine its name.
    assert "CPU" in messages(at.info) or "GPU" in messages(at.success)


@pytest.mark.parametrize("path,title", [(p, t) for p, t, _ in EXISTING], ids=[Path(p).stem for p, _, _ in EXISTING])
def test_every_page_runs(path, title, tiny_data_env, runs_dir):
    at = app().run()
    at.switch_page(f"../{path}").run()
    assert not at.exception, f"{title}: " + messages(at.exception)
    assert at.title, f"{title} draws no title (every page starts with page_intro)"


def test_data_models_page_shows_samples_and_summary(tiny_data_env, runs_dir):
    at = app().run()
    at.switch_page("../pages/data_models.py").run()
    assert not at.exception, messages(at.exception)
    assert not at.error, messages(at.error)
    assert len(at.get("image")) >= 2  # original grid and augmented grid
    assert at.selectbox(key="model").value
    at.selectbox(key="model").set_value("resnet20").run()
    assert not at.exception, messages(at.exception)
    assert "0.27 M" in messages(at.metric)  # resnet20 has 0.27 M parameters (He et al. 2015, table 6)
    assert at.dataframe, "no summary table"


def test_reroll_changes_the_augmentation(tiny_data_env, runs_dir):
    at = app().run()
    at.switch_page("../pages/data_models.py").run()
    before = at.session_state["aug_seed"]
    at.button(key="reroll").click().run()
    assert not at.exception, messages(at.exception)
    assert at.session_state["aug_seed"] != before


def test_broken_data_source_is_reported_and_the_rest_works(tmp_path, monkeypatch, runs_dir):
    monkeypatch.setenv("RESNET_LAB_CACHE", str(tmp_path / "cache"))
    missing = tmp_path / "no-such-dataset"
    monkeypatch.setenv("RESNET_LAB_DATA", str(missing))
    at = app().run()
    assert not at.exception, messages(at.exception)
    assert str(missing) in messages(at.error)  # Home and the sidebar say what is wrong ...
    assert at.get("page_link"), "Home no longer links the pages"  # ... and Home still works
    at.switch_page("../pages/data_models.py").run()
    assert not at.exception, messages(at.exception)
    assert "Data source" in messages(at.error)  # how to fix it
    at.selectbox(key="model").set_value("resnet20").run()
    assert not at.exception, messages(at.exception)
    assert at.dataframe and at.metric, "the model part needs no data and must still work"


def test_sidebar_source_applies_to_every_page(tiny_data_dir, tmp_path, monkeypatch, runs_dir):
    monkeypatch.setenv("RESNET_LAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RESNET_LAB_DATA", str(tmp_path / "wrong"))
    at = app().run()
    assert at.error
    at.sidebar.text_input(key="data_source").set_value(str(tiny_data_dir)).run()
    assert not at.exception and not at.error, messages(at.error)
    at.switch_page("../pages/data_models.py").run()
    assert not at.exception and not at.error, messages(at.error)
    assert len(at.get("image")) >= 2


def _helpers_script():
    # AppTest runs this function's source as a script from a temp dir: the tests put app/ on sys.path.
    import streamlit as st

    import lab_ui

    st.session_state["owners"] = st.session_state.get("owners", []) + [lab_ui.session_owner()]
    st.session_state["registries"] = st.session_state.get("registries", []) + [id(lab_ui.job_registry())]
    st.write(f"cuda={lab_ui.has_cuda()}")
    lab_ui.device_banner()
    data = lab_ui.data_or_stop(subset=50, test_subset=20)
    st.write(f"sizes={data.n_train},{data.n_test}")
    st.write("after data")


def test_lab_ui_helpers(tiny_data_env, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.syspath_prepend(str(ROOT / "app"))
    at = AppTest.from_function(_helpers_script, default_timeout=60).run()
    assert not at.exception, messages(at.exception)
    assert "sizes=50,20" in messages(at.markdown)
    at.run()
    owners, registries = at.session_state["owners"], at.session_state["registries"]
    assert len(set(owners)) == 1 and len(owners[0]) >= 8  # stable across reruns
    assert len(set(registries)) == 1  # one shared JobRegistry


def test_data_or_stop_stops_the_page_with_the_fix(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.syspath_prepend(str(ROOT / "app"))
    monkeypatch.setenv("RESNET_LAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RESNET_LAB_DATA", str(tmp_path / "missing"))
    at = AppTest.from_function(_helpers_script, default_timeout=60).run()
    assert not at.exception, messages(at.exception)
    text = messages(at.error)
    assert str(tmp_path / "missing") in text and "Data source" in text
    assert "after data" not in messages(at.markdown)  # the page stopped there


PRELOAD_SCRIPT = """
import sys
from streamlit.testing.v1 import AppTest
assert "pandas" not in sys.modules
at = AppTest.from_file({home!r}, default_timeout=120).run()
assert not at.exception, [e.value for e in at.exception]
print(sorted(m for m in ("pandas", "plotly.graph_objects", "plotly.subplots") if m in sys.modules))
"""


def test_the_libraries_pages_import_lazily_are_imported_before_any_page(tiny_data_env, runs_dir, tmp_path):
    """Issue 20 item 7: pandas imported by two sessions' script threads at once was seen half-initialised. The
    first Home run (which every session makes before its page) imports them once, in a fresh process."""
    import subprocess
    import sys

    script = tmp_path / "preload.py"
    script.write_text(PRELOAD_SCRIPT.format(home=str(ROOT / "app" / "Home.py")))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "['pandas', 'plotly.graph_objects', 'plotly.subplots']"


def test_a_first_decode_runs_in_a_worker_once_for_every_session(tiny_data_env, runs_dir, monkeypatch):
    """Issue 20 item 1: a source never decoded on this server (the JPEG archive: minutes) is decoded by a quick-lane
    job, not by the page's script thread; the page shows it and comes back by itself; a second session waits on the
    same job. (The tiny data is small enough to decode inline: the threshold is lowered to make it count.)"""
    import lab_ui

    from conftest import settle
    from resnet_lab import data as D

    monkeypatch.setattr(lab_ui, "INLINE_DECODE_BYTES", 1)
    D.clear_memory_cache()  # earlier tests of this process loaded the tiny data into the loader's memo
    before = D.decode_count()
    at = app().run()
    at.switch_page("../pages/data_models.py").run()
    assert not at.exception, messages(at.exception)
    jobs = [j for j in lab_ui.job_registry().all() if j.kind == "decode"]
    assert len(jobs) == 1 and jobs[0].device == "quick"
    other = app().run()
    other.switch_page("../pages/train.py").run()
    assert not other.exception, messages(other.exception)
    assert len([j for j in lab_ui.job_registry().all() if j.kind == "decode"]) == 1  # the same job, shared
    settle(at)
    assert not at.exception and not at.error, messages(at.error)
    assert len(at.get("image")) >= 2  # the page's content once the cache is written
    assert D.decode_count() == before  # this process (the app) decoded nothing: it read the worker's cache
    assert D.undecoded_bytes(str(tiny_data_env)) == 0


def test_a_source_that_fails_in_the_decode_worker_shows_its_data_error(tmp_path, monkeypatch, runs_dir):
    import lab_ui

    from conftest import settle

    monkeypatch.setattr(lab_ui, "INLINE_DECODE_BYTES", 1)
    monkeypatch.setenv("RESNET_LAB_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "flat.tar.gz"  # an archive with no train/<class>/ folders
    import tarfile

    with tarfile.open(bad, "w:gz") as tar:
        note = tmp_path / "readme.txt"
        note.write_text("not images " * 50)
        tar.add(note, arcname="readme.txt")
    monkeypatch.setenv("RESNET_LAB_DATA", str(bad))
    at = app().run()
    at.switch_page("../pages/data_models.py")
    settle(at)
    assert not at.exception, messages(at.exception)
    assert "Cannot load the data from" in messages(at.error) and "Data source" in messages(at.error)


@pytest.mark.parametrize("env,allowed", [({}, True), ({"RESNET_LAB_MAX_EPOCHS": "3"}, False),
                                         ({"RESNET_LAB_MAX_EPOCHS": "3", "RESNET_LAB_MODEL_FILES": "true"}, True),
                                         ({"RESNET_LAB_MODEL_FILES": "false"}, False)])
def test_model_files_are_offered_only_where_allowed(tiny_data_env, runs_dir, monkeypatch, env, allowed):
    """A model file runs its code: a single-user app offers the upload, a class server only with the teacher's
    model_files setting, and an explicit false turns it off anywhere. On a class server the app process itself
    refuses to run a file (only a job's worker may)."""
    from resnet_lab.models import files

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(files, "_FORBIDDEN", [])
    at = app().run()
    at.switch_page("../pages/data_models.py").run()
    assert not at.exception, messages(at.exception)
    off = "Model files are off on this class server" in messages(at.info)
    assert off is not allowed
    assert files.may_run_here() is ("RESNET_LAB_MAX_EPOCHS" not in env)
    if not files.may_run_here():
        with pytest.raises(files.ModelFileError, match="only in a job's worker"):
            files.build(str(ROOT / "tests" / "data" / "student_nets" / "small_softmax.py") + ":TinyNet")


def test_a_malformed_model_files_setting_stops_the_app(tiny_data_env, runs_dir, monkeypatch):
    monkeypatch.setenv("RESNET_LAB_MODEL_FILES", "maybe")
    at = app().run()
    assert "model_files" in messages(at.error) + messages(at.markdown) and "true or false" in \
        messages(at.error) + messages(at.markdown)
