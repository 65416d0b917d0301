"""Failed logins counted per user name and per client address, so passwords cannot be guessed
at the speed of the network.

The counts live in the studio's process (one uvicorn process serves the studio): a restart
forgets them, which only gives a guesser one more round of :data:`MAX_FAILURES`.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable

MAX_FAILURES = 5
WINDOW_SECONDS = 15 * 60


class LoginThrottle:
    """Refuses logins for a name or an address after too many recent failures.

    Args:
        max_failures: failures within ``window_seconds`` after which logins wait.
        window_seconds: how long a failure counts.
        clock: seconds, monotonic (tests pass their own).
    """

    def __init__(
        self,
        max_failures: int = MAX_FAILURES,
        window_seconds: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def wait_seconds(self, keys: Iterable[str]) -> float:
        """How long logins for any of ``keys`` must wait; 0 when they may try now."""
        now = self.clock()
        waits = [0.0]
        for key in keys:
            recent = self._recent(key, now)
            if len(recent) >= self.max_failures:
                waits.append(recent[0] + self.window_seconds - now)
        return max(waits)

    def failed(self, keys: Iterable[str]) -> None:
        """Count one failed login against each of ``keys``."""
        now = self.clock()
        for key in keys:
            self._recent(key, now).append(now)

    def succeeded(self, keys: Iterable[str]) -> None:
        """Forget the failures of ``keys`` (the user proved who they are)."""
        for key in keys:
            self._failures.pop(key, None)

    def _recent(self, key: str, now: float) -> deque[float]:
        recent = self._failures.setdefault(key, deque())
        while recent and recent[0] <= now - self.window_seconds:
            recent.popleft()
        return recent


def login_keys(name: str, peer: str | None) -> tuple[str, ...]:
    """The counters a login attempt touches: its user name and its client address."""
    keys = [f"name:{name.strip().lower()}"]
    if peer:
        keys.append(f"peer:{peer}")
    return tuple(keys)


def minutes(seconds: float) -> int:
    """Whole minutes, rounded up, for a message."""
    return max(1, math.ceil(seconds / 60))
