"""What happens when the last article of a batch ends: the batch's statistics file."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import TERMINAL_STATUSES, Article
from tasks import outputs

STATISTICS_FILE = "clip_statistics.txt"


def batch_scores(session: Session, batch_id: str) -> list[float]:
    """Best CLIP score of every scored article of a batch.

    Args:
        session: any session.
        batch_id: the batch.

    Returns:
        The scores, in article order.
    """
    query = (
        select(Article.clip_score)
        .where(Article.batch_id == batch_id, Article.clip_score.is_not(None))
        .order_by(Article.id)
    )
    return list(session.scalars(query))


def write_statistics_if_finished(session: Session, batch_id: str, output_dir: Path) -> bool:
    """Write the batch's ``clip_statistics.txt`` once no article of it is still in flight.

    Args:
        session: any session.
        batch_id: the batch.
        output_dir: the farm's output root.

    Returns:
        True when the batch had finished and the file was written.
    """
    unfinished = session.scalar(
        select(func.count())
        .select_from(Article)
        .where(
            Article.batch_id == batch_id,
            Article.status.not_in([s.value for s in TERMINAL_STATUSES]),
        )
    )
    if unfinished:
        return False
    path = outputs.batch_dir(output_dir, batch_id) / STATISTICS_FILE
    outputs.write_clip_statistics(path, batch_scores(session, batch_id))
    return True
