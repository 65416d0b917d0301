"""Store a validated catalog as a batch of articles and send one chain per article."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from celery import Celery
from sqlalchemy.orm import Session

from db.models import Article, Batch
from producer.catalog import CatalogRow
from tasks.chains import article_chain
from tasks.outputs import safe_stem


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
        Article(
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
    with session.begin():
        session.add(batch)
        session.add_all(articles)
    return Submitted(batch.id, [(article.id, article.key) for article in articles])


def send_chains(app: Celery, articles: Sequence[tuple[int, str]]) -> int:
    """Send one chain per article over a single broker connection.

    Args:
        app: the farm app.
        articles: (article id, key) pairs to start.

    Returns:
        How many chains were sent.
    """
    with app.producer_or_acquire() as producer:
        for article_id, key in articles:
            article_chain(article_id, key).apply_async(producer=producer)
    return len(articles)
