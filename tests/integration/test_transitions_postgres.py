"""The state-transition tests of ``tests/unit/test_transitions.py`` again, on PostgreSQL.

The statements are the same on both databases, so the same expectations must hold; this file
also checks what only PostgreSQL can show: two claimers racing for one article.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from db import transitions
from db.engine import make_engine
from tests.unit.test_transitions import *  # noqa: F403 (the tests themselves, collected again)
from tests.unit.test_transitions import add_articles

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(pg_url):  # replaces the SQLite fixture of the imported tests
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


def test_of_many_simultaneous_claimers_exactly_one_takes_the_article(engine, sessions):
    (article_id,) = add_articles(sessions, "A-1")

    def take(n: int):
        worker = f"w{n}@host"
        token = transitions.new_token(worker)
        return transitions.claim(engine, article_id, "translate", "pending", token, worker, 60)

    with ThreadPoolExecutor(8) as pool:
        claims = list(pool.map(take, range(16)))
    taken = [held for held in claims if held is not None]
    assert len(taken) == 1 and taken[0].attempt == 1
