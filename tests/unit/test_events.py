"""The worker consumer that publishes Flower's task events several to a message."""

from __future__ import annotations

from types import SimpleNamespace

from tasks.events import BatchingConsumer
from tasks.settings import Settings


class Hub:
    """The parts of kombu's event loop the consumer schedules with."""

    def __init__(self):
        self.later: list[tuple[float, object]] = []
        self.soon: list[object] = []

    def call_later(self, delay, callback):
        self.later.append((delay, callback))

    def call_soon(self, callback):
        self.soon.append(callback)


def consumer(flush_seconds: float) -> tuple[BatchingConsumer, Hub, list[str]]:
    # Only the attributes these methods read; a whole Consumer needs a running worker.
    flushed: list[str] = []
    made = BatchingConsumer.__new__(BatchingConsumer)
    made.hub = Hub()
    made.app = SimpleNamespace(settings=Settings(event_flush_seconds=flush_seconds))
    made.event_dispatcher = SimpleNamespace(flush=lambda: flushed.append("flush"))
    made._flush_events_promise = lambda: flushed.append("soon")
    return made, made.hub, flushed


def test_many_buffered_events_schedule_one_flush_and_the_next_event_schedules_another():
    made, hub, flushed = consumer(0.1)
    for _ in range(5):
        made.on_send_event_buffered()
    assert [delay for delay, _ in hub.later] == [0.1] and not hub.soon
    hub.later[0][1]()  # the timer fires
    assert flushed == ["flush"]
    made.on_send_event_buffered()
    assert len(hub.later) == 2


def test_a_flush_whose_timer_was_lost_is_scheduled_again_once_overdue():
    made, hub, _ = consumer(0.1)
    made.on_send_event_buffered()
    made._flush_due_at -= 5  # its timer never fired (a reconnection dropped it)
    made.on_send_event_buffered()
    assert len(hub.later) == 2


def test_a_flush_interval_of_zero_keeps_celerys_flush_on_the_next_loop_turn():
    made, hub, _ = consumer(0)
    made.on_send_event_buffered()
    assert not hub.later and len(hub.soon) == 1
