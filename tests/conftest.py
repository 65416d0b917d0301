"""Shared fixtures: the tiny model profile (built once per test session) and a migrated SQLite
database."""

from __future__ import annotations

import os

import pytest

from db.engine import make_engine, migrate, session_factory

os.environ.setdefault("HF_HUB_OFFLINE", "1")


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
