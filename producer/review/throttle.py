"""Failed logins counted per user name and per client address, so passwords cannot be guessed
at the speed of the network.

An attempt is counted before its password is checked and forgiven when it was right, so
requests sent all at once cannot slip past the limit while their hashes are computed. The
counts live in the studio's process (one uvicorn process serves the studio): a restart
forgets them, which gives a guesser one more round.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable

MAX_FAILURES = 5  # per user name
# Per client address: higher, since everyone behind one office NAT shares it.
MAX_ADDRESS_FAILURES = 20
WINDOW_SECONDS = 15 * 60
# Names and addresses remembered at most; the oldest are forgotten first, so random names
# cannot grow the process without bound.
MAX_KEYS = 10_000
NAME, ADDRESS = "name:", "peer:"


class LoginThrottle:
    """Holds back logins for a name or an address after too many recent failures.

    Args:
        max_failures: failures of one name within ``window_seconds`` after which it waits.
        max_address_failures: the same for one client address.
        window_seconds: how long a failure counts.
        clock: seconds, monotonic (tests pass their own).
    """

    def __init__(
        self,
        max_failures: int = MAX_FAILURES,
        max_address_failures: int = MAX_ADDRESS_FAILURES,
        window_seconds: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.limits = {NAME: max_failures, ADDRESS: max_address_failures}
        self.window_seconds = window_seconds
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def reserve(self, keys: Iterable[str]) -> float:
        """Count an attempt against ``keys`` as failed until :meth:`succeeded` says otherwise.

        Returns:
            0 when the attempt may go ahead (and is counted); else the seconds to wait
            (nothing is counted).
        """
        keys, now = list(keys), self.clock()
        wait = max((self._wait(key, now) for key in keys), default=0.0)
        if wait > 0:
            return wait
        for key in keys:
            self._failures.setdefault(key, deque()).append(now)
            self._failures.move_to_end(key)
        while len(self._failures) > MAX_KEYS:
            self._failures.popitem(last=False)
        return 0.0

    def succeeded(self, keys: Iterable[str]) -> None:
        """The reserved attempt was right: forget the name's failures, and take this attempt
        back from the address's count (its earlier failures keep counting)."""
        for key in keys:
            recent = self._failures.get(key)
            if recent is None:
                continue
            if key.startswith(NAME) or len(recent) <= 1:
                del self._failures[key]
            else:
                recent.pop()

    def _wait(self, key: str, now: float) -> float:
        recent = self._failures.get(key)
        if recent is None:
            return 0.0
        while recent and recent[0] <= now - self.window_seconds:
            recent.popleft()
        if not recent:
            del self._failures[key]
            return 0.0
        limit = self.limits[ADDRESS if key.startswith(ADDRESS) else NAME]
        return recent[0] + self.window_seconds - now if len(recent) >= limit else 0.0


def login_keys(name: str, peer: str | None) -> tuple[str, ...]:
    """The counters a login attempt touches: its user name and its client address."""
    keys = [f"{NAME}{name.strip().lower()}"]
    if peer:
        keys.append(f"{ADDRESS}{peer}")
    return tuple(keys)


def minutes(seconds: float) -> int:
    """Whole minutes, rounded up, for a message."""
    return max(1, math.ceil(seconds / 60))
