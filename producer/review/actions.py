"""What a reviewer can do to articles, each action stored with who, when, before and after.

Approving only records a verdict. Rejecting, editing attributes or the prompt, and bulk
regeneration start the farm's own render and score tasks again for the article: a new
attempt with the next seed, at urgent priority, so the result lands while the reviewer
waits. Earlier attempts stay on disk and in the renders table, but no longer compete for
the published image (``attempt_base`` moves to the new attempt), since a reviewer turned
them down or they were made from other prompts.

Every action first takes its article with one conditional UPDATE: the article must still be
ended, held by no worker, and (when the page says which attempt the reviewer looked at) at
that attempt. A second reviewer, a double click or a requeue racing with the action then
finds the article changed and is refused, instead of rendering it twice or approving a
picture nobody saw. The UPDATE also locks the row until the action commits.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from celery import Celery
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.clock import server_now
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

logger = logging.getLogger(__name__)
RENDER = "render"
# A reason or note longer than this is cut: it is a line in the history, not a report.
COMMENT_CHARS = 2000
_ENDED = tuple(status.value for status in TERMINAL_STATUSES)
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


def approve(
    session: Session,
    article_ids: Sequence[int],
    reviewer: Reviewer,
    seen: Mapping[int, int] | None = None,
    comment: str | None = None,
) -> int:
    """Approve the finished pictures of these articles.

    Articles without a finished picture, busy or removed ones, those approved already and
    those no longer at the attempt the reviewer saw are left as they are.

    Args:
        session: a session; it is committed.
        article_ids: the articles.
        reviewer: who approves.
        seen: article id → the render attempt the reviewer looked at, where the page knew.
        comment: a note stored with each approval (see :func:`clean_comment`).

    Returns:
        How many articles were approved.

    Raises:
        ReviewRefused: none of the articles could be approved (the message says why).
    """
    seen = seen or {}
    approved, reasons = 0, []
    for article_id in article_ids:
        article = _hold(session, article_id, _WITH_PICTURE, seen.get(article_id))
        if isinstance(article, str):
            reasons.append(article)
        elif article.image_path is None:
            reasons.append(f"article {article.key} has no finished picture")
        elif article.review_status != ReviewStatus.approved.value:
            before = _verdict(article)
            _judge(session, article, ReviewStatus.approved, reviewer, before, comment)
            approved += 1
    session.commit()
    if reasons and not approved and len(reasons) == len(article_ids):
        raise ReviewRefused(f"nothing to approve: {reasons[0]}")
    return approved


def approve_above(session: Session, batch_id: str, threshold: float, reviewer: Reviewer) -> int:
    """Approve every unapproved finished picture of a batch scoring at least ``threshold``.

    Returns:
        How many articles were approved.

    Raises:
        ReviewForbidden: the reviewer is not an admin.
    """
    _require_admin(reviewer, "approve a whole batch")
    condition = Article.clip_score >= threshold
    approved = 0
    for article_id in _batch_ids(session, batch_id, condition):
        # Checked again as it is taken: someone may have judged it since the list was read.
        article = _hold(session, article_id, _WITH_PICTURE, None, _unapproved(), condition)
        if not isinstance(article, str) and article.image_path is not None:
            _judge(session, article, ReviewStatus.approved, reviewer, _verdict(article))
            approved += 1
    session.commit()
    return approved


def reject_and_regenerate(
    session: Session,
    app: Celery,
    article_id: int,
    reviewer: Reviewer,
    seen_attempt: int | None = None,
    reason: str | None = None,
) -> None:
    """Reject an article's picture and render it again with the next attempt's seed.

    Args:
        reason: why, as the reviewer typed it; stored with the action and shown in the
            history (see :func:`clean_comment`).

    Raises:
        ReviewRefused: the article is being worked on, changed since ``seen_attempt``, has
            no prompt yet, or the broker cannot be reached (then nothing was changed).
    """
    _check_broker(app)
    article = _renderable(session, article_id, seen_attempt)
    before = _verdict(article)
    _render_again(session, article)
    # The action is about the picture turned down, not the attempt it starts.
    judged = before["attempt"]
    _judge(session, article, ReviewStatus.rejected, reviewer, before, reason, judged)
    _send(session, app, [article])


def edit_attributes(
    session: Session,
    app: Celery,
    article_id: int,
    attributes: Mapping[str, str],
    reviewer: Reviewer,
    seen_attempt: int | None = None,
) -> None:
    """Change some of an article's attributes, rebuild both prompts, and render again.

    Attributes not given keep their values; a name the article does not have is refused.

    Raises:
        ReviewRefused: as :func:`reject_and_regenerate`, or an unknown attribute name.
    """
    _check_broker(app)
    article = _renderable(session, article_id, seen_attempt)
    known = dict(article.attributes or {})
    unknown = sorted(set(attributes) - set(known))
    if unknown:
        session.rollback()
        raise ReviewRefused(f"article {article.key} has no attribute {', '.join(unknown)}")
    before = _prompt_fields(article)
    _render_again(session, article)
    article.attributes = known | dict(attributes)
    article.generation_prompt = generation_prompt(article.attributes, view=article.view)
    article.clip_prompt = clip_prompt(article.attributes, view=article.view)
    after = _prompt_fields(article)
    _record(session, article, "edit_attributes", reviewer, before, after, attempt=_started(article))
    _send(session, app, [article])


def edit_prompt(
    session: Session,
    app: Celery,
    article_id: int,
    prompt: str,
    reviewer: Reviewer,
    seen_attempt: int | None = None,
) -> None:
    """Replace an article's generation prompt and render again from it.

    Raises:
        ReviewRefused: as :func:`reject_and_regenerate`, or the prompt is empty.
    """
    prompt = " ".join((prompt or "").split())
    if not prompt:
        raise ReviewRefused("the generation prompt is empty")
    _check_broker(app)
    article = _renderable(session, article_id, seen_attempt)
    before = {"generation_prompt": article.generation_prompt}
    _render_again(session, article)
    article.generation_prompt = prompt
    after = {"generation_prompt": prompt}
    _record(session, article, "edit_prompt", reviewer, before, after, attempt=_started(article))
    _send(session, app, [article])


def regenerate_below(
    session: Session, app: Celery, batch_id: str, threshold: float, reviewer: Reviewer
) -> int:
    """Render again every finished, unapproved article of a batch scoring below ``threshold``.

    Approved articles are left alone: a merchandiser already accepted their picture.

    Returns:
        How many articles were sent.

    Raises:
        ReviewForbidden: the reviewer is not an admin.
        ReviewRefused: the broker cannot be reached (nothing was changed).
    """
    _require_admin(reviewer, "regenerate a whole batch")
    condition = Article.clip_score < threshold
    chosen = _batch_ids(session, batch_id, condition)
    if not chosen:
        return 0
    _check_broker(app)
    sent = []
    for article_id in chosen:
        article = _hold(session, article_id, _WITH_PICTURE, None, _unapproved(), condition)
        if isinstance(article, str) or not article.generation_prompt:
            continue
        before = {"clip_score": article.clip_score, "attempt": article.render_attempt}
        _render_again(session, article)
        after = {"threshold": threshold, "attempt": article.render_attempt}
        _record(session, article, "regenerate", reviewer, before, after, attempt=_started(article))
        sent.append(article)
    _send(session, app, sent)
    return len(sent)


def _unapproved():
    return (Article.review_status != ReviewStatus.approved.value) | (
        Article.review_status.is_(None)
    )


def _batch_ids(session: Session, batch_id: str, condition) -> list[int]:
    """Ids of a batch's finished, unapproved articles meeting ``condition``, in order."""
    query = select(Article.id).where(
        Article.batch_id == batch_id,
        Article.removed_at.is_(None),
        Article.status.in_(_WITH_PICTURE),
        _unapproved(),
        condition,
    )
    return list(session.scalars(query.order_by(Article.id)))


def _hold(
    session: Session,
    article_id: int,
    statuses: Collection[str],
    seen_attempt: int | None = None,
    *conditions,
) -> Article | str:
    """Take the article for this action, if it is still as the reviewer saw it.

    Args:
        conditions: more that must hold as it is taken (a bulk action's own criteria).

    Returns:
        The article (its row locked until the session commits), or why it cannot be taken.
    """
    query = update(Article).where(
        Article.id == article_id,
        Article.removed_at.is_(None),
        Article.status.in_(list(statuses)),
        Article.lease_token.is_(None),
        *conditions,
    )
    if seen_attempt is not None:
        query = query.where(Article.render_attempt == seen_attempt)
    taken = session.execute(
        query.values(updated_at=server_now()), execution_options={"synchronize_session": False}
    ).rowcount
    article = session.get(Article, article_id, populate_existing=True)
    if taken == 1:
        return article
    if article is None or article.removed_at is not None:
        return f"no article {article_id}"
    if article.status not in _ENDED or article.lease_token is not None:
        return f"article {article.key} is still being worked on ({article.status})"
    if seen_attempt is not None and article.render_attempt != seen_attempt:
        return (
            f"article {article.key} changed meanwhile (now attempt {article.render_attempt}); "
            "reload the page"
        )
    return f"article {article.key} has no finished picture ({article.status})"


def _renderable(session: Session, article_id: int, seen_attempt: int | None) -> Article:
    """The article, taken for this action, when it may be rendered again now."""
    article = _hold(session, article_id, _ENDED, seen_attempt)
    if isinstance(article, str):
        session.rollback()
        raise ReviewRefused(article)
    if first_unfinished(article) < ORDER.index(RENDER) or not article.generation_prompt:
        session.rollback()
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
    if not chains:
        return
    try:
        send_and_mark(app, session.get_bind(), chains, priority=URGENT_PRIORITY)
    except Exception as error:  # kombu raises many kinds; the change itself is stored
        # sent_at stays empty, so the workers' reaper sends them once the broker is back.
        logger.warning(
            "review: %d chain(s) not sent now (%s); the reaper sends them", len(chains), error
        )


def _verdict(article: Article) -> dict:
    return {"review_status": article.review_status, "attempt": article.render_attempt}


def _started(article: Article) -> int:
    """The attempt an action that renders again starts (reset_to_stage numbered it)."""
    return article.render_attempt


def clean_comment(text: str | None) -> str | None:
    """A reason or note as stored: on one line, trimmed, cut at :data:`COMMENT_CHARS`; None
    when nothing is left."""
    flat = " ".join((text or "").split())
    return flat[:COMMENT_CHARS] or None


def _judge(
    session: Session,
    article: Article,
    verdict: ReviewStatus,
    reviewer: Reviewer,
    before: dict,
    comment: str | None = None,
    judged: int | None = None,
) -> None:
    article.review_status = verdict.value
    article.reviewed_by = reviewer.name
    article.reviewed_at = utcnow()
    attempt = article.render_attempt if judged is None else judged
    _record(session, article, verdict.name, reviewer, before, _verdict(article), comment, attempt)


def _prompt_fields(article: Article) -> dict:
    return {
        "attributes": article.attributes,
        "generation_prompt": article.generation_prompt,
        "clip_prompt": article.clip_prompt,
    }


def _record(
    session: Session,
    article: Article,
    action: str,
    reviewer: Reviewer,
    before,
    after,
    comment: str | None = None,
    attempt: int | None = None,
) -> None:
    session.add(
        ReviewAction(
            batch_id=article.batch_id,
            article_id=article.id,
            user=reviewer.name,
            action=action,
            before=before,
            after=after,
            comment=clean_comment(comment),
            attempt=attempt,
        )
    )
