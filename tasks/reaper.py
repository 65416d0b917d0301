"""The reaper: sends again the articles that no message will move on.

Two kinds of article wait for a message none will bring: one whose lease ran out without
completion (its worker died, hung, or gave it back for a retry it never sent), and one whose
stage was stored but whose next message was never sent (a broker outage at submit, a worker
killed between storing and sending). Each worker process runs :class:`Periodic` with
:func:`reap`; the farm-wide timer (:func:`db.transitions.take_turn`) gives one of them each
turn. ``farm requeue --stuck`` uses the same selection, and also takes articles that merely
stayed quiet for a lease (their message lost with an unpersisted broker).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from celery import Celery
from sqlalchemy import Engine

from db import transitions
from tasks.chains import send_chains
from tasks.queues import URGENT_PRIORITY
from tasks.registry import IN_FLIGHT, stage_waiting_in

logger = logging.getLogger("farm.reaper")

# How long a stored stage may wait for its next message to be sent before the reaper sends it
# (a 10,000-article submit stores, sends and marks within seconds).
SEND_GRACE_SECONDS = 30.0


def stuck_articles(connection, quiet_seconds: float | None = None) -> list:
    """Articles in flight that no message will move on (see the module).

    Args:
        connection: a Connection or Session of the farm's database.
        quiet_seconds: also those without a lease and without progress for this long.

    Returns:
        Rows of (id, key, status, batch_id).
    """
    statuses = [status.value for status in IN_FLIGHT]
    return transitions.stuck(connection, statuses, SEND_GRACE_SECONDS, quiet_seconds)


def reap(app: Celery, engine: Engine) -> int:
    """Send every stuck article's chain again, from the stage it waits for, urgently.

    Returns:
        How many articles were sent.
    """
    with engine.connect() as connection:
        rows = stuck_articles(connection)
    if not rows:
        return 0
    chains = [(row.id, row.key, stage_waiting_in(row.status).name) for row in rows]
    send_chains(app, chains, priority=URGENT_PRIORITY)
    transitions.mark_resent(engine, rows)
    logger.warning("reaper: %d articles sent again (%s)", len(rows),
                   ", ".join(str(row.id) for row in rows[:20]))  # fmt: skip
    return len(rows)


class Periodic(threading.Thread):
    """Run ``job`` every ``interval`` seconds on a daemon thread until :meth:`stop`.

    A failing turn is logged and the next one comes as usual: a database restart must not
    end the worker's reaper or its lease renewal.
    """

    def __init__(self, name: str, interval: float, job: Callable[[], object]) -> None:
        super().__init__(name=f"farm-{name}", daemon=True)
        self.interval, self.job = interval, job
        self._stopped = threading.Event()

    def run(self) -> None:
        """Call the job each interval."""
        while not self._stopped.wait(self.interval):
            try:
                self.job()
            except Exception as error:
                logger.warning("%s: this turn failed (%s: %s)", self.name, type(error).__name__,
                               error)  # fmt: skip

    def stop(self) -> None:
        """Stop after the current turn."""
        self._stopped.set()


def reaper_turn(app: Celery, engine: Engine, interval: float) -> Callable[[], object]:
    """The reaper's job for :class:`Periodic`: reap when this process has the turn."""

    def turn() -> int:
        if not transitions.take_turn(engine, "reaper", interval):
            return 0
        return reap(app, engine)

    return turn
