"""State transitions of an article, each one conditional so that duplicates cannot collide.

A stage *claims* an article with one conditional UPDATE: the article must be in the stage's
input status and free of a live lease. The claim takes a lease token; the stage's outputs are
written with a second conditional UPDATE that only succeeds while that token still holds. A
copy of the same task delivered twice therefore either finds the work done, finds it leased
by the other copy, or loses its lease and writes nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from sqlalchemy import func, insert, literal, or_, select, update
from sqlalchemy.orm import Session

from db import statements
from db.models import (
    TERMINAL_STATUSES,
    Article,
    ArticleStatus,
    StageRun,
    as_utc,
    utcnow,
)

STAGES = ("translate", "extract", "render", "score")
STAGE_INPUT = {
    "translate": ArticleStatus.pending,
    "extract": ArticleStatus.translated,
    "render": ArticleStatus.extracted,
    "score": ArticleStatus.rendered,
}
STAGE_OUTPUT = {
    "translate": ArticleStatus.translated,
    "extract": ArticleStatus.extracted,
    "render": ArticleStatus.rendered,
    "score": ArticleStatus.done,
}
_ORDER = [s.value for s in (*STAGE_INPUT.values(), ArticleStatus.done)]


class ClaimOutcome(str, Enum):
    claimed = "claimed"  # this caller owns the stage now
    already_done = "already_done"  # the article is past this stage
    busy = "busy"  # another live lease holds it
    stopped = "stopped"  # failed, needs review, or missing: nothing to do
    exhausted = "exhausted"  # too many attempts; the article was marked failed


@dataclass(frozen=True)
class Claim:
    outcome: ClaimOutcome
    token: str | None = None
    attempt: int = 0
    run_id: int | None = None
    retry_in: float = 0.0  # for ``busy``: seconds until the other lease runs out
    article: Article | None = None  # for ``claimed``: the row as the claim left it
    started_at: datetime | None = None


def is_past(status: str, stage: str) -> bool:
    """Whether an article in ``status`` has already finished ``stage``.

    Args:
        status: the article's status value.
        stage: one of :data:`STAGES`.

    Returns:
        True when the status lies after the stage's input on the happy path, or is terminal
        success (``done``/``needs_review``).
    """
    if status == ArticleStatus.needs_review.value:
        return True
    if status not in _ORDER:
        return False
    return _ORDER.index(status) > _ORDER.index(STAGE_INPUT[stage].value)


def claim_stage(
    session: Session,
    article_id: int,
    stage: str,
    worker: str,
    lease_seconds: float,
    max_attempts: int,
    token: str | None = None,
    takeover: list[str] | None = None,
) -> Claim:
    """Try to take ``stage`` of an article; commits what it writes.

    Args:
        session: a session with no transaction in progress.
        article_id: the article.
        stage: one of :data:`STAGES`.
        worker: the worker's hostname, recorded on the stage run.
        lease_seconds: how long the claim holds before another copy may take over.
        max_attempts: claims allowed per stage before the article is failed.
        token: the lease token to take; a new one when None. A batch takes all its
            articles under one token.
        takeover: live lease tokens that may be taken over: those a retried task's
            earlier tries held when the database failed under them.

    Returns:
        The claim; only ``claimed`` means the caller should do the work.
    """
    now = utcnow()
    token = token or new_lease_token()
    params = {
        "p_id": article_id,
        "p_status": STAGE_INPUT[stage].value,
        "p_max_attempts": max_attempts,
        "p_now": now,
        "p_token": token,
        "p_takeover": list(takeover or []),
        "p_stage": stage,
        "p_expires": now + timedelta(seconds=lease_seconds),
        "p_worker": worker,
    }
    dialect = _hot_path_connection(session).dialect.name
    row = session.execute(
        statements.claim(dialect), params, execution_options={"populate_existing": True}
    ).first()
    if row is None:
        return _why_not_claimed(session, article_id, stage, max_attempts, now)
    article = row[0]
    run_id = row[1] if statements.one_statement(dialect) else _start_run(session, article, params)
    if article.stage_attempts > 1:
        # Earlier runs still "running" lost their worker (killed, timed out) or, taken
        # over, their database connection.
        outcome = "retry" if takeover else "lost"
        close_running_runs(session, article_id, outcome, stage, before=article.stage_attempts)
    session.commit()
    return Claim(
        ClaimOutcome.claimed, token, article.stage_attempts, run_id, article=article, started_at=now
    )


def autocommit_reads(session: Session) -> None:
    """Let the session's next statements, until it commits, each commit on their own.

    On PostgreSQL a stage's reads (the rows its function loads, the end-of-batch check) and
    its completion, a single statement, need no transaction around them: in autocommit they
    save a BEGIN and a COMMIT round trip each time. Writes of several statements still get
    one transaction (:func:`_atomically`). Does nothing on SQLite or inside a transaction.

    Args:
        session: the stage task's session.
    """
    _hot_path_connection(session)


def _hot_path_connection(session: Session):
    """The session's connection for a claim or a completion.

    On PostgreSQL each is one statement, so when no transaction is open it runs in
    autocommit: the statement commits itself, without a BEGIN and a COMMIT round trip of its
    own (the same durable commit, two fewer messages to the server per call).
    """
    if session.in_transaction() or not statements.one_statement(session.get_bind().dialect.name):
        return session.connection()
    return session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})


def _atomically(session: Session) -> None:
    """End an autocommit stretch, so that the statements that follow share one transaction."""
    if session.in_transaction():
        options = session.connection().get_execution_options()
        if options.get("isolation_level") == "AUTOCOMMIT":
            session.commit()


def new_lease_token(owner: str | None = None) -> str:
    """A fresh lease token, marked with its owner so that its claims can be found again.

    Args:
        owner: the claiming task's id (``abandon_stage`` frees what it held), or None.

    Returns:
        ``<owner>.<16 hex characters>``, or 32 hex characters without an owner.
    """
    if owner is None:
        return uuid.uuid4().hex
    return f"{owner}.{uuid.uuid4().hex[:16]}"


def _start_run(session: Session, article: Article, params: dict) -> int:
    run = {"article_id": article.id, "stage": params["p_stage"], "attempt": article.stage_attempts}
    run |= {"worker": params["p_worker"], "outcome": "running", "started_at": params["p_now"]}
    return session.connection().scalar(statements.start_run, run)


def release_token(
    session: Session,
    tokens: list[str],
    stage: str,
    keep: int,
    error: str,
    outcome: str = "retry",
) -> int:
    """Free every article still leased under one of ``tokens`` at ``stage`` except ``keep``.

    A batch takes its articles under one token. When its task could not finish (the
    database failed under it), the batch mates it still holds are given back this way, so
    their own messages run them without waiting out the lease.

    Args:
        session: a session with no transaction in progress.
        tokens: the batches' lease tokens.
        stage: the stage the batches ran.
        keep: the article not to free (the task's own), or 0.
        error: why, kept on the freed articles' stage runs.
        outcome: what their stage runs still ``running`` are closed as.

    Returns:
        How many articles were freed.
    """
    held = Article.lease_token.in_(tokens)
    return _free(session, stage, held & (Article.id != keep), error, outcome)


def _free(session: Session, stage: str, held, error: str, outcome: str) -> int:
    _atomically(session)
    # Through the status index: only articles waiting at the stage's input can hold it.
    freed = list(
        session.scalars(
            update(Article)
            .where(Article.status == STAGE_INPUT[stage].value, Article.lease_stage == stage, held)
            .values(lease_token=None, lease_stage=None, lease_expires_at=None)
            .returning(Article.id)
            .execution_options(synchronize_session=False)
        )
    )
    for article_id in freed:
        close_running_runs(session, article_id, outcome, stage, error[:4000])
    session.commit()
    return len(freed)


def waiting_articles(session: Session, stage: str, limit: int, exclude: int) -> list[int]:
    """Articles waiting at a stage's input, never tried at it and not leased, oldest first.

    A worker that batches a stage claims some of them alongside its own article; each is
    still claimed one by one with :func:`claim_stage`, so two workers never share one. An
    article tried before (its batch timed out, or its worker died) is left to its own
    message, which runs it alone, so one article cannot take a batch down twice.

    Args:
        session: any session (its transaction is ended before returning).
        stage: one of :data:`STAGES`.
        limit: how many to return at most.
        exclude: an article not to return (the caller's own).

    Returns:
        Their ids.
    """
    now = utcnow()
    # In autocommit on PostgreSQL: a BEGIN and ROLLBACK around this read would cost two round
    # trips, and psycopg drops every prepared statement of the connection on a ROLLBACK
    # (DEALLOCATE ALL), so the claims and completions that follow would be planned afresh.
    autocommit_reads(session)
    ids = list(
        session.scalars(
            select(Article.id)
            .where(
                # Written into the SQL, not bound: a prepared statement's generic plan would
                # not know which status it looks for, and would walk the primary key.
                Article.status == literal(STAGE_INPUT[stage].value, literal_execute=True),
                Article.stage_attempts == 0,
                Article.id != exclude,
                or_(Article.lease_expires_at.is_(None), Article.lease_expires_at < now),
            )
            .order_by(Article.id)
            .limit(limit)
        )
    )
    session.rollback()
    return ids


def _why_not_claimed(
    session: Session, article_id: int, stage: str, max_attempts: int, now: datetime
) -> Claim:
    # Read right after the claim's UPDATE that changed nothing (in its transaction, or on
    # PostgreSQL in autocommit), then end it: no second BEGIN for the read.
    row = session.execute(
        select(Article.status, Article.lease_expires_at, Article.stage_attempts).where(
            Article.id == article_id
        )
    ).first()
    session.rollback()
    if row is None or row.status in (ArticleStatus.failed.value, ArticleStatus.needs_review.value):
        return Claim(ClaimOutcome.stopped)
    if is_past(row.status, stage):
        return Claim(ClaimOutcome.already_done)
    lease = row.lease_expires_at
    if lease is not None and as_utc(lease) >= now:
        return Claim(ClaimOutcome.busy, retry_in=(as_utc(lease) - now).total_seconds())
    if row.status != STAGE_INPUT[stage].value:
        return Claim(ClaimOutcome.stopped)  # not at this stage yet: a stale message
    if row.stage_attempts >= max_attempts:
        fail_article(
            session,
            article_id,
            stage,
            "AttemptsExhausted",
            f"{stage} gave up after {row.stage_attempts} attempts "
            "(the worker died or timed out each time)",
        )
        return Claim(ClaimOutcome.exhausted)
    # Free and waiting, yet the claim missed: its holder gave it back (a batch whose call
    # failed) between the claim's UPDATE and this read. Look again; dropping the message
    # would leave the article to no one.
    return Claim(ClaimOutcome.busy, retry_in=0.0)


def complete_stage(
    session: Session,
    claim: Claim,
    article_id: int,
    stage: str,
    values: dict,
    render: dict | None = None,
    status: ArticleStatus | None = None,
) -> bool:
    """Write a stage's outputs and advance the status, if the claim still holds.

    Args:
        session: a session with no transaction in progress.
        claim: the claim returned by :func:`claim_stage`.
        article_id: the article.
        stage: the stage that ran.
        values: article columns to set.
        render: columns of the render row to insert or update (keyed by its ``attempt``).
        status: the status to move to; the stage's usual output when omitted.

    Returns:
        False when the lease was lost (another copy owns the article now): nothing is written.
    """
    new_status = status or STAGE_OUTPUT[stage]
    now = utcnow()
    values = {
        **values,
        "status": new_status.value,
        "stage_attempts": 0,
        "lease_token": None,
        "lease_stage": None,
        "lease_expires_at": None,
        "error": None,
        "error_kind": None,
        "error_stage": None,
        "finished_at": now if new_status in TERMINAL_STATUSES else None,
        "updated_at": now,
    }
    params = {"p_id": article_id, "p_token": claim.token}
    params |= statements.completion_params(values, render)
    columns = tuple(values)
    connection = _hot_path_connection(session)
    if statements.one_statement(connection.dialect.name):
        params |= {"p_run": claim.run_id, "p_seconds": _run_seconds(claim)}
        shape = tuple(render) if render is not None else None
        written = connection.scalar(statements.complete(columns, shape), params)
    else:
        written = connection.execute(statements.store_article(columns), params).rowcount
        if written:
            if render is not None:
                _upsert_render(session, article_id, render)
            _finish_run(session, claim, "ok", None)
    if not written:
        session.rollback()
        return False
    session.commit()
    return True


def _upsert_render(session: Session, article_id: int, render: dict) -> None:
    # The score stage updates its attempt's row; the render stage usually inserts a new one.
    connection = session.connection()
    updated = connection.execute(
        update(statements.RENDERS)
        .where(
            statements.RENDERS.c.article_id == article_id,
            statements.RENDERS.c.attempt == render["attempt"],
        )
        .values(**render)
    ).rowcount
    if not updated:
        connection.execute(insert(statements.RENDERS).values(article_id=article_id, **render))


def _run_seconds(claim: Claim) -> float | None:
    return (utcnow() - claim.started_at).total_seconds() if claim.started_at else None


def _finish_run(session: Session, claim: Claim, outcome: str, error: str | None) -> None:
    session.connection().execute(
        statements.finish_run,
        {
            "p_run": claim.run_id,
            "p_outcome": outcome,
            "p_error": error,
            "p_seconds": _run_seconds(claim),
        },
    )


def release_stage(session: Session, claim: Claim, article_id: int, error: str) -> None:
    """Give a claim back after a transient error, so a retry can claim the stage again.

    Args:
        session: a session with no transaction in progress.
        claim: the claim to release.
        article_id: the article.
        error: what went wrong, kept on the stage run.
    """
    _atomically(session)
    session.execute(
        update(Article)
        .where(Article.id == article_id, Article.lease_token == claim.token)
        .values(lease_token=None, lease_stage=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    _finish_run(session, claim, "retry", error)
    session.commit()


def abandon_stage(session: Session, owner: str, stage: str, error: str) -> int:
    """Free the claims of a task that was stopped from outside (a hard time limit killed it).

    Its own article and the batch mates it held are found by their lease tokens, which
    carry the task's id (:func:`new_lease_token`); a claim another task holds is left alone.

    Args:
        session: a session with no transaction in progress.
        owner: the stopped task's id.
        stage: the stage that was running.
        error: why it stopped, kept on the stage runs.

    Returns:
        How many articles were freed.
    """
    held = Article.lease_token.startswith(f"{owner}.", autoescape=True)
    return _free(session, stage, held, error, "timeout")


def close_running_runs(
    session: Session,
    article_id: int,
    outcome: str,
    stage: str | None = None,
    error: str | None = None,
    before: int | None = None,
) -> None:
    """Close the article's stage runs still marked ``running`` (their worker is gone).

    Args:
        session: the session whose transaction the update joins (not committed here).
        article_id: the article.
        outcome: what to record (``lost``, ``timeout``).
        stage: only this stage's runs; all stages when None.
        error: the reason, kept on the runs.
        before: only runs of earlier attempts than this one (not the claim's own run).
    """
    query = update(StageRun).where(StageRun.article_id == article_id, StageRun.outcome == "running")
    if stage is not None:
        query = query.where(StageRun.stage == stage)
    if before is not None:
        query = query.where(StageRun.attempt < before)
    session.execute(
        query.values(outcome=outcome, error=error).execution_options(synchronize_session=False)
    )


def fail_article(
    session: Session,
    article_id: int,
    stage: str,
    kind: str,
    error: str,
    claim: Claim | None = None,
) -> None:
    """Mark an article failed with its stage, error kind and message.

    Args:
        session: a session with no transaction in progress.
        article_id: the article.
        stage: the stage that failed.
        kind: a short error class name (``InvalidArticle``, ``AttemptsExhausted``, ...).
        error: the message.
        claim: the claim held while failing, if any; its stage run is closed as ``error``.
    """
    _atomically(session)
    session.execute(
        update(Article)
        .where(Article.id == article_id)
        .values(
            status=ArticleStatus.failed.value,
            error=error[:4000],
            error_kind=kind,
            error_stage=stage,
            lease_token=None,
            lease_stage=None,
            lease_expires_at=None,
            finished_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    if claim is not None:
        _finish_run(session, claim, "error", error[:4000])
    session.commit()


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
