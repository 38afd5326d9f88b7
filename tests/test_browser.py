"""The real app in headless Chromium: every page opens without an exception and is screenshotted to
test-artifacts/screenshots/<page>.png for a person to look at. Fixtures and helpers: see conftest.py."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest
from conftest import app_pages, assert_no_exception, wait_for_count, wait_for_script

pytestmark = pytest.mark.browser
EXISTING = app_pages()


def test_home(goto_page, screenshot):
    page = goto_page("")
    assert_no_exception(page)
    assert page.get_by_text("resnet_lab — residual networks on CIFAR-10").count()
    assert page.locator("[data-testid='stAlertContentError']").count() == 0
    # The navigation lists every page that exists.
    nav = page.locator("[data-testid='stSidebarNav']").inner_text()
    for _, title, _ in EXISTING:
        assert title in nav
    screenshot("home")


@pytest.mark.parametrize("path,title", [(p, t) for p, t, _ in EXISTING], ids=[Path(p).stem for p, _, _ in EXISTING])
def test_every_page_opens(path, title, goto_page, screenshot):
    """Each page by its own link, as the first view of a brand-new session (a link a teacher hands out): the page
    itself opens, not Home."""
    name = Path(path).stem
    page = goto_page(name)
    assert_no_exception(page)
    heading = page.locator("h1").first.inner_text().strip()
    assert heading, f"{title} has no title"
    assert urlparse(page.url).path.rstrip("/").endswith("/" + name), f"{name} landed on {page.url}"
    assert "residual networks on CIFAR-10" not in heading, f"{name} showed Home"
    screenshot(name)


def test_data_models_reroll_and_model_choice(goto_page, screenshot):
    page = goto_page("data_models")
    selector = "[data-testid='stImage'] img"
    assert wait_for_count(page, selector, 2) >= 2  # mounted lazily: on a busy machine not at once
    # the sample grids really loaded (a broken image never gets a natural width, so this times out)
    page.wait_for_function(f"() => [...document.querySelectorAll(\"{selector}\")].every(i => i.complete && i.naturalWidth > 100)",
                           timeout=60_000)
    grids = page.locator(selector)
    before = grids.nth(1).get_attribute("src")
    page.get_by_role("button", name="Re-roll").click()
    # Waiting for the new picture itself: on a busy machine the rerun can start later than wait_for_script's pause.
    page.wait_for_function("before => document.querySelectorAll(\"[data-testid='stImage'] img\")[1]?.src !== before",
                           arg=before, timeout=60_000)
    wait_for_script(page)
    assert_no_exception(page)
    screenshot("data_models-rerolled")


def test_broken_source_in_the_sidebar(goto_page, screenshot):
    page = goto_page("")
    box = page.get_by_label("Data source", exact=True)
    box.fill("/no/such/dataset")
    box.press("Enter")
    error = page.locator("[data-testid='stAlertContentError']").first
    error.wait_for(timeout=60_000)  # the rerun may start after wait_for_script's pause on a busy machine
    wait_for_script(page)
    assert_no_exception(page)
    assert "/no/such/dataset" in error.inner_text()
    screenshot("home-broken-source")


def _choose(page, label: str, option: str, typed: str) -> None:
    """Pick ``option`` in a selectbox, typing ``typed`` to filter a long list (drawn lazily) as a user would."""
    box = page.get_by_label(label, exact=True)
    options = []
    for _ in range(6):  # a click during a rerun can be swallowed: open it again
        box.scroll_into_view_if_needed()
        box.click()
        try:
            page.keyboard.type(typed)
            page.get_by_role("option").first.wait_for(timeout=5_000)
            options = page.get_by_role("option").all_inner_texts()
            page.get_by_role("option", name=option).click(timeout=5_000)
            break
        except Exception:
            page.keyboard.press("Escape")
            wait_for_script(page)
    assert option in options, options
    wait_for_script(page)


def _upload(page, name: str) -> None:
    net = Path(__file__).resolve().parent / "data" / "student_nets" / name
    page.locator("[data-testid='stFileUploader'] input[type='file']").set_input_files(str(net))
    page.get_by_text("The assignment's architecture:").wait_for(timeout=120_000)  # the worker's check, then a rerun
    wait_for_script(page)
    assert_no_exception(page)


def _nav(page, title: str) -> None:
    page.locator("[data-testid='stSidebarNav'] a", has_text=title).first.click()
    wait_for_script(page)


def test_a_students_own_network_is_checked_in_a_worker_and_offered_for_training(goto_page, screenshot):
    """Data & Models takes the student's .py (the assignment net written by hand: F.relu, adds in forward,
    log_softmax), checks it in a worker (the assignment's architecture, its outputs explained) and hands it to the
    Train and LR Finder pages' model lists."""
    page = goto_page("data_models")
    _upload(page, "functional_style.py")
    text = page.locator("[data-testid='stMain']").inner_text()
    assert "10 requirements met, 0 not" in text and "log_softmax is idempotent" in text
    assert "6.57 M" in text and "upload:" not in text  # no server path or content hash on the page
    page.get_by_role("button", name="Use it on the other pages").click()
    page.get_by_text("is in the model lists").wait_for(timeout=60_000)
    screenshot("data_models-your-network")
    for title, shot in (("Train", "train-your-network"), ("LR Finder", "lr_finder-your-network")):
        _nav(page, title)
        _choose(page, "Model", "functional_style.py:Net (yours)", "functional")
        assert_no_exception(page)
        chosen = page.locator("[data-testid='stSelectbox'] input").evaluate_all("els => els.map(e => e.value)")
        assert "functional_style.py:Net (yours)" in chosen, chosen
        assert "unknown model" not in page.locator("[data-testid='stMain']").inner_text()
        screenshot(shot)


def test_a_students_softmax_network_trains_and_every_page_shows_it(goto_page, screenshot):
    """A small student net that ends in softmax: the check warns (softmax twice), Train trains it (1 epoch), and
    Receptive Field, Activations, Grad-CAM and Misclassified open it."""
    page = goto_page("data_models")
    _upload(page, "small_softmax.py")
    _choose(page, "Network class", "TinyNet", "TinyNet")
    page.get_by_text("softmax twice").first.wait_for(timeout=120_000)
    page.get_by_role("button", name="Use it on the other pages").click()
    page.get_by_text("is in the model lists").wait_for(timeout=60_000)
    screenshot("data_models-softmax-network")
    _nav(page, "Receptive Field")
    _choose(page, "Model", "small_softmax.py:TinyNet (yours)", "small")
    assert_no_exception(page)
    screenshot("receptive_field-your-network")
    _nav(page, "Train")
    _choose(page, "Model", "small_softmax.py:TinyNet (yours)", "small")
    for label, value in (("Peak epoch", "0.5"), ("Epochs", "1")):  # the peak before the end: first
        box = page.get_by_label(label, exact=True)
        box.fill(value)
        box.press("Tab")
        wait_for_script(page)
    start = page.get_by_role("button", name="Start training")
    try:
        page.wait_for_function("b => !b.disabled", arg=start.element_handle(), timeout=120_000)
    except Exception:
        screenshot("train-your-network-start-disabled")
        raise AssertionError(page.locator("[data-testid='stMain']").inner_text()[:3000])
    start.click()
    page.get_by_text("Top-1 accuracy").first.wait_for(timeout=180_000)
    wait_for_script(page)
    assert_no_exception(page)
    assert "small_softmax.py:TinyNet (yours)" in page.locator("[data-testid='stMain']").inner_text()
    screenshot("train-your-network-trained")
    for title in ("Activations", "Grad-CAM", "Misclassified"):
        _nav(page, title)
        page.locator("h1").first.wait_for(timeout=60_000)
        wait_for_script(page)
        assert_no_exception(page)
        screenshot(f"{title.lower().replace('-', '')}-your-network")
