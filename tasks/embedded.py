"""A real Celery worker inside the current process, for ``farm run`` on one machine.

It consumes the same queues with the same tasks and chains as a farm of separate workers;
only the transport differs (kombu's in-memory broker, which needs sender and worker in one
process). The models, the model executor and the timers start before the worker takes work.

On the way out every thread it started is stopped and waited for. After Ctrl-C that is quick
and quiet: the model executor ends the waits of the messages in hand at once
(:class:`workers.executor.ExecutorStopped`, which their stages take for no error: their
articles stay claimed, for :func:`db.transitions.expire` to free), the log is silenced (the
process is ending; what its threads would say is noise), and only the model call already
running is waited for, :data:`INTERRUPT_WAIT_SECONDS` at most.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from contextlib import contextmanager

from celery import Celery
from celery.app import trace
from celery.worker import WorkController
from celery.worker import state as worker_state

from tasks import context
from tasks.boot import start_process, stop_process
from tasks.registry import role_concurrency, role_queues

# After Ctrl-C, the most seconds to wait for the worker's threads: enough for one model call
# of the tiny or a fast model; a longer one is left to the process's end (stopped_cleanly).
INTERRUPT_WAIT_SECONDS = 3.0
# At the end of a batch, the most seconds to wait for the messages in hand and the timers.
STOP_WAIT_SECONDS = 30.0
_stragglers: list[str] = []  # what an embedded worker left running (stopped_cleanly)


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
        A function that tells whether the worker is still running; it is stopped on exit,
        and its threads waited for (:func:`stopped_cleanly` says whether they all ended).
    """
    settings = app.settings.model_copy(update={"worker_role": role or app.settings.worker_role})
    try:
        start_process(app, settings, hostname)
    except KeyboardInterrupt:
        _stop(None, interrupted=True)
        raise
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
    # As `celery worker` does: the tasks then see this node as their request's hostname (else
    # the machine's), which names their lease tokens, so that Ctrl-C finds and frees them.
    trace.setup_worker_optimizations(app, worker.hostname)
    thread = threading.Thread(target=worker.start, name="farm-worker", daemon=True)
    thread.start()
    interrupted = False
    try:
        if not worker.ready.wait(start_timeout):
            raise RuntimeError("the embedded worker did not start")
        yield thread.is_alive
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        _stop(thread, interrupted)


def _stop(thread: threading.Thread | None, interrupted: bool) -> None:
    """Stop the worker thread, the executor and the timers, and wait for them (bounded)."""
    wait = INTERRUPT_WAIT_SECONDS if interrupted else STOP_WAIT_SECONDS
    deadline = time.monotonic() + wait
    executor = None
    if interrupted:
        if threading.current_thread() is threading.main_thread():
            # A second Ctrl-C would break off the stop half done; it ends in seconds anyway.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        logging.disable(logging.CRITICAL)
        if context.installed():
            executor = context.current().executor
            executor.stop(cancel=True)  # the messages in hand end at their model call
            # The messages not begun end before their claim (no context, no models): none
            # claims an article after this, nor after the stopped worker's are freed.
            context.drop()
    # A warm stop after Ctrl-C: the pool drops the messages it has not begun and waits for
    # those in hand, which the cancelled executor ends at once (a cold stop would leave
    # the pool's threads to begin the rest, claiming articles after they were freed).
    stopping = "should_stop" if interrupted else "should_terminate"
    setattr(worker_state, stopping, 0)
    if thread is not None:
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            _stragglers.append(thread.name)
    setattr(worker_state, stopping, None)
    if executor is not None and not executor.join(max(0.0, deadline - time.monotonic())):
        _stragglers.append("the model executor")
    if not stop_process(max(0.0, deadline - time.monotonic())):
        _stragglers.append("the model executor or a timer")


def stopped_cleanly() -> bool:
    """Whether every embedded worker so far stopped all its threads within its wait.

    When not, a thread may still be in a model call: the process should end with
    ``os._exit`` (after flushing its output) rather than through the interpreter's
    teardown, which such a thread can abort.
    """
    return not _stragglers
