"""Sending articles' chains to the broker, and checking the broker before anything is stored."""

from __future__ import annotations

from celery import Celery
from sqlalchemy import Engine

from db.sends import mark_sent
from db.urls import mask_password
from tasks.chains import send_chains
from tasks.queues import NORMAL_PRIORITY
from tasks.reaper import note_broker_epoch


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
        # The password is masked, so credentials never reach the terminal or logs.
        where = mask_password(connection.as_uri(include_password=True))
        raise BrokerUnavailable(f"cannot reach the broker at {where}: {error}") from error
    finally:
        connection.release()


def send_and_mark(
    app: Celery, engine: Engine, articles: list[tuple], priority: int = NORMAL_PRIORITY
) -> int:
    """Send the articles' chains, then record them as sent (the reaper sends the rest).

    Args:
        app: the farm app.
        engine: the farm's database.
        articles: as :func:`tasks.chains.send_chains` takes them.
        priority: Redis priority of the chains' messages.

    Returns:
        How many chains were sent.
    """
    note_broker_epoch(app, engine)
    sent = send_chains(app, articles, priority)
    mark_sent(engine, [item[0] for item in articles])
    return sent
