"""The Alembic migrations on SQLite: they build what the models describe, and go both ways.

``tests/integration/test_migrations_postgres.py`` runs the same tests on PostgreSQL.
"""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from db.engine import MIGRATIONS, make_engine, migrate
from db.models import Base
from db.schema import migration_connection


@pytest.fixture
def database_url(tmp_path):
    return f"sqlite:///{tmp_path / 'farm.db'}"


def downgrade(engine, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with migration_connection(engine) as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def article_indexes(engine) -> dict[str, list[str]]:
    indexes = inspect(engine).get_indexes("articles")
    return {index["name"]: index["column_names"] for index in indexes}


def test_the_migrations_build_the_schema_the_models_describe(database_url):
    engine = make_engine(database_url)
    migrate(engine)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert differences == []


def test_a_database_of_the_previous_revision_gets_the_status_id_index_and_can_go_back(
    database_url,
):
    engine = make_engine(database_url)
    migrate(engine, "0002")
    assert article_indexes(engine)["ix_articles_status"] == ["status"]
    migrate(engine)
    indexes = article_indexes(engine)
    assert indexes["ix_articles_status_id"] == ["status", "id"]
    assert "ix_articles_status" not in indexes
    downgrade(engine, "0002")
    indexes = article_indexes(engine)
    assert indexes["ix_articles_status"] == ["status"]
    assert "ix_articles_status_id" not in indexes
    engine.dispose()


def insert_render(connection, article_id: int) -> None:
    connection.exec_driver_sql(
        "INSERT INTO renders (article_id, attempt, seed, model_id, width, height, steps, "
        f"image_path, seconds, worker, created_at) VALUES ({article_id}, 1, 1, 'm', 8, 8, "
        "1, 'x.png', 0.1, 'w', '2026-12-01')"
    )


def test_articles_of_the_previous_revision_become_front_views_and_it_can_go_back(database_url):
    engine = make_engine(database_url)
    migrate(engine, "0005")
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO batches (id, catalog, created_at, sources, profile) "
            "VALUES ('b1', 'c', '2026-12-01', '[]', 'tiny')"
        )
        connection.exec_driver_sql(
            "INSERT INTO articles (batch_id, key, file_stem, source_file, source_sheet, "
            "source_row, source_text, content_hash, status, render_attempt, attempt_base, "
            "stage_attempts, requeues, created_at, updated_at) VALUES ('b1', 'K1', 'K1', "
            "'c.csv', 'csv', 2, 'Bluse', '', 'done', 1, 1, 0, 0, '2026-12-01', '2026-12-01')"
        )
        insert_render(connection, 1)
    migrate(engine)
    with engine.begin() as connection:
        row = connection.exec_driver_sql("SELECT view, review_status FROM articles").one()
        assert tuple(row) == ("front", None)
        # The same row in another view is a second article of the batch.
        connection.exec_driver_sql(
            "INSERT INTO articles (batch_id, key, view, file_stem, source_file, source_sheet, "
            "source_row, source_text, content_hash, status, render_attempt, attempt_base, "
            "stage_attempts, requeues, created_at, updated_at) VALUES ('b1', 'K1', 'back', "
            "'K1', 'c.csv', 'csv', 2, 'Bluse', '', 'done', 1, 1, 0, 0, '2026-12-01', "
            "'2026-12-01')"
        )
    assert {"users", "review_actions"} <= set(inspect(engine).get_table_names())
    with engine.begin() as connection:
        insert_render(connection, 2)  # the back view rendered too
    downgrade(engine, "0005")
    with engine.begin() as connection:
        assert connection.exec_driver_sql("SELECT key FROM articles").all() == [("K1",)]
        renders = connection.exec_driver_sql("SELECT article_id FROM renders").all()
        assert renders == [(1,)]
    names = {column["name"] for column in inspect(engine).get_columns("articles")}
    assert "view" not in names and "review_status" not in names
    assert "users" not in inspect(engine).get_table_names()
    engine.dispose()


def columns_of(engine, table: str) -> set[str]:
    return {column["name"] for column in inspect(engine).get_columns(table)}


def insert_done_article(connection) -> None:
    """Batch ``b1`` with article 1, ``K1``, done, in the columns revisions 0007 and 0008 have."""
    connection.exec_driver_sql(
        "INSERT INTO batches (id, catalog, created_at, sources, profile) "
        "VALUES ('b1', 'c', '2026-12-01', '[]', 'tiny')"
    )
    connection.exec_driver_sql(
        "INSERT INTO articles (batch_id, key, view, file_stem, source_file, source_sheet, "
        "source_row, source_text, content_hash, status, render_attempt, attempt_base, "
        "stage_attempts, requeues, created_at, updated_at) VALUES ('b1', 'K1', 'front', "
        "'K1', 'c.csv', 'csv', 2, 'Bluse', '', 'done', 1, 1, 0, 0, '2026-12-01', "
        "'2026-12-01')"
    )


def test_articles_and_renders_of_the_previous_revision_get_empty_model_commits_and_go_back(
    database_url,
):
    engine = make_engine(database_url)
    migrate(engine, "0007")
    with engine.begin() as connection:
        insert_done_article(connection)
        insert_render(connection, 1)
    migrate(engine)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT model_commits FROM articles").all() == [(None,)]
        assert connection.exec_driver_sql("SELECT model_commits FROM renders").all() == [(None,)]
    downgrade(engine, "0007")
    assert "model_commits" not in columns_of(engine, "articles") | columns_of(engine, "renders")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM renders").scalar_one() == 1
    engine.dispose()


def test_review_actions_of_the_previous_revision_get_an_empty_comment_and_go_back(database_url):
    engine = make_engine(database_url)
    migrate(engine, "0008")
    with engine.begin() as connection:
        insert_done_article(connection)
        connection.exec_driver_sql(
            'INSERT INTO review_actions (batch_id, article_id, "user", action, at) '
            "VALUES ('b1', 1, 'ada', 'rejected', '2026-12-01')"
        )
    assert "comment" not in columns_of(engine, "review_actions")
    migrate(engine)
    with engine.connect() as connection:
        rows = connection.exec_driver_sql("SELECT comment, attempt FROM review_actions").all()
    assert rows == [(None, None)]
    downgrade(engine, "0008")
    assert {"comment", "attempt"}.isdisjoint(columns_of(engine, "review_actions"))
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM review_actions").scalar() == 1
    engine.dispose()
