"""Sign-in for real: a local OpenID Connect provider (PyPI's oidc-provider-mock, on localhost, started here), the app
with ``[auth]`` in its secrets file, and Chromium signing two students and a teacher in through the provider's form.

Each student sees and can stop or delete only their own work; the teacher sees every job and stops it; a reload
keeps who you are (Streamlit's cookie); a visitor who is not signed in sees only the sign-in page.
"""

from __future__ import annotations

import os
import re
import time
from urllib.parse import quote

import pytest
from conftest import (ARTIFACTS, _free_port, _require_browser, assert_no_exception, show_everyones_runs,
                      streamlit_server, wait_for_script)

from resnet_lab.runs import RunStore

pytestmark = pytest.mark.browser

USERS = {
    "alice": {"email": "alice@school.edu", "name": "Alice Student"},
    "bob": {"email": "bob@school.edu", "name": "Bob Student"},
    "tess": {"email": "tess@school.edu", "name": "Tess Teacher"},
}


@pytest.fixture(scope="module")
def oidc_provider():
    pytest.importorskip("oidc_provider_mock", reason="pip install -r requirements.txt (oidc-provider-mock)")
    import httpx
    import oidc_provider_mock

    with oidc_provider_mock.run_server_in_thread() as server:
        url = f"http://localhost:{server.server_port}"
        for sub, claims in USERS.items():
            assert httpx.put(f"{url}/users/{quote(sub)}", json=claims).status_code == 204
        yield url


@pytest.fixture(scope="module")
def signin_server(oidc_provider, tiny_data_dir, tmp_path_factory):
    _require_browser()
    base = tmp_path_factory.mktemp("signin-server")
    port = _free_port()
    app_url = f"http://localhost:{port}"
    secrets = base / "secrets.toml"
    secrets.write_text(f"""
[auth]
redirect_uri = "{app_url}/oauth2callback"
cookie_secret = "{os.urandom(24).hex()}"
client_id = "resnet-lab"
client_secret = "not-checked-by-the-mock"
server_metadata_url = "{oidc_provider}/.well-known/openid-configuration"

[resnet_lab]
lock_data = "{tiny_data_dir}"
teachers = ["tess@school.edu"]
""")
    (base / "runs").mkdir()
    env = dict(os.environ, RESNET_LAB_CACHE=str(base / "cache"), RESNET_LAB_RUNS=str(base / "runs"),
               RESNET_LAB_REFERENCE="none", PYTHONUNBUFFERED="1")
    env.pop("RESNET_LAB_DATA", None)
    log_path = ARTIFACTS / "streamlit-signin-server.log"
    with streamlit_server(env, log_path, ("--secrets.files", str(secrets)), port=port):
        yield {"url": app_url, "runs": base / "runs", "log": log_path}


@pytest.fixture(scope="module")
def chromium(browser):
    """The session's one Chromium (conftest): Playwright's sync API allows one instance per process at a time."""
    return browser


def _shot(page, name: str) -> None:
    (ARTIFACTS / "screenshots").mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "screenshots" / f"{name}.png"), full_page=True)


def _sign_in(chromium, server, sub: str):
    """A fresh browser (no cookies) signs ``sub`` in through the provider's form; returns its page on Home."""
    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(server["url"])
    wait_for_script(page)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_placeholder("sub").fill(sub)  # the provider's own form: who is signing in
    page.get_by_role("button", name="Authorize").click()
    page.get_by_text(f"Signed in as {USERS[sub]['name']}").first.wait_for(timeout=60_000)
    wait_for_script(page)
    assert_no_exception(page)
    return page


def _goto(page, server, path: str) -> None:
    page.goto(f"{server['url']}/{path}")
    wait_for_script(page)
    assert_no_exception(page)


def _delete_options(page) -> list[str]:
    box = page.get_by_label(re.compile(r"^Delete a run"))
    for _ in range(6):
        box.scroll_into_view_if_needed()
        box.click()
        try:
            page.get_by_role("option").first.wait_for(timeout=5_000)
            options = page.get_by_role("option").all_inner_texts()
            page.keyboard.press("Escape")
            return options
        except Exception:
            page.keyboard.press("Escape")
            wait_for_script(page)
    pytest.fail("the delete dropdown did not open")


def test_two_students_and_a_teacher_sign_in_and_see_what_their_role_allows(chromium, signin_server):
    server = signin_server

    # A visitor who has not signed in: only the sign-in page, on every path.
    visitor = chromium.new_context(viewport={"width": 1400, "height": 900}).new_page()
    for path in ("", "train", "lr_finder"):
        _goto(visitor, server, path)
        assert visitor.get_by_role("button", name="Sign in").count() == 1
        assert visitor.get_by_role("button", name="Start training").count() == 0
        assert visitor.get_by_label("Teacher password").count() == 0
    _shot(visitor, "signin-visitor")
    visitor.context.close()

    # Alice signs in and starts a long training.
    alice = _sign_in(chromium, server, "alice")
    _goto(alice, server, "train")
    for label, value in (("Epochs", "2000"), ("Batch size", "20")):
        box = alice.get_by_label(label, exact=True)
        box.fill(value)
        box.press("Enter")
        wait_for_script(alice)
    alice.get_by_role("button", name="Start training").click()
    progress = alice.get_by_text(re.compile(r"Epoch \d+/2000 · step"))
    progress.first.wait_for(timeout=180_000)
    (run,) = RunStore(server["runs"]).list()
    assert run.owner == "user:alice@school.edu" and run.config.get("owner_name") == "Alice Student"

    # A reload (and a new tab) keeps who she is: Streamlit's cookie, no id in the URL.
    alice.reload()
    wait_for_script(alice)
    assert alice.get_by_text("Signed in as Alice Student").count() >= 1
    progress.first.wait_for(timeout=60_000)
    assert alice.get_by_role("button", name="Stop").is_enabled()
    assert "sid=" not in alice.url
    _shot(alice, "signin-alice-training")
    tab = alice.context.new_page()  # a new tab of the same browser: the same account, the same job
    _goto(tab, server, "train")
    assert tab.get_by_text("Signed in as Alice Student").count() >= 1
    progress_tab = tab.get_by_text(re.compile(r"Epoch \d+/2000 · step"))
    progress_tab.first.wait_for(timeout=60_000)
    tab.close()

    # Bob: cannot stop Alice's job, cannot delete her run, sees no teacher panel and not her e-mail.
    bob = _sign_in(chromium, server, "bob")
    _goto(bob, server, "train")
    assert not bob.get_by_role("button", name="Stop").is_enabled()
    assert bob.get_by_text(re.compile("Class jobs")).count() == 0
    show_everyones_runs(bob)
    assert not any(run.id in o for o in _delete_options(bob))
    assert "alice@school.edu" not in bob.content()
    _shot(bob, "signin-bob")

    # Tess is a teacher (the teachers setting): she sees Alice's job by name, and stops it.
    tess = _sign_in(chromium, server, "tess")
    assert tess.get_by_text("Teacher mode").count() >= 1
    try:
        tess.wait_for_function("() => document.body.innerText.includes('Class jobs: 1 running')", timeout=60_000)
    except Exception:
        _shot(tess, "signin-teacher-failed")
        pytest.fail("no 'Class jobs: 1 running' in the teacher's sidebar:\n" +
                    tess.locator("[data-testid='stSidebar']").inner_text())
    assert "Alice Student" in tess.locator("[data-testid='stSidebar']").inner_text()
    _shot(tess, "signin-teacher")
    tess.locator("[data-testid='stSidebar']").get_by_role("button", name="Stop").first.click()
    deadline = time.monotonic() + 180
    while RunStore(server["runs"]).get(run.id).status == "running" and time.monotonic() < deadline:
        time.sleep(1)
    assert RunStore(server["runs"]).get(run.id).status == "stopped"
    _goto(tess, server, "train")
    assert any(run.id in o for o in _delete_options(tess))  # the teacher may delete any run

    # Alice's own page follows: her run stopped, and she may delete it; Bob still may not.
    _goto(alice, server, "train")
    assert any(run.id in o for o in _delete_options(alice))
    _goto(bob, server, "train")
    show_everyones_runs(bob)
    assert not any(run.id in o for o in _delete_options(bob))

    # Signing out ends it: back to the sign-in page.
    bob.get_by_role("button", name="Sign out").click()
    bob.get_by_role("button", name="End session").click()  # the provider asks to confirm (its own page)
    bob.get_by_role("button", name="Sign in").wait_for(timeout=60_000)
    wait_for_script(bob)
    _goto(bob, server, "train")
    assert bob.get_by_role("button", name="Sign in").count() == 1
    assert bob.get_by_role("button", name="Start training").count() == 0
    for page in (alice, bob, tess):
        page.context.close()
