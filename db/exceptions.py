"""Why the farm's database cannot be used, each with a message a user can act on.

Raised by :func:`db.engine.open_database` and :func:`db.engine.ensure_schema`. Messages name
the database (a path, or the URL with its password masked) and say what to do; they never
carry a password. The command line turns every one of them into one line and exit code 5.
"""

from __future__ import annotations


class DatabaseError(Exception):
    """Base: the farm's database cannot be used as asked. ``str()`` is the whole message."""


class UnsupportedDatabase(DatabaseError):
    """The URL is not one the farm can use: a malformed URL, or a scheme or driver it lacks."""


class DatabaseMissing(DatabaseError):
    """No database there: a SQLite file not created yet, or a PostgreSQL database not created."""


class DatabaseUnreachable(DatabaseError):
    """The database server cannot be reached (refused, unknown host, no answer) or refuses us."""


class DatabaseNotWritable(DatabaseError):
    """The database or its folder cannot be created or written: permissions, read-only, full."""


class DatabaseUnusable(DatabaseError):
    """Something is there but it is no farm database this version can use.

    A file that is not SQLite, a folder where the file should be, or a schema migrated by a
    newer version of the farm.
    """
