"""The farm's frequent reads on PostgreSQL stay cheap as a catalog gets done.

The reaper looks for stuck articles every few seconds, and every finished article asks
whether its batch is done. Both read articles by status. Two things could make them walk
past every finished article, ever slower as a 10,000-article catalog progresses:

* psycopg prepares a statement after a few runs, and PostgreSQL may then choose a generic
  plan, made without knowing which status is asked for;
* planned with the status known, the waiting articles are assumed spread evenly over the ids,
  so walking the primary key looks cheap although the finished ones all come first.

Each test fills a table the way a catalog half-way through looks (finished articles first,
waiting ones last), gathers statistics, takes the SQL the farm sends, and runs it under both
plan modes with ``EXPLAIN ANALYZE``: no finished article may be read and then thrown away.
"""

from __future__ import annotations

import re

import psycopg
import pytest
from sqlalchemy import event

from db.engine import make_engine, session_factory
from tasks.finish import write_statistics_if_finished
from tasks.reaper import stuck_articles

pytestmark = pytest.mark.integration

ARTICLES = 3000


@pytest.fixture
def sessions(pg_url):
    engine = make_engine(pg_url)
    yield session_factory(engine)
    engine.dispose()


def fill(pg_url: str, done_status: str, waiting_status: str, waiting: int) -> None:
    """A batch of ARTICLES articles: the last ``waiting`` (the newest) in ``waiting_status``,
    the others in ``done_status``."""
    with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("INSERT INTO batches (id, created_at, sources, profile, catalog) "
                     "VALUES ('b1', now(), '[]', 'tiny', 'c')")  # fmt: skip
        conn.execute(
            "INSERT INTO articles (batch_id, key, file_stem, source_file, source_sheet, "
            "source_row, source_text, status, render_attempt, attempt_base, stage_attempts, "
            "requeues, content_hash, created_at, updated_at) "
            "SELECT 'b1', 'A-' || n, 'A-' || n, 'c.csv', 'csv', n, 'Rock', "
            "CASE WHEN n <= %s THEN %s ELSE %s END, 1, 1, 0, 0, '', now(), now() "
            "FROM generate_series(1, %s) AS n",
            (ARTICLES - waiting, done_status, waiting_status, ARTICLES),
        )
        conn.execute("ANALYZE articles")


def capture(engine, starts_with: str, call) -> tuple[str, dict]:
    """The first statement ``call`` sends that starts with ``starts_with``, and its values."""
    seen = []

    def keep(_conn, _cursor, statement, parameters, _context, _many):
        if statement.startswith(starts_with):
            seen.append((statement, dict(parameters or {})))

    event.listen(engine, "before_cursor_execute", keep)
    try:
        call()
    finally:
        event.remove(engine, "before_cursor_execute", keep)
    assert seen, f"no statement starting with {starts_with!r} was sent"
    return seen[0]


def rows_thrown_away(pg_url: str, statement: str, parameters: dict, mode: str) -> int:
    """Rows a prepared ``statement`` read and discarded, planned under ``plan_cache_mode``."""
    names = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", statement)))
    numbered = re.sub(r"%\((\w+)\)s", lambda m: f"${names.index(m.group(1)) + 1}", statement)
    dsn = pg_url.replace("+psycopg", "")
    with psycopg.connect(dsn, autocommit=True, cursor_factory=psycopg.ClientCursor) as conn:
        conn.execute(f"SET plan_cache_mode = {mode}")
        conn.execute(f"PREPARE probe AS {numbered}")
        values = ", ".join(["%s"] * len(names))
        explain = f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE probe({values})"
        plan = conn.execute(explain, [parameters[name] for name in names]).fetchone()[0]
    return _thrown_away(plan[0]["Plan"])


def _thrown_away(node: dict) -> int:
    removed = node.get("Rows Removed by Filter", 0) + node.get("Rows Removed by Index Recheck", 0)
    return removed + sum(_thrown_away(child) for child in node.get("Plans", []))


@pytest.mark.parametrize("mode", ["force_generic_plan", "force_custom_plan"])
def test_the_reapers_search_reads_only_the_articles_in_flight_whatever_the_plan(
    sessions, pg_url, mode
):
    # Near the end of a catalog: the reaper, every few seconds, must not walk the finished.
    fill(pg_url, "done", "rendered", waiting=20)
    engine = sessions.kw["bind"]
    with engine.connect() as connection:
        statement, parameters = capture(
            engine, "SELECT articles.id", lambda: stuck_articles(connection)
        )
    assert rows_thrown_away(pg_url, statement, parameters, mode) <= 20


@pytest.mark.parametrize("mode", ["force_generic_plan", "force_custom_plan"])
def test_asking_whether_a_batch_is_done_reads_only_the_unfinished_articles_whatever_the_plan(
    sessions, pg_url, mode, tmp_path
):
    fill(pg_url, "done", "rendered", waiting=20)  # near the end of a batch
    engine = sessions.kw["bind"]
    with sessions() as session:
        statement, parameters = capture(
            engine,
            "SELECT articles.id",
            lambda: write_statistics_if_finished(session.connection(), "b1", tmp_path),
        )
    assert rows_thrown_away(pg_url, statement, parameters, mode) == 0
