"""The studio's list pages in a real Chromium: products with their views on one card, the
view filter, the search, and the page widths of the batches page and the breadcrumb.

``farm review serve`` runs over a SQLite farm built as the unit tests build theirs (batch
``b1``, 149 articles), with a back view of some rows and a list of batches with long ids and
catalog names. Nothing renders: each test takes a second or two.

``FARM_SHEET_SCREENSHOT=path`` also saves the grouped contact sheet there (the README's
docs/screenshots/sheet-grouped.png).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select

from db.engine import make_engine, migrate, session_factory
from db.models import Article, ArticleStatus, Batch, ReviewAction, ReviewStatus
from producer.review.sheet_query import SheetQuery, contact_sheet
from tests.integration.studio import CHROMIUM, Studio
from tests.unit.review_studio import (
    ADMIN,
    BATCH,
    KEPT,
    PASSWORD,
    Spec,
    add_view,
    make_studio,
    new_render,
    png,
)

pytestmark = pytest.mark.integration
sync_api = pytest.importorskip("playwright.sync_api")

BACKS = [s.key for s in KEPT[:24:2]]  # every other one of the first 24 rows has a back view
SECRET = "a-test-secret-of-the-studio-0123456789"
CATALOGS = [
    "Herbst_Winter_2025_Damen_Oberbekleidung_Maentel_und_Jacken_final_freigegeben.xlsx"
    "+Herbst_Winter_2025_Damen_Strick.xlsx",
    "Fruehjahr-Sommer-2026-Kollektion-Herren-Hemden-Businesshemden-und-Freizeithemden.csv",
    "Sonderposten_Restbestaende_Outlet_Lagerraeumung_Kalenderwoche_47_ueberarbeitet_v12.xlsx",
    "Accessoires Tücher Schals Mützen Handschuhe Gürtel Taschen Kleinlederwaren Schmuck.xlsx",
]


def _back_view(farm, key: str, index: int) -> int:
    """A back view of row ``key`` with a picture of its own, scoring 0.3 more than the front."""
    spec = Spec(index)
    image = farm.output / BATCH / f"stem{index}-back.png"
    image.write_bytes(png((64, 96), (40, 120, 200 - index, 255)))
    score = None if spec.score is None else round(spec.score + 0.3, 2)
    article_id = add_view(
        farm, key, "back", clip_score=score, review_status=None, image_path=str(image)
    )
    with farm.sessions() as session:
        article = session.get(Article, article_id)
        if spec.score is not None:
            article.renders.append(new_render(None, 1, image, score))
            article.render_attempt = 1
        session.commit()
    return article_id


def _batch_list(farm) -> None:
    """Batches as a busy farm has them: long sortable ids, long catalogs, every status."""
    statuses = [s.value for s in ArticleStatus]
    reviews = [ReviewStatus.approved.value, ReviewStatus.rejected.value, None]
    start = datetime(2025, 11, 1, 8, 30, tzinfo=timezone.utc)
    with farm.sessions() as session:
        for number in range(12):
            created = start + timedelta(days=number, minutes=7 * number)
            batch_id = f"{created:%Y%m%d-%H%M%S}-{number:06x}"
            session.add(
                Batch(
                    id=batch_id,
                    catalog=CATALOGS[number % len(CATALOGS)],
                    profile="tiny",
                    created_at=created,
                    views=["front", "back", "side", "detail"][: 1 + number % 4],
                    min_clip_score=0.25,
                )
            )
            for index, status in enumerate(statuses * 3):
                session.add(
                    Article(
                        batch_id=batch_id,
                        key=f"ART-{number:02d}-{index:04d}-LANGER-ARTIKELSCHLUESSEL",
                        file_stem=f"a{index}",
                        source_file="catalog.xlsx",
                        source_sheet="Tabelle1",
                        source_row=index + 2,
                        source_text="Mantel",
                        status=status,
                        review_status=reviews[index % 3] if status == "done" else None,
                        clip_score=0.123456 + index / 100 if status == "done" else None,
                    )
                )
        session.commit()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The studio over the unit tests' batch, some back views and a list of batches."""
    tmp = tmp_path_factory.mktemp("grouping")
    farm = make_studio(tmp)
    farm.backs = {key: _back_view(farm, key, int(key[4:])) for key in BACKS}
    with farm.sessions() as session:
        session.get(Batch, BATCH).views = ["front", "back"]
        session.commit()
    _batch_list(farm)
    farm.engine.dispose()
    env = os.environ | {
        "FARM_DATABASE_URL": f"sqlite:///{tmp / 'farm.db'}",
        "FARM_OUTPUT_DIR": str(farm.output),
        "FARM_REVIEW_SECRET": SECRET,
    }
    studio = Studio(env, tmp / "studio.log").wait_ready()
    farm.url = studio.url
    try:
        yield farm
    finally:
        studio.stop()


@pytest.fixture(scope="module")
def context(served):
    """One logged-in browser for the module."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run .ci/browser to install Chromium")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(10_000)
        page = context.new_page()
        page.goto(f"{served.url}/login")
        page.fill("#login-form input[name=name]", ADMIN)
        page.fill("#login-form input[name=password]", PASSWORD)
        page.click("#login-form button[type=submit]")
        page.wait_for_url(f"{served.url}/")
        page.close()
        yield context
        browser.close()


@pytest.fixture
def page(context):
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    yield page
    page.close()


def shown(page) -> dict[str, list[str]]:
    """Each product card's key and the views it shows, in page order."""
    return page.eval_on_selector_all(
        "article.product",
        "els => Object.fromEntries(els.map(e => [e.dataset.key,"
        " [...e.querySelectorAll('article.card')].map(c => c.dataset.view)]))",
    )


def test_a_product_card_shows_its_views_pictures_side_by_side_with_their_scores(page, served):
    page.goto(f"{served.url}/batches/{BATCH}")
    key = BACKS[1]
    product = page.locator(f"article.product[data-key='{key}']")
    views = product.locator("article.card")
    assert [views.nth(i).get_attribute("data-view") for i in (0, 1)] == ["front", "back"]
    for i in (0, 1):
        image = views.nth(i).locator("img.thumb")
        image.scroll_into_view_if_needed()
        loaded = "img => img.complete && img.naturalWidth > 0"
        page.wait_for_function(loaded, arg=image.element_handle())
    front, back = (views.nth(i).bounding_box() for i in (0, 1))
    assert back["x"] >= front["x"] + front["width"] and abs(back["y"] - front["y"]) < 1
    scores = [views.nth(i).locator(".score").inner_text() for i in (0, 1)]
    spec = next(s for s in KEPT if s.key == key)
    assert scores == [f"{spec.score:.4g}", f"{spec.score + 0.3:.4g}"]
    assert product.locator(".chip.status-done").count() == 2
    assert len(shown(page)) == 60
    assert page.locator("#sheet-count").get_attribute("data-total") == str(len(KEPT))
    target = os.environ.get("FARM_SHEET_SCREENSHOT")
    if target:
        page.set_viewport_size({"width": 1280, "height": 860})
        page.goto(f"{served.url}/batches/{BATCH}?q=Seidenbluse")  # the search filled in
        page.wait_for_load_state("networkidle")
        page.screenshot(path=target)


def test_choosing_a_view_shows_that_view_of_every_product_that_has_it(page, served):
    page.goto(f"{served.url}/batches/{BATCH}")
    with page.expect_navigation():
        page.select_option("#sheet-filter select[name=view]", "back")
    assert "view=back" in page.url
    assert shown(page) == {key: ["back"] for key in BACKS}
    assert page.locator("#sheet-count").get_attribute("data-total") == str(len(BACKS))


def test_searching_finds_products_by_name_or_key_in_any_case(page, served):
    page.goto(f"{served.url}/batches/{BATCH}")
    page.fill("#sheet-filter input[name=q]", "SEIDENBLUSE 2")
    with page.expect_navigation():
        page.press("#sheet-filter input[name=q]", "Enter")
    expected = [s.key for s in KEPT if s.name.startswith("Seidenbluse 2")]
    assert list(shown(page)) == expected
    assert shown(page)["SKU-002"] == ["front", "back"]
    page.fill("#sheet-filter input[name=q]", "sku-01")
    with page.expect_navigation():
        page.select_option("#sheet-filter select[name=view]", "back")  # keeps the search
    assert shown(page) == {key: ["back"] for key in BACKS if key.startswith("SKU-01")}


def test_approving_one_view_picked_on_its_product_card(page, served):
    key = BACKS[5]
    page.goto(f"{served.url}/batches/{BATCH}")
    back = page.locator(f"article.product[data-key='{key}'] article.card[data-view=back]")
    back.locator("input[type=checkbox]").check()
    with page.expect_navigation():
        page.click("#approve-selected-form button[type=submit]")
    product = page.locator(f"article.product[data-key='{key}']")
    reviews = product.locator("article.card").evaluate_all("els => els.map(e => e.dataset.review)")
    front_review = next(s for s in KEPT if s.key == key).review or ""
    assert reviews == [front_review, "approved"]


def page_width(page) -> int:
    return page.evaluate("document.documentElement.scrollWidth")


def test_the_batches_page_fits_a_1400_pixel_window(page, served):
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(f"{served.url}/")
    assert page.locator("tr.batch").count() == 13
    assert page_width(page) <= 1400
    page.set_viewport_size({"width": 1024, "height": 768})
    assert page_width(page) <= 1024


def test_at_390_pixels_the_breadcrumb_reads_on_two_lines_at_most(page, served):
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{served.url}/")
    newest = page.locator("tr.batch").first.get_attribute("data-batch-id")
    for path in (f"/batches/{BATCH}", f"/batches/{newest}"):
        page.goto(served.url + path)
        crumbs = page.locator("header .crumbs")
        line = page.evaluate(
            "el => parseFloat(getComputedStyle(el).lineHeight)", crumbs.element_handle()
        )
        box = crumbs.bounding_box()
        assert box["height"] <= 2 * line + 2, (path, box, line)
        assert box["width"] >= 200, (path, box)
        assert page_width(page) <= 390, path
    page.goto(f"{served.url}/")
    assert page_width(page) <= 390  # the table scrolls in its own box


# The same sheet queries on PostgreSQL as on SQLite

SHEETS = [
    {},
    {"q": "übergangs"},
    {"q": "STRASSE"},
    {"q": "straße", "view": "back"},
    {"q": "pg-00"},
    {"q": "%"},
    {"q": "a_b"},
    {"view": "back", "sort": "score"},
    {"sort": "score_desc"},
    {"filter": "below", "below": "0.5"},
    {"filter": "failed"},
    {"filter": "rejected"},
    {"filter": "new_attempt"},
]
# Rejections: (key, the attempt the action names in its column or, on an older row, only in
# ``before``, the attempts rendered).
REJECTIONS = [("PG-001", "column", 2), ("PG-003", "before", 1), ("PG-007", "before", 2)]


def _catalog(sessions) -> None:
    """Eight rows over two sheets with different name headers; every other one has a back."""
    names = ["ÜBERGANGSJACKE Wolle", "Strickjacke Straße", "Bluse a_b", "Mantel", "Über Hemd"]
    with sessions() as session:
        session.add(Batch(id="pg", catalog="c", profile="tiny", views=["front", "back"]))
        for index in range(8):
            header = "Name " if index % 2 else "model_name"
            name = names[index % len(names)]
            for view in ("front", "back") if index % 2 == 0 else ("front",):
                score = None if index == 5 else 0.2 + index / 10 + (0.05 if view == "back" else 0)
                session.add(
                    Article(
                        batch_id="pg",
                        key=f"PG-{index:03d}",
                        view=view,
                        file_stem=f"s{index}",
                        source_file="a.xlsx" if index % 2 else "b.csv",
                        source_sheet="Tabelle1" if index % 2 else "csv",
                        source_row=index + 2,
                        source_text=name,
                        source_columns={header: name, "description": "Wolle"},
                        status="failed" if index == 5 else "done",
                        clip_score=score,
                    )
                )
        session.flush()
        _rejections(session)
        session.commit()


def _rejections(session) -> None:
    """Attempt 1 of each of REJECTIONS rejected, and its later attempts rendered."""
    for key, named, attempts in REJECTIONS:
        article = session.scalars(select(Article).where(Article.key == key)).one()
        article.review_status = ReviewStatus.rejected.value
        for attempt in range(1, attempts + 1):
            session.add(new_render(article.id, attempt, Path("x.png"), 0.3))
        session.add(
            ReviewAction(
                batch_id="pg",
                article_id=article.id,
                user=ADMIN,
                action="rejected",
                before={"review_status": None, "attempt": 1},
                after={"review_status": "rejected", "attempt": 2},
                attempt=1 if named == "column" else None,
            )
        )


def _read(sessions, params: dict) -> tuple:
    with sessions() as session:
        sheet = contact_sheet(session, "pg", SheetQuery.from_params(params))
    return sheet.total, [(p.key, [c.view for c in p.views]) for p in sheet.products]


def test_on_postgresql_the_sheet_groups_filters_and_searches_as_on_sqlite(pg_url, tmp_path):
    lite = make_engine(f"sqlite:///{tmp_path / 'farm.db'}")
    migrate(lite)
    engines = {"sqlite": lite, "postgresql": make_engine(pg_url)}
    try:
        found = {}
        for name, engine in engines.items():
            sessions = session_factory(engine)
            _catalog(sessions)
            found[name] = [_read(sessions, params) for params in SHEETS]
    finally:
        for engine in engines.values():
            engine.dispose()
    assert found["postgresql"] == found["sqlite"]
    results = dict(zip(map(str, SHEETS), found["postgresql"], strict=True))
    jackets = [("PG-000", ["front", "back"]), ("PG-005", ["front"])]
    assert results[str({"q": "übergangs"})] == (2, jackets)
    assert results[str({"q": "straße", "view": "back"})] == (1, [("PG-006", ["back"])])
    assert results[str({"q": "STRASSE"})] == (0, [])  # ß is a letter of its own
    assert results[str({"q": "%"})] == (0, [])
    assert results[str({"q": "a_b"})] == (2, [("PG-002", ["front", "back"]), ("PG-007", ["front"])])
    assert results[str({})][0] == 8
    # A rejected picture that a new attempt replaced awaits review, whichever row names it.
    replaced = [("PG-001", ["front"]), ("PG-007", ["front"])]
    assert results[str({"filter": "new_attempt"})] == (2, replaced)
    assert results[str({"filter": "rejected"})] == (1, [("PG-003", ["front"])])
