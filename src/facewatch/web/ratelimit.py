"""Login throttling: a sliding-window count of failures per key, with no I/O and a given clock.

:class:`SlidingWindowLimiter` refuses a key once it has ``limit`` failures in the last
``window_s`` seconds, and says when the oldest of them leaves the window. It keeps at most the
last ``limit`` failure times of at most ``max_keys`` keys: keys whose failures all left the
window go first, then the least recently failed ones, so a flood of names cannot grow memory.

:class:`LoginThrottle` applies one to logins, keyed by user name and by client address.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable

DEFAULT_MAX_KEYS = 10_000


class SlidingWindowLimiter:
    """At most ``limit`` failures per key within any ``window_s`` seconds.

    Args:
        limit: failures a key may have in the window; one more is refused.
        window_s: length of the window, seconds.
        max_keys: keys remembered at most.
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        limit: int,
        window_s: float,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, got {window_s}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, got {max_keys}")
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self._clock = clock
        # Least recently failed first; each deque holds a key's last `limit` failure times.
        self._failures: OrderedDict[Hashable, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        """Keys remembered now."""
        return len(self._failures)

    def retry_after(self, key: Hashable) -> float | None:
        """Seconds until ``key`` may try again; None when it may try now."""
        times = self._failures.get(key)
        if times is None:
            return None
        now = self._clock()
        self._drop_old(times, now)
        if not times:
            del self._failures[key]
            return None
        if len(times) < self.limit:
            return None
        return times[0] + self.window_s - now

    def fail(self, key: Hashable) -> None:
        """Count one failure of ``key`` now."""
        now = self._clock()
        times = self._failures.get(key)
        if times is None:
            self._make_room(now)
            times = self._failures[key] = deque(maxlen=self.limit)
        else:
            self._failures.move_to_end(key)
        times.append(now)

    def forgive(self, key: Hashable) -> None:
        """Take back ``key``'s latest failure."""
        times = self._failures.get(key)
        if times:
            times.pop()
        if times is not None and not times:
            del self._failures[key]

    def clear(self, key: Hashable) -> None:
        """Forget ``key``'s failures."""
        self._failures.pop(key, None)

    def _drop_old(self, times: deque[float], now: float) -> None:
        while times and times[0] <= now - self.window_s:
            times.popleft()

    def _make_room(self, now: float) -> None:
        # The front failed least recently: when its last failure has left the window, the key
        # no longer limits anything. Otherwise the oldest key is given up to make room.
        while self._failures:
            key, times = next(iter(self._failures.items()))
            if times[-1] > now - self.window_s and len(self._failures) < self.max_keys:
                return
            del self._failures[key]


class LoginThrottle:
    """Failed logins counted per user name and per client address.

    A login is refused while either has ``limit`` failures in the window. Each attempt counts
    as a failure *before* its password is checked, so guesses sent in parallel are counted
    too; a success then takes its attempt back from the address and clears the user name's
    count (not the address's, so one good account does not unlock guessing the others).
    """

    def __init__(
        self,
        limit: int,
        window_s: float,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limiter = SlidingWindowLimiter(limit, window_s, max_keys=max_keys, clock=clock)

    def retry_after(self, username: str, address: str | None) -> int | None:
        """Whole seconds (at least 1) until this login may be tried; None when it may be now."""
        waits = [
            wait
            for key in self._keys(username, address)
            if (wait := self._limiter.retry_after(key)) is not None
        ]
        if not waits:
            return None
        return max(1, math.ceil(max(waits)))

    def attempt(self, username: str, address: str | None) -> int | None:
        """Start a login: None when it may go on (counted as failed until :meth:`succeeded`),
        else the whole seconds to wait (and nothing is counted)."""
        wait = self.retry_after(username, address)
        if wait is not None:
            return wait
        for key in self._keys(username, address):
            self._limiter.fail(key)
        return None

    def succeeded(self, username: str, address: str | None) -> None:
        """The login started by :meth:`attempt` let the user in."""
        self._limiter.clear(("user", _user_key(username)))
        if address:
            self._limiter.forgive(("address", address))

    def cancel(self, username: str, address: str | None) -> None:
        """The login started by :meth:`attempt` did not get to check a password: uncount it."""
        for key in self._keys(username, address):
            self._limiter.forgive(key)

    @staticmethod
    def _keys(username: str, address: str | None) -> list[tuple[str, str]]:
        keys = [("user", _user_key(username))]
        if address:
            keys.append(("address", address))
        return keys


def _user_key(username: str) -> str:
    # Names are compared lower-case by the accounts, so "Alice" and "alice" share a count.
    return username.strip().lower()[:64]
