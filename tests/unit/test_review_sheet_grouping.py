"""The contact sheet by product: a catalog row's views on one card, counted and paged by
product, a view filter, and a search of names and keys."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import event

from db.models import Article
from producer.review.sheet_query import SheetQuery, caseless_pattern
from tests.unit.review_studio import KEPT, MIN_SCORE, add_view, cards, login, post, total_of
from tests.unit.test_report import Elements

BACKS = [s.key for s in KEPT[:70:3]]  # every third of the first 70 rows also has a back view


@pytest.fixture
def two_views(studio):
    """The test batch with a back view of some rows (scores 0.5 + the front's), logged in."""
    backs = {}
    for key in BACKS:
        spec = next(s for s in KEPT if s.key == key)
        score = None if spec.score is None else spec.score + 0.5
        backs[key] = add_view(studio, key, "back", clip_score=score, review_status=None)
    login(studio)
    studio.backs = backs
    return studio


def products(html: str) -> list[dict]:
    return Elements(html).find("article", "product")


def product_html(html: str, key: str) -> str:
    """The markup of the product card of ``key``."""
    after = html.split(f'<article class="product multi" data-key="{key}"')[1]
    return after.split('<article class="product')[0]


def views_of(html: str) -> dict[str, list[str]]:
    """Each product's key and the views its card shows, in page order."""
    return {p["data-key"]: p["data-views"].split() for p in products(html)}


def test_a_products_views_share_one_card_and_the_sheet_counts_and_pages_products(two_views):
    first = two_views.client.get("/batches/b1").text
    shown = views_of(first)
    assert list(shown) == [s.key for s in KEPT[:60]]
    assert all(shown[key] == ["front", "back"] for key in BACKS if key in shown)
    assert all(views == ["front"] for key, views in shown.items() if key not in BACKS)
    assert total_of(first) == len(KEPT)
    backs_on_page = sum(key in shown for key in BACKS)
    assert len(cards(first)) == 60 + backs_on_page
    assert f"of {len(KEPT)} products ({60 + backs_on_page} views on this page)" in first
    # The back view's card is in its product's card, with its own score, status and pick.
    card = next(c for c in cards(first) if c["data-article-id"] == str(two_views.backs[BACKS[1]]))
    assert card["data-view"] == "back" and card["data-key"] == BACKS[1]
    product = product_html(first, BACKS[1])
    assert f'value="{two_views.backs[BACKS[1]]}:' in product and 'class="score"' in product
    everything = []
    for number in (1, 2, 3):
        everything += list(views_of(two_views.client.get(f"/batches/b1?page={number}").text))
    assert everything == [s.key for s in KEPT]  # each product once, none split over pages


def test_the_view_filter_shows_that_view_of_each_product_only(two_views):
    page = two_views.client.get("/batches/b1?view=back").text
    assert views_of(page) == {key: ["back"] for key in BACKS}
    assert total_of(page) == len(BACKS)
    assert {c["data-article-id"] for c in cards(page)} == {str(i) for i in two_views.backs.values()}
    fronts = two_views.client.get("/batches/b1?view=front&page=3").text
    assert total_of(fronts) == len(KEPT) and all(v == ["front"] for v in views_of(fronts).values())
    selected = re.search(r'<select name="view".*?</select>', page, re.S).group(0)
    assert re.search(r'<option value="back" selected>', selected)
    unknown = two_views.client.get("/batches/b1?view=<script>").text
    assert total_of(unknown) == len(KEPT)  # not a view: every view


def test_filters_pick_views_and_a_product_shows_the_views_that_pass(two_views):
    # Backs score 0.5 more than their fronts: below the minimum only fronts are.
    below = two_views.client.get("/batches/b1?filter=below").text
    expected = [s.key for s in KEPT if s.score is not None and s.score < MIN_SCORE]
    assert list(views_of(below)) == expected[:60] and total_of(below) == len(expected)
    assert all(views == ["front"] for views in views_of(below).values())
    unreviewed_backs = two_views.client.get("/batches/b1?filter=unreviewed&view=back").text
    assert total_of(unreviewed_backs) == len(BACKS)


def test_sorting_by_score_ranks_a_product_by_its_lowest_view(two_views):
    key = BACKS[2]
    with two_views.sessions() as session:
        session.get(Article, two_views.backs[key]).clip_score = -1.0
        session.commit()
    lowest = list(views_of(two_views.client.get("/batches/b1?sort=score").text))
    assert lowest[0] == key
    highest = list(views_of(two_views.client.get("/batches/b1?sort=score_desc").text))
    assert key not in highest  # its front alone would rank it on the first page


@pytest.mark.parametrize(
    "typed, found",
    [
        ("seidenbluse 12", ["SKU-012", "SKU-120", "SKU-121", "SKU-122", "SKU-123", "SKU-124",
                            "SKU-125", "SKU-126", "SKU-127", "SKU-128", "SKU-129"]),
        ("sku-04", [f"SKU-04{i}" for i in range(10)]),
        ("  SKU-007 ", ["SKU-007"]),
        ("SEIDENBLUSE 7", ["SKU-007", "SKU-070", "SKU-071", "SKU-072", "SKU-073", "SKU-074",
                           "SKU-075", "SKU-076", "SKU-077", "SKU-078", "SKU-079"]),
        ("Schluppe", []),  # in the catalog text, not the name
        ("%", []),  # no wildcard
        ("_", []),
        (".*", []),  # no regular expression
        ("' OR 1=1 --", []),
        ("<script>alert('name')</script>", ["SKU-003"]),  # the hostile name, as typed
    ],
)  # fmt: skip
def test_the_search_finds_products_by_name_or_key_in_any_case(two_views, typed, found):
    page = two_views.client.get("/batches/b1", params={"q": typed})
    assert page.status_code == 200
    assert list(views_of(page.text)) == found
    assert total_of(page.text) == len(found)


def test_the_search_folds_letters_beyond_ascii_and_reads_each_sheets_own_headers(studio):
    with studio.sessions() as session:
        article = session.get(Article, studio.ids["SKU-005"])
        article.source_file, article.source_sheet = "winter.xlsx", "Tabelle1"
        article.source_columns = {" Name ": "ÜBERGANGSJACKE Straße", "Beschreibung": "x"}
        session.commit()
    add_view(studio, "SKU-005", "back")
    login(studio)
    for typed in ("übergangsjacke", "ÜberGangs", "straße", "STRAßE"):
        page = studio.client.get("/batches/b1", params={"q": typed}).text
        found = views_of(page)
        assert found.get("SKU-005") == ["front", "back"], typed
    assert "ÜBERGANGSJACKE Straße" in studio.client.get("/batches/b1?q=jacke").text


def test_the_search_and_view_stay_in_the_form_and_the_pager(two_views):
    page = two_views.client.get("/batches/b1", params={"q": "Seidenbluse", "view": "front"}).text
    assert 'name="q" value="Seidenbluse"' in page
    pager = re.search(r'<nav class="pager".*?</nav>', page, re.S).group(0)
    assert 'href="?view=front&amp;q=Seidenbluse&amp;page=2"' in pager
    assert SheetQuery(search="a b&c", view="back").params(page=3) == "view=back&q=a+b%26c&page=3"


def test_approve_selected_takes_the_views_picked_on_product_cards(two_views):
    key = BACKS[4]
    product = product_html(two_views.client.get("/batches/b1").text, key)
    picks = re.findall(r'name="article" value="(\d+:\d+)" form="approve-selected-form"', product)
    back_pick = picks[1]
    assert back_pick.startswith(f"{two_views.backs[key]}:")
    post(two_views, "/batches/b1/approve-selected", {"article": [back_pick]}, page="/batches/b1")
    with two_views.sessions() as session:
        assert session.get(Article, two_views.backs[key]).review_status == "approved"
        assert session.get(Article, two_views.ids[key]).review_status != "approved"


def test_a_grouped_page_still_reads_articles_with_one_count_and_one_page_query(two_views):
    statements = []
    listen = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(two_views.engine, "before_cursor_execute", listen)
    try:
        for query in ("page=2&sort=score", "view=back&filter=unreviewed", "sort=score_desc"):
            statements.clear()
            assert two_views.client.get(f"/batches/b1?{query}").status_code == 200
            reading = [s for s in statements if "articles" in s]
            assert len(reading) == 2, reading
            assert "count(distinct" in reading[0].lower() and "LIMIT" in reading[1]
        statements.clear()
        two_views.client.get("/batches/b1?q=bluse")
        assert len([s for s in statements if "articles" in s]) == 3  # the sheets' headers
        assert not any("bluse" in s.lower() for s in statements)  # a parameter, not SQL text
    finally:
        event.remove(two_views.engine, "before_cursor_execute", listen)


def test_the_caseless_pattern_escapes_everything_but_letters():
    assert caseless_pattern("Ä-b.1") == r"[Ää]\-[Bb]\.1"
    assert re.search(caseless_pattern("strasse"), "STRASSE")
    assert not re.search(caseless_pattern("a.c"), "abc")
