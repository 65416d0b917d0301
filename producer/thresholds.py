"""A batch's score threshold changed: its scored articles are judged again against it.

The score stage decides an article's fate when it scores it; a threshold changed later (a
catalog re-submitted with a new ``--min-clip-score``) would otherwise leave ``done``
articles that now fall short, and ``needs_review`` articles that now pass, where they were.
The rule is the score stage's own (:func:`tasks.stages.verdict`), on the stored best score.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Article, ArticleStatus
from producer.requeue import reset_to_stage
from tasks.stages import verdict


@dataclass
class Recheck:
    """What judging a batch's scored articles again did."""

    regenerate: list[tuple[int, str]] = field(default_factory=list)  # (article id, key)
    to_review: int = 0
    to_done: int = 0


def recheck_scores(
    session: Session, batch_id: str, threshold: float | None, max_attempts: int
) -> Recheck:
    """Judge every scored, present article of a batch against ``threshold`` again.

    Args:
        session: a session inside a transaction (the caller commits).
        batch_id: the batch.
        threshold: the batch's new threshold; None accepts every score.
        max_attempts: render attempts an article may have for its current text
            (``FARM_MAX_ATTEMPTS``).

    Returns:
        The articles to render again (reset to ``render``, to be sent), and how many moved
        to ``needs_review`` and to ``done``.
    """
    scored = (ArticleStatus.done.value, ArticleStatus.needs_review.value)
    articles = session.scalars(
        select(Article)
        .where(Article.batch_id == batch_id, Article.status.in_(scored))
        .where(Article.removed_at.is_(None), Article.clip_score.is_not(None))
        .order_by(Article.id)
    )
    result = Recheck()
    for article in articles:
        judged = verdict(
            article.clip_score, threshold, article.render_attempt, article.attempt_base,
            max_attempts,
        )  # fmt: skip
        if judged == ArticleStatus.extracted:
            reset_to_stage(session, article, "render")
            result.regenerate.append((article.id, article.key))
        elif article.status != judged.value:
            article.status = judged.value
            if judged == ArticleStatus.done:
                result.to_done += 1
            else:
                result.to_review += 1
    return result
