"""State transitions of an article's stage, each one conditional, each one transaction.

A stage *claims* its article with one conditional UPDATE: the article must wait in the
stage's input status, free of a live lease. The claim takes a lease token; the outputs are
stored with a second conditional UPDATE that succeeds only while that token holds. A copy of
a message delivered twice therefore finds the stage done or held and does nothing. The lease
is renewed while the stage runs (:func:`renew`), so it runs out soon after its worker dies,
and the reaper sends the article again (:mod:`db.sends` finds it). An attempt counts as its
model call starts (:func:`count_attempts`) or as an error gives the stage back
(:func:`release`).

Every moment that decides a lease, an expiry or a timer is the database server's
(:mod:`db.clock`), never the calling host's: hosts' clocks disagree.

The same SQLAlchemy Core statements run on SQLite and PostgreSQL; every function opens its
own transaction (``engine.begin()``).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    case,
    insert,
    or_,
    select,
    update,
)

from db.clock import server_now, server_time
from db.models import Article, Batch, Render, StageRun

ARTICLES = Article.__table__
RUNS = StageRun.__table__
RENDERS = Render.__table__
_INPUT_COLUMNS = (
    "id", "key", "view", "batch_id", "file_stem", "source_text", "source_file", "source_sheet",
    "source_row", "translation", "attributes", "generation_prompt", "clip_prompt",
    "render_attempt", "attempt_base", "model_commits",
)  # fmt: skip
_RENDER_COLUMNS = (
    "attempt", "seed", "image_path", "model_id", "lora", "clip_score", "model_commits",
)  # fmt: skip
_NO_LEASE = {"lease_token": None, "lease_stage": None, "lease_expires_at": None}


@dataclass(frozen=True)
class Claim:
    """A stage held by one message: its lease token, attempt, stage run and the article."""

    article_id: int
    stage: str
    token: str
    attempt: int  # the attempt this claim makes: the attempts counted so far, plus one
    run_id: int
    began: float  # time.monotonic() at the claim: the stage run's duration, on this host
    article: dict  # the columns of _INPUT_COLUMNS, and the batch's min_clip_score
    renders: tuple[dict, ...] = ()


def new_token(owner: str) -> str:
    """A fresh lease token whose prefix names its owner (:func:`owner_prefix`).

    Args:
        owner: the worker's node name (``gpu0@host``).
    """
    return f"{owner_prefix(owner)}{uuid.uuid4().hex}"


def owner_prefix(owner: str) -> str:
    """The prefix of every lease token a worker takes: a short hash of its node name."""
    return hashlib.sha1(owner.encode()).hexdigest()[:12] + "."


def free_or_expired():
    """The rule for an article no live lease holds (by the database server's clock)."""
    return or_(ARTICLES.c.lease_token.is_(None), ARTICLES.c.lease_expires_at < server_now())


def claim(
    engine: Engine,
    article_id: int,
    stage: str,
    input_status: str,
    token: str,
    worker: str,
    lease_seconds: float,
    with_renders: bool = False,
) -> Claim | None:
    """Take ``stage`` of an article if it waits there and no live lease holds it.

    Args:
        engine: the farm's database.
        article_id: the article.
        stage: the stage's name, recorded on the lease and the stage run.
        input_status: the status the article must be in.
        token: the lease token to take (:func:`new_token`).
        worker: the worker's node name, recorded on the stage run.
        lease_seconds: how long the lease holds unless renewed.
        with_renders: load the article's render attempts too (the score stage).

    Returns:
        The claim, or None when the article is done with the stage, held, or not there yet.
        Its attempt is not counted here: its model call counts it (:func:`count_attempts`).
    """
    began = time.monotonic()
    with engine.begin() as connection:
        counted = connection.execute(
            update(ARTICLES)
            .where(
                ARTICLES.c.id == article_id,
                ARTICLES.c.status == input_status,
                free_or_expired(),
            )
            .values(
                lease_token=token,
                lease_stage=stage,
                lease_expires_at=server_time(lease_seconds),
                claimed_at=server_now(),
                updated_at=server_now(),
                sent_at=None,  # the message sent has come: see db.sends.mark_sent
            )
            .returning(ARTICLES.c.stage_attempts)
        ).first()
        if counted is None:
            return None
        attempt = counted.stage_attempts + 1
        # Runs of the stage still "running" lost their worker: the claim found no live lease.
        _close_runs(connection, article_id, "lost", stage=stage)
        run = {"article_id": article_id, "stage": stage, "attempt": attempt, "worker": worker}
        run_id = connection.scalar(
            insert(RUNS)
            .values(**run, outcome="running", started_at=server_now())
            .returning(RUNS.c.id)
        )
        article = _article(connection, article_id)
        renders = _renders(connection, article_id) if with_renders else ()
    return Claim(article_id, stage, token, attempt, run_id, began, article, renders)


def article_exists(engine: Engine, article_id: int) -> bool:
    """Whether the database has an article of this id (removed from its catalog or not)."""
    with engine.connect() as connection:
        found = connection.scalar(select(ARTICLES.c.id).where(ARTICLES.c.id == article_id))
    return found is not None


def _article(connection: Connection, article_id: int) -> dict:
    columns = [ARTICLES.c[name] for name in _INPUT_COLUMNS]
    query = (
        select(*columns, Batch.__table__.c.min_clip_score)
        .join(Batch.__table__, Batch.__table__.c.id == ARTICLES.c.batch_id)
        .where(ARTICLES.c.id == article_id)
    )
    return dict(connection.execute(query).mappings().one())


def _renders(connection: Connection, article_id: int) -> tuple[dict, ...]:
    query = (
        select(*(RENDERS.c[name] for name in _RENDER_COLUMNS))
        .where(RENDERS.c.article_id == article_id)
        .order_by(RENDERS.c.attempt)
    )
    return tuple(dict(row) for row in connection.execute(query).mappings())


def complete(
    engine: Engine,
    held: Claim,
    status: str,
    values: dict,
    render: dict | None = None,
    ended: bool = False,
) -> bool:
    """Store a stage's outputs and move the article on, if the lease still holds.

    Args:
        engine: the farm's database.
        held: the claim.
        status: the status to move to.
        values: article columns to set.
        render: columns of the render row to insert or update (keyed by ``attempt``).
        ended: whether ``status`` ends the article (done, needs review).

    A lease that ran out still stores while its token holds: nobody claimed the article since
    (a claim replaces the token), so the result is the newest there is; a worker paused past
    its lease, or a database away for longer, keeps its work.

    Returns:
        False when the lease was lost (another copy holds the article now): nothing changed.
    """
    values = {
        **values, **_NO_LEASE, "status": status, "stage_attempts": 0, "error": None,
        "error_kind": None, "error_stage": None,
        "finished_at": server_now() if ended else None, "updated_at": server_now(),
        "sent_at": None,
    }  # fmt: skip
    with engine.begin() as connection:
        stored = connection.execute(
            update(ARTICLES)
            .where(ARTICLES.c.id == held.article_id, ARTICLES.c.lease_token == held.token)
            .values(values)
        ).rowcount
        if not stored:
            return False
        _finish_run(connection, held, "ok", None)
        if render is not None:
            _upsert_render(connection, held.article_id, render)
    return True


def _upsert_render(connection: Connection, article_id: int, render: dict) -> None:
    # The score stage updates its attempt's row; the render stage inserts one, or replaces
    # the row a copy that lost its lease left behind.
    where = and_(RENDERS.c.article_id == article_id, RENDERS.c.attempt == render["attempt"])
    if not connection.execute(update(RENDERS).where(where).values(render)).rowcount:
        connection.execute(insert(RENDERS).values(article_id=article_id, **render))


def _finish_run(connection: Connection, held: Claim, outcome: str, error: str | None) -> None:
    seconds = time.monotonic() - held.began
    connection.execute(
        update(RUNS)
        .where(RUNS.c.id == held.run_id)
        .values(outcome=outcome, error=error and error[:4000], seconds=seconds)
    )


def release(engine: Engine, held: Claim, error: str, backoff_seconds: float) -> None:
    """Give a stage back after a transient error, held ``backoff_seconds`` more.

    The lease holds until the backoff has passed, so the retry's claim (after the backoff)
    finds it free, and a worker that dies before sending the retry leaves an expired lease
    that the reaper sends again. The attempt counts, even if its call never started; the
    lease takes a token of its own, which no renewal or give-back of the attempt's finds.

    Args:
        engine: the farm's database.
        held: the claim.
        error: what went wrong, kept on the stage run.
        backoff_seconds: how long to wait before the stage may be claimed again.
    """
    with engine.begin() as connection:
        connection.execute(
            update(ARTICLES)
            .where(ARTICLES.c.id == held.article_id, ARTICLES.c.lease_token == held.token)
            .values(
                lease_token=f"{held.token}.retry",
                lease_expires_at=server_time(backoff_seconds),
                stage_attempts=held.attempt,
            )
        )
        _finish_run(connection, held, "retry", error)


def fail(
    engine: Engine, article_id: int, stage: str, kind: str, error: str, held: Claim | None = None
) -> None:
    """Mark an article failed with its stage, error kind and message.

    Args:
        engine: the farm's database.
        article_id: the article.
        stage: the stage that failed.
        kind: a short error class name (``InvalidArticle``, ``AttemptsExhausted``, ...).
        error: the message.
        held: the claim held while failing, if any; its stage run is closed as ``error``.
    """
    values = {"status": "failed", "error": error[:4000], "error_kind": kind, "error_stage": stage}
    with engine.begin() as connection:
        connection.execute(
            update(ARTICLES)
            .where(ARTICLES.c.id == article_id)
            .values(**values, **_NO_LEASE, finished_at=server_now(), updated_at=server_now())
        )
        if held is not None:
            _finish_run(connection, held, "error", error)


def renew(engine: Engine, tokens: list[str], lease_seconds: float) -> int:
    """Extend the leases still held under ``tokens``; returns how many were extended."""
    if not tokens:
        return 0
    with engine.begin() as connection:
        return connection.execute(
            update(ARTICLES)
            .where(ARTICLES.c.lease_token.in_(tokens))
            .values(lease_expires_at=server_time(lease_seconds))
        ).rowcount


def count_attempts(engine: Engine, tokens: list[str], given_back: list[str] = ()) -> int:
    """Count the attempt of each article held under ``tokens``, as its model call starts.

    The articles of the process's previous call, which returned, are ``given_back`` theirs:
    a death in this call is none of theirs (an error of theirs counts: :func:`release`). The
    caller counts each claim once (:class:`tasks.boot.AttemptCounter`). Returns rows changed.
    """
    counted = ARTICLES.c.lease_token.in_(list(tokens))
    with engine.begin() as connection:
        return connection.execute(
            update(ARTICLES)
            .where(
                ARTICLES.c.lease_token.in_([*tokens, *given_back]),
                or_(counted, ARTICLES.c.stage_attempts > 0),
            )
            .values(stage_attempts=ARTICLES.c.stage_attempts + case((counted, 1), else_=-1))
        ).rowcount


def expire(
    engine: Engine,
    error: str,
    outcome: str,
    tokens: list[str] | None = None,
    prefix: str | None = None,
    give_back: bool = False,
) -> int:
    """End leases whose holder is gone at once, so that the reaper sends their articles now.

    Args:
        engine: the farm's database.
        error: why, kept on the stage runs still marked running.
        outcome: what a run whose model call had started (its attempt counted) is closed as
            (``timeout``, ``lost``); a run that never reached its call ends ``interrupted``.
        tokens: these leases; or
        prefix: every lease of one owner (:func:`owner_prefix`).
        give_back: the holder was stopped, not at fault (Ctrl-C): counted attempts are
            given back.

    Returns:
        How many leases were ended.
    """
    held = (
        ARTICLES.c.lease_token.in_(tokens or [])
        if prefix is None
        else ARTICLES.c.lease_token.startswith(prefix, autoescape=True)
    )
    with engine.begin() as connection:
        rows = connection.execute(
            update(ARTICLES)
            .where(held, ARTICLES.c.lease_expires_at >= server_now())
            .values(lease_expires_at=server_time(-1.0))
            .returning(ARTICLES.c.id, ARTICLES.c.stage_attempts)
        ).all()
        for article_id, counted in rows:
            closed = _close_runs(connection, article_id, outcome, error=error, counted=counted)
            _close_runs(connection, article_id, "interrupted", error=error)
            if give_back and closed:
                connection.execute(
                    update(ARTICLES)
                    .where(ARTICLES.c.id == article_id, ARTICLES.c.stage_attempts > 0)
                    .values(stage_attempts=ARTICLES.c.stage_attempts - 1)
                )
    return len(rows)


def close_running_runs(connection, article_id: int, outcome: str) -> None:
    """Close every stage run of the article still marked ``running`` (a reset article).

    Args:
        connection: a Connection or Session whose transaction the update joins.
        article_id: the article.
        outcome: what to record (``lost``).
    """
    _close_runs(connection, article_id, outcome)


def _close_runs(
    connection, article_id: int, outcome: str, stage=None, counted=None, error=None
) -> int:
    query = update(RUNS).where(RUNS.c.article_id == article_id, RUNS.c.outcome == "running")
    if stage is not None:
        query = query.where(RUNS.c.stage == stage)
    if counted is not None:  # only runs whose attempt was counted (see count_attempts)
        query = query.where(RUNS.c.attempt <= counted)
    return connection.execute(query.values(outcome=outcome, error=error)).rowcount


def unlease(article: Article) -> None:
    """Free an article loaded in the caller's session for a message the caller sends next.

    Its lease ends (a copy still running on the old state then stores nothing) and it counts
    as not sent until the caller's send is recorded (the reaper covers a crash in between).

    Args:
        article: an ``Article`` row; the caller's transaction writes the change.
    """
    article.lease_token = article.lease_stage = article.lease_expires_at = None
    article.claimed_at = None
    article.sent_at = None


def live_leases(connection, article_ids: list[int]) -> set[int]:
    """Of these articles, those a live lease holds now (by the database server's clock)."""
    if not article_ids:
        return set()
    query = select(ARTICLES.c.id).where(
        ARTICLES.c.id.in_(article_ids),
        ARTICLES.c.lease_token.is_not(None),
        ARTICLES.c.lease_expires_at >= server_now(),
    )
    return set(connection.scalars(query))
