"""Engines and sessions from a database URL, and schema migration to the latest revision."""

from __future__ import annotations

import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"
# A pooled connection unused for longer than this is pinged before it is handed out: long
# enough that a stage task's claim and completion around a fast model call skip it, short
# enough that a database restart meanwhile is very unlikely to go unnoticed.
IDLE_PING_SECONDS = 0.25


def make_engine(url: str) -> Engine:
    """Create an engine tuned for many worker processes sharing one database.

    Args:
        url: a SQLAlchemy URL (``sqlite:///farm.db``, ``postgresql+psycopg://...``).
            ``postgresql://`` is taken to mean the psycopg 3 driver.

    Returns:
        The engine. SQLite gets WAL, a busy timeout and foreign keys.
    """
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_engine(parsed, pool_size=5, max_overflow=5)
    _ping_when_idle(engine, IDLE_PING_SECONDS)
    return engine


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
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit (rows are read, then used).

    Args:
        engine: from :func:`make_engine`.

    Returns:
        A ``sessionmaker``.
    """
    return sessionmaker(engine, expire_on_commit=False)


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to the latest Alembic revision (a no-op when it is there).

    Args:
        engine: the database to migrate.
        revision: the revision to upgrade to; the latest by default.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
