"""The article page by keyboard and its compare view, in a real Chromium.

``farm review serve`` runs over the unit tests' stored batch (SQLite, 150 articles with
PNGs) and a real Redis as broker: no worker, so a reject's new attempt is sent and waits.
Each test takes a few seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.studio import Studio
from tests.unit.review_studio import (
    BATCH,
    PASSWORD,
    REVIEWER,
    SPECS,
    add_view,
    attempt_png,
    make_studio,
    new_render,
)

pytestmark = pytest.mark.integration
sync_api = pytest.importorskip("playwright.sync_api")

SHEET = "filter=unreviewed&sort=score"
SHOTS = os.environ.get("FARM_STUDIO_SHOTS")  # a folder: the tests also save screenshots there


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The stored batch behind a live studio, with Redis as its broker."""
    tmp = tmp_path_factory.mktemp("keys")
    stored = make_studio(tmp)
    stored.engine.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")} | {
        "FARM_DATABASE_URL": f"sqlite:///{tmp / 'farm.db'}",
        "FARM_OUTPUT_DIR": str(stored.output),
        "FARM_BROKER_URL": f"redis://127.0.0.1:6379/{os.environ.get('FARM_TEST_REDIS_DB', '9')}",
        "FARM_REVIEW_SECRET": "a-test-secret-of-the-keyboard-0123456789",
        "FARM_PROFILE": "tiny",
    }
    studio = Studio(env, tmp / "studio.log").wait_ready()
    try:
        yield studio, stored
    finally:
        studio.stop()


@pytest.fixture
def page(browser, served):
    studio, _ = served
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(f"{studio.url}/login")
    page.fill("#login-form input[name=name]", REVIEWER)
    page.fill("#login-form input[name=password]", PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(f"{studio.url}/")
    yield page
    context.close()


def card_ids(page) -> list[int]:
    return [int(i) for i in page.eval_on_selector_all(
        "article.card", "cards => cards.map(c => c.dataset.articleId)"
    )]  # fmt: skip


def open_from_sheet(page, url: str, index: int) -> list[int]:
    """Open the ``index``-th card of the filtered sheet by its link; the sheet's ids."""
    page.goto(f"{url}/batches/{BATCH}?{SHEET}")
    ids = card_ids(page)
    page.click(f"article.card[data-article-id='{ids[index]}'] a.frame")
    page.wait_for_selector("section.article-head[data-keys=ready]")
    return ids


def shoot(page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / name))


def test_keys_walk_the_filtered_sheet_and_approve_and_next_lands_on_the_next_card(page, served):
    studio, _ = served
    ids = open_from_sheet(page, studio.url, 2)
    assert page.url == f"{studio.url}/articles/{ids[2]}?{SHEET}"
    assert page.locator("#key-legend").is_visible()
    shoot(page, "article-keys.png")
    page.keyboard.press("j")
    page.wait_for_url(f"**/articles/{ids[3]}?{SHEET}")
    page.keyboard.press("ArrowLeft")
    page.wait_for_url(f"**/articles/{ids[2]}?{SHEET}")
    page.click("#prompt-form textarea")  # typing: keys are text
    page.keyboard.type("ja")
    assert page.url.endswith(f"/articles/{ids[2]}?{SHEET}")
    page.keyboard.press("Escape")
    page.keyboard.press("a")
    page.wait_for_url(f"**/articles/{ids[3]}?{SHEET}")
    assert "approved" in page.locator(".flash-ok").inner_text()
    page.goto(f"{studio.url}/articles/{ids[2]}")
    assert page.locator("#live .live-facts").get_attribute("data-review") == "approved"


def test_reject_with_a_reason_by_keyboard_shows_the_reason_in_the_history(page, served):
    studio, _ = served
    ids = open_from_sheet(page, studio.url, 5)
    page.keyboard.press("r")
    assert page.evaluate("document.activeElement.id") == "reject-reason"
    page.keyboard.type("Kragen fehlt")
    page.keyboard.press("Enter")
    page.wait_for_selector(".flash-ok")
    assert page.url.endswith(f"/articles/{ids[5]}?{SHEET}")
    entry = page.locator("#history tr.history-entry[data-action=rejected]")
    assert "Kragen fehlt" in entry.inner_text()
    assert page.locator("figure.attempt[data-attempt='1'] [data-label=rejected]").count() == 1
    assert "no GPU worker is online" in page.locator("#progress").inner_text()


def test_the_lightbox_zooms_and_compares_two_attempts_side_by_side(page, served):
    studio, stored = served
    page.goto(f"{studio.url}/articles/{stored.ids['SKU-000']}")  # three attempts
    page.wait_for_selector("section.article-head[data-keys=ready]")
    page.keyboard.press("z")
    box = page.locator("#lightbox")
    assert box.is_visible() and box.get_attribute("data-count") == "1"
    page.keyboard.press("z")
    assert box.get_attribute("data-zoom") == "2"
    page.keyboard.press("Escape")
    assert box.is_hidden()
    page.keyboard.press("c")
    assert box.get_attribute("data-count") == "2"
    panes = page.locator("#lightbox .pane")
    sources = [panes.nth(i).get_attribute("data-src") for i in range(2)]
    assert len(set(sources)) == 2 and all(s.endswith("/image") for s in sources)
    page.wait_for_function(
        "[...document.querySelectorAll('#lightbox img')].every(i => i.complete && i.naturalWidth)"
    )
    widths = panes.evaluate_all("ps => ps.map(p => p.getBoundingClientRect().width)")
    assert widths[0] > 300 and abs(widths[0] - widths[1]) < 2  # side by side, equal
    shoot(page, "article-compare.png")
    page.click("#lightbox-close")
    assert box.is_hidden()


def test_v_shows_the_products_views_side_by_side(page, served):
    studio, stored = served
    key = "SKU-007"  # approved: a back view of it changes no card of the unreviewed sheet
    back = add_view(stored, key, "back")
    with stored.sessions() as session:
        image = attempt_png(stored.output, SPECS[7], 2)
        session.add(new_render(back, 1, image, 0.4))
        session.commit()
    page.goto(f"{studio.url}/articles/{stored.ids[key]}")
    page.wait_for_selector("section.article-head[data-keys=ready]")
    page.keyboard.press("v")
    box = page.locator("#lightbox")
    assert box.is_visible() and box.get_attribute("data-count") == "2"
    panes = page.locator("#lightbox .pane")
    sources = [panes.nth(i).get_attribute("data-src") for i in range(2)]
    assert len(set(sources)) == 2 and all(s.endswith("/image") for s in sources)
    page.keyboard.press("Escape")
    assert box.is_hidden()
