"""The contact sheet reads a verdict as the article page does: a rejected picture replaced by
a new attempt nobody has judged awaits review, on the card and in the filters."""

from __future__ import annotations

import re

from db.models import Article, ReviewAction
from tests.unit.review_studio import BATCH, KEPT, REVIEWER, cards, land, login, post, total_of
from tests.unit.test_report import Elements


def card_of(studio, key: str, query: str = "") -> dict | None:
    html = studio.client.get(f"/batches/{BATCH}?{query}").text
    return next((c for c in cards(html) if c["data-key"] == key), None)


def review_chip(studio, key: str) -> tuple[str, str]:
    """The class and the words of the review chip on article ``key``'s card."""
    html = studio.client.get(f"/batches/{BATCH}").text
    card = re.search(rf'class="card[^"]*"[^>]*data-key="{key}".*?</article>', html, re.S)
    chip = re.search(r'class="chip (review-[\w-]+)"[^>]*>([^<]*)<', card.group(0))
    return chip.group(1), chip.group(2)


def keys_under(studio, name: str) -> list[str]:
    html = studio.client.get(f"/batches/{BATCH}?filter={name}").text
    return [c["data-key"] for c in cards(html)]


def reject(studio, key: str) -> None:
    page = f"/articles/{studio.ids[key]}"
    post(studio, f"{page}/reject", {"back": page, "attempt": "1", "reason": "zu dunkel"}, page)


def test_a_rejected_picture_replaced_by_a_new_attempt_reads_awaiting_review_on_its_card(
    studio, sent
):
    login(studio, REVIEWER)
    reject(studio, "SKU-001")
    assert card_of(studio, "SKU-001")["data-verdict"] == "rejected"
    assert review_chip(studio, "SKU-001") == ("review-rejected", "rejected")
    land(studio, "SKU-001", 2)
    card = card_of(studio, "SKU-001")
    assert (card["data-review"], card["data-verdict"]) == ("rejected", "new")
    assert review_chip(studio, "SKU-001") == ("review-new", "awaiting review")
    article = studio.client.get(f"/articles/{studio.ids['SKU-001']}").text
    assert 'data-verdict="new"' in article  # the article page reads it the same way


def test_the_rejected_filter_lists_only_pictures_no_new_attempt_replaced_yet(studio, sent):
    login(studio, REVIEWER)
    stored = [s.key for s in KEPT if s.review == "rejected"]
    reject(studio, "SKU-001")
    reject(studio, "SKU-002")
    land(studio, "SKU-001", 2)
    assert keys_under(studio, "rejected") == sorted(["SKU-002", *stored])
    assert keys_under(studio, "new_attempt") == ["SKU-001"]
    assert total_of(studio.client.get(f"/batches/{BATCH}?filter=new_attempt").text) == 1
    assert "SKU-001" not in keys_under(studio, "unreviewed")


def test_walking_the_new_attempt_filter_from_an_article_page_stays_in_it(studio, sent):
    login(studio, REVIEWER)
    for key in ("SKU-001", "SKU-002", "SKU-004"):
        reject(studio, key)
        land(studio, key, 2)
    first = studio.ids["SKU-001"]
    html = studio.client.get(f"/articles/{first}?filter=new_attempt").text
    position = [a for _, a in Elements(html).tags if a.get("id") == "position"][0]
    assert (position["data-position"], position["data-total"]) == ("1", "3")
    assert f'href="/articles/{studio.ids["SKU-002"]}?filter=new_attempt"' in html


def test_a_rejection_recorded_before_actions_named_their_attempt_reads_the_same(studio):
    login(studio)
    with studio.sessions() as session:
        article = session.get(Article, studio.ids["SKU-005"])
        article.review_status = "rejected"
        session.add(
            ReviewAction(
                batch_id=BATCH,
                article_id=article.id,
                user=REVIEWER,
                action="rejected",
                before={"review_status": None, "attempt": 1},
                after={"review_status": "rejected", "attempt": 2},
            )
        )
        session.commit()
    assert keys_under(studio, "new_attempt") == []
    land(studio, "SKU-005", 2)
    assert card_of(studio, "SKU-005")["data-verdict"] == "new"
    assert keys_under(studio, "new_attempt") == ["SKU-005"]
    assert "SKU-005" not in keys_under(studio, "rejected")
