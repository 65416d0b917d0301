"""Revision 0009 gives review actions a comment and an attempt, and can go back."""

from __future__ import annotations

from sqlalchemy import inspect

from db.engine import make_engine, migrate
from tests.unit.test_migrations import downgrade


def columns(engine) -> set[str]:
    return {column["name"] for column in inspect(engine).get_columns("review_actions")}


def test_review_actions_of_the_previous_revision_get_an_empty_comment_and_go_back(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'farm.db'}")
    migrate(engine, "0008")
    with engine.begin() as connection:
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
        connection.exec_driver_sql(
            "INSERT INTO review_actions (batch_id, article_id, user, action, at) "
            "VALUES ('b1', 1, 'ada', 'rejected', '2026-12-01')"
        )
    assert "comment" not in columns(engine)
    migrate(engine)
    with engine.connect() as connection:
        rows = connection.exec_driver_sql("SELECT comment, attempt FROM review_actions").all()
    assert rows == [(None, None)]
    downgrade(engine, "0008")
    assert {"comment", "attempt"}.isdisjoint(columns(engine))
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM review_actions").scalar() == 1
    engine.dispose()
