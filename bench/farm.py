"""The farm's side of a benchmark: its environment, submitting a batch through the farm's own
code, and reading from the database when the batch ended."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.engine import make_engine, session_factory
from db.models import TERMINAL_STATUSES, Article, ArticleStatus
from producer.catalog import CatalogRow
from producer.imports import ImportResult, import_catalog
from producer.submit import send_and_mark
from tasks.app import configure
from tasks.settings import Settings


def farm_env(
    database_url: str, broker_url: str, output_dir: Path, factory: str, **extra: str
) -> dict[str, str]:
    """The environment of a farm worker process in a benchmark.

    Args:
        database_url: the benchmark's database.
        broker_url: the benchmark's Redis database.
        output_dir: where the workers write images and JSON.
        factory: ``module:function`` of the benchmark runtimes.
        **extra: more variables.

    Returns:
        This process's environment with the farm's settings added.
    """
    return os.environ | {
        "FARM_DATABASE_URL": database_url,
        "FARM_BROKER_URL": broker_url,
        "FARM_OUTPUT_DIR": str(output_dir),
        "FARM_RUNTIME_FACTORY": factory,
        "HF_HUB_OFFLINE": "1",
        **extra,
    }


def producer_side(database_url: str, broker_url: str):
    """Configure the farm app and open the database, as ``farm submit`` does.

    Args:
        database_url: the benchmark's database (already migrated).
        broker_url: the benchmark's Redis database.

    Returns:
        (Celery app, sessionmaker).
    """
    settings = Settings(database_url=database_url, broker_url=SecretStr(broker_url))
    return configure(settings), session_factory(make_engine(database_url))


def submit_rows(app, sessions: sessionmaker[Session], rows: Sequence[CatalogRow]):
    """Store rows as a batch, then send its chains and mark them sent, as ``farm submit`` does.

    Marking matters: the reaper sends again, after a grace period, every article stored
    without a message recorded as sent.

    Args:
        app: the configured farm app.
        sessions: the benchmark database's sessions.
        rows: the articles.

    Returns:
        (the stored batch, wall-clock time when sending started: the timed part starts there).
    """
    with sessions() as session:
        submitted: ImportResult = import_catalog(
            session, rows, "bench", {"profile": "bench"}, new_batch=True
        )
    started = time.time()
    send_and_mark(app, sessions.kw["bind"], submitted.to_send)
    return submitted, started


def wait_batch_ended(
    sessions: sessionmaker[Session],
    batch_id: str,
    timeout: float,
    alive: Callable[[], bool] = lambda: True,
    poll_seconds: float = 0.25,
    on_poll: Callable[[int], None] | None = None,
) -> float:
    """Wait until every article of the batch is done; return when the last one finished.

    Args:
        sessions: the benchmark database's sessions.
        batch_id: the batch.
        timeout: seconds before giving up.
        alive: returns False once a worker has died (stop waiting).
        poll_seconds: how often to look.
        on_poll: called with the number of open articles after each look.

    Returns:
        The latest ``finished_at`` of the batch, as a Unix time.
    """
    ended = [status.value for status in TERMINAL_STATUSES]
    deadline = time.monotonic() + timeout
    in_batch = Article.batch_id == batch_id
    while True:
        with sessions() as session:
            open_count = session.scalar(
                select(func.count()).where(in_batch, Article.status.not_in(ended))
            )
            if not open_count:
                return _last_finish(session, batch_id)
        if on_poll is not None:
            on_poll(open_count)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{open_count} articles of {batch_id} still open after {timeout}s")
        if not alive():
            raise RuntimeError("a worker died before the batch ended")
        time.sleep(poll_seconds)


def _last_finish(session: Session, batch_id: str) -> float:
    in_batch = Article.batch_id == batch_id
    not_done = session.scalar(
        select(func.count()).where(in_batch, Article.status != ArticleStatus.done.value)
    )
    if not_done:
        raise RuntimeError(f"{not_done} articles of {batch_id} did not end done")
    return session.scalar(select(func.max(Article.finished_at)).where(in_batch)).timestamp()
