"""A transaction for schema migrations that works on SQLite's copied tables as well."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, exc


@contextmanager
def migration_connection(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction for Alembic, with SQLite's foreign keys paused.

    SQLite changes a table the way Alembic's batch mode does: copy, drop, rename. Dropping a
    table that other rows point at fails while foreign keys are enforced, so they are turned
    off for the migration (SQLite only honours that outside a transaction), then checked
    whole before the commit and turned on again.

    Args:
        engine: the database.

    Yields:
        The connection; its transaction commits when the block ends without error.

    Raises:
        sqlalchemy.exc.IntegrityError: on SQLite, the migrated rows break a foreign key.
    """
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        try:
            with connection.begin():
                yield connection
                if sqlite:
                    _check_foreign_keys(connection)
        finally:
            if sqlite:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()


def _check_foreign_keys(connection: Connection) -> None:
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        table, rowid, parent, _ = broken[0]
        raise exc.IntegrityError(
            f"PRAGMA foreign_key_check: {len(broken)} row(s) of {table} (first rowid {rowid}) "
            f"point at missing rows of {parent}",
            None,
            Exception("foreign key check failed"),
        )
