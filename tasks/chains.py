"""The chain of stage tasks for one article, built from the registry's task names."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

from celery import Celery, chain

from tasks.app import app
from tasks.queues import NORMAL_PRIORITY, stage_priority
from tasks.registry import stages_from


def article_chain(
    article_id: int, key: str, from_stage: str = "translate", priority: int = NORMAL_PRIORITY
):
    """The chain of stage signatures for one article, starting at ``from_stage``.

    Args:
        article_id: the article's primary key.
        key: the article key (a label for Flower).
        from_stage: the first stage to run.
        priority: Redis priority of the chain (0 is served first); follow-up stages of
            normal work go ahead of first stages (``tasks.queues.stage_priority``).

    Returns:
        A Celery ``chain`` ready for ``apply_async``.
    """
    signatures = [
        app.signature(
            stage.task,
            args=(article_id,) if index == 0 else (),
            kwargs={"key": key},
            priority=stage_priority(stage.follow_up, priority),
        )
        for index, stage in enumerate(stages_from(from_stage))
    ]
    signatures[0].set(immutable=True)
    return chain(*signatures)


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
            steps = article_chain(article_id, key, *stage, priority=priority)
            # chain.apply_async drops its producer argument (celery's _chain.run), so every
            # chain would take its own producer and Redis client; send the first task with the
            # rest as its chain ourselves, which is what _chain.run does.
            prepared, _ = steps.prepare_steps((), {}, steps.tasks, app=app)
            first = prepared.pop()
            first.apply_async(producer=producer, chain=prepared)
    return len(articles)


def _publish_batch(producer):
    # Newer kombu pipelines publishes to Redis (flushed every 1,000 commands and on exit; an
    # exception discards what was not flushed yet); older kombu publishes one by one.
    batch = getattr(producer, "batch", None)
    return batch() if batch is not None else nullcontext()
