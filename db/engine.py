"""Engines and sessions from a database URL, and schema migration to the latest revision.

Two ways in. :func:`make_engine` builds an engine and nothing else (workers and tests that
know their database is there). :func:`open_database` is for commands a user types: it checks
the URL, the SQLite file or the PostgreSQL server, connects once and raises one of
:mod:`db.exceptions` with a message that says what is wrong and where; with ``create=False``
it creates nothing, not even a missing folder. :func:`ensure_schema` then brings an existing
database to the latest revision (through :func:`db.schema.migrate`, safe when several
processes start at once) and refuses one migrated by a newer version.

A process that has the database open must not open its SQLite file with anything but
SQLite: POSIX locks belong to the process, and closing any other descriptor of the file
drops the locks its connections hold (:func:`open_database` reads the header through SQLite).
"""

from __future__ import annotations

import errno
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

from db.exceptions import (
    DatabaseError,
    DatabaseMissing,
    DatabaseNotWritable,
    DatabaseUnreachable,
    DatabaseUnusable,
    UnsupportedDatabase,
)

# MIGRATIONS and migrate live in db.schema; callers know them as db.engine's too.
from db.schema import MIGRATIONS as MIGRATIONS
from db.schema import current_revisions, known_revisions, migrate

# A pooled connection unused for longer than this is pinged before it is handed out: long
# enough that a stage task's claim and completion around a fast model call skip it, short
# enough that a database restart meanwhile is very unlikely to go unnoticed.
IDLE_PING_SECONDS = 0.25
# How long open_database waits for a PostgreSQL server to answer: without it a host that drops
# packets keeps a command waiting for the system's TCP timeout (minutes).
CONNECT_TIMEOUT_SECONDS = 10
# Where users set the URL, named in messages so they know what to change.
URL_SETTING = "FARM_DATABASE_URL/--database-url"
URL_EXAMPLES = "use sqlite:///path/farm.db or postgresql://user@host/db"
# Back ends and drivers the farm ships with ("" = the back end's default driver).
SUPPORTED_DRIVERS = {"sqlite": ("", "pysqlite"), "postgresql": ("", "psycopg")}
PG_DEFAULT_PORT = 5432


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
    parsed = _with_psycopg(make_url(url))
    path = _sqlite_path(parsed)
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
    path = _sqlite_path(parsed)
    if path is not None:
        _prepare_sqlite_file(path, create)
    timeout = None if parsed.get_backend_name() == "sqlite" else CONNECT_TIMEOUT_SECONDS
    engine = _build_engine(parsed, connect_timeout=timeout)
    try:
        check_connection(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def parse_database_url(url: str) -> URL:
    """Read a database URL and check that the farm can use its back end and driver.

    Args:
        url: the URL as the user gave it.

    Returns:
        The parsed URL; ``postgresql://`` gets the psycopg 3 driver.

    Raises:
        UnsupportedDatabase: a malformed URL, or one the farm has no driver for.
    """
    try:
        parsed = make_url(url)
    except (exc.ArgumentError, ValueError, TypeError):
        # from None: the parser's own message quotes the URL with its password.
        raise UnsupportedDatabase(
            f"{URL_SETTING} {_mask_raw(str(url))!r} is not a database URL; {URL_EXAMPLES}"
        ) from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend not in SUPPORTED_DRIVERS:
        raise UnsupportedDatabase(
            f"unsupported database URL scheme {parsed.drivername!r} in {URL_SETTING}; "
            f"{URL_EXAMPLES}"
        )
    if driver not in SUPPORTED_DRIVERS[backend]:
        raise UnsupportedDatabase(
            f"unsupported database driver {driver!r} in {URL_SETTING} "
            f"({parsed.drivername}://...); {URL_EXAMPLES} (PostgreSQL goes through psycopg 3)"
        )
    return _with_psycopg(parsed)


def describe(url: URL | str) -> str:
    """The database as messages name it: a SQLite file's absolute path, else the URL with its
    password masked."""
    parsed = make_url(url) if isinstance(url, str) else url
    path = _sqlite_path(parsed)
    if path is not None:
        return str(path)
    return parsed.render_as_string(hide_password=True)


def _with_psycopg(parsed: URL) -> URL:
    if parsed.drivername == "postgresql":
        return parsed.set(drivername="postgresql+psycopg")
    return parsed


def _build_engine(parsed: URL, connect_timeout: float | None = None) -> Engine:
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    connect_args = {"connect_timeout": int(connect_timeout)} if connect_timeout else {}
    engine = create_engine(parsed, pool_size=5, max_overflow=5, connect_args=connect_args)
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
    with _described(engine):
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
    with _described(engine), engine.connect() as connection:
        return ",".join(sorted(current_revisions(connection))) or None


@contextmanager
def _described(engine: Engine) -> Iterator[None]:
    """Raise a driver error the user can act on as its :mod:`db.exceptions` error."""
    try:
        yield
    except exc.DBAPIError as error:
        described = describe_error(error, engine.url)
        if described is None:
            raise
        raise described from error


def check_connection(engine: Engine) -> None:
    """Connect once and run a trivial query.

    Args:
        engine: the database to try.

    Raises:
        DatabaseError: a subclass saying why the database cannot be used (see
            :func:`describe_error`); any other driver error is raised as it is.
    """
    with _described(engine), engine.connect() as connection:
        connection.exec_driver_sql("SELECT 1")


def describe_error(error: exc.DBAPIError, url: URL) -> DatabaseError | None:
    """The :mod:`db.exceptions` error a driver error means, or None for one it does not know.

    Args:
        error: what SQLAlchemy raised on connecting or migrating.
        url: the engine's URL (its password is masked in the message and removed from the
            driver's text, should the driver quote it).

    Returns:
        The error to raise instead, or None when the error is no user's to fix (a bug).
    """
    text = str(error.orig if error.orig is not None else error)
    if url.password:
        text = text.replace(str(url.password), "***")
    path = _sqlite_path(url)
    if url.get_backend_name() == "sqlite":
        return _sqlite_error(text, path if path is not None else Path(":memory:"))
    return _postgres_error(text, getattr(error.orig, "sqlstate", None), url, error)


def _sqlite_error(text: str, path: Path) -> DatabaseError | None:
    lowered = text.lower()
    if "file is not a database" in lowered:
        return _not_sqlite(path)
    if "readonly" in lowered or "read-only" in lowered:
        return DatabaseNotWritable(
            f"the farm database {path} is read-only ({text}); make it and its folder writable"
        )
    if "disk is full" in lowered:
        return DatabaseNotWritable(f"cannot write the farm database {path}: the disk is full")
    if "unable to open database file" in lowered:
        return DatabaseNotWritable(
            f"cannot open the farm database {path}: its folder must exist and be writable"
        )
    return None


def _postgres_error(
    text: str, sqlstate: str | None, url: URL, error: exc.DBAPIError
) -> DatabaseError | None:
    host = url.host or "the local socket"
    where = f"PostgreSQL at {host}:{url.port or PG_DEFAULT_PORT}"
    reason = _server_reason(text)
    lowered = text.lower()
    if 'database "' in lowered and "does not exist" in lowered:
        return DatabaseMissing(
            f"{where} has no database {url.database!r}; create it with `{_createdb(url)}`, "
            f"or point {URL_SETTING} at an existing one"
        )
    if "connection refused" in lowered:
        return DatabaseUnreachable(
            f"cannot reach {where}: connection refused; is the server running there and "
            "accepting TCP connections?"
        )
    if any(sign in lowered for sign in _DNS_SIGNS):
        return DatabaseUnreachable(f"cannot reach {where}: the host name {host!r} does not resolve")
    if "timeout" in lowered or "timed out" in lowered:
        return DatabaseUnreachable(
            f"cannot reach {where}: no answer within {CONNECT_TIMEOUT_SECONDS} s"
        )
    if any(sign in lowered for sign in _REFUSED_SIGNS):
        return DatabaseUnreachable(f"{where} refused user {url.username!r}: {reason}")
    if sqlstate == "42501":  # insufficient_privilege: the user may read but not migrate
        return DatabaseNotWritable(
            f"user {url.username!r} may not change database {url.database!r} on {where} "
            f"({reason}); migrate once as its owner, or grant CREATE on its schema"
        )
    if isinstance(error, exc.OperationalError):
        return DatabaseUnreachable(f"cannot use database {url.database!r} on {where}: {reason}")
    return None


_DNS_SIGNS = (
    "failed to resolve host",
    "could not translate host name",
    "name or service not known",
    "nodename nor servname",
    "temporary failure in name resolution",
)
_REFUSED_SIGNS = ("password authentication failed", "no pg_hba.conf entry", "role ", "password")


def _server_reason(text: str) -> str:
    # psycopg prefixes the server's words with where it tried; the words after FATAL say why.
    reason = text.split("FATAL:")[-1].strip()
    return reason.splitlines()[0].strip() if reason else text


def _createdb(url: URL) -> str:
    parts = ["createdb"]
    if url.host:
        parts += ["-h", url.host]
    if url.port:
        parts += ["-p", str(url.port)]
    if url.username:
        parts += ["-U", url.username]
    return " ".join([*parts, url.database or "NAME"])


def _sqlite_path(parsed: URL) -> Path | None:
    """A SQLite URL's file as an absolute path; None for another back end or in memory."""
    if parsed.drivername.partition("+")[0] != "sqlite":
        return None
    name = parsed.database
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    return Path(name).expanduser().absolute()


def _prepare_sqlite_file(path: Path, create: bool) -> None:
    if path.is_dir():
        raise DatabaseUnusable(
            f"{path} is a folder, not a database file; point {URL_SETTING} at a file, "
            f"such as sqlite:///{path / 'farm.db'}"
        )
    if path.exists():
        _check_sqlite_header(path)
        if create and not os.access(path, os.W_OK):
            raise DatabaseNotWritable(
                f"the farm database {path} is read-only; make it writable to submit or run"
            )
        return
    if not create:
        raise DatabaseMissing(f"no farm database at {path}; `farm submit` or `farm run` creates it")
    _make_folder(path.parent)
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise DatabaseNotWritable(
            f"cannot create the farm database {path}: no permission to write in {path.parent}"
        )


def _check_sqlite_header(path: Path) -> None:
    # SQLite takes a one-byte file for an empty database and writes over it (its Unix layer
    # reports one byte as none): a mistyped path to a tiny text file must not become a farm
    # database. No database is one byte long, so the size alone tells.
    try:
        size = path.stat().st_size
    except OSError as error:
        raise DatabaseNotWritable(
            f"cannot read the farm database {path}: {error.strerror or error}"
        ) from None
    if size == 1:
        raise _not_sqlite(path)
    # The header is read by SQLite itself, never with open(): POSIX locks belong to the
    # process, and closing any other descriptor of the file would drop the locks this
    # process's own connections hold on it (another process could then checkpoint and delete
    # the WAL under them). SQLite keeps its descriptors open while its locks are held.
    try:
        reader = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            reader.execute("PRAGMA schema_version").fetchone()
        finally:
            reader.close()
    except sqlite3.DatabaseError as error:
        if "file is not a database" in str(error):
            raise _not_sqlite(path) from None
        reason = os.strerror(errno.EACCES) if not os.access(path, os.R_OK) else str(error)
        raise DatabaseNotWritable(f"cannot read the farm database {path}: {reason}") from None


def _not_sqlite(path: Path) -> DatabaseUnusable:
    return DatabaseUnusable(
        f"{path} is not a SQLite database; point {URL_SETTING} at the farm database, "
        "or at a file that does not exist yet"
    )


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise DatabaseNotWritable(
            f"cannot create the folder {folder} for the farm database: "
            f"{_in_the_way(folder)} is a file, not a folder"
        ) from None
    except OSError as error:
        why = "no permission" if error.errno in (errno.EACCES, errno.EPERM) else error.strerror
        raise DatabaseNotWritable(
            f"cannot create the folder {folder} for the farm database: {why}"
        ) from None


def _in_the_way(folder: Path) -> Path:
    """The nearest of ``folder`` and its parents that exists but is no folder."""
    for candidate in (folder, *folder.parents):
        if candidate.exists() and not candidate.is_dir():
            return candidate
    return folder


def _mask_raw(url: str) -> str:
    """A URL that did not parse, with anything between ``user:`` and the last ``@`` masked."""
    return re.sub(r"^([^:/@]*://[^:/@]*:).*@", r"\1***@", url)
