"""Schema migrations: one process at a time, in one transaction, on SQLite too.

Workers started together on a new database all find it unmigrated. The migration
transaction therefore first takes the database's migration lock (a transaction-level
advisory lock on PostgreSQL, SQLite's write lock through ``BEGIN IMMEDIATE``), then reads
the revision again: whoever waited finds the work done and changes nothing. A database at
the latest revision is only read, and no lock is taken.

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
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine

from db.exceptions import DatabaseUnusable

MIGRATIONS = Path(__file__).parent / "migrations"
# The PostgreSQL advisory lock migrations take ("farmmigr" in ASCII): any fixed 64-bit
# number works, as long as nothing else in the database takes it.
MIGRATION_LOCK_KEY = 0x6661726D6D696772


def alembic_config() -> Config:
    """The Alembic configuration of the farm's migrations (no ini file)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def latest_revisions() -> set[str]:
    """The head revision(s) of the farm's migrations."""
    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


def known_revisions() -> set[str]:
    """Every revision of the farm's migrations."""
    scripts = ScriptDirectory.from_config(alembic_config()).walk_revisions()
    return {script.revision for script in scripts}


def current_revisions(connection: Connection) -> set[str]:
    """The revision(s) a database is at; empty when it has no schema yet."""
    return set(MigrationContext.configure(connection).get_current_heads())


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to the latest Alembic revision (a no-op when it is there).

    Safe when several processes call it at once: one migrates, the others wait for it and
    then find nothing to do.

    Args:
        engine: the database to migrate.
        revision: the revision to upgrade to; the latest by default.
    """
    config = alembic_config()
    latest = latest_revisions() if revision == "head" else None
    if latest is not None:
        with engine.connect() as connection:
            if current_revisions(connection) == latest:
                return  # every command checks: most find nothing to do, and touch nothing
    with migration_connection(engine) as connection:
        if latest is not None and current_revisions(connection) == latest:
            return  # another process migrated it while this one waited for the lock
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


@contextmanager
def migration_connection(engine: Engine) -> Iterator[Connection]:
    """A connection in one transaction for Alembic that holds the migration lock.

    All of it or nothing is committed. The lock is held from the first statement to the
    commit, so what the block reads is what no other migration can change meanwhile.

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
                if connection.dialect.name == "postgresql":
                    connection.exec_driver_sql(
                        f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"
                    )
                yield connection
            return
        raw = connection.connection.driver_connection
        level = raw.isolation_level
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()
        raw.isolation_level = None  # pysqlite sends no BEGIN of its own: ours below holds
        try:
            with connection.begin():
                # IMMEDIATE: the write lock now, waited for (busy timeout), and the snapshot
                # taken after it; a plain BEGIN would read first and then fail at its first
                # write ("database is locked") when another migration committed meanwhile.
                connection.exec_driver_sql("BEGIN IMMEDIATE")
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
