"""Sending articles' chains to the broker, and checking the broker before anything is stored."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

from celery import Celery

from tasks.chains import article_chain
from tasks.queues import NORMAL_PRIORITY


class BrokerUnavailable(RuntimeError):
    """The broker cannot be reached, so nothing was stored or sent."""


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
