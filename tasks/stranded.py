"""Messages a worker received and never started: held where the farm cannot reach them.

With late acknowledgement, a stage message a worker received stays in the broker's record of
deliveries until that worker acknowledges it, and comes back to the queue only after the
visibility timeout (an hour, longer than one model call may run). A worker that can reach the
database claims each message it receives within seconds (it prefetches one message per
thread, each started at once). A worker that is alive but cut off (its host's network down,
its process paused) holds its messages without claiming them, and their articles would wait
the hour. The reaper reads the broker's record (kombu's Redis transport keeps each delivery
in a sorted set scored by its time and the message in a hash) and takes back the articles of
messages delivered long enough ago, due (no retry delay still ahead), and never claimed.

A message can also vanish on its way: Redis removes it from its queue when a worker pops it,
and records the delivery only in the worker's next command, which a link going down between
the two never sends. An article whose message was sent long ago, that nobody claimed since,
whose stage's queue is empty and whose message no worker holds has no message left; the
reaper takes it back too.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone

from celery import Celery

from tasks.registry import STAGES

logger = logging.getLogger("farm.reaper")

# Hosts' clocks may disagree by this much: a delivery is scored by the receiving worker's.
CLOCK_TOLERANCE_SECONDS = 60.0
# Deliveries read per look: a fleet holds a few messages per worker thread.
MOST_DELIVERIES = 10_000
_STAGE_OF_TASK = {stage.task: stage for stage in STAGES.values()}
_QUEUES = tuple(dict.fromkeys(stage.queue for stage in STAGES.values()))


@dataclass
class BrokerView:
    """What the broker holds for the farm, read in one look.

    Attributes:
        held_long: (article id, status it waits in) of due messages a worker has held
            unclaimed past the bound.
        held_ids: the articles of every message a worker holds, however recent.
        empty_statuses: the statuses whose stage's queue has no message waiting.
    """

    held_long: list[tuple[int, str]] = field(default_factory=list)
    held_ids: set[int] = field(default_factory=set)
    empty_statuses: list[str] = field(default_factory=list)


def look(app: Celery, held_seconds: float) -> BrokerView | None:
    """Read the broker's deliveries and queue lengths; ``None`` for a broker other than
    Redis (the in-process one of ``farm run`` holds nothing apart from the farm).

    Args:
        app: the farm app (its broker).
        held_seconds: how long a delivery must have been held to count as stranded, the
            clock tolerance added.
    """
    with app.connection_for_write() as connection:
        if connection.transport.driver_type != "redis":
            return None
        channel = connection.default_channel
        client = channel.client
        seconds, micros = client.time()
        ceiling = seconds + micros / 1e6 - held_seconds - CLOCK_TOLERANCE_SECONDS
        deliveries = client.zrange(channel.unacked_index_key, 0, MOST_DELIVERIES, withscores=True)
        tags = [tag for tag, _score in deliveries]
        payloads = client.hmget(channel.unacked_key, tags) if tags else []
        waiting = {queue: _queued(channel, queue) for queue in _QUEUES}
    view = BrokerView(empty_statuses=[
        stage.input.value for stage in STAGES.values() if not waiting[stage.queue]
    ])  # fmt: skip
    for (_tag, score), payload in zip(deliveries, payloads, strict=True):
        found = _waiting(payload, ceiling) if payload else None
        if found is None:
            continue
        view.held_ids.add(found[0])
        if score <= ceiling:
            view.held_long.append(found)
    return view


def _queued(channel, queue: str) -> int:
    # kombu keeps one list per priority step for each queue.
    return sum(
        channel.client.llen(channel._q_for_pri(queue, pri)) for pri in channel.priority_steps
    )


def _waiting(payload: bytes, ceiling: float) -> tuple[int, str] | None:
    # kombu keeps [message, exchange, routing key]; Celery's message protocol 2 names the
    # task and its ETA in the headers and carries [args, kwargs, embed] as its body.
    try:
        message = json.loads(payload)[0]
        headers = message.get("headers") or {}
        stage = _STAGE_OF_TASK.get(headers.get("task"))
        if stage is None or _due_after(headers.get("eta"), ceiling):
            return None
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return int(args[0]), stage.input.value
    except (ValueError, KeyError, IndexError, TypeError) as error:
        logger.warning("reaper: a held message it cannot read (%s)", error)
        return None


def _due_after(eta: str | None, ceiling: float) -> bool:
    # A retry waits out its delay in the worker that holds it, unclaimed: not stranded.
    if not eta:
        return False
    due = datetime.fromisoformat(eta)
    if due.tzinfo is None:
        due = due.replace(tzinfo=timezone.utc)
    return due.timestamp() > ceiling
