"""A minimal Celery app for comparison: four no-op tasks chained per article, no database.

It mirrors the farm's delivery settings that cost time per task (JSON, ``acks_late``, a
prefetch multiplier of 1) but does no work of its own, so the farm's overhead is the
difference. The last task counts finished chains in Redis and stamps the time of the last one.
Run it with ``celery -A bench.bare_app worker``; it reads ``BENCH_BARE_BROKER_URL``.
"""

from __future__ import annotations

import os
import time
from functools import lru_cache

import redis
from celery import Celery, chain

TEXT_QUEUE = "bench.bare.text"
GPU_QUEUE = "bench.bare.gpu"
DONE_COUNTER = "bench.bare.done"
LAST_DONE = "bench.bare.last_done"
BROKER_ENV = "BENCH_BARE_BROKER_URL"

app = Celery("bench-bare")
app.conf.update(
    broker_url=os.environ.get(BROKER_ENV, "redis://127.0.0.1:6379/10"),
    broker_connection_retry_on_startup=True,
    result_backend=None,
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_routes={
        "bare.translate": {"queue": TEXT_QUEUE},
        "bare.extract": {"queue": TEXT_QUEUE},
        "bare.render": {"queue": GPU_QUEUE},
        "bare.score": {"queue": GPU_QUEUE},
    },
    task_default_queue=TEXT_QUEUE,
    worker_hijack_root_logger=False,
)


@lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    return redis.Redis.from_url(app.conf.broker_url)


@app.task(name="bare.translate")
def translate(article_id: int, key: str = "") -> int:
    """No-op stage."""
    return article_id


@app.task(name="bare.extract")
def extract(article_id: int, key: str = "") -> int:
    """No-op stage."""
    return article_id


@app.task(name="bare.render")
def render(article_id: int, key: str = "") -> int:
    """No-op stage."""
    return article_id


@app.task(name="bare.score")
def score(article_id: int, key: str = "") -> int:
    """Last stage: count the chain as done and stamp the time."""
    client = _redis()
    client.incr(DONE_COUNTER)
    client.set(LAST_DONE, repr(time.time()))
    return article_id


def bare_chain(article_id: int, key: str):
    """The four no-op tasks chained for one article, like ``tasks.chains.article_chain``.

    Args:
        article_id: any integer.
        key: a label.

    Returns:
        A Celery ``chain``.
    """
    return chain(
        translate.si(article_id, key=key),
        extract.s(key=key),
        render.s(key=key),
        score.s(key=key),
    )
