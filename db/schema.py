"""A transaction for schema migrations that holds on SQLite too, with its foreign keys paused.

SQLite changes a table the way Alembic's batch mode does: copy, drop, rename. Dropping a
table that other rows point at fails while foreign keys are enforced, so they are turned off
for the migration (SQLite only honours that outside a transaction) and checked whole before
the commit. pysqlite by default opens a transaction only before a data change, so schema
changes would commit one by one and a failed migration would leave half a schema behind:
the migration's transaction is therefore begun explicitly, around every statement.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine

from db.exceptions import DatabaseUnusable


@contextmanager
def migration_connection(engine: Engine) -> Iterator[Connection]:
    """A connection in one transaction for Alembic; all of it or nothing is committed.

    Args:
        engine: the database.

    Yields:
        The connection; its transaction commits when the block ends without error.

    Raises:
        DatabaseUnusable: on SQLite, the migrated rows break a foreign key (nothing is kept).
    """
    with engine.connect() as connection:
        if connection.dialect.name != "sqlite":
            with connection.begin():
                yield connection
            return
        raw = connection.connection.driver_connection
        level = raw.isolation_level
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()
        raw.isolation_level = None  # pysqlite sends no BEGIN of its own: ours below holds
        try:
            with connection.begin():
                connection.exec_driver_sql("BEGIN")
                yield connection
                _check_foreign_keys(connection)
        finally:
            raw.isolation_level = level
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()


def _check_foreign_keys(connection: Connection) -> None:
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        table, rowid, parent, _ = broken[0]
        raise DatabaseUnusable(
            f"the schema migration was undone: {len(broken)} row(s) of {table} (the first "
            f"with rowid {rowid}) point at rows of {parent} that do not exist"
        )
