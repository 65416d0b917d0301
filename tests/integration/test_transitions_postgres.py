"""The state-transition tests of ``tests/unit/test_transitions.py`` again, on PostgreSQL.

On PostgreSQL a claim and a completion are each one statement (``db.statements``), so the
same expectations must hold for that path as for SQLite's statement-by-statement one.
"""

from __future__ import annotations

import pytest

from db.engine import make_engine, session_factory
from tests.unit.test_transitions import *  # noqa: F403 (the tests themselves, collected again)

pytestmark = pytest.mark.integration


@pytest.fixture
def sessions(pg_url):  # replaces the SQLite fixture of the imported tests
    engine = make_engine(pg_url)
    yield session_factory(engine)
    engine.dispose()
