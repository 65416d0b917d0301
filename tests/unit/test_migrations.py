"""Alembic migrations: a database of an earlier revision upgrades to the models' schema."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text

from db.engine import MIGRATIONS, make_engine, migrate

NOW = "'2026-11-30 00:00:00'"
BATCH_ROW = f"INSERT INTO batches (id, created_at, sources, profile) VALUES ('b', {NOW}, '[]', 't')"
ARTICLE_ROW = (
    "INSERT INTO articles (batch_id, key, file_stem, source_file, source_sheet, source_row, "
    "source_text, status, render_attempt, stage_attempts, created_at, updated_at) VALUES "
    f"('b', 'A-1', 'A-1', 'c.csv', 'csv', 2, 'Rock', 'done', 1, 0, {NOW}, {NOW})"
)


def _alembic(engine, action, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        action(config, revision)


def _article_indexes(engine) -> set[str]:
    return {index["name"] for index in inspect(engine).get_indexes("articles")}


def test_a_database_of_revision_0002_upgrades_to_the_status_and_id_index_and_back(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'farm.db'}")
    _alembic(engine, command.upgrade, "0002")
    with engine.begin() as connection:
        connection.execute(text(BATCH_ROW))
        connection.execute(text(ARTICLE_ROW))
    assert "ix_articles_status" in _article_indexes(engine)
    migrate(engine)
    indexes = _article_indexes(engine)
    assert "ix_articles_status_id" in indexes and "ix_articles_status" not in indexes
    with engine.connect() as connection:
        assert connection.execute(text("SELECT key, status FROM articles")).all() == [
            ("A-1", "done")
        ]
    _alembic(engine, command.downgrade, "0002")
    indexes = _article_indexes(engine)
    assert "ix_articles_status" in indexes and "ix_articles_status_id" not in indexes
