"""SQLite's locks survive a process opening its database again (``db.engine.open_database``).

POSIX advisory locks belong to the process: closing any descriptor of a file drops every lock
the process holds on it, SQLite's included. A connection in WAL mode holds a shared lock on
the database file for as long as it is open; that lock is what tells another process that it
is not the last one, and so must not checkpoint and delete the WAL on closing, nor leave WAL
mode. ``farm run`` opens its database again (a worker's boot check) while its own engine has
it open, and ``farm status`` reads it from another process meanwhile.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from db.engine import ensure_schema, make_engine, open_database
from db.exceptions import DatabaseUnusable

# Another process, as `farm status` is: it reads, closes, and says what it could do.
OTHER_PROCESS = """
import os, sqlite3, sys
path = sys.argv[1]
connection = sqlite3.connect(path, timeout=0)
connection.execute("SELECT count(*) FROM batches").fetchone()
connection.close()
print("wal kept" if os.path.exists(path + "-wal") else "wal deleted")
connection = sqlite3.connect(path, timeout=0)
try:
    print("journal " + connection.execute("PRAGMA journal_mode=DELETE").fetchone()[0])
except sqlite3.OperationalError as error:
    print(error)
connection.close()
"""


def other_process(path: Path) -> list[str]:
    """What another process finds when it reads the database and tries to leave WAL mode."""
    done = subprocess.run(
        [sys.executable, "-c", OTHER_PROCESS, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.splitlines()


@pytest.fixture
def database(tmp_path):
    """A migrated farm database, created as `farm run` creates it, and its engine."""
    path = tmp_path / "farm.db"
    engine = open_database(f"sqlite:///{path}", create=True)
    ensure_schema(engine)
    yield path, engine
    engine.dispose()


def test_another_process_finds_the_database_still_held_after_this_one_opens_it_again(database):
    path, engine = database
    with engine.connect() as held:
        held.execute(text("CREATE TABLE probe (value INTEGER)"))
        held.execute(text("INSERT INTO probe VALUES (0)"))
        held.commit()
        open_database(f"sqlite:///{path}").dispose()
        assert other_process(path) == ["wal kept", "database is locked"]
        held.execute(text("UPDATE probe SET value = 1"))
        held.commit()
        assert held.execute(text("PRAGMA integrity_check")).scalar() == "ok"
        assert held.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_checking_the_schema_again_keeps_the_locks_too(database):
    path, engine = database
    with engine.connect():
        reopened = open_database(f"sqlite:///{path}", create=True)
        ensure_schema(reopened)
        reopened.dispose()
        assert other_process(path) == ["wal kept", "database is locked"]


@pytest.mark.parametrize("content", [b"x", b"SQLite format 3\x00", b"name;description\n" * 40])
def test_a_file_sqlite_would_read_is_still_refused_unless_it_is_a_database(tmp_path, content):
    path = tmp_path / "notes.db"
    path.write_bytes(content)
    with pytest.raises(DatabaseUnusable, match=f"^{path} is not a SQLite database; point "):
        open_database(f"sqlite:///{path}", create=True)
    assert path.read_bytes() == content
    assert sorted(tmp_path.iterdir()) == [path]


def test_an_empty_file_is_taken_for_a_new_database(tmp_path):
    path = tmp_path / "farm.db"
    path.touch()
    engine = open_database(f"sqlite:///{path}", create=True)
    ensure_schema(engine)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM batches")).scalar() == 0
    engine.dispose()


def test_a_database_at_the_latest_revision_is_checked_without_waiting_for_a_writer(database):
    path, engine = database
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another migration or a stage holds the write lock
    try:
        checked = threading.Thread(target=ensure_schema, args=(engine,), daemon=True)
        checked.start()
        checked.join(5)  # the write lock would keep it waiting for the busy timeout (30 s)
        assert not checked.is_alive()
    finally:
        writer.rollback()
        writer.close()


def _open_at_the_signal(url: str, go, errors) -> None:
    go.wait()
    try:
        with make_engine(url).connect() as connection:
            connection.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (x)")
            connection.commit()
    except Exception as error:  # reported to the test, which names it
        errors.put(repr(error))


def test_processes_opening_a_new_database_file_together_all_get_it_in_wal_mode(tmp_path):
    import multiprocessing

    context = multiprocessing.get_context("fork")
    failed = []
    for round_ in range(60):
        url = f"sqlite:///{tmp_path / f'new-{round_}.db'}"
        go, errors = context.Event(), context.Queue()
        openers = [context.Process(target=_open_at_the_signal, args=(url, go, errors))
                   for _ in range(6)]  # fmt: skip
        for opener in openers:
            opener.start()
        go.set()
        for opener in openers:
            opener.join(60)
        while not errors.empty():
            failed.append(errors.get())
        with make_engine(url).connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    assert failed == []
