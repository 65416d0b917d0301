"""Reading progress back from the database: per-batch counts and waiting for a batch to end."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import TERMINAL_STATUSES, Article, ArticleStatus, Batch, as_utc, utcnow
from tasks.finish import batch_scores
from tasks.registry import ORDER, STAGES


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
    waiting: Sequence[str] | None = None,
) -> dict:
    """Block until every article of a batch has ended (done, needs review or failed).

    Args:
        sessions: session factory of the farm's database.
        batch_id: the batch to watch.
        on_progress: called with the batch summary after each poll.
        alive: returns False when the workers serving the batch are gone (stop waiting).
        poll_seconds: how often to look.
        waiting: wait only until no article is in one of these statuses (``pending`` and
            ``translated``: the text stages are through); every unfinished status when None.

    Returns:
        The final batch summary.
    """
    waiting = waiting or [s.value for s in ArticleStatus if s not in TERMINAL_STATUSES]
    while True:
        with sessions() as session:
            summary = batch_summaries(session, [batch_id])[0]
        if on_progress:
            on_progress(summary)
        if not any(summary[status] for status in waiting):
            return summary
        if not alive():
            raise RuntimeError(f"the workers stopped before batch {batch_id} finished")
        time.sleep(poll_seconds)


def batch_details(session: Session, summary: dict, window_minutes: float = 10.0) -> dict:
    """Everything ``farm status`` shows for one batch beyond its counts.

    Args:
        session: any session.
        summary: the batch's counts, from :func:`batch_summaries`.
        window_minutes: how far back the throughput looks.

    Returns:
        ``rate_per_hour`` (articles ended in the window, per hour), ``eta_seconds`` (None
        when nothing ended lately), ``failures`` (per error kind: count and one example) and
        ``scores`` (mean/median/min/max of the best scores, empty when none).
    """
    batch_id = summary["id"]
    since = utcnow() - timedelta(minutes=window_minutes)
    recent = session.scalar(
        select(func.count())
        .select_from(Article)
        .where(Article.batch_id == batch_id, Article.finished_at >= since)
    )
    ended = sum(summary[s.value] for s in TERMINAL_STATUSES)
    rate = recent * 60.0 / window_minutes
    remaining = summary["total"] - ended
    return {
        "stages": _stage_counts(session, batch_id),
        "rate_per_hour": rate,
        "eta_seconds": _eta(remaining, rate),
        "failures": _failures(session, batch_id),
        "scores": _score_summary(session, batch_id),
    }


def _stage_counts(session: Session, batch_id: str) -> dict[str, dict[str, int]]:
    now = utcnow()
    rows = session.execute(
        select(Article.status, Article.lease_expires_at)
        .where(Article.batch_id == batch_id)
        .where(Article.status.in_([s.input.value for s in STAGES.values()]))
    )
    counts = {stage: {"queued": 0, "running": 0} for stage in ORDER}
    waiting_at = {stage.input.value: name for name, stage in STAGES.items()}
    for status, lease in rows:
        running = lease is not None and as_utc(lease) > now
        counts[waiting_at[status]]["running" if running else "queued"] += 1
    return counts


def _eta(remaining: int, rate_per_hour: float) -> float | None:
    if not remaining:
        return 0.0
    return remaining / rate_per_hour * 3600.0 if rate_per_hour else None


def _failures(session: Session, batch_id: str) -> dict[str, dict]:
    failed = session.execute(
        select(Article.error_kind, Article.key, Article.error_stage, Article.error)
        .where(Article.batch_id == batch_id, Article.status == ArticleStatus.failed.value)
        .order_by(Article.id)
    )
    groups: dict[str, dict] = {}
    for kind, key, stage, error in failed:
        group = groups.setdefault(
            kind or "Unknown",
            {"count": 0, "example": {"key": key, "stage": stage, "error": error}},
        )
        group["count"] += 1
    return groups


def _score_summary(session: Session, batch_id: str) -> dict[str, float]:
    scores = batch_scores(session, batch_id)
    if not scores:
        return {}
    return {
        "mean": statistics.fmean(scores),
        "median": statistics.median(scores),
        "min": min(scores),
        "max": max(scores),
    }


def status_counts(session: Session, batch_ids: list[str] | None = None) -> dict[str, dict]:
    """Count articles per status for each batch.

    Args:
        session: any session.
        batch_ids: restrict to these batches; all batches when None.

    Returns:
        ``{batch_id: {status: count}}`` with every status present (zeros included).
    """
    query = select(Article.batch_id, Article.status, func.count()).group_by(
        Article.batch_id, Article.status
    )
    if batch_ids:
        query = query.where(Article.batch_id.in_(batch_ids))
    counts: dict[str, dict] = {}
    for batch_id, status, count in session.execute(query):
        per_batch = counts.setdefault(batch_id, {s.value: 0 for s in ArticleStatus})
        per_batch[status] = count
    return counts
