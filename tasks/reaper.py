"""The reaper: sends again the articles that no message will move on.

Four kinds of article wait for a message none will bring: one whose lease ran out without
completion (its worker died, hung, or gave it back for a retry it never sent), one whose
stage was stored but whose next message was never sent (a broker outage at submit, a worker
killed between storing and sending), one whose message a cut-off worker holds unclaimed
(:mod:`tasks.stranded`), and every queued one when the broker came back empty
(Redis restarted without persistence): the reaper notices that last case by the broker's
epoch, a random value it keeps in the broker and in the database, which differ once the
broker lost its data. Each worker process runs :class:`Periodic` with :func:`reaper_turn`;
the farm-wide timer (:func:`db.timers.take_turn`) gives one of them each turn. The same
turn publishes what a crash or a full disk left unpublished (:mod:`tasks.publish`).
``farm requeue --stuck`` uses the same selection, and also takes articles that merely
stayed quiet for a lease.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from celery import Celery
from sqlalchemy import Engine

from db import sends, timers
from tasks import stranded
from tasks.chains import send_chains
from tasks.publish import publish_pending
from tasks.queues import URGENT_PRIORITY
from tasks.registry import IN_FLIGHT, stage_waiting_in

if TYPE_CHECKING:
    from tasks.context import WorkerContext

logger = logging.getLogger("farm.reaper")

# How long a stored stage may wait for its next message to be sent before the reaper sends it
# (a 10,000-article submit stores, sends and marks within seconds).
SEND_GRACE_SECONDS = 30.0
# Where the broker's epoch lives, in the broker and (as a mark) in the database.
EPOCH_KEY = "fashion-farm:broker-epoch"
EPOCH_MARK = "broker-epoch"


def stuck_articles(connection, quiet_seconds: float | None = None) -> list:
    """Articles in flight that no message will move on (see the module).

    Args:
        connection: a Connection or Session of the farm's database.
        quiet_seconds: also those without a lease and without progress for this long.

    Returns:
        Rows of (id, key, status, batch_id).
    """
    statuses = [status.value for status in IN_FLIGHT]
    return sends.stuck(connection, statuses, SEND_GRACE_SECONDS, quiet_seconds)


def reap(app: Celery, engine: Engine) -> int:
    """Send every stuck article's chain again, from the stage it waits for, urgently.

    The articles are marked as sent before the send (a claim meanwhile then finds them free
    and is not undone), and unmarked when the send fails, for the next turn.

    Returns:
        How many articles were sent.
    """
    reset = broker_was_reset(app, engine)
    if not reset:
        take_back_stranded(app, engine)
    statuses = [status.value for status in IN_FLIGHT]
    rows = sends.take_stuck(engine, statuses, SEND_GRACE_SECONDS, everything=reset)
    if not rows:
        return 0
    chains = [(row.id, row.key, stage_waiting_in(row.status).name) for row in rows]
    try:
        send_chains(app, chains, priority=URGENT_PRIORITY)
    except BaseException:
        sends.unmark_sent(engine, [row.id for row in rows])
        raise
    why = "the broker came back empty" if reset else "stuck"
    logger.warning("reaper: %d articles sent again, %s (%s)", len(rows), why,
                   ", ".join(str(row.id) for row in rows[:20]))  # fmt: skip
    return len(rows)


def take_back_stranded(app: Celery, engine: Engine) -> None:
    """Unmark the sends of messages a cut-off worker holds, or that vanished on their way
    (:mod:`tasks.stranded`), so that this turn sends their articles again."""
    bound = app.settings.lease_seconds
    view = stranded.look(app, bound)
    if view is None:
        return
    held = sends.unmark_unclaimed(engine, view.held_long) if view.held_long else 0
    older = bound + stranded.CLOCK_TOLERANCE_SECONDS
    gone = sends.unmark_vanished(engine, view.empty_statuses, older, view.held_ids)
    if held or gone:
        logger.warning(
            "reaper: %d articles whose messages a cut-off worker holds, %d whose messages "
            "vanished on their way", held, gone,
        )  # fmt: skip


def broker_was_reset(app: Celery, engine: Engine) -> bool:
    """Whether the broker lost its messages since the last look (a Redis that restarted
    empty): its epoch key is gone and a new one differs from the one the database keeps.

    A broker other than Redis (the in-process one of ``farm run``) cannot lose its messages
    apart from the farm, and is never reset.
    """
    epoch = _broker_epoch(app)
    if epoch is None:
        return False
    return timers.swap_mark(engine, EPOCH_MARK, epoch) is not None


def note_broker_epoch(app: Celery, engine: Engine) -> None:
    """Keep the broker's epoch in the database if none is kept yet, before sending anything.

    Workers call it at boot and ``farm submit`` before it sends: a broker that loses its
    messages before the reaper's first turn is then told apart from a farm's first broker.
    An epoch kept already stays, so that a reset noticed here is the reaper's to act on. A
    broker or database away costs a warning: the reaper's turns keep the epoch once both are
    back, and the sends that follow wait out a broker blip on their own.
    """
    try:
        epoch = _broker_epoch(app)
        if epoch is not None:
            timers.keep_mark(engine, EPOCH_MARK, epoch)
    except Exception as error:  # kombu, redis and the database raise many kinds here
        logger.warning("could not keep the broker's epoch: %s", error)


def _broker_epoch(app: Celery) -> str | None:
    with app.connection_for_write() as connection:
        if connection.transport.driver_type != "redis":
            return None
        client = connection.default_channel.client
        client.set(EPOCH_KEY, uuid.uuid4().hex, nx=True)
        value = client.get(EPOCH_KEY)
    return value.decode() if isinstance(value, bytes) else value


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


def reaper_turn(app: Celery, worker: WorkerContext) -> Callable[[], object]:
    """The reaper's job for :class:`Periodic`: when this process has the turn, reap, then
    publish what is left unpublished.

    After a turn that failed (the database was away), the next turns wait until the living
    workers had two chances to renew their leases: every lease ran out during a long outage,
    and sending those articles again would throw away the results their workers are about to
    store.

    Args:
        app: the farm app it sends through.
        worker: the process's context (its settings, database and models).
    """
    settings, engine = worker.settings, worker.engine
    settle = 2 * settings.lease_seconds / 3
    failed_at: list[float] = []

    def turn() -> int:
        if failed_at and time.monotonic() - failed_at[-1] < settle:
            return 0
        try:
            if not timers.take_turn(engine, "reaper", settings.reaper_seconds):
                return 0
            sent = reap(app, engine)
        except Exception:
            failed_at[:] = [time.monotonic()]
            raise
        publish_pending(engine, settings.output_dir, worker.profile)
        return sent

    return turn
