"""Task events for Flower, published in batches.

A worker reports each task as received, started and succeeded (or failed, retried). Celery
buffers these events in the worker's main process, but flushes the buffer on the event
loop's next turn, so in practice every event is its own publish to Redis: about 40% of the
main process's CPU time with zero-cost models (``bench.overhead``). This consumer flushes
at most every ``FARM_EVENT_FLUSH_SECONDS`` instead (or when Celery's buffer of 24 fills),
so one publish carries several events. Flower reads such ``task.multi`` messages like
single ones; it only sees each task up to that much later.
"""

from __future__ import annotations

import time

from celery.worker.consumer import Consumer


class BatchingConsumer(Consumer):
    """Celery's worker consumer, with task events flushed on a short timer."""

    _flush_due_at: float | None = None

    def on_send_event_buffered(self) -> None:
        """Called by the event dispatcher for each buffered event: schedule one flush."""
        settings = getattr(self.app, "settings", None)
        delay = settings.event_flush_seconds if settings is not None else 0
        if self.hub is None or delay <= 0:
            super().on_send_event_buffered()
            return
        now = time.monotonic()
        # A flush is pending unless its time is well past: a timer lost with a broker
        # reconnection must not leave events waiting for Celery's buffer of 24 to fill.
        if self._flush_due_at is None or now > self._flush_due_at + 1.0:
            self._flush_due_at = now + delay
            self.hub.call_later(delay, self._flush_due_events)

    def _flush_due_events(self) -> None:
        self._flush_due_at = None
        self._flush_events()

    def shutdown(self) -> None:
        """Publish what is still buffered before the worker's event connection closes."""
        self._flush_events()
        super().shutdown()
