"""The state-transition tests of ``tests/unit/test_transitions.py`` again, on PostgreSQL.

On PostgreSQL a claim and a completion are each one statement (``db.statements``), so the
same expectations must hold for that path as for SQLite's statement-by-statement one.
"""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import event

from db.engine import make_engine, session_factory
from db.transitions import ClaimOutcome, claim_stage
from tests.unit.test_transitions import *  # noqa: F403 (the tests themselves, collected again)

pytestmark = pytest.mark.integration


@pytest.fixture
def sessions(pg_url):  # replaces the SQLite fixture of the imported tests
    engine = make_engine(pg_url)
    yield session_factory(engine)
    engine.dispose()


def test_a_claim_whose_holder_gives_the_article_back_between_its_two_statements_looks_again(
    sessions, article_id, pg_url
):
    with sessions() as session:
        claim_stage(session, article_id, "translate", "w0@host", 600, 3, token="batch")
    engine = sessions.kw["bind"]
    given_back = []

    def give_back(conn, cursor, statement, parameters, context, executemany):
        # Right after the claim's statement missed, before it reads why: the batch frees it.
        if "WITH claimed AS" in statement and not given_back:
            with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as other:
                other.execute(
                    "UPDATE articles SET lease_token = NULL, lease_stage = NULL, "
                    "lease_expires_at = NULL WHERE id = %s",
                    (article_id,),
                )
            given_back.append(True)

    event.listen(engine, "after_cursor_execute", give_back)
    try:
        with sessions() as session:
            missed = claim_stage(session, article_id, "translate", "w1@host", 600, 3)
    finally:
        event.remove(engine, "after_cursor_execute", give_back)
    assert given_back and missed.outcome is ClaimOutcome.busy
    with sessions() as session:  # and when it looks again, it takes the article
        again = claim_stage(session, article_id, "translate", "w1@host", 600, 3)
    assert again.outcome is ClaimOutcome.claimed
