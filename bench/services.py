"""The real services a benchmark runs against: a fresh PostgreSQL database, its own Redis
database, and clean-up that also runs on Ctrl-C and SIGTERM."""

from __future__ import annotations

import os
import signal
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import redis

from db.engine import make_engine, migrate

PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")


@contextmanager
def fresh_database(prefix: str = "farm_bench") -> Iterator[str]:
    """Create and migrate a new PostgreSQL database; drop it on the way out, whatever happens.

    Args:
        prefix: start of the database's name; a random suffix makes it unique.

    Yields:
        The database's SQLAlchemy URL.
    """
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin_host = PG_ADMIN_URL.rsplit("/", 1)[0].split("://", 1)[1]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = f"postgresql+psycopg://{admin_host}/{name}"
        engine = make_engine(url)
        migrate(engine)
        engine.dispose()
        yield url
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def redis_database(number: int) -> Iterator[str]:
    """A Redis database for one benchmark, flushed before and after.

    Args:
        number: the database number (keep it apart from the farm's and the tests' ones).

    Yields:
        Its URL.
    """
    url = f"{REDIS_URL}/{number}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        try:
            client.flushdb()
        except redis.ConnectionError as error:  # Redis went away: nothing left to flush
            print(f"warning: could not flush {url}: {error}", file=sys.stderr)
        client.close()


@contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """Turn the first SIGTERM into ``KeyboardInterrupt`` so that ``finally`` blocks clean up."""

    def interrupt(_signum, _frame):
        # Once only: a second SIGTERM must not cut the clean-up that the first one started.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt("SIGTERM")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
