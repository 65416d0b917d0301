"""The Celery app of the farm and its configuration.

The app is created unconfigured; whoever owns the process configures it once with its
settings: the ``farm`` CLI with env vars plus flags, a worker process through
``tasks.worker`` (``celery -A tasks.worker worker``).
"""

from __future__ import annotations

import ssl

from celery import Celery

from tasks.queues import NORMAL_PRIORITY, PRIORITY_STEPS, TEXT_QUEUE
from tasks.registry import ROUTES
from tasks.settings import Settings

# 0, 0.5, 1, 1.5 s, then every 2 s: 32 tries over about a minute.
PUBLISH_RETRY_POLICY = {"max_retries": 32, "interval_start": 0, "interval_step": 0.5,
                        "interval_max": 2}  # fmt: skip


def celery_config(settings: Settings) -> dict:
    """Celery settings derived from the farm's settings.

    Args:
        settings: the farm's settings.

    Returns:
        A mapping for ``app.conf.update``.
    """
    transport = {
        "visibility_timeout": settings.visibility_timeout,
        # Sweep for unacknowledged messages whose visibility ran out every few seconds
        # (kombu's default sweep is ~100 s apart), so a lost delivery comes back promptly.
        "unacked_restore_interval": max(1, min(10, settings.visibility_timeout // 4)),
        "unacked_restore_throttle": 1,
        "priority_steps": PRIORITY_STEPS,
        "queue_order_strategy": "priority",
    }
    broker_url = settings.broker_url.get_secret_value()
    return {
        "broker_url": broker_url,
        "broker_use_ssl": _tls_options(broker_url),
        "broker_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        # A publish (a chain's next stage, a requeue, a submit) rides out a broker restart of
        # up to about a minute instead of failing after Celery's default 3 quick tries: a
        # failed chain step would leave its article waiting for `farm requeue --stuck`.
        "task_publish_retry_policy": PUBLISH_RETRY_POLICY,
        # Every result lives in the farm's database; Celery's own results are not needed.
        "result_backend": None,
        "task_ignore_result": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_routes": (ROUTES,),
        "task_default_queue": TEXT_QUEUE,
        "task_default_priority": NORMAL_PRIORITY,
        "task_create_missing_queues": True,
        "worker_send_task_events": True,
        # Flower learns of a task when a worker receives it. A "task-sent" event as well would
        # be one more broker publish per stage (about 2 ms of CPU per article in
        # bench.overhead) and 10,000 of them for every catalog submitted.
        "task_send_sent_event": False,
        "worker_consumer": "tasks.events:BatchingConsumer",
        # Model calls are bounded by the model executor's watchdog (tasks.boot), not by
        # Celery's time limits, which a pool of threads cannot enforce.
        "worker_hijack_root_logger": False,
    }


def _tls_options(broker_url: str) -> dict | None:
    """Certificate checking for ``rediss://`` brokers unless the URL says otherwise."""
    if not broker_url.startswith("rediss://") or "ssl_cert_reqs=" in broker_url:
        return None
    return {"ssl_cert_reqs": ssl.CERT_REQUIRED}


def configure(settings: Settings) -> Celery:
    """Apply ``settings`` to the farm's app.

    Args:
        settings: the farm's settings; kept as ``app.settings``.

    Returns:
        The app.
    """
    before = app.conf.broker_url
    app.conf.update(celery_config(settings))
    if app.conf.broker_url != before:
        # The app's connection and producer pools were made for the old broker and would
        # keep sending there: a process that configures twice (tests, a command that runs
        # another) must send to the broker it configured last.
        app._pool = None
        app.amqp._producer_pool = None
    app.settings = settings
    # Worker threads (farm run) resolve tasks through the default app, not a thread-local one.
    app.set_default()
    return app


class FarmApp(Celery):
    """The farm's Celery app: Celery's, with the settings it was configured with."""

    settings: Settings | None = None  # set by configure()


app = FarmApp("farm", include=["tasks.pipeline"])
