"""The review studio's POST actions through its pages: approve, reject, attributes, prompt,
the bulk actions and the roles allowed them, and the attempt a form carries."""

from __future__ import annotations

import re

import pytest

from db.models import Article
from producer.review import actions
from tests.unit.review_studio import ADMIN, KEPT, REVIEWER, flashes, login, post
from tests.unit.test_report import Elements


def test_approving_selected_articles_records_the_verdict_and_goes_back_with_a_message(studio):
    login(studio, REVIEWER)
    ids = [studio.ids["SKU-001"], studio.ids["SKU-002"]]
    back = "/batches/b1?filter=unreviewed"
    response = post(
        studio, "/batches/b1/approve-selected", {"article": ids, "back": back}, page=back
    )
    assert response.status_code == 303 and response.headers["location"] == back
    assert "approved 2 articles" in flashes(studio, back)
    with studio.sessions() as session:
        for article_id in ids:
            article = session.get(Article, article_id)
            assert (article.review_status, article.reviewed_by) == ("approved", REVIEWER)


def test_a_refused_action_is_flashed_on_the_page_it_came_from(studio):
    login(studio)
    article_id = studio.ids["SKU-009"]  # failed: no picture to approve
    page = f"/articles/{article_id}"
    response = post(studio, f"{page}/approve", {"back": page}, page=page)
    assert response.status_code == 303 and response.headers["location"] == page
    assert "nothing to approve" in flashes(studio, page)


def test_a_reviewer_may_not_act_on_a_whole_batch(studio):
    login(studio, REVIEWER)
    response = post(studio, "/batches/b1/approve-above", {"threshold": "0.2"})
    assert response.status_code == 403 and "not allowed" in response.text
    response = post(studio, "/batches/b1/regenerate-below", {"threshold": "0.2"})
    assert response.status_code == 403


def test_an_admin_approves_everything_above_a_threshold(studio):
    login(studio, ADMIN)
    response = post(studio, "/batches/b1/approve-above", {"threshold": "0.38"}, page="/batches/b1")
    assert response.status_code == 303
    should = [s for s in KEPT if s.score is not None and s.score >= 0.38 and s.review != "approved"]
    assert f"approved {len(should)} articles scoring 0.38 or more" in flashes(studio, "/batches/b1")
    nonsense = post(studio, "/batches/b1/approve-above", {"threshold": "lots"})
    assert nonsense.status_code == 303
    assert "threshold as a number" in flashes(studio, "/")


def test_rejecting_renders_a_new_attempt_and_records_the_verdict(studio, sent):
    login(studio, REVIEWER)
    article_id = studio.ids["SKU-001"]
    page = f"/articles/{article_id}"
    response = post(studio, f"{page}/reject", {"back": page}, page=page)
    assert response.status_code == 303 and response.headers["location"] == page
    assert sent == [(article_id, "SKU-001", "render")]
    assert "a new attempt is on its way" in flashes(studio, page)
    with studio.sessions() as session:
        article = session.get(Article, article_id)
        assert (article.review_status, article.render_attempt) == ("rejected", 2)
    history = Elements(studio.client.get(page).text).find("tr", "history-entry")
    assert [h["data-action"] for h in history] == ["rejected"]


def test_edited_attributes_and_prompt_go_to_the_actions_as_sent(studio, monkeypatch):
    calls = []
    monkeypatch.setattr(
        actions,
        "edit_attributes",
        lambda s, app, i, attributes, r, seen_attempt: calls.append((i, attributes, seen_attempt)),
    )
    monkeypatch.setattr(
        actions,
        "edit_prompt",
        lambda s, app, i, prompt, r, seen_attempt: calls.append((i, prompt, r, seen_attempt)),
    )
    login(studio)
    article_id = studio.ids["SKU-005"]
    page = f"/articles/{article_id}"
    form = {"attr.product_type": " skirt ", "other": "x", "attempt": "1"}
    assert post(studio, f"{page}/attributes", form, page=page).status_code == 303
    prompt = {"prompt": "a pleated skirt", "attempt": "1"}
    assert post(studio, f"{page}/prompt", prompt, page=page).status_code == 303
    assert calls == [
        (article_id, {"product_type": "skirt"}, 1),  # only what was sent: the rest is kept
        (article_id, "a pleated skirt", actions.Reviewer(ADMIN, "admin"), 1),
    ]


@pytest.mark.parametrize(
    ("sent_attempt", "passed"),
    [("3", 3), ("", None), ("x", None), ("٣", None), ("³", None), ("1234567890", None)],
)
def test_the_attempt_a_form_carries_reaches_the_actions_when_it_is_a_plain_number(
    studio, monkeypatch, sent_attempt, passed
):
    calls = []
    record = lambda *args, **kwargs: calls.append(kwargs) or 1  # noqa: E731
    monkeypatch.setattr(actions, "approve", record)
    monkeypatch.setattr(actions, "reject_and_regenerate", record)
    login(studio)
    article_id = studio.ids["SKU-000"]
    page = f"/articles/{article_id}"
    form = {"attempt": sent_attempt}
    post(studio, f"{page}/approve", form, page=page)
    post(studio, f"{page}/reject", form, page=page)
    seen = None if passed is None else {article_id: passed}
    assert calls == [{"seen": seen}, {"seen_attempt": passed}]


def test_approving_a_picture_that_changed_since_the_page_was_shown_is_refused(studio):
    login(studio, REVIEWER)
    article_id = studio.ids["SKU-001"]
    page = f"/articles/{article_id}"
    shown = re.search(r'name="attempt" value="(\d+)"', studio.client.get(page).text).group(1)
    with studio.sessions() as session:
        session.get(Article, article_id).render_attempt = int(shown) + 1  # a new picture
        session.commit()
    response = post(studio, f"{page}/approve", {"back": page, "attempt": shown}, page=page)
    assert response.status_code == 303
    assert "changed meanwhile" in flashes(studio, page)
    with studio.sessions() as session:
        assert session.get(Article, article_id).review_status is None


def test_approve_selected_takes_ids_with_the_attempts_their_cards_showed(studio, monkeypatch):
    calls = []
    monkeypatch.setattr(
        actions, "approve", lambda s, ids, r, **kwargs: calls.append((ids, kwargs)) or len(ids)
    )
    login(studio, REVIEWER)
    ids = [studio.ids["SKU-001"], studio.ids["SKU-002"]]
    odd = ["٣", "²", "1" * 10, "-4", " 5", str(2**40), "x:1"]
    chosen = [f"{ids[0]}:3", str(ids[1])]
    post(studio, "/batches/b1/approve-selected", {"article": [*chosen, *odd]})
    assert calls == [(ids, {"seen": {ids[0]: 3}})]
    calls.clear()
    post(studio, "/batches/b1/approve-selected", {"article": odd})
    assert calls == []
    assert "select at least one article first" in flashes(studio, "/")


def test_a_card_approved_after_its_picture_changed_is_refused(studio):
    login(studio, REVIEWER)
    sheet = studio.client.get("/batches/b1").text
    article_id = studio.ids["SKU-002"]
    value = re.search(rf'name="article" value="({article_id}:\d+)"', sheet).group(1)
    with studio.sessions() as session:
        session.get(Article, article_id).render_attempt += 1  # a new picture since
        session.commit()
    post(studio, "/batches/b1/approve-selected", {"article": [value]})
    assert "changed meanwhile" in flashes(studio, "/batches/b1")
    with studio.sessions() as session:
        assert session.get(Article, article_id).review_status is None
