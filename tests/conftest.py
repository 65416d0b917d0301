"""Shared fixtures: the tiny model profile (built once per test session) and a migrated SQLite
database; and how ``make test`` spreads the tests over two pytest workers."""

from __future__ import annotations

import os

import pytest

from db.engine import make_engine, migrate, session_factory

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED_SERVICES_GROUP = "shared-services"


def pytest_itemcollected(item) -> None:
    """Group the integration tests for ``make test`` (``-n 2 --dist loadgroup``).

    The integration tests that use the machine's Redis and PostgreSQL run one after another
    on one worker: several restart those services. A module with services of its own (marked
    ``own_services``) runs as one unit, its module fixtures made once, beside them, and so do
    the tests of a module marked one by one because they need no service at all; the unit
    tests go to whichever worker is free. Without ``--dist loadgroup`` the groups do nothing.
    Marked as each test is collected: xdist reads the groups when collection ends.
    """
    if item.get_closest_marker("integration") is None:
        return
    own = item.get_closest_marker("own_services") is not None
    group = item.module.__name__ if own else SHARED_SERVICES_GROUP
    item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory):
    """A model cache folder shared by every test (and worker process) of the session."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_profile(model_cache):
    """The tiny random-weight profile, built once."""
    from workers.profiles import resolve_profile

    return resolve_profile("tiny", model_cache)


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
