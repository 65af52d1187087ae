"""The login limiter by tables of cases, on a clock the test moves."""

from __future__ import annotations

import pytest

from facewatch.web.ratelimit import LoginThrottle, SlidingWindowLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# Each case: (limit, window_s, failure times, the time asked at, the expected retry_after).
LIMITER_CASES = [
    ("no failures", 3, 60.0, [], 0.0, None),
    ("under the limit", 3, 60.0, [0.0, 1.0], 2.0, None),
    ("at the limit", 3, 60.0, [0.0, 1.0, 2.0], 2.0, 58.0),
    ("the oldest leaves the window", 3, 60.0, [0.0, 1.0, 2.0], 60.0, None),
    ("just before the oldest leaves", 3, 60.0, [0.0, 1.0, 2.0], 59.5, 0.5),
    ("only the last failures count", 3, 60.0, [0.0, 30.0, 40.0, 50.0], 61.0, 29.0),
    ("old failures forgotten", 2, 10.0, [0.0, 1.0, 20.0], 21.0, None),
    ("limit of one", 1, 5.0, [3.0], 4.0, 4.0),
    ("limit of one, later", 1, 5.0, [3.0], 8.0, None),
]


@pytest.mark.parametrize(
    ("limit", "window_s", "failures", "asked_at", "expected"),
    [case[1:] for case in LIMITER_CASES],
    ids=[case[0] for case in LIMITER_CASES],
)
def test_retry_after(
    limit: int, window_s: float, failures: list[float], asked_at: float, expected: float | None
) -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(limit, window_s, clock=clock)
    for moment in failures:
        clock.now = 1000.0 + moment
        limiter.fail("key")
    clock.now = 1000.0 + asked_at
    assert limiter.retry_after("key") == (None if expected is None else pytest.approx(expected))
    assert limiter.retry_after("another key") is None


def test_keys_are_counted_apart_and_cleared() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(2, 60, clock=clock)
    for key in ("a", "a", "b"):
        limiter.fail(key)
    assert limiter.retry_after("a") == 60
    assert limiter.retry_after("b") is None
    limiter.forgive("a")
    assert limiter.retry_after("a") is None
    limiter.fail("a")
    limiter.clear("a")
    assert limiter.retry_after("a") is None
    assert len(limiter) == 1


@pytest.mark.parametrize(
    ("max_keys", "keys", "expired_after", "expected_kept"),
    [
        # Full of live keys: the least recently failed one goes.
        (3, ["a", "b", "c", "d"], None, {"b", "c", "d"}),
        (3, ["a", "b", "a", "c", "d"], None, {"a", "c", "d"}),
        # Keys whose failures all left the window go first, however many there are.
        (3, ["a", "b", "c", "d"], 2, {"c", "d"}),
        (1, ["a", "b", "c"], None, {"c"}),
    ],
)
def test_memory_is_bounded(
    max_keys: int, keys: list[str], expired_after: int | None, expected_kept: set[str]
) -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(1, 60, max_keys=max_keys, clock=clock)
    for i, key in enumerate(keys):
        if expired_after is not None and i == expired_after:
            clock.now += 61  # the failures so far leave the window
        limiter.fail(key)
    assert len(limiter) <= max_keys
    kept = {key for key in set(keys) if limiter.retry_after(key) is not None}
    assert kept == expected_kept


def test_a_flood_of_names_stays_within_bounds() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(5, 60, max_keys=100, clock=clock)
    for i in range(10_000):
        limiter.fail(f"user{i}")
    assert len(limiter) == 100
    assert limiter.retry_after("user9999") is None  # one failure of five
    assert limiter.retry_after("user0") is None  # evicted


@pytest.mark.parametrize(
    ("limit", "window_s", "max_keys"), [(0, 60.0, 10), (1, 0.0, 10), (1, -1.0, 10), (1, 1.0, 0)]
)
def test_nonsense_limits_are_refused(limit: int, window_s: float, max_keys: int) -> None:
    with pytest.raises(ValueError):
        SlidingWindowLimiter(limit, window_s, max_keys=max_keys)


# Login steps: (user, address, outcome) where outcome is "fail" (wrong password), "ok", or
# "refused" (the throttle answers before any password is checked); "+N" moves the clock.
THROTTLE_CASES = [
    (
        "a user name is locked after three failures, whatever the address",
        [
            ("alice", "10.0.0.1", "fail"),
            ("alice", "10.0.0.2", "fail"),
            ("alice", "10.0.0.3", "fail"),
            ("alice", "10.0.0.4", "refused"),
        ],
    ),
    (
        "an address is locked after three failures, whatever the name",
        [
            ("a", "10.0.0.1", "fail"),
            ("b", "10.0.0.1", "fail"),
            ("c", "10.0.0.1", "fail"),
            ("d", "10.0.0.1", "refused"),
            ("d", "10.0.0.2", "ok"),
        ],
    ),
    (
        "a success clears the user name's count",
        [
            ("alice", "10.0.0.1", "fail"),
            ("alice", "10.0.0.2", "fail"),
            ("alice", "10.0.0.3", "ok"),
            ("alice", "10.0.0.4", "fail"),
            ("alice", "10.0.0.5", "fail"),
            ("alice", "10.0.0.6", "ok"),
        ],
    ),
    (
        "a success does not clear the address's failures",
        [
            ("a", "10.0.0.1", "fail"),
            ("b", "10.0.0.1", "fail"),
            ("c", "10.0.0.1", "ok"),
            ("d", "10.0.0.1", "fail"),
            ("e", "10.0.0.1", "refused"),
        ],
    ),
    (
        "names differing in case share a count",
        [
            ("Alice", "1", "fail"),
            ("ALICE", "2", "fail"),
            (" alice ", "3", "fail"),
            ("alice", "4", "refused"),
        ],
    ),
    (
        "the lock ends with the window",
        [
            ("alice", "1", "fail"),
            ("alice", "1", "fail"),
            ("alice", "1", "fail"),
            ("+59", "", ""),
            ("alice", "1", "refused"),
            ("+1", "", ""),
            ("alice", "1", "ok"),
        ],
    ),
    (
        "no address: counted by user name only",
        [("a", None, "fail"), ("b", None, "fail"), ("c", None, "fail"), ("d", None, "ok")],
    ),
]


@pytest.mark.parametrize(
    "steps", [case[1] for case in THROTTLE_CASES], ids=[case[0] for case in THROTTLE_CASES]
)
def test_login_throttle(steps: list[tuple[str, str | None, str]]) -> None:
    clock = FakeClock()
    throttle = LoginThrottle(3, 60, clock=clock)
    for user, address, outcome in steps:
        if user.startswith("+"):
            clock.now += float(user[1:])
            continue
        wait = throttle.attempt(user, address)
        if outcome == "refused":
            assert wait is not None and 1 <= wait <= 60, (user, address)
            continue
        assert wait is None, (user, address, outcome)
        if outcome == "ok":
            throttle.succeeded(user, address)


def test_an_attempt_is_counted_before_its_password_is_checked() -> None:
    # Guesses sent at once must not all pass the check before the first one has failed.
    clock = FakeClock()
    throttle = LoginThrottle(3, 60, clock=clock)
    started = [throttle.attempt("alice", f"10.0.0.{i}") for i in range(5)]
    assert started[:3] == [None, None, None]
    assert started[3] == started[4] == 60


def test_a_cancelled_attempt_is_not_counted() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(2, 60, clock=clock)
    for _ in range(5):
        assert throttle.attempt("alice", "10.0.0.1") is None
        throttle.cancel("alice", "10.0.0.1")
    assert throttle.retry_after("alice", "10.0.0.1") is None


def test_retry_after_is_whole_seconds_and_at_least_one() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(1, 10, clock=clock)
    throttle.attempt("alice", None)
    clock.now += 9.9
    assert throttle.retry_after("alice", None) == 1
    clock.now -= 5.4
    assert throttle.retry_after("alice", None) == 6
