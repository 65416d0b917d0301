"""Database URLs: which the farm can use, and how messages name a database.

The farm speaks to SQLite (through pysqlite) and PostgreSQL (through psycopg 3). A URL that
names anything else is refused by :func:`parse_database_url` with a message that says where
the URL was set and what a usable one looks like. Messages name a database with
:func:`describe`: a SQLite file by its absolute path, any other by its URL with the password
masked, so that no message ever carries a password.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import exc
from sqlalchemy.engine import URL, make_url

from db.exceptions import UnsupportedDatabase

# Where users set the URL, named in messages so they know what to change.
URL_SETTING = "FARM_DATABASE_URL/--database-url"
URL_EXAMPLES = "use sqlite:///path/farm.db or postgresql://user@host/db"
# Back ends and drivers the farm ships with ("" = the back end's default driver).
SUPPORTED_DRIVERS = {"sqlite": ("", "pysqlite"), "postgresql": ("", "psycopg")}
PG_DEFAULT_PORT = 5432
# How long db.engine.open_database waits for a PostgreSQL server to answer: without it a
# host that drops packets keeps a command waiting for the system's TCP timeout (minutes).
CONNECT_TIMEOUT_SECONDS = 10


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
    return with_psycopg(parsed)


def with_psycopg(parsed: URL) -> URL:
    """The URL with ``postgresql://`` taken to mean the psycopg 3 driver; others as they are."""
    if parsed.drivername == "postgresql":
        return parsed.set(drivername="postgresql+psycopg")
    return parsed


def describe(url: URL | str) -> str:
    """The database as messages name it: a SQLite file's absolute path, else the URL with its
    password masked."""
    parsed = make_url(url) if isinstance(url, str) else url
    path = sqlite_path(parsed)
    if path is not None:
        return str(path)
    return parsed.render_as_string(hide_password=True)


def sqlite_path(parsed: URL) -> Path | None:
    """A SQLite URL's file as an absolute path; None for another back end or in memory."""
    if parsed.drivername.partition("+")[0] != "sqlite":
        return None
    name = parsed.database
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    return Path(name).expanduser().absolute()


def mask_password(url: str) -> str:
    """Any service URL (a broker's) with its password, where it has one, shown as ``***``.

    A URL without a password is shown as it is: a mask there would suggest a password that
    was never set, and hide that one is missing.
    """
    parts = urlsplit(url)
    if not parts.password:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _mask_raw(url: str) -> str:
    """A URL that did not parse, with anything between ``user:`` and the last ``@`` masked."""
    return re.sub(r"^([^:/@]*://[^:/@]*:).*@", r"\1***@", url)
