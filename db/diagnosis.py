"""Why a database cannot be used, said as one of :mod:`db.exceptions` with a message a user can
act on.

Two kinds of trouble. A SQLite file is checked before any engine touches it
(:func:`prepare_sqlite_file`): a folder where the file should be, a file that is not SQLite, a
file or folder that cannot be read, written or created. A driver error raised on connecting or
migrating is read for what the user can fix (:func:`describe_error`, :func:`diagnosed`): the
server refuses or does not answer, no such database, no permission. Every message says what is
wrong, where (:func:`db.urls.describe`'s name for the database) and what to do.

A process that has the database open must not open its SQLite file with anything but
SQLite: POSIX locks belong to the process, and closing any other descriptor of the file
drops the locks its connections hold (:func:`prepare_sqlite_file` reads the header through
SQLite).
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import exc
from sqlalchemy.engine import URL

from db.exceptions import (
    DatabaseError,
    DatabaseMissing,
    DatabaseNotWritable,
    DatabaseUnreachable,
    DatabaseUnusable,
)
from db.urls import CONNECT_TIMEOUT_SECONDS, PG_DEFAULT_PORT, URL_SETTING, sqlite_path

_DNS_SIGNS = (
    "failed to resolve host",
    "could not translate host name",
    "name or service not known",
    "nodename nor servname",
    "temporary failure in name resolution",
)
_REFUSED_SIGNS = ("password authentication failed", "no pg_hba.conf entry", "role ", "password")


@contextmanager
def diagnosed(url: URL) -> Iterator[None]:
    """Raise a driver error the user can act on as its :mod:`db.exceptions` error.

    Args:
        url: the URL of the engine the block uses.

    Raises:
        DatabaseError: a subclass saying why the database cannot be used (see
            :func:`describe_error`); any other driver error is raised as it is.
    """
    try:
        yield
    except exc.DBAPIError as error:
        described = describe_error(error, url)
        if described is None:
            raise
        raise described from error


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
    path = sqlite_path(url)
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


def prepare_sqlite_file(path: Path, create: bool) -> None:
    """Check a SQLite database file before an engine opens it; make its folder if allowed.

    Args:
        path: the file, absolute (:func:`db.urls.sqlite_path`).
        create: whether a missing file may be created (its folder is made here then).

    Raises:
        DatabaseUnusable: the path is a folder, or a file that is not SQLite.
        DatabaseMissing: no file and ``create`` is False (nothing was created).
        DatabaseNotWritable: the file cannot be read, or (with ``create``) written, or its
            folder cannot be created or written in.
    """
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
