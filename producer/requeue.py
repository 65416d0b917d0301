"""``farm requeue``: select articles, reset them to a stage, and start their chains again.

Requeued chains run at urgent priority, so they do not wait behind a 10,000-article
catalog. An article that a worker is still working on (a live lease, or progress more
recent than one lease) is left alone unless it is stuck.

Each requeued article gets a line in its review history (a ``requeue`` action by
:data:`REQUEUE_USER`), so the studio shows why its picture changed or its verdict went.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import TERMINAL_STATUSES, Article, ArticleStatus, Batch, Render, ReviewAction
from db.transitions import close_running_runs, unlease
from tasks.exceptions import SelectionError
from tasks.reaper import stuck_articles
from tasks.registry import ORDER, STAGES, stage_waiting_in, stages_from

# Who the review history says requeued an article.
REQUEUE_USER = "farm requeue"


@dataclass(frozen=True)
class Selection:
    """Which articles to requeue; every given criterion must hold."""

    batch: str | None = None
    statuses: Sequence[str] = ()
    below: float | None = None
    keys: Sequence[str] = ()
    stuck: bool = False


@dataclass(frozen=True)
class RequeuePlan:
    """One article to requeue and the stage its chain starts at."""

    article_id: int
    key: str
    batch_id: str
    status: str
    from_stage: str


def select_articles(session: Session, selection: Selection, lease_seconds: float) -> list[Article]:
    """Articles matching ``selection`` that no worker is busy with.

    Args:
        session: any session.
        selection: the criteria.
        lease_seconds: how long without progress makes an in-flight article stuck.

    Returns:
        The articles, by id.

    Raises:
        SelectionError: the batch or some of the keys do not exist.
    """
    _check_names(session, selection)
    query = select(Article).where(Article.removed_at.is_(None)).order_by(Article.id)
    if selection.batch:
        query = query.where(Article.batch_id == selection.batch)
    if selection.statuses:
        query = query.where(Article.status.in_(list(selection.statuses)))
    if selection.below is not None:
        query = query.where((Article.clip_score < selection.below) | Article.clip_score.is_(None))
    if selection.keys:
        query = query.where(Article.key.in_(list(selection.keys)))
    ended = {s.value for s in TERMINAL_STATUSES}
    # The reaper's selection, and also articles quiet for a lease (a lost message).
    stuck = {row.id for row in stuck_articles(session, quiet_seconds=lease_seconds)}
    chosen = []
    for article in session.scalars(query):
        if article.id not in stuck and (selection.stuck or article.status not in ended):
            continue
        chosen.append(article)
    return chosen


def _check_names(session: Session, selection: Selection) -> None:
    """Refuse a batch or article keys that do not exist, naming them."""
    if selection.batch and session.get(Batch, selection.batch) is None:
        raise SelectionError.unknown_batch(selection.batch)
    if not selection.keys:
        return
    query = select(Article.key).where(Article.key.in_(list(selection.keys)))
    if selection.batch:
        query = query.where(Article.batch_id == selection.batch)
    known = set(session.scalars(query))
    unknown = [key for key in selection.keys if key not in known]
    if unknown:
        where = f" in batch {selection.batch}" if selection.batch else ""
        listed = ", ".join(repr(key) for key in unknown[:20])
        more = f" and {len(unknown) - 20} more" if len(unknown) > 20 else ""
        raise SelectionError(f"no article{where} with key {listed}{more}")


def first_unfinished(article: Article) -> int:
    """Index in :data:`ORDER` of the first stage the article has not finished.

    Args:
        article: the article.

    Returns:
        ``len(ORDER)`` when every stage is finished.
    """
    if article.status == ArticleStatus.failed.value and article.error_stage in ORDER:
        return ORDER.index(article.error_stage)
    if article.status in (ArticleStatus.done.value, ArticleStatus.needs_review.value):
        return len(ORDER)
    if article.status == ArticleStatus.failed.value:
        return 0
    return ORDER.index(stage_waiting_in(article.status).name)


def default_stage(article: Article) -> str:
    """The first stage an article has not finished.

    Args:
        article: the article.

    Returns:
        Its failed stage when failed; ``render`` (a new attempt) when it ended with an image;
        otherwise the stage whose input its status is.
    """
    index = first_unfinished(article)
    return "render" if index == len(ORDER) else ORDER[index]


def plan(articles: Sequence[Article], from_stage: str | None = None) -> list[RequeuePlan]:
    """What a requeue would do, article by article (for ``--dry-run`` and for applying).

    Args:
        articles: from :func:`select_articles`.
        from_stage: start every chain here; each article's :func:`default_stage` when None.

    Returns:
        One plan per article.

    Raises:
        SelectionError: ``from_stage`` needs outputs that some article does not have yet.
    """
    if from_stage is not None:
        _check_inputs(articles, from_stage)
    return [
        RequeuePlan(a.id, a.key, a.batch_id, a.status, from_stage or default_stage(a))
        for a in articles
    ]


def _check_inputs(articles: Sequence[Article], from_stage: str) -> None:
    """Refuse a start stage whose inputs some article does not have yet."""
    wanted = ORDER.index(from_stage)
    short = [a for a in articles if first_unfinished(a) < wanted]
    if not short:
        return
    earliest = min(first_unfinished(a) for a in short)
    keys = ", ".join(repr(a.key) for a in short[:10])
    more = f" and {len(short) - 10} more" if len(short) > 10 else ""
    raise SelectionError(
        f"cannot start {len(short)} article(s) at {from_stage}: {keys}{more} have not "
        f"finished {ORDER[earliest]} yet; use --from-stage {ORDER[earliest]} (or leave it out)"
    )


def apply(session: Session, plans: Sequence[RequeuePlan]) -> list[tuple[int, str, str]]:
    """Reset each planned article to its stage's input, in one transaction.

    Args:
        session: any session; it is committed.
        plans: from :func:`plan`.

    Returns:
        (article id, key, from stage) for each article to send.
    """
    for item in plans:
        article = session.get(Article, item.article_id)
        before = _history_fields(article)
        _reset_to(session, article, item.from_stage)
        _record_requeue(session, article, item.from_stage, before)
    session.commit()
    return [(p.article_id, p.key, p.from_stage) for p in plans]


def _history_fields(article: Article) -> dict:
    return {
        "status": article.status,
        "review_status": article.review_status,
        "attempt": article.render_attempt,
    }


def _record_requeue(session: Session, article: Article, stage: str, before: dict) -> None:
    """A ``requeue`` line in the article's review history: from which stage, what changed.

    Its ``attempt`` is the render attempt the chain goes on with (a new one unless a stuck
    article resumes where it stopped).
    """
    session.add(
        ReviewAction(
            batch_id=article.batch_id,
            article_id=article.id,
            user=REQUEUE_USER,
            action="requeue",
            before=before,
            after=_history_fields(article) | {"from_stage": stage},
            attempt=article.render_attempt,
        )
    )


def _reset_to(session: Session, article: Article, stage: str) -> None:
    article.requeues += 1
    if article.status == STAGES[stage].input.value:
        # A stuck article resumes where it stopped: same attempt, same seed, nothing to clear.
        unlease(article)
        return
    reset_to_stage(session, article, stage)


def reset_to_stage(session: Session, article: Article, stage: str) -> None:
    """Put an article back to the input of ``stage``, clearing that stage's and later outputs.

    The lease is cleared too, so a copy still running on the old state writes nothing.

    Args:
        session: the session the article belongs to (not committed here).
        article: the article.
        stage: a stage of :data:`tasks.registry.STAGES`.
    """
    for later in stages_from(stage):
        for column in later.writes:
            setattr(article, column, None)
    if stage in ("translate", "extract", "render"):
        # A new attempt: a new seed, and the earlier attempts stay in the renders table.
        last = session.scalar(
            select(func.max(Render.attempt)).where(Render.article_id == article.id)
        )
        article.render_attempt = (last or 0) + 1
        if stage != "render":
            # New prompts: scores of earlier attempts were measured against the old ones.
            article.attempt_base = article.render_attempt
    article.status = STAGES[stage].input.value
    # The picture a verdict was about is being replaced: the next one needs its own.
    article.review_status = article.reviewed_by = article.reviewed_at = None
    article.stage_attempts = 0
    article.error = article.error_kind = article.error_stage = None
    unlease(article)
    article.finished_at = None
    # A claim after the reset counts from attempt 1 again, so it would not close these itself.
    close_running_runs(session, article.id, "lost")
