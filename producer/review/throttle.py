"""Failed logins counted per user name and client address, so passwords cannot be guessed at
the speed of the network, and nobody can lock a user out by failing on their behalf.

Three counters: one name from one address (five failures in 15 minutes hold that pair back
until the first is 15 minutes old), one address over all names (twenty), and one name over all
addresses. The last only slows a name down: past five failures each attempt waits a delay that
doubles with every failure, up to a minute, after the name's latest failure. A guesser spread
over many addresses then gets about one guess a minute, while the name's owner, whose own
address has not failed, still logs in, at worst a minute later.

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

MAX_FAILURES = 5  # per name from one address, and free failures of a name before delays
# Per client address: higher, since everyone behind one office NAT shares it.
MAX_ADDRESS_FAILURES = 20
WINDOW_SECONDS = 15 * 60
MAX_NAME_DELAY = 60.0  # the longest a name waits after its latest failure
# Names and addresses remembered at most; the oldest are forgotten first, so random names
# cannot grow the process without bound.
MAX_KEYS = 10_000
NAME, ADDRESS, PAIR = "name:", "peer:", "pair:"


class LoginThrottle:
    """Holds back logins after too many recent failures of a name, an address or both.

    Args:
        max_failures: failures of one name from one address within ``window_seconds`` after
            which that pair waits; also the failures of a name before it is slowed down.
        max_address_failures: the failures of one client address after which it waits.
        window_seconds: how long a failure counts.
        max_name_delay: the longest delay between attempts of a name that failed often.
        clock: seconds, monotonic (tests pass their own).
    """

    def __init__(
        self,
        max_failures: int = MAX_FAILURES,
        max_address_failures: int = MAX_ADDRESS_FAILURES,
        window_seconds: float = WINDOW_SECONDS,
        max_name_delay: float = MAX_NAME_DELAY,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.limits = {NAME: max_failures, ADDRESS: max_address_failures, PAIR: max_failures}
        self.window_seconds = window_seconds
        self.max_name_delay = max_name_delay
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
        """The reserved attempt was right: forget the name's failures (from anywhere and from
        this address), and take this attempt back from the address's count (its earlier
        failures keep counting)."""
        for key in keys:
            recent = self._failures.get(key)
            if recent is None:
                continue
            if not key.startswith(ADDRESS) or len(recent) <= 1:
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
        kind = key[: key.index(":") + 1]
        limit = self.limits[kind]
        if len(recent) < limit:
            return 0.0
        if kind == NAME:
            # A delay, never a lock: the owner gets in once it has passed.
            delay = min(2.0 ** (len(recent) - limit), self.max_name_delay)
            return max(0.0, recent[-1] + delay - now)
        return recent[0] + self.window_seconds - now


def login_keys(name: str, peer: str | None) -> tuple[str, ...]:
    """The counters a login attempt touches: its user name, its client address and both.

    Args:
        name: the name typed (case and surrounding blanks do not make another counter).
        peer: the client's address; None when it is unknown or a proxy many people share.
    """
    name = name.strip().lower()
    keys = [f"{NAME}{name}"]
    if peer:
        keys += [f"{ADDRESS}{peer}", f"{PAIR}{peer} {name}"]
    return tuple(keys)


def wait_text(seconds: float) -> str:
    """A wait for a message: whole seconds under a minute, else whole minutes, rounded up."""
    if seconds < 60:
        return f"{max(1, math.ceil(seconds))} s"
    return f"{math.ceil(seconds / 60)} min"
