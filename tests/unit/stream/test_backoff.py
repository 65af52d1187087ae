"""Reconnect delays: exponential, fully jittered, capped, reset after a healthy run."""

from __future__ import annotations

import pytest

from facewatch.stream.backoff import RESET_AFTER_S, Backoff, backoff_delay


@pytest.mark.parametrize(
    ("attempt", "initial_s", "max_s", "jitter", "expected"),
    [
        (0, 0.5, 30.0, 0.0, 0.5),  # the first retry waits exactly the initial delay
        (0, 0.5, 30.0, 0.99, 0.5),
        (1, 0.5, 30.0, 0.0, 0.5),  # the floor never moves
        (1, 0.5, 30.0, 1.0, 1.0),  # the ceiling doubles
        (3, 0.5, 30.0, 0.5, 2.25),  # halfway between 0.5 and 4
        (6, 0.5, 30.0, 1.0, 30.0),  # 32 capped at the maximum
        (10, 0.5, 30.0, 0.0, 0.5),
        (10_000, 0.5, 30.0, 1.0, 30.0),  # days of failures do not overflow
        (4, 2.0, 2.0, 0.7, 2.0),  # initial == max: a fixed delay
    ],
)
def test_backoff_delay(
    attempt: int, initial_s: float, max_s: float, jitter: float, expected: float
) -> None:
    assert backoff_delay(attempt, initial_s, max_s, jitter) == pytest.approx(expected)


@pytest.mark.parametrize(("attempt", "jitter"), [(-1, 0.5), (0, -0.1), (0, 1.5)])
def test_backoff_delay_rejects_bad_arguments(attempt: int, jitter: float) -> None:
    with pytest.raises(ValueError):
        backoff_delay(attempt, 0.5, 30.0, jitter)


# Events: ("fail", now) returns a delay (jitter 1.0: the ceiling), ("open", now) returns None.
@pytest.mark.parametrize(
    ("events", "expected"),
    [
        pytest.param(
            [("fail", 0), ("fail", 1), ("fail", 2), ("fail", 4)],
            [0.5, 1.0, 2.0, 4.0],
            id="doubles-while-failing",
        ),
        pytest.param(
            [("fail", 0), ("fail", 1), ("open", 2), ("fail", 3)],
            [0.5, 1.0, None, 2.0],
            id="short-run-keeps-growing",
        ),
        pytest.param(
            [("fail", 0), ("fail", 1), ("fail", 2), ("open", 5), ("fail", 5 + RESET_AFTER_S)],
            [0.5, 1.0, 2.0, None, 0.5],
            id="healthy-run-resets",
        ),
        pytest.param(
            [("fail", t) for t in range(8)],
            [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0],
            id="capped",
        ),
    ],
)
def test_backoff_sequence(events: list[tuple[str, float]], expected: list[float | None]) -> None:
    backoff = Backoff(initial_s=0.5, max_s=8.0)
    got: list[float | None] = []
    for kind, now in events:
        if kind == "open":
            backoff.opened(now)
            got.append(None)
        else:
            got.append(backoff.failed(now, jitter=1.0))
    assert got == pytest.approx(expected)
