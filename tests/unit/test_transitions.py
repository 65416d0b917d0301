"""Article state transitions on SQLite: claims, leases, completion, release, failure, reaping.

``tests/integration/test_transitions_postgres.py`` runs the same tests on PostgreSQL: the
statements are the same on both, and so must be what they do.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select, update

from db import models, sends, timers, transitions
from db.clock import server_now
from db.models import Article, ArticleStatus, Batch, Render, StageRun, Timer, utcnow

IN_FLIGHT = ["pending", "translated", "extracted", "rendered"]


def add_articles(sessions, *keys: str, sent: bool = True) -> list[int]:
    with sessions() as session, session.begin():
        if session.get(Batch, "b1") is None:
            session.add(Batch(id="b1", profile="tiny", min_clip_score=21.5))
        for key in keys:
            session.add(
                Article(batch_id="b1", key=key, file_stem=key, source_file="c.csv",
                        source_sheet="csv", source_row=2, source_text=f"Rock {key}",
                        sent_at=utcnow() if sent else None)
            )  # fmt: skip
    with sessions() as session:
        return list(
            session.scalars(select(Article.id).where(Article.key.in_(keys)).order_by(Article.id))
        )


@pytest.fixture
def article_id(sessions):
    return add_articles(sessions, "A-1")[0]


def claim(engine, article_id, stage="translate", status="pending", worker="w1@host", lease=60):
    token = transitions.new_token(worker)
    return transitions.claim(engine, article_id, stage, status, token, worker, lease)


def article(sessions, article_id) -> Article:
    with sessions() as session:
        return session.get(Article, article_id)


def runs(sessions, article_id) -> list[tuple]:
    with sessions() as session:
        query = select(StageRun.attempt, StageRun.outcome).where(StageRun.article_id == article_id)
        return [tuple(row) for row in session.execute(query.order_by(StageRun.id))]


def age(sessions, article_id, seconds: float, **values) -> None:
    """Move an article's last progress (and its lease, when it has one) into the past."""
    with sessions() as session, session.begin():
        row = session.get(Article, article_id)
        row.updated_at = utcnow() - timedelta(seconds=seconds)
        if row.lease_expires_at is not None:
            row.lease_expires_at = utcnow() - timedelta(seconds=seconds)
        for name, value in values.items():
            setattr(row, name, value)


def test_a_claimed_stage_is_refused_to_a_second_claimer_until_the_first_stores_it(
    engine, sessions, article_id
):
    first = claim(engine, article_id)
    assert first is not None and first.attempt == 1
    assert claim(engine, article_id) is None
    assert transitions.complete(engine, first, "translated", {"translation": "Rock"})
    assert claim(engine, article_id) is None  # done with the stage now
    stored = article(sessions, article_id)
    assert stored.status == "translated" and stored.translation == "Rock"
    assert stored.lease_token is None and stored.stage_attempts == 0 and stored.sent_at is None


def test_a_claim_hands_over_the_plain_input_with_the_batch_threshold(engine, article_id):
    held = claim(engine, article_id)
    assert held.article["key"] == "A-1" and held.article["source_text"] == "Rock A-1"
    assert held.article["min_clip_score"] == 21.5
    assert held.article["render_attempt"] == 1 and held.renders == ()


def test_an_article_in_another_status_is_not_claimed_for_the_stage(engine, article_id):
    assert claim(engine, article_id, "extract", "translated") is None


def test_an_expired_lease_is_taken_over_and_the_old_holder_stores_nothing(
    engine, sessions, article_id
):
    old = claim(engine, article_id)
    transitions.count_attempts(engine, [old.token])  # its model call started
    age(sessions, article_id, 5)
    new = claim(engine, article_id, worker="w2@host")
    assert new is not None and new.attempt == 2
    assert not transitions.complete(engine, old, "translated", {"translation": "old"})
    assert transitions.complete(engine, new, "translated", {"translation": "new"})
    assert article(sessions, article_id).translation == "new"
    assert runs(sessions, article_id) == [(1, "lost"), (2, "ok")]


def test_renewing_a_lease_keeps_it_from_running_out(engine, sessions, article_id):
    held = claim(engine, article_id, lease=3)
    before = article(sessions, article_id).lease_expires_at
    assert transitions.renew(engine, [held.token, "someone-else"], 600) == 1
    after = article(sessions, article_id).lease_expires_at
    assert after > before + timedelta(seconds=500)
    assert transitions.renew(engine, [], 600) == 0


def test_a_released_stage_is_held_through_its_backoff_and_its_run_says_retry(
    engine, sessions, article_id
):
    held = claim(engine, article_id)
    transitions.release(engine, held, "OutOfMemoryError: injected", backoff_seconds=60)
    assert claim(engine, article_id) is None  # still within the backoff
    age(sessions, article_id, 1)
    again = claim(engine, article_id)
    assert again is not None and again.attempt == 2
    with sessions() as session:
        error = session.scalar(select(StageRun.error).where(StageRun.outcome == "retry"))
    assert error == "OutOfMemoryError: injected"


def test_a_failed_article_keeps_its_error_and_no_stage_claims_it(engine, sessions, article_id):
    held = claim(engine, article_id)
    transitions.fail(engine, article_id, "translate", "InvalidArticle", "no text", held)
    stored = article(sessions, article_id)
    assert stored.status == "failed" and stored.error_kind == "InvalidArticle"
    assert stored.error_stage == "translate" and stored.finished_at is not None
    assert stored.lease_token is None
    assert runs(sessions, article_id) == [(1, "error")]
    for stage, status in [("translate", "pending"), ("extract", "translated")]:
        assert claim(engine, article_id, stage, status) is None


def test_a_render_inserts_its_attempt_and_the_score_updates_that_row(engine, sessions, article_id):
    age(sessions, article_id, 0, status="extracted")
    held = claim(engine, article_id, "render", "extracted")
    row = {"attempt": 1, "seed": 7, "model_id": "m", "lora": None, "width": 8, "height": 8,
           "steps": 1, "image_path": "/x.png", "seconds": 0.1, "worker": "w1"}  # fmt: skip
    assert transitions.complete(engine, held, "rendered", {}, row)
    score = transitions.claim(
        engine, article_id, "score", "rendered", "t2", "w1", 60, with_renders=True
    )
    assert [r["attempt"] for r in score.renders] == [1] and score.renders[0]["seed"] == 7
    assert transitions.complete(
        engine, score, "done", {"clip_score": 30.0}, {"attempt": 1, "clip_score": 30.0}, True
    )
    with sessions() as session:
        (render,) = session.scalars(select(Render)).all()
    assert render.clip_score == 30.0 and render.seed == 7
    assert article(sessions, article_id).finished_at is not None


def test_rendering_an_attempt_again_replaces_its_row_instead_of_adding_one(
    engine, sessions, article_id
):
    age(sessions, article_id, 0, status="extracted")
    row = {"attempt": 1, "seed": 7, "model_id": "m", "lora": None, "width": 8, "height": 8,
           "steps": 1, "image_path": "/x.png", "seconds": 0.1, "worker": "w1"}  # fmt: skip
    first = claim(engine, article_id, "render", "extracted")
    assert transitions.complete(engine, first, "rendered", {}, row)
    age(sessions, article_id, 0, status="extracted")
    second = claim(engine, article_id, "render", "extracted")
    assert transitions.complete(engine, second, "rendered", {}, row | {"seed": 8})
    with sessions() as session:
        assert session.scalars(select(Render.seed)).all() == [8]


def test_a_completion_without_the_lease_writes_no_render_row_and_leaves_the_run_open(
    engine, sessions, article_id
):
    age(sessions, article_id, 0, status="extracted")
    held = claim(engine, article_id, "render", "extracted")
    with sessions() as session, session.begin():
        session.execute(update(Article).values(lease_token="another"))
    row = {"attempt": 1, "seed": 7, "model_id": "m", "lora": None, "width": 8, "height": 8,
           "steps": 1, "image_path": "/x.png", "seconds": 0.1, "worker": "w1"}  # fmt: skip
    assert not transitions.complete(engine, held, "rendered", {}, row)
    with sessions() as session:
        assert session.scalars(select(Render)).all() == []
    assert runs(sessions, article_id) == [(1, "running")]


def test_ending_a_dead_workers_leases_makes_them_stuck_now_and_closes_their_runs(engine, sessions):
    mine, other = add_articles(sessions, "A-1", "A-2")
    held = claim(engine, mine, worker="gpu0@host")
    claim(engine, other, worker="gpu1@host")
    transitions.count_attempts(engine, [held.token])  # it died in its model call
    prefix = transitions.owner_prefix("gpu0@host")
    assert transitions.expire(engine, "worker died", "lost", prefix=prefix) == 1
    with engine.connect() as connection:
        stuck = sends.stuck(connection, IN_FLIGHT, grace_seconds=30)
    assert [row.id for row in stuck] == [mine]
    assert runs(sessions, mine) == [(1, "lost")] and runs(sessions, other) == [(1, "running")]


def test_an_attempt_counts_at_its_model_call_so_an_article_waiting_beside_a_death_keeps_it(
    engine, sessions
):
    in_call, waiting = add_articles(sessions, "A-1", "A-2")
    held = claim(engine, in_call, worker="gpu0@host")
    claim(engine, waiting, worker="gpu0@host")
    assert article(sessions, in_call).stage_attempts == 0  # a claim alone counts nothing

    assert transitions.count_attempts(engine, [held.token]) == 1  # its model call starts
    # The process dies in that call; its launcher ends its leases.
    prefix = transitions.owner_prefix("gpu0@host")
    assert transitions.expire(engine, "worker died", "lost", prefix=prefix) == 2

    assert article(sessions, in_call).stage_attempts == 1
    assert article(sessions, waiting).stage_attempts == 0
    assert runs(sessions, in_call) == [(1, "lost")]
    assert runs(sessions, waiting) == [(1, "interrupted")]
    assert claim(engine, in_call).attempt == 2 and claim(engine, waiting).attempt == 1


def test_counting_a_calls_attempts_gives_back_the_previous_calls_in_one_statement(engine, sessions):
    earlier, now, never = add_articles(sessions, "A-1", "A-2", "A-3")
    tokens = [claim(engine, a, worker="gpu0@host").token for a in (earlier, now, never)]
    assert transitions.count_attempts(engine, tokens[:1]) == 1

    # The next call: the first article's call returned; the third was never counted.
    assert transitions.count_attempts(engine, tokens[1:2], given_back=[tokens[0], tokens[2]]) == 2

    assert [article(sessions, a).stage_attempts for a in (earlier, now, never)] == [0, 1, 0]


def test_a_stage_given_back_after_an_error_keeps_its_attempt_from_a_late_give_back(
    engine, sessions, article_id
):
    held = claim(engine, article_id)
    transitions.release(engine, held, "OSError: disk full", backoff_seconds=60)
    assert transitions.count_attempts(engine, [], given_back=[held.token]) == 0
    assert transitions.renew(engine, [held.token], 600) == 0  # the backoff is not extended
    assert article(sessions, article_id).stage_attempts == 1


def test_stuck_articles_are_expired_leases_and_unsent_ones_past_the_grace(engine, sessions):
    leased, unsent, fresh, queued, done = add_articles(sessions, "L", "U", "F", "Q", "D")
    claim(engine, leased)
    age(sessions, leased, 5)
    age(sessions, unsent, 60, sent_at=None)
    age(sessions, fresh, 1, sent_at=None)  # its message is about to be sent
    age(sessions, queued, 3600)  # sent an hour ago, waiting in the queue: not stuck
    age(sessions, done, 3600, sent_at=None, status=ArticleStatus.done.value)
    with engine.connect() as connection:
        reaped = sends.stuck(connection, IN_FLIGHT, grace_seconds=30)
        quiet = sends.stuck(connection, IN_FLIGHT, grace_seconds=30, quiet_seconds=600)
    assert [row.id for row in reaped] == [leased, unsent]
    assert [row.id for row in quiet] == [leased, unsent, queued]


def test_taking_stuck_articles_marks_them_sent_and_keeps_their_tokens_for_a_late_store(
    engine, sessions
):
    first, second = add_articles(sessions, "A-1", "A-2")
    late = claim(engine, first)
    claim(engine, second)
    age(sessions, first, 5)
    age(sessions, second, 5)

    taken = sends.take_stuck(engine, IN_FLIGHT, grace_seconds=30)

    assert [row.id for row in taken] == [first, second]
    assert sends.take_stuck(engine, IN_FLIGHT, grace_seconds=30) == []  # sent already
    assert claim(engine, second) is not None  # the message sent again is claimed
    # Nobody claimed the first since its lease ran out: its worker's late result is kept.
    assert transitions.complete(engine, late, "translated", {"translation": "Rock"})
    assert article(sessions, first).status == "translated"


def test_a_claim_between_the_reapers_look_and_its_send_is_not_undone(engine, sessions):
    (article_id,) = add_articles(sessions, "A-1")
    claim(engine, article_id)
    age(sessions, article_id, 5)
    (taken,) = sends.take_stuck(engine, IN_FLIGHT, grace_seconds=30)
    held = claim(engine, article_id)  # the new message came first, before the reaper sent
    assert held is not None
    assert article(sessions, article_id).lease_token == held.token
    assert transitions.complete(engine, held, "translated", {"translation": "Rock"})


def test_a_failed_send_is_unmarked_and_taken_again_next_turn(engine, sessions):
    (article_id,) = add_articles(sessions, "A-1", sent=False)
    age(sessions, article_id, 60, sent_at=None)
    (taken,) = sends.take_stuck(engine, IN_FLIGHT, grace_seconds=30)
    sends.unmark_sent(engine, [taken.id])
    assert [row.id for row in sends.take_stuck(engine, IN_FLIGHT, 30)] == [article_id]


def test_after_a_broker_reset_every_unleased_in_flight_article_is_taken(engine, sessions):
    queued, leased, done = add_articles(sessions, "Q", "L", "D")
    claim(engine, leased)
    age(sessions, done, 0, status=ArticleStatus.done.value)
    assert sends.take_stuck(engine, IN_FLIGHT, grace_seconds=30) == []
    taken = sends.take_stuck(engine, IN_FLIGHT, grace_seconds=30, everything=True)
    assert [row.id for row in taken] == [queued]


def test_marking_sent_only_touches_articles_still_in_the_status_that_waited(engine, sessions):
    moved, waiting = add_articles(sessions, "A-1", "A-2", sent=False)
    age(sessions, moved, 0, status="extracted")
    sends.mark_sent(engine, [moved, waiting], status="pending")
    assert article(sessions, moved).sent_at is None
    assert article(sessions, waiting).sent_at is not None


def test_a_stage_claimed_before_its_send_was_recorded_is_still_reaped_when_its_worker_dies(
    engine, sessions
):
    (article_id,) = add_articles(sessions, "A-1", sent=False)
    claim(engine, article_id)  # the message came, and a worker claimed it, so quickly that...
    age(sessions, article_id, 5, claimed_at=utcnow() - timedelta(seconds=6))
    sends.mark_sent(engine, [article_id], status="pending")  # ...its send is noted after
    # The worker died and its lease ran out: no message of the article is on its way.
    with engine.connect() as connection:
        stuck = sends.stuck(connection, IN_FLIGHT, grace_seconds=30)
    assert [row.id for row in stuck] == [article_id]


def test_a_send_recorded_before_the_claim_is_taken_by_it_whatever_the_times_read(engine, sessions):
    (article_id,) = add_articles(sessions, "A-1", sent=False)
    sends.mark_sent(engine, [article_id], status="pending")
    # The server's now() is a transaction's start: a send recorded by a transaction that
    # began after the claim's, and committed before it, reads later than the claim.
    age(sessions, article_id, 0, sent_at=utcnow() + timedelta(seconds=1))
    claim(engine, article_id)
    age(sessions, article_id, 5)  # its worker died; the lease ran out
    with engine.connect() as connection:
        stuck = sends.stuck(connection, IN_FLIGHT, grace_seconds=30)
    assert [row.id for row in stuck] == [article_id]


def test_one_caller_per_interval_takes_the_reapers_turn(engine, sessions):
    assert timers.take_turn(engine, "reaper", 60)
    assert not timers.take_turn(engine, "reaper", 60)
    with sessions() as session, session.begin():
        # Due now by the server's clock, as take_turn reads it (on SQLite to the millisecond).
        session.execute(update(Timer).values(due_at=server_now()))
    assert timers.take_turn(engine, "reaper", 60)


def test_a_mark_reports_the_value_it_replaced_to_one_caller_only(engine):
    assert timers.swap_mark(engine, "broker-epoch", "a") is None  # new: nothing replaced
    assert timers.swap_mark(engine, "broker-epoch", "a") is None
    assert timers.swap_mark(engine, "broker-epoch", "b") == "a"
    assert timers.swap_mark(engine, "broker-epoch", "b") is None


@pytest.mark.parametrize("skew", [60, -60])
def test_a_worker_clock_a_minute_off_neither_takes_nor_strands_another_workers_lease(
    engine, sessions, monkeypatch, skew
):
    first, second = add_articles(sessions, "A-1", "A-2")
    assert claim(engine, first, worker="right@host", lease=45) is not None

    def off() -> datetime:
        return datetime.now(timezone.utc) + timedelta(seconds=skew)

    monkeypatch.setattr(models, "utcnow", off)
    monkeypatch.setattr(transitions, "utcnow", off, raising=False)
    assert claim(engine, first, worker="off@host") is None  # the lease still holds
    assert claim(engine, second, worker="off@host", lease=45) is not None
    monkeypatch.undo()

    assert claim(engine, second, worker="right@host") is None  # and so does the one it took
    with engine.connect() as connection:
        assert sends.stuck(connection, IN_FLIGHT, grace_seconds=30) == []
