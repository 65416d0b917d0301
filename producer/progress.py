"""Reading progress back from the database: per-batch counts and waiting for a batch to end."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import TERMINAL_STATUSES, Batch
from db.transitions import status_counts


def batch_summaries(session: Session, batch_ids: list[str] | None = None) -> list[dict]:
    """Counts per status for each batch, oldest batch first.

    Args:
        session: any session.
        batch_ids: only these batches; all when None or empty.

    Returns:
        One dict per batch: ``id``, ``created_at``, ``total`` and one count per status.
    """
    query = select(Batch).order_by(Batch.created_at)
    if batch_ids:
        query = query.where(Batch.id.in_(batch_ids))
    batches = list(session.scalars(query))
    counts = status_counts(session, [b.id for b in batches])
    summaries = []
    for batch in batches:
        per_status = counts.get(batch.id, {})
        summaries.append(
            {
                "id": batch.id,
                "created_at": batch.created_at.isoformat(),
                "total": sum(per_status.values()),
                **per_status,
            }
        )
    return summaries


def wait_for_batch(
    sessions: sessionmaker[Session],
    batch_id: str,
    on_progress: Callable[[dict], None] | None = None,
    alive: Callable[[], bool] = lambda: True,
    poll_seconds: float = 0.5,
) -> dict:
    """Block until every article of a batch has ended (done, needs review or failed).

    Args:
        sessions: session factory of the farm's database.
        batch_id: the batch to watch.
        on_progress: called with the batch summary after each poll.
        alive: returns False when the workers serving the batch are gone (stop waiting).
        poll_seconds: how often to look.

    Returns:
        The final batch summary.
    """
    ended = [s.value for s in TERMINAL_STATUSES]
    while True:
        with sessions() as session:
            summary = batch_summaries(session, [batch_id])[0]
        if on_progress:
            on_progress(summary)
        if sum(summary[s] for s in ended) >= summary["total"]:
            return summary
        if not alive():
            raise RuntimeError(f"the workers stopped before batch {batch_id} finished")
        time.sleep(poll_seconds)
