"""Fixtures shared by the unit tests: a migrated SQLite database, the review studio's batch."""

from __future__ import annotations

import pytest

from db.engine import make_engine, migrate, session_factory
from tests.unit.review_studio import Studio, make_studio


@pytest.fixture
def studio(tmp_path) -> Studio:
    return make_studio(tmp_path)


@pytest.fixture
def engine(tmp_path):
    """A migrated SQLite farm database in the test's folder."""
    engine = make_engine(f"sqlite:///{tmp_path / 'farm.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine):
    """Sessions of :func:`engine` (modules with a batch of their own define theirs)."""
    return session_factory(engine)
