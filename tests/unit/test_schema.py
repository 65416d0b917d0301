"""Migrations on SQLite: one transaction around the whole of them, foreign keys checked."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import inspect

from db.engine import make_engine, migrate
from db.exceptions import DatabaseUnusable


@pytest.fixture
def database_url(tmp_path):
    return f"sqlite:///{tmp_path / 'farm.db'}"


def test_a_migration_that_fails_on_sqlite_leaves_the_previous_schema_whole(database_url):
    engine = make_engine(database_url)
    migrate(engine, "0005")
    # A render of an article that does not exist, written past the foreign keys.
    raw = sqlite3.connect(database_url.removeprefix("sqlite:///"))
    with raw:
        raw.execute("PRAGMA foreign_keys=OFF")
        raw.execute(
            "INSERT INTO renders (article_id, attempt, seed, model_id, width, height, steps, "
            "image_path, seconds, worker, created_at) VALUES (99, 1, 1, 'm', 8, 8, 1, 'x.png', "
            "0.1, 'w', '2026-12-01')"
        )
    raw.close()
    with pytest.raises(DatabaseUnusable, match="the schema migration was undone: 1 row"):
        migrate(engine)
    inspector = inspect(engine)
    assert "views" not in {column["name"] for column in inspector.get_columns("batches")}
    assert not [name for name in inspector.get_table_names() if name.startswith("_alembic")]
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT version_num FROM alembic_version").all() == [
            ("0005",)
        ]
        connection.exec_driver_sql("DELETE FROM renders")
        connection.commit()
    migrate(engine)  # the same migration, once the row is gone
    assert "views" in {column["name"] for column in inspect(engine).get_columns("batches")}
    engine.dispose()
