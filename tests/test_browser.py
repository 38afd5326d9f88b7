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
