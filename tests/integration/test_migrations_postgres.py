"""The migration tests of ``tests/unit/test_migrations.py`` again, on PostgreSQL."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from tests.integration.conftest import PG_ADMIN
from tests.unit.test_migrations import *  # noqa: F403 (the tests themselves, collected again)

pytestmark = pytest.mark.integration


@pytest.fixture
def database_url():  # replaces the SQLite fixture: an empty database, not yet migrated
    name = f"farm_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
