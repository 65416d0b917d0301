"""Reading progress back from the database: counts per batch and stage, throughput, ETA, and
waiting for a batch to end.

An article whose row left the catalog (``removed_at`` set) counts nowhere here: not in a
total, a status, a stage, a rate, an ETA, the failures or the scores. Each summary only says
how many such articles the batch has (``removed``).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import (
    DEFAULT_VIEW,
    TERMINAL_STATUSES,
    UNREVIEWED,
    Article,
    ArticleStatus,
    Batch,
    ReviewStatus,
    StageRun,
    as_utc,
    utcnow,
)
from tasks.registry import ORDER, STAGES

DEFAULT_HALF_LIFE_MINUTES = 3.0
# A finish this many half-lives old weighs under 0.4 %: a batch none of whose articles ended
# for that long has no current rate, and an ETA drawn from that tail would be fiction.
STALE_HALF_LIVES = 8.0
# A gap between finishes of this many usual spacings (and two half-lives at least) is a pause,
# not slow work: workers were down, or a requeue came the next day. The rate starts again
# after it, else the idle gap would keep the ETA pessimistic for several half-lives.
PAUSE_SPACINGS = 10.0
# Statuses in which an article has passed every stage.
_THROUGH = (ArticleStatus.done.value, ArticleStatus.needs_review.value)
# The review studio's verdicts as summaries count them; articles nobody judged yet last.
REVIEW_COUNTS = (*(verdict.value for verdict in ReviewStatus), UNREVIEWED)


def batch_summaries(session: Session, batch_ids: list[str] | None = None) -> list[dict]:
    """Counts per status for each batch, oldest batch first; removed articles left out.

    Args:
        session: any session.
        batch_ids: only these batches; all when None or empty.

    Returns:
        One dict per batch: ``id``, ``catalog``, ``created_at``, ``total``, one count per
        status, ``percent`` (per status, of ``total``, one decimal), ``removed`` (articles
        whose row left the catalog), ``failed_by_stage`` (failed articles per the stage
        they failed at; ``unknown`` when none was recorded), ``review`` (articles per
        :data:`REVIEW_COUNTS`: approved, rejected, unreviewed) and ``views`` (the views
        the batch renders per row).
    """
    query = select(Batch).order_by(Batch.created_at)
    if batch_ids:
        query = query.where(Batch.id.in_(batch_ids))
    batches = list(session.scalars(query))
    counts = _article_counts(session, [b.id for b in batches])
    return [_summary(batch, counts.get(batch.id) or _empty_counts()) for batch in batches]


def _summary(batch: Batch, counts: dict) -> dict:
    per_status = counts["statuses"]
    total = sum(per_status.values())
    return {
        "id": batch.id,
        "catalog": batch.catalog,
        "created_at": batch.created_at.isoformat(),
        "total": total,
        **per_status,
        "percent": {status: percent(n, total) for status, n in per_status.items()},
        "removed": counts["removed"],
        "failed_by_stage": counts["failed_by_stage"],
        "review": counts["review"],
        "views": list(batch.views or [DEFAULT_VIEW]),
    }


def percent(count: int, total: int) -> float:
    """``count`` as a percentage of ``total``, one decimal; 0.0 when ``total`` is 0."""
    return round(100.0 * count / total, 1) if total else 0.0


def _empty_counts() -> dict:
    return {
        "statuses": {s.value: 0 for s in ArticleStatus},
        "failed_by_stage": {},
        "removed": 0,
        "review": dict.fromkeys(REVIEW_COUNTS, 0),
    }


def _article_counts(session: Session, batch_ids: list[str] | None) -> dict[str, dict]:
    # One grouped scan serves statuses, failures per stage, reviews and removed articles.
    removed = Article.removed_at.is_not(None)
    groups = (Article.batch_id, Article.status, Article.error_stage, Article.review_status)
    query = select(*groups, removed, func.count()).group_by(*groups, removed)
    if batch_ids:
        query = query.where(Article.batch_id.in_(batch_ids))
    counts: dict[str, dict] = {}
    for batch_id, status, error_stage, review, is_removed, count in session.execute(query):
        per_batch = counts.setdefault(batch_id, _empty_counts())
        if is_removed:
            per_batch["removed"] += count
            continue
        per_batch["statuses"][status] = per_batch["statuses"].get(status, 0) + count
        verdict = review if review in per_batch["review"] else UNREVIEWED
        per_batch["review"][verdict] += count
        if status == ArticleStatus.failed.value:
            stage = error_stage if error_stage in STAGES else "unknown"
            failed = per_batch["failed_by_stage"]
            failed[stage] = failed.get(stage, 0) + count
    return counts


def status_counts(session: Session, batch_ids: list[str] | None = None) -> dict[str, dict]:
    """Count articles per status for each batch, removed articles left out.

    Args:
        session: any session.
        batch_ids: restrict to these batches; all batches when None.

    Returns:
        ``{batch_id: {status: count}}`` with every status present (zeros included).
    """
    return {b: c["statuses"] for b, c in _article_counts(session, batch_ids).items()}


def stage_progress(summary: dict) -> dict[str, dict[str, int]]:
    """How far a batch's articles are through each stage, from its summary alone.

    An article has passed every stage before the one it waits for (``extracted`` has
    passed translate and extract), all of them when done or needing review, and those
    before the stage it failed at when failed (a failure without a known stage counts as
    failed at the first). A below-threshold score sends an article back to render, so
    render and score may step back while it is rendered again.

    Args:
        summary: one batch's summary from :func:`batch_summaries`.

    Returns:
        Per stage, in stage order: ``passed`` (articles through it), ``failed`` (articles
        that failed at it) and ``total`` (articles that reach it: the batch's total less
        those failed at an earlier stage). A stage is complete when ``passed + failed``
        equals ``total``.
    """
    failed_at = [summary.get("failed_by_stage", {}).get(name, 0) for name in ORDER]
    failed_at[0] += summary.get("failed_by_stage", {}).get("unknown", 0)
    # Articles not failed, by how many stages they have passed.
    through = [summary[STAGES[name].input.value] for name in ORDER]
    through.append(sum(summary[status] for status in _THROUGH))
    progress = {}
    for index, name in enumerate(ORDER):
        progress[name] = {
            "passed": sum(through[index + 1 :]) + sum(failed_at[index + 1 :]),
            "failed": failed_at[index],
            "total": summary["total"] - sum(failed_at[:index]),
        }
    return progress


def ewma_rate(finished: Sequence[float], now: float, half_life: float) -> float:
    """Articles ending per second, recent finishes weighing most (exponentially decayed).

    The finishes are counted with a weight halving every ``half_life`` seconds, and divided
    by the time they were counted over, weighted the same way. That time starts at the
    first finish (which itself is not counted): the start of a batch (models loading, the
    first articles going through every stage) is not the pace of its middle. It starts
    again after a pause (see ``PAUSE_SPACINGS``). A batch idle since its last finish sees
    its rate fall away, and none is left after ``STALE_HALF_LIVES`` half-lives.

    Args:
        finished: the moments articles ended (seconds, any epoch, sorted ascending; equal
            moments are articles that ended together).
        now: the present moment on the same clock.
        half_life: seconds after which a finish weighs half.

    Returns:
        The rate, 0.0 when fewer than two distinct moments are known or the last is stale.
    """
    times = list(finished[_run_start(finished, half_life) :])
    if not times or now - times[-1] > STALE_HALF_LIVES * half_life:
        return 0.0
    now = max(now, times[-1])  # a worker's clock slightly ahead of ours
    decay = math.log(2) / half_life
    anchor = times[0]
    weight = sum(math.exp(-decay * (now - t)) for t in times if t > anchor)
    exposure = -math.expm1(-decay * (now - anchor)) / decay
    return weight / exposure if exposure > 0 else 0.0


def _run_start(times: Sequence[float], half_life: float) -> int:
    """Index of the first finish after the last pause (0 when there was none)."""
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    spacings = [gap for gap in gaps if gap > 0]
    if not spacings:
        return 0
    pause = max(2.0 * half_life, PAUSE_SPACINGS * statistics.median(spacings))
    return max((i + 1 for i, gap in enumerate(gaps) if gap > pause), default=0)


def eta_seconds(remaining: int, rate_per_second: float) -> float | None:
    """Seconds until ``remaining`` articles end at ``rate_per_second``.

    Returns:
        0.0 when nothing remains, None when the rate is unknown (zero).
    """
    if remaining <= 0:
        return 0.0
    return remaining / rate_per_second if rate_per_second > 0 else None


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


def batch_details(
    session: Session, summary: dict, half_life_minutes: float = DEFAULT_HALF_LIFE_MINUTES
) -> dict:
    """Everything ``farm status`` shows for one batch beyond its counts.

    Args:
        session: any session.
        summary: the batch's counts, from :func:`batch_summaries`.
        half_life_minutes: how fast the rate forgets: a finish this old weighs half.

    Returns:
        ``stages`` (per stage: ``queued`` and ``running`` articles waiting at it, and
        :func:`stage_progress`'s ``passed``, ``failed``, ``total``), ``rate_per_hour``
        (while articles are in flight :func:`ewma_rate`, per hour; once every article
        ended, :func:`ended_rate`, which stays what it was at the batch's end),
        ``eta_seconds`` (None when the rate is unknown), ``failures`` (per error kind:
        count and one example) and ``scores`` (mean/median/min/max of the best scores,
        empty when none).
    """
    batch_id = summary["id"]
    now = utcnow()
    finished = _finish_times(session, batch_id)
    ended = sum(summary[s.value] for s in TERMINAL_STATUSES)
    if summary["total"] and ended == summary["total"]:
        rate = ended_rate(finished, _run_spans(session, batch_id), half_life_minutes * 60)
    else:
        rate = ewma_rate(finished, now.timestamp(), half_life_minutes * 60)
    progress = stage_progress(summary)
    waiting = _stage_counts(session, batch_id, now)
    return {
        "stages": {stage: waiting[stage] | progress[stage] for stage in ORDER},
        "rate_per_hour": rate * 3600.0,
        "eta_seconds": eta_seconds(summary["total"] - ended, rate),
        "failures": _failures(session, batch_id),
        "scores": _score_summary(session, batch_id),
    }


def ended_rate(
    finished: Sequence[float], runs: Sequence[tuple[float, float]], half_life: float
) -> float:
    """Articles ended per second over the active time of a batch that has ended.

    Its active time runs from its first stage start to its last finish, less the pauses in
    which none of its stages ran (the union of its stage runs): a batch resumed the next
    morning is not charged the night. It no longer depends on the present, so a batch
    reports the same rate long after it ended as at its end (:func:`ewma_rate` would keep
    lowering it, as it does for a batch that stalled).

    Args:
        finished: the moments its articles ended (seconds, sorted ascending).
        runs: its stage runs as (start, end) on the same clock.
        half_life: for a batch without stage runs: :func:`ewma_rate` at its last finish.

    Returns:
        The rate, 0.0 when nothing ended.
    """
    if not finished:
        return 0.0
    active = _union_length([(start, max(end, start)) for start, end in runs])
    if active <= 0:
        return ewma_rate(finished, finished[-1], half_life)
    return len(finished) / active


def _union_length(spans: Sequence[tuple[float, float]]) -> float:
    """The length of the union of the intervals ``spans``."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


def _run_spans(session: Session, batch_id: str) -> list[tuple[float, float]]:
    """The batch's stage runs as (start, end) in epoch seconds (a run without a duration,
    interrupted or lost, as a moment)."""
    query = (
        select(StageRun.started_at, StageRun.seconds)
        .join(Article, Article.id == StageRun.article_id)
        .where(*_current(batch_id))
    )
    spans = []
    for started, seconds in session.execute(query):
        start = as_utc(started).timestamp()
        spans.append((start, start + (seconds or 0.0)))
    return spans


def _current(batch_id: str) -> tuple:
    return Article.batch_id == batch_id, Article.removed_at.is_(None)


def _finish_times(session: Session, batch_id: str) -> list[float]:
    query = (
        select(Article.finished_at)
        .where(*_current(batch_id), Article.finished_at.is_not(None))
        .order_by(Article.finished_at)
    )
    return [as_utc(moment).timestamp() for moment in session.scalars(query)]


def _stage_counts(session: Session, batch_id: str, now: datetime) -> dict[str, dict[str, int]]:
    rows = session.execute(
        select(Article.status, Article.lease_expires_at)
        .where(*_current(batch_id))
        .where(Article.status.in_([s.input.value for s in STAGES.values()]))
    )
    counts = {stage: {"queued": 0, "running": 0} for stage in ORDER}
    waiting_at = {stage.input.value: name for name, stage in STAGES.items()}
    for status, lease in rows:
        running = lease is not None and as_utc(lease) > now
        counts[waiting_at[status]]["running" if running else "queued"] += 1
    return counts


def _failures(session: Session, batch_id: str) -> dict[str, dict]:
    failed = session.execute(
        select(Article.error_kind, Article.key, Article.error_stage, Article.error)
        .where(*_current(batch_id), Article.status == ArticleStatus.failed.value)
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
    # Not tasks.finish.batch_scores: that one also counts removed articles.
    scores = list(
        session.scalars(
            select(Article.clip_score)
            .where(*_current(batch_id), Article.clip_score.is_not(None))
            .order_by(Article.id)
        )
    )
    if not scores:
        return {}
    return {
        "mean": statistics.fmean(scores),
        "median": statistics.median(scores),
        "min": min(scores),
        "max": max(scores),
    }
