"""A real Celery worker inside the current process, for ``farm run`` on one machine.

It consumes the same queues with the same tasks and chains as a farm of separate workers;
only the transport differs (kombu's in-memory broker, which needs sender and worker in one
process). The models, the model executor and the timers start before the worker takes work.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

from celery import Celery
from celery.worker import WorkController
from celery.worker import state as worker_state

from tasks.boot import start_process, stop_process
from tasks.registry import role_concurrency, role_queues


class _ReadyWorker(WorkController):
    def __init__(self, *args, **kwargs):
        self.ready = threading.Event()
        super().__init__(*args, **kwargs)

    def on_consumer_ready(self, consumer):
        super().on_consumer_ready(consumer)
        self.ready.set()


@contextmanager
def embedded_worker(
    app: Celery,
    role: str | None = None,
    hostname: str = "local@farm",
    start_timeout: float = 60.0,
):
    """Load a role's models and serve its queues in a thread; unload them on exit.

    Args:
        app: the configured farm app.
        role: ``text``, ``gpu`` or ``all``; ``app.settings.worker_role`` when None.
        hostname: the worker's node name, recorded on every stage run.
        start_timeout: seconds to wait for the consumer to be ready.

    Yields:
        A function that tells whether the worker is still running; it is stopped on exit.
    """
    settings = app.settings.model_copy(update={"worker_role": role or app.settings.worker_role})
    start_process(app, settings, hostname)
    worker = _ReadyWorker(
        app=app,
        hostname=hostname,
        pool="threads",
        concurrency=role_concurrency(settings.worker_role, settings),
        queues=list(role_queues(settings.worker_role)),
        loglevel="WARNING",
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
    )
    thread = threading.Thread(target=worker.start, name="farm-worker", daemon=True)
    thread.start()
    try:
        if not worker.ready.wait(start_timeout):
            raise RuntimeError("the embedded worker did not start")
        yield thread.is_alive
    finally:
        worker_state.should_terminate = 0
        thread.join(30)
        worker_state.should_terminate = None
        stop_process()
