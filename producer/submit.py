"""Store a validated catalog as a batch of articles and send one chain per article."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone

from celery import Celery
from sqlalchemy import insert
from sqlalchemy.orm import Session

from db.models import Article, Batch
from producer.catalog import CatalogRow
from tasks.chains import article_chain
from tasks.outputs import safe_stem
from tasks.queues import NORMAL_PRIORITY


class BrokerUnavailable(RuntimeError):
    """The broker cannot be reached, so nothing was stored or sent."""


@dataclass(frozen=True)
class Submitted:
    """A stored batch and the articles whose chains were sent."""

    batch_id: str
    articles: list[tuple[int, str]]  # (article id, key) in row order


def new_batch_id() -> str:
    """A sortable, unique batch id such as ``20261125-143000-a1b2c3``."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{uuid.uuid4().hex[:6]}"


def check_broker(app: Celery, timeout: float = 5.0) -> None:
    """Fail early, before anything is written, when the broker is not reachable.

    Args:
        app: the farm app.
        timeout: seconds to try.
    """
    connection = app.connection_for_write()
    try:
        connection.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as error:  # kombu raises many kinds here
        # as_uri() leaves the password out, so credentials never reach the terminal or logs.
        raise BrokerUnavailable(
            f"cannot reach the broker at {connection.as_uri()}: {error}"
        ) from error
    finally:
        connection.release()


def store_batch(
    session: Session,
    rows: Sequence[CatalogRow],
    profile: str,
    min_clip_score: float | None = None,
) -> Submitted:
    """Insert a batch and its articles in one transaction.

    Args:
        session: a session with no transaction in progress.
        rows: validated catalog rows.
        profile: the model profile name, kept on the batch.
        min_clip_score: the batch's score threshold, if any.

    Returns:
        The batch id and the new articles' ids and keys in row order.
    """
    batch = Batch(
        id=new_batch_id(),
        sources=sorted({row.file for row in rows}),
        profile=profile,
        min_clip_score=min_clip_score,
    )
    articles = [
        dict(
            batch_id=batch.id,
            key=row.key,
            file_stem=safe_stem(row.key),
            source_file=row.file,
            source_sheet=row.sheet,
            source_row=row.row,
            source_text=row.source_text,
        )
        for row in rows
    ]
    # One bulk INSERT ... RETURNING instead of 10,000 ORM objects (about 2.5x faster); ids
    # come back in row order.
    returning = insert(Article).returning(Article.id, sort_by_parameter_order=True)
    with session.begin():
        session.add(batch)
        session.flush()
        ids = session.scalars(returning, articles).all() if articles else []
    keys = [article["key"] for article in articles]
    return Submitted(batch.id, list(zip(ids, keys, strict=True)))


def send_chains(app: Celery, articles: Sequence[tuple], priority: int = NORMAL_PRIORITY) -> int:
    """Send one chain per article over a single broker connection.

    Args:
        app: the farm app.
        articles: ``(article id, key)`` pairs to start at the first stage, or
            ``(article id, key, stage)`` triples to start at ``stage``.
        priority: Redis priority of the chains' messages.

    Returns:
        How many chains were sent.
    """
    with app.producer_or_acquire() as producer, _publish_batch(producer):
        for article_id, key, *stage in articles:
            chain = article_chain(article_id, key, *stage, priority=priority)
            # chain.apply_async drops its producer argument (celery's _chain.run), so every
            # chain would take its own producer and Redis client; send the first task with the
            # rest as its chain ourselves, which is what _chain.run does.
            steps, _ = chain.prepare_steps((), {}, chain.tasks, app=app)
            first = steps.pop()
            first.apply_async(producer=producer, chain=steps)
    return len(articles)


def _publish_batch(producer):
    # Newer kombu (5.7 here) pipelines publishes to Redis (flushed every 1,000 commands and on exit;
    # an exception discards what was not flushed yet); older kombu publishes one by one.
    batch = getattr(producer, "batch", None)
    return batch() if batch is not None else nullcontext()
