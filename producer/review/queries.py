"""The studio's reads: batch summaries, an article with its attempts, and the names, texts
and published pictures that the pages share.

Read-only, and sized for 10,000-article batches: each read is a fixed number of queries that
select columns rather than objects where many rows come back, so nothing is loaded lazily
per article. A contact sheet's page is read by :mod:`producer.review.sheet_query`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, aliased

from db.models import (
    TERMINAL_STATUSES,
    UNREVIEWED,
    Article,
    ArticleStatus,
    Batch,
    Render,
    ReviewAction,
    ReviewStatus,
)
from producer.export import best_render
from workers.prompts import VIEWS

FARM_STATUSES = tuple(status.value for status in ArticleStatus)
REVIEW_STATUSES = (*(status.value for status in ReviewStatus), UNREVIEWED)
SHORT_TEXT_CHARS = 140
# Source headers that hold an article's display name, compared in lower case.
NAME_HEADERS = ("name", "model_name")
_TERMINAL = tuple(status.value for status in TERMINAL_STATUSES)


@dataclass(frozen=True)
class BatchSummary:
    """One row of the batches page."""

    id: str
    catalog: str
    created_at: datetime
    views: list[str]
    min_clip_score: float | None
    total: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    reviews: dict[str, int] = field(default_factory=dict)
    score_mean: float | None = None
    score_min: float | None = None
    score_max: float | None = None

    @property
    def running(self) -> bool:
        """Whether some article of the batch has not reached an end yet."""
        return any(self.statuses.get(s, 0) for s in FARM_STATUSES if s not in _TERMINAL)


def batch_summaries(session: Session) -> list[BatchSummary]:
    """Every batch, newest first, with its counts and scores (removed articles left out).

    Args:
        session: any session.

    Returns:
        One summary per batch; three queries whatever the number of batches.
    """
    kept = Article.removed_at.is_(None)
    counts = session.execute(
        select(Article.batch_id, Article.status, Article.review_status, func.count())
        .where(kept)
        .group_by(Article.batch_id, Article.status, Article.review_status)
    ).all()
    scores = session.execute(
        select(
            Article.batch_id,
            func.avg(Article.clip_score),
            func.min(Article.clip_score),
            func.max(Article.clip_score),
        )
        .where(kept)
        .group_by(Article.batch_id)
    ).all()
    by_batch: dict[str, dict] = {}
    for batch_id, status, review, count in counts:
        tally = by_batch.setdefault(batch_id, {"total": 0, "statuses": {}, "reviews": {}})
        tally["total"] += count
        tally["statuses"][status] = tally["statuses"].get(status, 0) + count
        review = review or UNREVIEWED
        tally["reviews"][review] = tally["reviews"].get(review, 0) + count
    for batch_id, mean, low, high in scores:
        by_batch.setdefault(batch_id, {}).update(score_mean=mean, score_min=low, score_max=high)
    batches = session.scalars(select(Batch).order_by(Batch.created_at.desc(), Batch.id)).all()
    return [batch_summary(batch, by_batch.get(batch.id, {})) for batch in batches]


def batch_summary(batch: Batch, tally: dict) -> BatchSummary:
    """A batch's row of the batches page, with the counts and scores in ``tally`` (none when
    empty: the contact sheet's heading needs only the batch itself).

    Args:
        batch: the batch.
        tally: :class:`BatchSummary`'s ``total``, ``statuses``, ``reviews`` and ``score_*``
            fields, each optional.
    """
    return BatchSummary(
        id=batch.id,
        catalog=batch.catalog,
        created_at=batch.created_at,
        views=list(batch.views or ["front"]),
        min_clip_score=batch.min_clip_score,
        **tally,
    )


def best_render_id():
    """The render whose image is published (as :func:`producer.export.best_render` picks it).

    The best scored attempt of the current text, the earlier one on a tie; else its latest.
    """
    render = aliased(Render)
    unscored = render.clip_score.is_(None)
    return (
        select(render.id)
        .where(render.article_id == Article.id, render.attempt >= Article.attempt_base)
        .order_by(
            unscored,
            render.clip_score.desc(),
            case((unscored, -render.attempt), else_=render.attempt),
        )
        .limit(1)
        .correlate(Article)
        .scalar_subquery()
    )


def display_name(source_columns: dict | None) -> str | None:
    """The article's name from its catalog cells (a ``name`` column), None without one.

    Args:
        source_columns: the cells of its catalog row under the catalog's headers.
    """
    cells = {str(k).strip().lower(): v for k, v in (source_columns or {}).items()}
    for header in NAME_HEADERS:
        value = cells.get(header)
        if value not in (None, ""):
            return str(value)
    return None


def shorten(text: str | None, limit: int = SHORT_TEXT_CHARS) -> str:
    """``text`` on one line, cut at a word before ``limit`` characters with an ellipsis."""
    flat = " ".join((text or "").split())
    if len(flat) <= limit:
        return flat
    cut = flat[: limit - 1].rsplit(" ", 1)[0] or flat[: limit - 1]
    return cut + "…"


@dataclass(frozen=True)
class Attempt:
    """One render attempt of an article, as the article page shows it."""

    render: Render
    published: bool
    superseded: bool  # made for earlier text or prompts; it no longer competes


@dataclass(frozen=True)
class ArticlePage:
    """Everything the article page shows; plain loaded rows, safe to use after the session."""

    article: Article
    batch: Batch
    name: str | None
    attempts: list[Attempt]
    history: list[ReviewAction]
    state: dict
    views: list[tuple[int, str]]  # (article id, view) of every view of its row, itself too


def article_page(session: Session, article_id: int) -> ArticlePage | None:
    """An article with its batch, every render attempt and its review history.

    Args:
        session: any session.
        article_id: the article.

    Returns:
        The page's data, or None when there is no such article (or it was removed).
    """
    article = session.get(Article, article_id)
    if article is None or article.removed_at is not None:
        return None
    batch = session.get(Batch, article.batch_id)
    by_attempt = select(Render).where(Render.article_id == article_id).order_by(Render.attempt)
    renders = list(session.scalars(by_attempt))
    best = best_render(renders, article.attempt_base)
    attempts = [
        Attempt(r, best is not None and r.id == best.id, r.attempt < article.attempt_base)
        for r in renders
    ]
    history = list(
        session.scalars(
            select(ReviewAction)
            .where(ReviewAction.article_id == article_id)
            .order_by(ReviewAction.at.desc(), ReviewAction.id.desc())
        )
    )
    name = display_name(article.source_columns)
    state = _state(article, renders)
    return ArticlePage(article, batch, name, attempts, history, state, _views(session, article))


def _views(session: Session, article: Article) -> list[tuple[int, str]]:
    """The articles of the same row in the batch's other views, in the batch's view order."""
    rows = session.execute(
        select(Article.id, Article.view).where(
            Article.batch_id == article.batch_id,
            Article.key == article.key,
            Article.removed_at.is_(None),
        )
    ).all()
    order = {view: index for index, view in enumerate(VIEWS)}
    return sorted(((r.id, r.view) for r in rows), key=lambda pair: order.get(pair[1], len(order)))


def article_state(session: Session, article_id: int) -> dict | None:
    """What the article page polls for: enough to notice a new attempt or verdict.

    Args:
        session: any session.
        article_id: the article.

    Returns:
        ``status``, ``review_status``, ``clip_score``, ``renders`` (how many attempts),
        ``latest_attempt``, ``latest_score`` and ``version``, a text that changes whenever
        any of them does; None when there is no such article.
    """
    article = session.get(Article, article_id)
    if article is None or article.removed_at is not None:
        return None
    renders = list(session.scalars(select(Render).where(Render.article_id == article_id)))
    return _state(article, renders)


def _state(article: Article, renders: list[Render]) -> dict:
    latest = max(renders, key=lambda r: r.attempt, default=None)
    state = {
        "id": article.id,
        "status": article.status,
        "review_status": article.review_status,
        "clip_score": article.clip_score,
        "renders": len(renders),
        "latest_attempt": latest.attempt if latest else None,
        "latest_score": latest.clip_score if latest else None,
    }
    state["version"] = "|".join(str(state[k]) for k in sorted(state))
    return state


def articles_of_batch(session: Session, batch_id: str, article_ids: list[int]) -> list[int]:
    """Those of ``article_ids`` that belong to the batch (a form may name any id)."""
    if not article_ids:
        return []
    return list(
        session.scalars(
            select(Article.id)
            .where(Article.batch_id == batch_id, Article.id.in_(article_ids))
            .order_by(Article.id)
        )
    )


def article_exists(session: Session, article_id: int) -> bool:
    """Whether the article exists and was not removed from its catalog."""
    found = session.scalar(
        select(Article.id).where(Article.id == article_id, Article.removed_at.is_(None))
    )
    return found is not None


def batch_exists(session: Session, batch_id: str) -> bool:
    """Whether the batch exists."""
    return session.get(Batch, batch_id) is not None


def view_pictures(
    session: Session, article_ids: list[int]
) -> list[tuple[int, str, int | None, float | None]]:
    """Each of these articles (the views of one catalog row) with the render it publishes.

    Args:
        session: any session.
        article_ids: the articles, in the order wanted.

    Returns:
        (article id, view, render id or None, score) per article, in the order given.
    """
    if not article_ids:
        return []
    rows = session.execute(
        select(
            Article.id, Article.view, Article.clip_score, best_render_id().label("render_id")
        ).where(Article.id.in_(article_ids), Article.removed_at.is_(None))
    ).all()
    by_id = {row.id: (row.id, row.view, row.render_id, row.clip_score) for row in rows}
    return [by_id[i] for i in article_ids if i in by_id]


def article_batch(session: Session, article_id: int) -> str | None:
    """The batch of an article, or None when there is no such article."""
    return session.scalar(select(Article.batch_id).where(Article.id == article_id))
