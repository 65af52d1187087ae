"""Reconnect delays: exponential backoff with full jitter, reset after a healthy run. No I/O.

Full jitter spreads the retries of many cameras that failed together (a switch reboot) over
the whole interval instead of having them all knock again at the same instant.
"""

from __future__ import annotations

from dataclasses import dataclass

#: A source that stayed open this long is healthy again: the next failure starts from the
#: initial delay rather than where the last outage left off.
RESET_AFTER_S = 10.0


def backoff_delay(attempt: int, initial_s: float, max_s: float, jitter: float) -> float:
    """The delay before reconnect ``attempt`` (0 for the first), in seconds.

    Args:
        attempt: failures in a row before this one, from 0.
        initial_s: the smallest delay, > 0.
        max_s: the largest delay, >= ``initial_s``.
        jitter: a uniform random number in [0, 1).

    Returns:
        A delay drawn uniformly from ``[initial_s, min(max_s, initial_s * 2**attempt)]``.
    """
    if attempt < 0 or not 0.0 <= jitter <= 1.0:
        raise ValueError("attempt must be >= 0 and jitter in [0, 1]")
    # Cap the exponent so a source that failed for days cannot overflow the float.
    ceiling = min(max_s, initial_s * 2.0 ** min(attempt, 60))
    return initial_s + (ceiling - initial_s) * jitter


@dataclass(slots=True)
class Backoff:
    """The reconnect policy of one stream.

    Call :meth:`opened` when the source opens and :meth:`failed` when it fails; ``failed``
    returns how long to wait before the next attempt.
    """

    initial_s: float
    max_s: float
    reset_after_s: float = RESET_AFTER_S
    attempt: int = 0
    opened_at: float | None = None

    def opened(self, now: float) -> None:
        """The source opened at ``now`` (monotonic seconds)."""
        self.opened_at = now

    def failed(self, now: float, jitter: float) -> float:
        """The source failed at ``now``; the delay before the next attempt, in seconds."""
        if self.opened_at is not None and now - self.opened_at >= self.reset_after_s:
            self.attempt = 0
        self.opened_at = None
        delay = backoff_delay(self.attempt, self.initial_s, self.max_s, jitter)
        self.attempt += 1
        return delay
