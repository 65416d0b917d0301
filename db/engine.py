"""Engines and sessions from a database URL, and schema migration to the latest revision.

Two ways in. :func:`make_engine` builds an engine and nothing else (workers and tests that
know their database is there). :func:`open_database` is for commands a user types: it checks
the URL (:mod:`db.urls`), the SQLite file or the PostgreSQL server, connects once and raises
one of :mod:`db.exceptions` with a message that says what is wrong and where
(:mod:`db.diagnosis`); with ``create=False`` it creates nothing, not even a missing folder.
:func:`ensure_schema` then brings an existing database to the latest revision (through
:func:`db.schema.migrate`, safe when several processes start at once) and refuses one
migrated by a newer version.
"""

from __future__ import annotations

import sqlite3
import time

from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

from db.diagnosis import diagnosed, prepare_sqlite_file
from db.exceptions import DatabaseUnusable

# MIGRATIONS and migrate live in db.schema; callers know them as db.engine's too.
from db.schema import MIGRATIONS as MIGRATIONS
from db.schema import current_revisions, known_revisions, migrate
from db.urls import CONNECT_TIMEOUT_SECONDS, describe, parse_database_url, sqlite_path, with_psycopg

# A pooled connection unused for longer than this is pinged before it is handed out: long
# enough that a stage task's claim and completion around a fast model call skip it, short
# enough that a database restart meanwhile is very unlikely to go unnoticed.
IDLE_PING_SECONDS = 0.25
# A client whose host drops off the network mid-transaction (its link down, no reset sent)
# holds its row locks until the server notices it is gone: by default, hours of TCP silence.
# Every other worker's update of those rows (a claim, the reaper's turn) would wait as long.
# TCP keepalive probes on both ends end such a session within IDLE + INTERVAL * COUNT seconds.
# Probes go out only while nothing sent waits for its acknowledgement: a reply the server sent
# just as the link went down (a cut between a query and its answer, the session holding its
# locks) is retransmitted for about 15 minutes instead, unless a user timeout ends it as soon.
KEEPALIVE_IDLE_SECONDS = 10
KEEPALIVE_INTERVAL_SECONDS = 5
KEEPALIVE_COUNT = 3
UNACKNOWLEDGED_MS = 1000 * (KEEPALIVE_IDLE_SECONDS + KEEPALIVE_INTERVAL_SECONDS * KEEPALIVE_COUNT)
# How long a connection keeps asking for WAL while other processes switch a new file to it.
WAL_SWITCH_SECONDS = 30.0


def make_engine(url: str) -> Engine:
    """Create an engine tuned for many worker processes sharing one database.

    It does not connect. A SQLite file's folder is created when missing; use
    :func:`open_database` where a missing database must not be created.

    Args:
        url: a SQLAlchemy URL (``sqlite:///farm.db``, ``postgresql+psycopg://...``).
            ``postgresql://`` is taken to mean the psycopg 3 driver.

    Returns:
        The engine. SQLite gets WAL, a busy timeout and foreign keys.
    """
    parsed = with_psycopg(make_url(url))
    path = sqlite_path(parsed)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    return _build_engine(parsed)


def open_database(url: str, create: bool = False) -> Engine:
    """Check a database URL, its database and its server, and return a connected-once engine.

    Args:
        url: the farm's database URL (``sqlite:///path/farm.db``, ``postgresql://...``).
        create: whether a missing SQLite file (and its folder) may be created. A PostgreSQL
            database is never created: that takes rights the farm should not need.

    Returns:
        The engine (as :func:`make_engine` builds it, with a connect timeout for PostgreSQL).

    Raises:
        UnsupportedDatabase: a malformed URL, or a scheme or driver the farm lacks.
        DatabaseMissing: no SQLite file and ``create`` is False (nothing was created), or no
            such PostgreSQL database.
        DatabaseUnreachable: the server refuses, does not resolve or does not answer.
        DatabaseNotWritable: the SQLite file or its folder cannot be created or written.
        DatabaseUnusable: the path is a folder, or a file that is not SQLite.
    """
    parsed = parse_database_url(url)
    path = sqlite_path(parsed)
    if path is not None:
        prepare_sqlite_file(path, create)
    timeout = None if parsed.get_backend_name() == "sqlite" else CONNECT_TIMEOUT_SECONDS
    engine = _build_engine(parsed, connect_timeout=timeout)
    try:
        check_connection(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def _build_engine(parsed: URL, connect_timeout: float | None = None) -> Engine:
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    connect_args = _keepalives()
    if connect_timeout:
        connect_args["connect_timeout"] = int(connect_timeout)
    engine = create_engine(parsed, pool_size=5, max_overflow=5, connect_args=connect_args)
    _ping_when_idle(engine, IDLE_PING_SECONDS)
    return engine


def _keepalives() -> dict:
    """libpq's keepalives and user timeout for the client's end, and the server's for its end
    of the session."""
    server = (
        f"-c tcp_keepalives_idle={KEEPALIVE_IDLE_SECONDS}"
        f" -c tcp_keepalives_interval={KEEPALIVE_INTERVAL_SECONDS}"
        f" -c tcp_keepalives_count={KEEPALIVE_COUNT}"
        f" -c tcp_user_timeout={UNACKNOWLEDGED_MS}"
    )
    return {
        "keepalives": 1,
        "keepalives_idle": KEEPALIVE_IDLE_SECONDS,
        "keepalives_interval": KEEPALIVE_INTERVAL_SECONDS,
        "keepalives_count": KEEPALIVE_COUNT,
        "tcp_user_timeout": UNACKNOWLEDGED_MS,
        "options": server,
    }


def _ping_when_idle(engine: Engine, idle_seconds: float) -> None:
    """Ping a pooled connection on checkout only when it sat unused for ``idle_seconds``.

    SQLAlchemy's ``pool_pre_ping`` pings on every checkout: one more round trip per stage
    task. A connection used a moment ago has just worked; if the server went away in that
    moment, the statement fails with a disconnect, the pool drops its connections and the
    task retries (``tasks.base``).
    """

    @event.listens_for(engine, "connect")
    @event.listens_for(engine, "checkin")
    def _note_use(_dbapi_connection, record) -> None:
        record.info["last_used"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection, record, _proxy) -> None:
        if time.monotonic() - record.info.get("last_used", 0.0) < idle_seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            # As pre-ping does: the pool drops every connection as old as this one and
            # opens a new one.
            raise exc.InvalidatePoolError(str(error)) from error


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    _switch_to_wal(cursor)
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _switch_to_wal(cursor) -> None:
    # Processes that open a new database file together all switch it to WAL: one that holds
    # a read lock while another waits to write gets "database is locked" at once, without its
    # busy timeout (waiting would deadlock). The other finishes the switch in a moment; the
    # file is then in WAL mode and asking again costs nothing.
    deadline = time.monotonic() + WAL_SWITCH_SECONDS
    delay = 0.01
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit (rows are read, then used).

    Args:
        engine: from :func:`make_engine`.

    Returns:
        A ``sessionmaker``.
    """
    return sessionmaker(engine, expire_on_commit=False)


def ensure_schema(engine: Engine) -> None:
    """Migrate a database this version knows to the latest revision; refuse a newer one.

    Read-only commands call it too: an older farm database is migrated in place (adding
    what this version reads is safe and other versions' workers would do it anyway), but no
    database is created here; that is :func:`open_database`'s ``create``. Processes that
    call it at once on a new database all succeed: one migrates (:func:`db.schema.migrate`).

    Args:
        engine: from :func:`open_database`.

    Raises:
        DatabaseUnusable: the schema is at a revision this version does not know (a newer
            farm migrated it).
        DatabaseNotWritable, DatabaseUnreachable: the migration could not write or connect.
    """
    known = known_revisions()
    with diagnosed(engine.url):
        with engine.connect() as connection:
            current = current_revisions(connection)
        unknown = sorted(revision for revision in current if revision not in known)
        if unknown:
            raise DatabaseUnusable(
                f"the farm database {describe(engine.url)} is at schema revision "
                f"{', '.join(unknown)}, which this version of fashion-farm does not know: a "
                "newer version migrated it; upgrade fashion-farm to use it"
            )
        migrate(engine)


def schema_revision(engine: Engine) -> str | None:
    """The schema revision a database is at (heads joined by commas), None without a schema.

    Raises:
        DatabaseError: a subclass saying why the database cannot be read.
    """
    with diagnosed(engine.url), engine.connect() as connection:
        return ",".join(sorted(current_revisions(connection))) or None


def check_connection(engine: Engine) -> None:
    """Connect once and run a trivial query.

    Args:
        engine: the database to try.

    Raises:
        DatabaseError: a subclass saying why the database cannot be used (see
            :func:`db.diagnosis.describe_error`); any other driver error is raised as it is.
    """
    with diagnosed(engine.url), engine.connect() as connection:
        connection.exec_driver_sql("SELECT 1")
