"""The article page as a daily tool: previous and next through the sheet's filter and order,
approve and next, reasons in the history, fields that changed, honest attempt labels, and
what the farm is doing in plain words."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from db.models import Article, ArticleStatus, Render, ReviewAction, StageRun
from producer import requeue
from tests.unit.review_studio import (
    BATCH,
    REVIEWER,
    SPECS,
    add_view,
    attempt_png,
    cards,
    land,
    login,
    new_render,
    post,
)
from tests.unit.test_report import Elements

SHEET = "filter=unreviewed&sort=score"


def sheet_order(studio, query: str) -> list[int]:
    """The card ids the contact sheet shows under ``query``, page after page."""
    ids, page = [], 1
    while True:
        html = studio.client.get(f"/batches/{BATCH}?{query}&page={page}").text
        ids += [int(card["data-article-id"]) for card in cards(html)]
        pages = int(re.search(r'data-pages="(\d+)"', html).group(1))
        if page >= pages:
            return ids
        page += 1


def link(html: str, element_id: str) -> str | None:
    found = [a for t, a in Elements(html).tags if a.get("id") == element_id]
    return found[0].get("href") if found else None


def by_id(html: str, element_id: str) -> dict:
    return [a for t, a in Elements(html).tags if a.get("id") == element_id][0]


def text_of(html: str, element_id: str) -> str:
    inside = html.split(f'id="{element_id}"', 1)[1].split(">", 1)[1]
    return re.sub(r"<[^>]+>", "", inside.split("</", 1)[0])


def test_previous_and_next_follow_the_sheets_filter_and_order(studio):
    login(studio)
    order = sheet_order(studio, SHEET)
    assert len(order) > 60  # more than one page of the sheet
    for at in (0, 1, 60, len(order) - 1):
        page = studio.client.get(f"/articles/{order[at]}?{SHEET}").text
        following = order[at + 1] if at + 1 < len(order) else None
        preceding = order[at - 1] if at > 0 else None
        assert link(page, "next-link") == (following and f"/articles/{following}?{SHEET}")
        assert link(page, "previous-link") == (preceding and f"/articles/{preceding}?{SHEET}")
        position = by_id(page, "position")
        assert (position["data-position"], position["data-total"]) == (str(at + 1), str(len(order)))
    head = by_id(studio.client.get(f"/articles/{order[60]}?{SHEET}").text, "back-link")
    assert head["href"] == f"/batches/{BATCH}?{SHEET}&page=2"


def test_without_a_query_the_page_walks_the_sheet_it_was_opened_from(studio):
    login(studio)
    order = sheet_order(studio, SHEET)
    referer = f"http://testserver/batches/{BATCH}?{SHEET}"
    page = studio.client.get(f"/articles/{order[3]}", headers={"referer": referer}).text
    assert link(page, "next-link") == f"/articles/{order[4]}?{SHEET}"
    plain = studio.client.get(f"/articles/{order[3]}").text  # catalog order, every card
    assert link(plain, "next-link") == f"/articles/{order[3] + 1}"


def test_approve_and_next_goes_to_the_next_card_of_the_filter(studio):
    login(studio, REVIEWER)
    order = sheet_order(studio, SHEET)
    article_page = f"/articles/{order[5]}?{SHEET}"
    html = studio.client.get(article_page).text
    form = html.split('id="approve-form"')[1].split("</form>")[0]
    onward = re.search(r'name="next" value="([^"]+)"', form).group(1).replace("&amp;", "&")
    assert onward == f"/articles/{order[6]}?{SHEET}"
    response = post(
        studio,
        f"/articles/{order[5]}/approve",
        {"attempt": "1", "back": article_page, "next": onward},
        page=article_page,
    )
    assert response.status_code == 303 and response.headers["location"] == onward
    # Approved, it left the filter; its page still walks on from where it stood.
    again = studio.client.get(article_page).text
    assert link(again, "next-link") == f"/articles/{order[6]}?{SHEET}"
    assert by_id(again, "position")["data-position"] == ""


def test_a_refused_approve_goes_back_not_onward(studio):
    login(studio)
    failed = studio.ids["SKU-009"]
    page = f"/articles/{failed}"
    response = post(studio, f"{page}/approve", {"back": page, "next": "/articles/1"}, page=page)
    assert response.headers["location"] == page


def test_a_reject_reason_is_stored_and_shown_in_the_history(studio, sent):
    login(studio, REVIEWER)
    article_id = studio.ids["SKU-001"]
    page = f"/articles/{article_id}"
    reason = "  Ärmel zu kurz,\n falsche Farbe "
    post(studio, f"{page}/reject", {"back": page, "attempt": "1", "reason": reason}, page=page)
    with studio.sessions() as session:
        action = session.scalars(select(ReviewAction).where(ReviewAction.article_id == article_id))
        (rejected,) = action.all()
    assert (rejected.comment, rejected.attempt) == ("Ärmel zu kurz, falsche Farbe", 1)
    html = studio.client.get(page).text
    (entry,) = Elements(html).find("tr", "history-entry")
    assert (entry["data-action"], entry["data-attempt"]) == ("rejected", "1")
    assert "“Ärmel zu kurz, falsche Farbe”" in html


def test_the_history_shows_the_fields_that_changed_not_whole_values(studio, sent):
    login(studio, REVIEWER)
    article_id = studio.ids["SKU-002"]
    page = f"/articles/{article_id}"
    fields = {"attr.color_material_details": "blaue Wolle", "attempt": "1", "back": page}
    post(studio, f"{page}/attributes", fields, page=page)
    html = studio.client.get(page).text
    history = html.split('id="history"')[1]
    changes = re.findall(
        r'<span class="field">([^<]*)</span>: <span class="before">([^<]*)</span> → '
        r'<span class="after">([^<]*)</span>',
        history,
    )
    changed = {field: (before, after) for field, before, after in changes}
    assert changed["color material details"] == ("red silk", "blaue Wolle")
    assert "product type" not in changed  # unchanged attributes are left out
    assert "prompt" in changed and "attributes" not in changed
    assert "{" not in history.split("</table>")[0]  # no JSON


def test_a_cli_requeue_appears_in_the_history(studio):
    article_id = studio.ids["SKU-004"]
    with studio.sessions() as session:
        chosen = [session.get(Article, article_id)]
        requeue.apply(session, requeue.plan(chosen, "render"))
    with studio.sessions() as session:
        (action,) = session.scalars(
            select(ReviewAction).where(ReviewAction.article_id == article_id)
        ).all()
    assert (action.user, action.action, action.attempt) == ("farm requeue", "requeue", 2)
    assert action.after["from_stage"] == "render"
    login(studio)
    html = studio.client.get(f"/articles/{article_id}").text
    (entry,) = Elements(html).find("tr", "history-entry")
    assert (entry["data-action"], entry["data-user"]) == ("requeue", "farm requeue")
    assert "requeued (farm requeue)" in html


def attempt_labels(html: str) -> dict[str, str]:
    return {f["data-attempt"]: f["data-labels"] for f in Elements(html).find("figure", "attempt")}


def reject_the_first_attempt(studio) -> str:
    """Sign in as the reviewer and reject SKU-001's first attempt; its article page's path."""
    login(studio, REVIEWER)
    page = f"/articles/{studio.ids['SKU-001']}"
    post(studio, f"{page}/reject", {"back": page, "attempt": "1"}, page=page)
    return page


def test_a_rejected_attempt_is_labelled_rejected_and_the_new_one_awaits_review(studio, sent):
    page = reject_the_first_attempt(studio)
    waiting = studio.client.get(page).text
    assert attempt_labels(waiting) == {"1": "rejected"}
    assert "attempt 1 rejected" in text_of(waiting, "review-status")
    land(studio, "SKU-001", 2)
    html = studio.client.get(page).text
    labels = attempt_labels(html)
    assert labels == {"1": "rejected", "2": "new"}  # not "earlier text": the text is the same
    verdict = text_of(html, "review-status")
    assert "new attempt 2" in verdict and "awaiting review" in verdict
    assert by_id(html, "landed")["data-attempt"] == "2"
    assert "New attempt 2 landed at" in html


def test_only_attempts_made_before_a_text_change_are_labelled_earlier_text(studio, sent):
    page = reject_the_first_attempt(studio)
    land(studio, "SKU-001", 2)
    edit = {"back": page, "attempt": "2", "prompt": "a blue dress"}
    post(studio, f"{page}/prompt", edit, page=page)
    land(studio, "SKU-001", 3)
    labels = attempt_labels(studio.client.get(page).text)
    assert labels["1"] == "rejected earlier_text"
    assert labels["2"] == "earlier_text"
    assert labels["3"] == "new"


def test_older_history_rows_without_an_attempt_still_label_by_time(studio):
    """Rows stored before actions kept their attempt: a reject names it in ``before``."""
    article_id = studio.ids["SKU-000"]  # three attempts; its fixture history edits the prompt
    with studio.sessions() as session:
        edit = session.scalars(select(ReviewAction).where(ReviewAction.article_id == article_id))
        edit.one().at = datetime(2000, 1, 1, tzinfo=timezone.utc)  # before every attempt
        session.get(Article, article_id).attempt_base = 3
        session.add(
            ReviewAction(batch_id=BATCH, article_id=article_id, user=REVIEWER, action="rejected",
                         before={"review_status": None, "attempt": 2},
                         after={"review_status": "rejected", "attempt": 3},
                         at=datetime.now(timezone.utc) - timedelta(seconds=1))
        )  # fmt: skip
        session.commit()
    login(studio)
    labels = attempt_labels(studio.client.get(f"/articles/{article_id}").text)
    assert labels["1"] == "set_aside" and labels["2"] == "rejected"


def test_an_approval_labels_the_published_attempt_not_the_newest(studio):
    article_id = studio.ids["SKU-000"]  # three attempts
    with studio.sessions() as session:
        article = session.get(Article, article_id)
        article.best_attempt, newest = 1, article.render_attempt  # the first scored best
        session.commit()
    login(studio, REVIEWER)
    page = f"/articles/{article_id}"
    post(studio, f"{page}/approve", {"back": page, "attempt": str(newest)}, page=page)
    labels = attempt_labels(studio.client.get(page).text)
    assert "approved" in labels["1"].split()
    assert "approved" not in labels[str(newest)].split()


def test_a_regeneration_waiting_with_no_gpu_worker_online_says_so(studio, sent):
    page = reject_the_first_attempt(studio)
    html = studio.client.get(page).text
    progress = text_of(html, "progress")
    assert "no GPU worker is online" in progress and "extracted" not in progress
    assert by_id(html, "progress")["data-stranded"] == "true"
    assert by_id(html, "gpu-workers")["data-online"] == "false"
    before = studio.client.get(f"{page}/state.json").json()["version"]
    with studio.sessions() as session:  # a GPU worker starts rendering something
        other = studio.ids["SKU-002"]
        session.add(StageRun(article_id=other, stage="render", attempt=1, worker="gpu@h"))
        session.commit()
    html = studio.client.get(page).text
    assert "Queued: a GPU worker will render attempt 2" in text_of(html, "progress")
    assert by_id(html, "gpu-workers")["data-online"] == "true"
    assert studio.client.get(f"{page}/state.json").json()["version"] != before


def test_a_held_article_says_which_stage_works_on_it(studio):
    article_id = studio.ids["SKU-001"]
    with studio.sessions() as session:
        article = session.get(Article, article_id)
        article.status, article.render_attempt = ArticleStatus.extracted.value, 2
        article.lease_token, article.lease_stage = "t", "render"
        article.lease_expires_at = datetime.now(timezone.utc) + timedelta(minutes=5)
        session.commit()
    login(studio)
    html = studio.client.get(f"/articles/{article_id}").text
    assert text_of(html, "progress") == "A GPU worker is rendering attempt 2 now"
    assert "working on 1 article now" in text_of(html, "gpu-workers")


def test_the_page_shows_the_key_legend_and_the_lightbox(studio):
    login(studio, REVIEWER)
    html = studio.client.get(f"/articles/{studio.ids['SKU-000']}").text
    legend = html.split('id="key-legend"')[1].split("</aside>")[0]
    for key in ("A", "R", "J", "K", "Z", "Esc"):
        assert f"<kbd>{key}</kbd>" in legend
    assert 'id="lightbox"' in html and 'href="/static/article.css"' in html
    assert 'id="compare-latest"' in html  # three attempts to compare


def test_the_views_strip_shows_each_view_of_the_product_with_its_picture_in_view_order(studio):
    front = studio.ids["SKU-001"]
    back = add_view(studio, "SKU-001", "back", clip_score=0.42)
    with studio.sessions() as session:
        image = attempt_png(studio.output, SPECS[1], 2)
        session.add(new_render(back, 1, image, 0.42))
        session.commit()
        pictures = {
            row.article_id: row.id
            for row in session.scalars(select(Render).where(Render.article_id.in_([front, back])))
        }
    login(studio)
    html = studio.client.get(f"/articles/{back}?{SHEET}").text
    strip = html.split('id="product-views"', 1)[1].split("</section>", 1)[0]
    figures = Elements(strip).find("figure", "product-view")
    assert [(f["data-view"], int(f["data-article-id"])) for f in figures] == [
        ("front", front),
        ("back", back),
    ]
    assert [f["data-full"] for f in figures] == [
        f"/renders/{pictures[front]}/image",
        f"/renders/{pictures[back]}/image",
    ]
    assert figures[1]["data-caption"] == "back · score 0.42"
    assert "current" in figures[1]["class"].split() and "current" not in figures[0]["class"]
    walk = SHEET.replace("&", "&amp;")
    assert f'href="/articles/{front}?{walk}"' in strip  # the other view, in the same walk
    assert "<kbd>V</kbd> views side by side" in html
    for figure in figures:
        assert studio.client.get(figure["data-full"]).status_code == 200
    alone = studio.client.get(f"/articles/{studio.ids['SKU-002']}").text
    assert 'id="product-views"' not in alone and "<kbd>V</kbd>" not in alone
