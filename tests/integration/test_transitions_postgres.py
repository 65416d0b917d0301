"""The state-transition tests of ``tests/unit/test_transitions.py`` again, on PostgreSQL.

On PostgreSQL a claim and a completion are each one statement (``db.statements``), so the
same expectations must hold for that path as for SQLite's statement-by-statement one.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import insert, select, text, update

from db import statements
from db.engine import make_engine, session_factory
from db.models import Article, Batch, utcnow
from db.transitions import ClaimOutcome, claim_waiting
from tests.unit.test_transitions import *  # noqa: F403 (the tests themselves, collected again)
from tests.unit.test_transitions import add_articles, claim, held_by

pytestmark = pytest.mark.integration


@pytest.fixture
def sessions(pg_url):  # replaces the SQLite fixture of the imported tests
    engine = make_engine(pg_url)
    yield session_factory(engine)
    engine.dispose()


def _waiting_on_a_lock(sessions) -> None:
    """Return once another connection of this database waits for a row lock."""
    deadline = time.monotonic() + 10
    with sessions() as watcher:
        query = text(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        while not watcher.scalar(query):
            assert time.monotonic() < deadline, "the claim never waited for the row lock"
            time.sleep(0.02)
            watcher.rollback()


def test_a_batch_skips_articles_another_worker_is_claiming_right_now_without_waiting(
    sessions, article_id
):
    ids = add_articles(sessions, "A-2", "A-3")
    # The pool outermost: on a failure the lock is let go before the pool waits for its thread.
    with ThreadPoolExecutor(1) as pool, sessions() as holder, holder.begin():
        holder.execute(select(Article.id).where(Article.id == ids[1]).with_for_update())

        def batch() -> list[int]:
            with sessions() as session:
                mates = claim_waiting(
                    session, "translate", "w1@host", 60.0, 3, limit=5, exclude=ids[0], token="b"
                )
                return [mate.article.id for mate in mates]

        assert pool.submit(batch).result(timeout=10) == [ids[2]]
    assert held_by(sessions, ids) == [None, None, "b"]


def test_a_claim_that_loses_the_race_for_a_free_article_looks_again_instead_of_stopping(
    sessions, article_id
):
    # The claim's statement starts while the article is free, waits for the row lock of a
    # task that takes the lease, and so misses it: its own snapshot still shows it free.
    lease = {"lease_token": "other", "lease_stage": "translate", "stage_attempts": 1}
    lease["lease_expires_at"] = utcnow() + timedelta(seconds=30)
    with ThreadPoolExecutor(1) as pool, sessions() as holder:
        holder.execute(select(Article.id).where(Article.id == article_id).with_for_update())
        with sessions() as session:
            racing = pool.submit(claim, session, article_id)
            _waiting_on_a_lock(sessions)
            holder.execute(update(Article).where(Article.id == article_id).values(lease))
            holder.commit()
            lost = racing.result(timeout=10)
    # Its lease as the claim found it was none: it looks again after a lease of its own.
    assert lost.outcome is ClaimOutcome.busy and lost.retry_in == 60.0
    assert held_by(sessions, [article_id]) == ["other"]


def test_a_batch_finds_its_mates_in_id_order_through_the_status_and_id_index(
    sessions,
):
    rows = [
        {"batch_id": "b1", "key": f"A-{n}", "file_stem": f"A-{n}", "source_file": "c.csv",
         "source_sheet": "csv", "source_row": n, "source_text": "Rock",
         "status": "done" if n < 5000 else "extracted"}
        for n in range(5050)
    ]  # fmt: skip
    with sessions() as session, session.begin():
        session.add(Batch(id="b1", profile="tiny"))
        session.flush()
        session.execute(insert(Article), rows)
    with sessions() as session:
        session.execute(text("ANALYZE articles"))
        compiled = statements.claim_waiting().compile(dialect=session.get_bind().dialect)
        params = compiled.params | {"p_status": "extracted", "p_exclude": 0, "p_limit": 3}
        params |= {"p_now": utcnow(), "p_expires": utcnow(), "p_token": "b", "p_stage": "render"}
        params["p_worker"] = "w"
        plan = session.connection().exec_driver_sql(f"EXPLAIN {compiled}", params).scalars().all()
    assert any("ix_articles_status_id" in line for line in plan), "\n".join(plan)
