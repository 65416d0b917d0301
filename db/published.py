"""What was published of each article: its stored best attempt, and the one last written out.

The score stage stores an article's best attempt under its lease; only then is that
attempt's picture copied under the article's own name, with its JSON, from the stored row
(``tasks.publish``). ``published_attempt`` records what was written; the reaper publishes
again wherever it differs from ``best_attempt`` (a worker that died between the two, a disk
that was full).
"""

from __future__ import annotations

from sqlalchemy import Engine, and_, or_, select, update

from db.clock import server_time
from db.models import Article, Render

ARTICLES = Article.__table__
RENDERS = Render.__table__
_PUBLISH_COLUMNS = (
    "id", "key", "view", "batch_id", "file_stem", "source_text", "source_file", "source_sheet",
    "source_row", "translation", "attributes", "generation_prompt", "clip_prompt", "clip_score",
    "best_attempt", "model_commits",
)  # fmt: skip


def stored_best(connection, article_ids: list[int] | None = None, grace_seconds: float = 0.0):
    """The stored best attempt of articles, with what publishing it needs.

    Args:
        connection: a Connection or Session.
        article_ids: these articles, whatever was published of them; or, when None, every
            article whose stored best differs from the attempt last published, untouched for
            ``grace_seconds`` (the stage that stored it publishes it itself meanwhile).
        grace_seconds: see above.

    Returns:
        Dicts of the article's columns (``model_commits``: its text models'), ``seed``,
        ``attempt_path``, ``model_id``, ``lora`` and ``render_commits`` (its image models')
        of its best attempt, by id.
    """
    best = RENDERS.alias("best")
    query = (
        select(
            *(ARTICLES.c[name] for name in _PUBLISH_COLUMNS),
            best.c.seed,
            best.c.image_path.label("attempt_path"),
            best.c.model_id,
            best.c.lora,
            best.c.model_commits.label("render_commits"),
        )
        .join(
            best,
            and_(best.c.article_id == ARTICLES.c.id, best.c.attempt == ARTICLES.c.best_attempt),
        )
        .order_by(ARTICLES.c.id)
    )
    if article_ids is not None:
        query = query.where(ARTICLES.c.id.in_(article_ids))
    else:
        query = query.where(
            or_(ARTICLES.c.published_attempt.is_(None),
                ARTICLES.c.published_attempt != ARTICLES.c.best_attempt),
            ARTICLES.c.updated_at < server_time(-grace_seconds),
        ).limit(500)  # fmt: skip
    return [dict(row) for row in connection.execute(query).mappings()]


def mark_published(engine: Engine, article_id: int, attempt: int) -> bool:
    """Record that attempt ``attempt`` was published, if it is still the stored best.

    Returns:
        False when the stored best changed meanwhile: what was written may be stale, and
        the caller publishes again.
    """
    with engine.begin() as connection:
        return bool(
            connection.execute(
                update(ARTICLES)
                .where(ARTICLES.c.id == article_id, ARTICLES.c.best_attempt == attempt)
                .values(published_attempt=attempt)
            ).rowcount
        )
