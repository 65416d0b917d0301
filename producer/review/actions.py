"""What a reviewer can do to articles, each action stored with who, when, before and after.

Approving only records a verdict. Rejecting, editing attributes or the prompt, and bulk
regeneration start the farm's own render and score tasks again for the article: a new
attempt with the next seed, at urgent priority, so the result lands while the reviewer
waits. Earlier attempts stay on disk and in the renders table, but no longer compete for
the published image (``attempt_base`` moves to the new attempt), since a reviewer turned
them down or they were made from other prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import (
    TERMINAL_STATUSES,
    Article,
    ArticleStatus,
    ReviewAction,
    ReviewStatus,
    UserRole,
    utcnow,
)
from producer.requeue import first_unfinished, reset_to_stage
from producer.submit import BrokerUnavailable, check_broker, send_and_mark
from tasks.exceptions import ReviewForbidden, ReviewRefused
from tasks.queues import URGENT_PRIORITY
from tasks.registry import ORDER
from workers.prompts import clip_prompt, generation_prompt

__all__ = [
    "Reviewer",
    "ReviewForbidden",
    "ReviewRefused",
    "approve",
    "approve_above",
    "edit_attributes",
    "edit_prompt",
    "reject_and_regenerate",
    "regenerate_below",
]

RENDER = "render"
_ENDED = {status.value for status in TERMINAL_STATUSES}
_WITH_PICTURE = (ArticleStatus.done.value, ArticleStatus.needs_review.value)


@dataclass(frozen=True)
class Reviewer:
    """The logged-in user an action is done by."""

    name: str
    role: str

    @property
    def is_admin(self) -> bool:
        """Whether the user may act on a whole batch at once."""
        return self.role == UserRole.admin.value


def approve(session: Session, article_ids: Sequence[int], reviewer: Reviewer) -> int:
    """Approve the finished pictures of these articles.

    Articles without a finished picture, removed ones and those approved already are left
    as they are.

    Args:
        session: a session; it is committed.
        article_ids: the articles.
        reviewer: who approves.

    Returns:
        How many articles were approved.

    Raises:
        ReviewRefused: none of the articles has a picture to approve.
    """
    articles = session.scalars(select(Article).where(Article.id.in_(list(article_ids)))).all()
    if not articles:
        raise ReviewRefused("no such article")
    approvable = [a for a in articles if _has_picture(a)]
    if not approvable:
        raise ReviewRefused("nothing to approve: no finished picture among the chosen articles")
    approved = [a for a in approvable if a.review_status != ReviewStatus.approved.value]
    for article in approved:
        _judge(session, article, ReviewStatus.approved, reviewer)
    session.commit()
    return len(approved)


def approve_above(session: Session, batch_id: str, threshold: float, reviewer: Reviewer) -> int:
    """Approve every finished picture of a batch scoring at least ``threshold`` (admins only).

    Returns:
        How many articles were approved.

    Raises:
        ReviewForbidden: the reviewer is not an admin.
    """
    _require_admin(reviewer, "approve a whole batch")
    query = _batch_articles(batch_id).where(
        Article.status.in_(_WITH_PICTURE),
        Article.image_path.is_not(None),
        Article.clip_score >= threshold,
        (Article.review_status != ReviewStatus.approved.value) | Article.review_status.is_(None),
    )
    articles = session.scalars(query).all()
    for article in articles:
        _judge(session, article, ReviewStatus.approved, reviewer)
    session.commit()
    return len(articles)


def reject_and_regenerate(
    session: Session, app: Celery, article_id: int, reviewer: Reviewer
) -> None:
    """Reject an article's picture and render it again with the next attempt's seed.

    Raises:
        ReviewRefused: the article is still being worked on, has no prompt yet, or the
            broker cannot be reached (then nothing was changed).
    """
    article = _renderable(session, article_id)
    _check_broker(app)
    _judge(session, article, ReviewStatus.rejected, reviewer)
    _render_again(session, article)
    _send(session, app, [article])


def edit_attributes(
    session: Session, app: Celery, article_id: int, attributes: dict, reviewer: Reviewer
) -> None:
    """Replace an article's attributes, rebuild both prompts from them, and render again.

    Raises:
        ReviewRefused: as :func:`reject_and_regenerate`, or the attributes are not a mapping
            of names to text.
    """
    if not isinstance(attributes, dict) or not all(isinstance(k, str) for k in attributes):
        raise ReviewRefused("attributes must map names to values")
    article = _renderable(session, article_id)
    _check_broker(app)
    before = _prompt_fields(article)
    _render_again(session, article)
    article.attributes = dict(attributes)
    article.generation_prompt = generation_prompt(article.attributes, view=article.view)
    article.clip_prompt = clip_prompt(article.attributes, view=article.view)
    _record(session, article, "edit_attributes", reviewer, before, _prompt_fields(article))
    _send(session, app, [article])


def edit_prompt(
    session: Session, app: Celery, article_id: int, prompt: str, reviewer: Reviewer
) -> None:
    """Replace an article's generation prompt and render again from it.

    Raises:
        ReviewRefused: as :func:`reject_and_regenerate`, or the prompt is empty.
    """
    prompt = " ".join((prompt or "").split())
    if not prompt:
        raise ReviewRefused("the generation prompt is empty")
    article = _renderable(session, article_id)
    _check_broker(app)
    before = {"generation_prompt": article.generation_prompt}
    _render_again(session, article)
    article.generation_prompt = prompt
    _record(session, article, "edit_prompt", reviewer, before, {"generation_prompt": prompt})
    _send(session, app, [article])


def regenerate_below(
    session: Session, app: Celery, batch_id: str, threshold: float, reviewer: Reviewer
) -> int:
    """Render again every finished article of a batch scoring below ``threshold`` (admins).

    Approved articles are left alone: a merchandiser already accepted their picture.

    Returns:
        How many articles were sent.

    Raises:
        ReviewForbidden: the reviewer is not an admin.
        ReviewRefused: the broker cannot be reached.
    """
    _require_admin(reviewer, "regenerate a whole batch")
    query = _batch_articles(batch_id).where(
        Article.status.in_(_WITH_PICTURE),
        Article.clip_score < threshold,
        (Article.review_status != ReviewStatus.approved.value) | Article.review_status.is_(None),
    )
    articles = [a for a in session.scalars(query) if a.generation_prompt]
    if not articles:
        return 0
    _check_broker(app)
    for article in articles:
        before = {"clip_score": article.clip_score, "attempt": article.render_attempt}
        _render_again(session, article)
        after = {"threshold": threshold, "attempt": article.render_attempt}
        _record(session, article, "regenerate", reviewer, before, after)
    _send(session, app, articles)
    return len(articles)


def _batch_articles(batch_id: str):
    return (
        select(Article)
        .where(Article.batch_id == batch_id, Article.removed_at.is_(None))
        .order_by(Article.id)
    )


def _has_picture(article: Article) -> bool:
    return (
        article.removed_at is None
        and article.status in _WITH_PICTURE
        and article.image_path is not None
    )


def _renderable(session: Session, article_id: int) -> Article:
    """The article, when it may be rendered again now."""
    article = session.get(Article, article_id)
    if article is None or article.removed_at is not None:
        raise ReviewRefused(f"no article {article_id}")
    if article.status not in _ENDED:
        raise ReviewRefused(
            f"article {article.key} is still being worked on ({article.status}); "
            "wait for its result"
        )
    if first_unfinished(article) < ORDER.index(RENDER) or not article.generation_prompt:
        raise ReviewRefused(
            f"article {article.key} has no prompt to render from yet; "
            "requeue it with `farm requeue` first"
        )
    return article


def _require_admin(reviewer: Reviewer, what: str) -> None:
    if not reviewer.is_admin:
        raise ReviewForbidden(f"not allowed: only an admin may {what}")


def _check_broker(app: Celery) -> None:
    try:
        check_broker(app)
    except BrokerUnavailable as error:
        raise ReviewRefused(f"{error}; nothing was changed") from error


def _render_again(session: Session, article: Article) -> None:
    reset_to_stage(session, article, RENDER)
    # The attempts before this one were turned down or made from other prompts: only the
    # new attempts compete for the published image, with a full budget of attempts.
    article.attempt_base = article.render_attempt


def _send(session: Session, app: Celery, articles: list[Article]) -> None:
    """Commit, then send each article's chain from the render stage at urgent priority."""
    chains = [(a.id, a.key, RENDER) for a in articles]
    session.commit()
    # A crash between the commit and the send leaves sent_at empty: the reaper sends them.
    send_and_mark(app, session.get_bind(), chains, priority=URGENT_PRIORITY)


def _judge(session: Session, article: Article, verdict: ReviewStatus, reviewer: Reviewer) -> None:
    before = {"review_status": article.review_status, "attempt": article.render_attempt}
    article.review_status = verdict.value
    article.reviewed_by = reviewer.name
    article.reviewed_at = utcnow()
    after = {"review_status": verdict.value, "attempt": article.render_attempt}
    _record(session, article, verdict.name, reviewer, before, after)


def _prompt_fields(article: Article) -> dict:
    return {
        "attributes": article.attributes,
        "generation_prompt": article.generation_prompt,
        "clip_prompt": article.clip_prompt,
    }


def _record(
    session: Session, article: Article, action: str, reviewer: Reviewer, before, after
) -> None:
    session.add(
        ReviewAction(
            batch_id=article.batch_id,
            article_id=article.id,
            user=reviewer.name,
            action=action,
            before=before,
            after=after,
        )
    )
