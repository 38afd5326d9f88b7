"""A class server people can trust, without a browser: owner keys that are not credentials, redaction, the teacher
password's back-off, settings that fail closed, study storage that stays in the server's folders, studies with
owners. (Sign-in through a real OpenID Connect provider: tests/test_signin.py.)"""

from __future__ import annotations

import subprocess
import sys

import pytest

from resnet_lab import access
from resnet_lab.config import SETTING_NAMES, SettingsError, class_settings, is_class_server
from resnet_lab.runs import RunStore

# ------------------------------------------------------------------------------------------------ owner keys


def test_a_link_owner_key_is_not_the_link_and_is_stable():
    sid = "0123456789abcdef0123456789abcdef"
    key = access.owner_from_link(sid)
    assert key == access.owner_from_link(sid) and key.startswith("link:")
    assert sid not in key and sid[:6] not in key
    assert key != access.owner_from_link(sid[:-1] + "0")
    # what is stored is no valid sid: pasting it into ?sid= gives a new identity, not the owner's
    assert not access.SID_PATTERN.match(key) and not access.SID_PATTERN.match(key.split(":")[1])
    assert access.owner_from_link(key.split(":")[1]) != key


def test_short_or_chosen_sids_are_not_accepted():
    assert not access.SID_PATTERN.match("abcdef")  # was accepted before: guessable
    assert not access.SID_PATTERN.match("alice-is-me-123")
    assert not access.SID_PATTERN.match("0123456789abcdef")
    assert access.SID_PATTERN.match("0123456789abcdef" * 2)


def test_signed_in_owner_is_the_email_else_the_subject():
    assert access.owner_from_user({"email": "Ada@School.edu", "sub": "x1"}) == "user:ada@school.edu"
    assert access.owner_from_user({"email": None, "sub": "x1"}) == "user:x1"
    assert access.owner_from_user({"email": " ", "sub": ""}) is None
    assert access.user_is_teacher({"email": "tess@school.edu"}, ["TESS@school.edu"])
    assert access.user_is_teacher({"email": None, "sub": "t-42"}, ["t-42"])
    assert not access.user_is_teacher({"email": "ada@school.edu"}, ["tess@school.edu"])
    assert not access.user_is_teacher({"email": "ada@school.edu"}, None)


def test_an_unverified_email_is_not_trusted_and_names_cannot_pass_for_me():
    claims = {"email": "tess@school.edu", "email_verified": False, "sub": "self-made-42"}
    assert access.owner_from_user(claims) == "user:self-made-42"
    assert not access.user_is_teacher(claims, ["tess@school.edu"])  # a self-registered account claiming her address
    assert access.user_is_teacher({**claims, "email_verified": True}, ["tess@school.edu"])
    me = access.owner_from_link("a" * 32)
    assert access.owner_shown("link:other", me, "me") != "me"  # a student who typed "me" as their name
    assert "another student" in access.owner_shown("link:other", me, "Teacher")


def test_redacted_config_shows_no_owner_key():
    me, them = access.owner_from_link("a" * 32), access.owner_from_link("b" * 32)
    cfg = {"model": "resnet20", "owner": them, "owner_name": "Ada", "nested": {"owner": them}}
    out = access.redacted(cfg, me)
    assert them not in repr(out) and out["owner"] == "Ada" and out["nested"]["owner"] == "another student"
    assert access.redacted({"owner": me}, me)["owner"] == "me"
    assert access.redacted({"owner": None}, me)["owner"] == "CLI / earlier"


# ---------------------------------------------------------------------------------------- password back-off


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_password_backoff_doubles_after_five_wrong_tries_and_refuses_even_the_right_one(caplog):
    clock = FakeClock()
    throttle = access.PasswordThrottle(free=5, base_s=1.0, max_s=60.0, clock=clock)
    waits = [throttle.attempt(lambda: False) for _ in range(5)]
    assert [w for _, w in waits] == [0, 0, 0, 0, 1.0]  # the 5th wrong try starts the back-off
    ok, wait = throttle.attempt(lambda: True)  # during the wait: refused unread, right password or not
    assert not ok and wait == pytest.approx(1.0)
    clock.now += 1.0
    assert throttle.attempt(lambda: False) == (False, 2.0)  # doubles
    clock.now += 2.0
    assert throttle.attempt(lambda: False) == (False, 4.0)
    clock.now += 4.0
    assert throttle.attempt(lambda: True) == (True, 0.0)  # after the wait the right one is read and resets
    assert throttle.failures == 0 and throttle.attempt(lambda: False) == (False, 0.0)
    assert "wrong teacher password" in caplog.text and "7 wrong tries" in caplog.text


def test_the_backoff_is_capped():
    clock = FakeClock()
    throttle = access.PasswordThrottle(free=1, base_s=1.0, max_s=60.0, clock=clock)
    for _ in range(12):
        clock.now += 1000
        _, wait = throttle.attempt(lambda: False)
    assert wait == 60.0


# ----------------------------------------------------------------------------------------- fail-closed settings

MALFORMED = {
    "lock_data": 5,  # a number where a source is expected (secrets.toml); the environment is text
    "max_epochs": "ten",
    "max_batch_size": "-3",
    "max_params": "lots",
    "jobs_per_device": "0",
    "job_threads": "1.5",
    "teacher_password": ["a", "b"],
    "teachers": 7,
    "stop_grace_s": "nan",
    "search_storage": 3,
    "model_files": "maybe",  # only true/false words: a typo must not turn it on
    "ray_address": "headnode",  # no port: not a cluster address (auto or host:port)
}


def test_every_setting_has_a_malformed_case():
    assert set(MALFORMED) == set(SETTING_NAMES)


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_one_malformed_setting_is_an_error_naming_it_and_its_fix(name):
    secrets = {"lock_data": "/srv/data", "teacher_password": "s3cret", name: MALFORMED[name]}
    with pytest.raises(SettingsError) as info:
        class_settings(secrets, environ={})
    assert name in info.value.problems
    message = info.value.problems[name]
    assert f"RESNET_LAB_{name.upper()}" in message and "secrets.toml" in message


def test_all_malformed_settings_are_named_at_once_and_unknown_names_too():
    with pytest.raises(SettingsError) as info:
        class_settings({"max_epoch": 3, "max_batch_size": "x"}, environ={"RESNET_LAB_MAX_EPOCHS": "ten"})
    assert set(info.value.problems) == {"max_epoch", "max_batch_size", "max_epochs"}
    assert "typo" in info.value.problems["max_epoch"]


def test_a_blank_variable_never_hides_the_secrets_value_and_an_empty_secret_is_an_error():
    assert class_settings({"lock_data": "/srv/data"}, environ={"RESNET_LAB_LOCK_DATA": "  "})["lock_data"] == "/srv/data"
    with pytest.raises(SettingsError) as info:
        class_settings({"lock_data": ""}, environ={})
    assert "lock_data" in info.value.problems


def test_teachers_parse_from_the_environment_and_secrets():
    assert class_settings({}, environ={"RESNET_LAB_TEACHERS": "a@x.org, b@x.org"})["teachers"] == ["a@x.org",
                                                                                                  "b@x.org"]
    assert class_settings({"teachers": ["t@x.org"]}, environ={})["teachers"] == ["t@x.org"]
    s = class_settings({}, environ={})
    assert not is_class_server(s) and s["jobs_per_device"] == 1
    assert is_class_server(class_settings({"max_epochs": 3}, environ={}))


def _app(page: str | None = None, secrets: dict | None = None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file("../app/Home.py", default_timeout=60)
    for key, value in (secrets or {}).items():
        at.secrets[key] = value
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _text(at) -> str:
    """Every element's protobuf of the rendered page, main area and sidebar (values, labels, options, JSON)."""
    out = []

    def walk(node) -> None:
        proto = getattr(node, "proto", None)
        if proto is not None:
            out.append(str(proto))
        children = getattr(node, "children", None)
        if isinstance(children, dict):
            for child in children.values():
                walk(child)

    walk(at._tree)
    return "\n".join(out)


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_malformed_setting_stops_the_app_and_keeps_the_lock(name, tiny_data_env, runs_dir, monkeypatch):
    """Each setting malformed in turn, beside a data lock and a teacher password: no page runs, no data box."""
    monkeypatch.delenv(f"RESNET_LAB_{name.upper()}", raising=False)  # the environment would win (the suite sets some)
    given = {"lock_data": str(tiny_data_env), "teacher_password": "s3cret", name: MALFORMED[name]}
    for page in (None, "../pages/train.py", "../pages/search.py", "../pages/data_models.py"):
        at = _app(page, {"resnet_lab": given})
        assert "not running: a class-server setting needs fixing" in at.title[0].value
        assert f"`{name}`" in " ".join(m.value for m in at.markdown)
        assert not [t for t in at.sidebar.text_input if t.key == "data_source"]  # no path box, ever
        assert not at.button  # no page content: no Start, no Launch
        assert str(tiny_data_env) not in _text(at)


def test_a_malformed_environment_setting_stops_the_app_too(tiny_data_env, runs_dir, monkeypatch):
    monkeypatch.setenv("RESNET_LAB_LOCK_DATA", str(tiny_data_env))
    monkeypatch.setenv("RESNET_LAB_MAX_EPOCHS", "ten")  # the probe's case
    at = _app("../pages/train.py")
    text = " ".join(m.value for m in at.markdown).replace("\\", "")
    assert "needs fixing" in at.title[0].value and "RESNET_LAB_MAX_EPOCHS" in text
    assert not [t for t in at.sidebar.text_input if t.key == "data_source"] and not at.button


def test_a_secrets_table_with_a_typo_stops_the_app(tiny_data_env, runs_dir):
    at = _app(secrets={"resnet_lab": {"lock_data": str(tiny_data_env), "max_epoch": 3}})
    assert "needs fixing" in at.title[0].value and "typo" in " ".join(m.value for m in at.markdown)
    assert not [t for t in at.sidebar.text_input if t.key == "data_source"]


def test_settings_that_are_not_tables_stop_the_app(tiny_data_env, runs_dir):
    for secrets in ({"auth": "on"}, {"resnet_lab": 5}):
        at = _app(secrets=secrets)
        assert "needs fixing" in at.title[0].value and "must be a table" in " ".join(m.value for m in at.markdown)
        assert not at.button and not at.sidebar.text_input


def test_an_empty_auth_table_stops_the_app(tiny_data_env, runs_dir):
    at = _app(secrets={"auth": {}, "resnet_lab": {"teachers": ["t@x.org"]}})
    assert "needs fixing" in at.title[0].value and "is empty" in " ".join(m.value for m in at.markdown)


def test_half_configured_sign_in_stops_the_app(tiny_data_env, runs_dir):
    at = _app(secrets={"auth": {"redirect_uri": "http://localhost:8501/oauth2callback"},
                       "resnet_lab": {"teachers": ["t@x.org"]}})
    text = " ".join(m.value for m in at.markdown)
    assert "needs fixing" in at.title[0].value and "cookie" in text and "provider" in text
    at = _app(secrets={"resnet_lab": {"teachers": ["t@x.org"]}})  # teachers without sign-in: nobody could be one
    assert "needs fixing" in at.title[0].value and "sign-in is not configured" in " ".join(m.value for m in at.markdown)


def test_with_sign_in_configured_a_visitor_sees_only_the_sign_in_page(tiny_data_env, runs_dir):
    auth = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "c" * 40,
            "client_id": "lab", "client_secret": "x", "server_metadata_url": "http://127.0.0.1:9/.well-known/x"}
    secrets = {"auth": auth, "resnet_lab": {"teachers": ["t@x.org"]}}
    for page in (None, "../pages/train.py", "../pages/lr_finder.py"):
        at = _app(page, secrets)
        assert [b.label for b in at.button] == ["Sign in"]
        assert "sign in" in " ".join(m.value for m in at.markdown).lower()
        assert not at.sidebar.text_input  # no name box, no data box, no teacher password


# ------------------------------------------------------------------------------------------- teacher password


def test_ten_quick_wrong_teacher_passwords_lead_to_a_delay(tiny_data_env, runs_dir, monkeypatch):
    monkeypatch.setenv("RESNET_LAB_TEACHER_PASSWORD", "s3cret")
    at = _app("../pages/train.py")
    for i in range(10):
        at.text_input(key="lab_teacher_password").set_value(f"guess{i}").run()
    errors = " ".join(e.value for e in at.sidebar.error)
    assert "Too many wrong passwords" in errors and "next try is read in" in errors
    at.text_input(key="lab_teacher_password").set_value("s3cret").run()  # right, but inside the wait: refused
    assert "Teacher mode" not in " ".join(c.value for c in at.sidebar.caption)
    assert "next try is read in" in " ".join(e.value for e in at.sidebar.error)
    # The back-off is the server's, not the session's: a fresh session (a new tab) shares the count and the wait.
    import lab_ui

    other = _app("../pages/train.py")
    throttle = lab_ui.password_throttle()
    assert throttle.failures >= 5 and throttle.locked_until > 0
    throttle.locked_until = throttle.clock() + 60  # still inside a wait when the new tab tries (not timing-bound)
    other.text_input(key="lab_teacher_password").set_value("s3cret").run()
    assert "next try is read in" in " ".join(e.value for e in other.sidebar.error)
    throttle.locked_until = 0.0  # the wait is over: now the right password is read
    other.text_input(key="lab_teacher_password").set_value("s3cret").run()
    assert "Teacher mode" in " ".join(c.value for c in other.sidebar.caption)


def test_a_cleared_cache_forgets_no_running_job_and_no_password_backoff(tiny_data_env, runs_dir, monkeypatch):
    """Any browser can clear Streamlit's caches for the whole server (its clear_cache message): the job registry
    and the back-off must survive it."""
    import streamlit as st

    monkeypatch.setenv("RESNET_LAB_TEACHER_PASSWORD", "s3cret")
    at = _app("../pages/train.py")
    for i in range(6):
        at.text_input(key="lab_teacher_password").set_value(f"guess{i}").run()
    import lab_ui

    registry, throttle = lab_ui.job_registry(), lab_ui.password_throttle()
    st.cache_resource.clear()  # what a client's clear_cache message does
    st.cache_data.clear()
    assert lab_ui.job_registry() is registry and lab_ui.password_throttle() is throttle
    assert throttle.failures >= 5 and throttle.wait_s() > 0


# ------------------------------------------------------------------------------- no one else's id on any page


def test_no_page_shows_another_students_session_id(tiny_data_env, runs_dir, monkeypatch):
    """Student A has a finished run; student B renders every page (everyone's runs on) and finds neither A's sid
    nor the owner key stored with A's run."""
    from conftest import app_pages

    a = _app("../pages/train.py")
    sid_a = a.query_params["sid"][0] if isinstance(a.query_params["sid"], list) else a.query_params["sid"]
    key_a = access.owner_from_link(sid_a)
    store = RunStore(runs_dir)
    run = store.create({"model": "resnet20", "owner": key_a, "owner_name": None, "epochs": 1})
    store.save_history(run, [{"epoch": 1, "train_loss": 2.0, "train_acc": 0.2, "test_loss": 2.1,
                                  "test_acc": 0.2, "lr": 0.01}])
    store.set_status(run, "done")

    b = _app()
    sid_b = b.query_params["sid"]
    sid_b = sid_b[0] if isinstance(sid_b, list) else sid_b
    assert sid_b != sid_a
    for path, _title, _icon in app_pages():
        b.switch_page(f"../{path}").run()
        for toggle in b.toggle:
            if toggle.key and toggle.key.endswith("runs_everyone"):
                toggle.set_value(True).run()
        for box in b.selectbox:
            if box.key == "train_result_run" and any(run.id in str(o) for o in box.options):
                box.set_value(run.id).run()
        assert not b.exception, (path, [e.value for e in b.exception])
        text = _text(b)
        assert sid_a not in text and key_a not in text and key_a.split(":")[1] not in text, path
    b.switch_page("../pages/train.py").run()
    b.toggle(key="train_runs_everyone").set_value(True).run()
    assert run.id in _text(b)  # the run is listed (so the check above looked at it) ...
    assert "another student" in _text(b)  # ... and its owner is shown as such


# ------------------------------------------------------------------------------- study storage and owners


def test_listing_a_study_file_that_does_not_exist_creates_nothing(tmp_path):
    from resnet_lab.experiments import search as S

    url = f"sqlite:///{tmp_path / 'nowhere' / 'x.db'}"
    assert S.list_studies(url) == []
    assert not (tmp_path / "nowhere").exists()
    with pytest.raises(S.SearchError, match="does not exist"):
        S.open_storage(url, heartbeat=None)
    assert not (tmp_path / "nowhere").exists()  # no parent folders made
    assert S.list_studies(f"sqlite:///{tmp_path / 'y.db'}") == [] and not (tmp_path / "y.db").exists()


def test_storage_inside_the_runs_folder(tmp_path):
    from resnet_lab.experiments import search as S

    root = tmp_path / "runs"
    root.mkdir()
    assert S.storage_inside(f"sqlite:///{root / 'search.db'}", root)
    assert not S.storage_inside(f"sqlite:///{root / '..' / 'x.db'}", root)
    assert not S.storage_inside("sqlite:////etc/x.db", root)
    assert not S.storage_inside("postgresql://u:p@h/db", root)


def test_a_study_belongs_to_who_started_it(tmp_path):
    from resnet_lab.experiments import search as S

    url = f"sqlite:///{tmp_path / 's.db'}"
    config = S.SearchConfig(population=2, generations=1, epochs=1, subset=40, test_subset=20)
    study, _ = S.open_study(config, url, "mine", owner="link:aaaa", owner_name="Ada")
    assert study.user_attrs[S.OWNER_ATTR] == "link:aaaa"
    assert S.open_study(config, url, "mine", owner="link:aaaa")[0].study_name == "mine"  # the owner resumes
    with pytest.raises(S.SearchError, match="another student"):
        S.open_study(config, url, "mine", owner="link:bbbb")
    assert S.open_study(config, url, "mine", owner="link:bbbb", any_owner=True)  # the teacher may
    (listed,) = S.list_studies(url)
    assert listed["owner"] == "link:aaaa" and listed["owner_name"] == "Ada"
    S.open_study(config, url, "cli-study")  # no owner (the CLI): open to all
    assert S.open_study(config, url, "cli-study", owner="link:bbbb")


def test_a_class_server_refuses_to_resume_a_study_whose_settings_break_the_caps(tiny_data_env, runs_dir,
                                                                              monkeypatch):
    from resnet_lab.experiments import search as S

    S.open_study(S.SearchConfig(population=2, generations=1, epochs=5, subset=40, test_subset=20),
                 S.default_storage(), "long-cli-study")  # made with the CLI: no owner, 5 epochs per trial
    monkeypatch.setenv("RESNET_LAB_MAX_EPOCHS", "2")
    at = _app("../pages/search.py")
    at.number_input(key="search_epochs").set_value(2).run()
    at.text_input(key="search_study").set_value("long-cli-study").run()
    at.button(key="search_start").click().run()
    assert "does not allow" in " ".join(e.value for e in at.error)
    import lab_ui

    assert not lab_ui.job_registry().all()


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "resnet_lab", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


def test_cli_search_storage_in_a_missing_folder_is_refused_without_making_it(tmp_path):
    out = _cli("search", "--storage", f"sqlite:///{tmp_path / 'no' / 'dir' / 'x.db'}", "--population", "2",
               "--generations", "1")
    assert out.returncode == 2 and "does not exist" in out.stderr, out.stderr
    assert not (tmp_path / "no").exists()


def test_cli_search_empty_study_name_is_refused(tmp_path):
    out = _cli("search", "--storage", f"sqlite:///{tmp_path / 'x.db'}", "--study", "", "--population", "2",
               "--generations", "1")
    assert out.returncode == 2 and "needs a name" in out.stderr, out.stderr
    assert not (tmp_path / "x.db").exists()


def test_a_class_server_search_page_takes_no_storage_and_hides_other_students_studies(tiny_data_env, runs_dir,
                                                                                      monkeypatch, tmp_path):
    from resnet_lab.experiments import search as S

    monkeypatch.setenv("RESNET_LAB_TEACHER_PASSWORD", "s3cret")  # one class-server setting is enough
    config = S.SearchConfig(population=2, generations=1, epochs=1, subset=40, test_subset=20)
    S.open_study(config, S.default_storage(), "adas-study", owner="link:aaaa", owner_name="Ada")
    at = _app("../pages/search.py")
    assert not [t for t in at.text_input if t.key == "search_storage"]  # no storage box
    at.session_state["search_storage"] = f"sqlite:///{tmp_path / 'evil' / 'x.db'}"  # smuggled: ignored
    at.run()
    assert not (tmp_path / "evil").exists()
    text = _text(at)
    assert "adas-study" not in text and str(runs_dir) not in text  # not theirs; no server path
    at.text_input(key="search_study").set_value("adas-study").run()
    at.button(key="search_start").click().run()
    assert "another student" in " ".join(e.value for e in at.error)  # cannot resume Ada's study
    at.text_input(key="lab_teacher_password").set_value("s3cret").run()
    at.switch_page("../pages/search.py").run()
    assert "adas-study" in _text(at) and "Ada" in _text(at)  # the teacher sees every study, with its owner
