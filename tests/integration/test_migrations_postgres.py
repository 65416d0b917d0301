"""The migration tests of ``tests/unit/test_migrations.py`` again, on PostgreSQL."""

from __future__ import annotations

import pytest

from tests.unit.test_migrations import *  # noqa: F403 (the tests themselves, collected again)

pytestmark = pytest.mark.integration


@pytest.fixture
def database_url(empty_pg_url):  # replaces the SQLite fixture: not yet migrated
    return empty_pg_url
