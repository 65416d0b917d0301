"""What happens when the last article of a batch ends: the batch's statistics file."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session

from db.models import TERMINAL_STATUSES, Article, ArticleStatus
from tasks import outputs

STATISTICS_FILE = "clip_statistics.txt"


def batch_scores(session: Session | Connection, batch_id: str) -> list[float]:
    """Best CLIP score of every scored article of a batch that is still in its catalog.

    Args:
        session: any session or connection.
        batch_id: the batch.

    Returns:
        The scores, in article order.
    """
    query = (
        select(Article.clip_score)
        .where(Article.batch_id == batch_id, Article.clip_score.is_not(None))
        .where(Article.removed_at.is_(None))  # its row left the catalog
        .order_by(Article.id)
    )
    return list(session.scalars(query))


def write_statistics_if_finished(
    session: Session | Connection, batch_id: str, output_dir: Path
) -> bool:
    """Write the batch's ``clip_statistics.txt`` once no article of it is still in flight.

    Args:
        session: any session or connection.
        batch_id: the batch.
        output_dir: the farm's output root.

    Returns:
        True when the batch had finished and the file was written.
    """
    # Asked after every article: find one unfinished row through the status index (few rows
    # are in flight) instead of counting over a 10,000-article batch. The statuses are
    # written into the SQL, so that a prepared statement's plan knows them (bound, its
    # generic plan scans the table).
    in_flight = [s.value for s in ArticleStatus if s not in TERMINAL_STATUSES]
    statuses = bindparam("in_flight", in_flight, expanding=True, literal_execute=True)
    unfinished = session.scalar(
        select(Article.id)
        .where(Article.status.in_(statuses), Article.batch_id == batch_id)
        .where(Article.removed_at.is_(None))
        .limit(1)
    )
    if unfinished is not None:
        return False
    path = outputs.batch_dir(output_dir, batch_id) / STATISTICS_FILE
    outputs.write_clip_statistics(path, batch_scores(session, batch_id))
    return True
