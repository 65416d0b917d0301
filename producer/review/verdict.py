"""What an article's verdict means for the picture it shows now, read the same way on the
article page and on the contact sheet.

A rejection is about one picture: the attempt its review action names (the action's
``attempt`` column; rows older than that column name it in ``before``). Rejecting renders a
new attempt and leaves the article ``rejected`` until someone judges that one. While the new
attempt is on its way the article reads "rejected"; once an attempt later than the rejected
one exists it reads "awaiting review", since nobody has judged that picture.

:func:`verdict` decides from loaded values (the article page's rows, a sheet card's
columns); :func:`latest_attempt` and :func:`rejected_attempt` are those values as SQL for
the sheet's cards, and :func:`awaiting_review` and :func:`still_rejected` the rule itself as
SQL for its filters.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, exists, func, not_, select
from sqlalchemy.orm import aliased

from db.models import Article, Render, ReviewAction, ReviewStatus

REJECTED = ReviewStatus.rejected.value


@dataclass(frozen=True)
class Verdict:
    """What the reviewer should make of the article's picture now."""

    kind: str  # approved, rejected, new (a new attempt awaits review), unreviewed
    text: str  # the article page's words
    chip: str  # a contact sheet card's words


def verdict(review_status: str | None, latest: int | None, rejected: int | None) -> Verdict:
    """The verdict on the article's picture now.

    Args:
        review_status: the article's stored verdict (``approved``, ``rejected`` or None).
        latest: its newest render attempt, None before its first.
        rejected: the attempt its latest rejection was about (:func:`judged_attempt`), None
            when no rejection names one.
    """
    if review_status == ReviewStatus.approved.value:
        return Verdict("approved", "approved", "approved")
    if review_status == REJECTED:
        if latest is not None and rejected is not None and latest > rejected:
            return Verdict("new", f"new attempt {latest} · awaiting review", "awaiting review")
        if rejected is not None:
            text = f"attempt {rejected} rejected · a new one is on its way"
            return Verdict("rejected", text, "rejected")
        return Verdict("rejected", "rejected", "rejected")
    text = "awaiting review" if latest is not None else "unreviewed"
    return Verdict("unreviewed", text, "unreviewed")


def judged_attempt(action: ReviewAction) -> int | None:
    """The attempt an action was about: its column, else (older rows) the attempt it names
    before the change."""
    if action.attempt is not None:
        return action.attempt
    before = action.before if isinstance(action.before, dict) else {}
    value = before.get("attempt")
    return value if isinstance(value, int) else None


def latest_attempt():
    """SQL, correlated with ``Article``: its newest render attempt (NULL before its first)."""
    render = aliased(Render)
    return (
        select(func.max(render.attempt))
        .where(render.article_id == Article.id)
        .correlate(Article)
        .scalar_subquery()
    )


def rejected_attempt():
    """SQL, correlated with ``Article``: the attempt its latest rejection was about, as
    :func:`judged_attempt` reads it (NULL when none names one)."""
    action = aliased(ReviewAction)
    named = func.coalesce(action.attempt, action.before["attempt"].as_integer())
    return (
        select(named)
        .where(action.article_id == Article.id, action.action == REJECTED)
        .order_by(action.at.desc(), action.id.desc())
        .limit(1)
        .correlate(Article)
        .scalar_subquery()
    )


def _newer_than_rejected():
    render = aliased(Render)
    return exists(
        select(render.id)
        .where(render.article_id == Article.id, render.attempt > rejected_attempt())
        .correlate(Article)
    )


def awaiting_review():
    """SQL condition: the article is rejected and a later attempt than the rejected one has
    landed (:func:`verdict`'s ``new``)."""
    return and_(Article.review_status == REJECTED, _newer_than_rejected())


def still_rejected():
    """SQL condition: the article is rejected and no attempt has replaced the rejected one
    yet (:func:`verdict`'s ``rejected``)."""
    return and_(Article.review_status == REJECTED, not_(_newer_than_rejected()))
