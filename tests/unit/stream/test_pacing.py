"""Timing rules: monotonic timestamps, real-time pacing, the fps cap."""

from __future__ import annotations

import pytest

from facewatch.stream.pacing import FpsCap, Pacer, PtsClock

SEGMENT = "segment"


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        pytest.param([0.0, 0.1, 0.2], [0.0, 0.1, 0.2], id="in-order"),
        pytest.param([5.0, 5.1], [0.0, 0.1], id="starts-at-zero-whatever-the-origin"),
        pytest.param([0.0, 0.1, 0.2, 0.19, 0.3], [0.0, 0.1, 0.2, 0.2, 0.3], id="jitter-clamped"),
        # A looping file starts over: it continues one learned interval after the last frame.
        pytest.param([0.0, 0.1, 0.2, SEGMENT, 0.0, 0.1], [0.0, 0.1, 0.2, 0.3, 0.4], id="loop"),
        # A reconnected camera restarts its clock far ahead: still continuous.
        pytest.param([0.0, 0.1, SEGMENT, 900.0, 900.1], [0.0, 0.1, 0.2, 0.3], id="reconnect"),
        # A source that restarts on its own (no segment call): a big step back is a new segment.
        pytest.param([0.0, 0.1, 0.2, 0.3, 0.0, 0.1], [0.0, 0.1, 0.2, 0.3, 0.4, 0.5], id="wrap"),
        pytest.param([None, None, 1.0], [0.0, 1 / 30, 1.0], id="no-timestamps"),
        pytest.param([0.0, 0.1, None, 0.3], [0.0, 0.1, 0.2, 0.3], id="one-missing"),
    ],
)
def test_pts_clock(inputs: list[float | str | None], expected: list[float]) -> None:
    clock = PtsClock()
    got = []
    for value in inputs:
        if value == SEGMENT:
            clock.new_segment()
        else:
            assert not isinstance(value, str)
            got.append(clock(value))
    assert got == pytest.approx(expected, abs=1e-3)
    assert all(b >= a for a, b in zip(got, got[1:], strict=False))


# (pts_s, now) -> seconds to wait; the first frame anchors pts to the clock.
@pytest.mark.parametrize(
    ("frames", "expected"),
    [
        pytest.param([(0.0, 100.0), (0.1, 100.0), (0.2, 100.05)], [0, 0.1, 0.15], id="ahead"),
        pytest.param([(0.0, 100.0), (0.1, 100.1), (0.2, 100.25)], [0, 0, 0], id="late-by-a-bit"),
        pytest.param([(3.0, 0.0), (3.5, 0.2)], [0, 0.3], id="origin-not-zero"),
        # Far behind (a slow consumer): re-anchor instead of bursting to catch up.
        pytest.param([(0.0, 0.0), (0.1, 2.0), (0.2, 2.0)], [0, 0, 0.1], id="re-anchor-behind"),
        # A gap of an hour in the timestamps: re-anchor instead of sleeping an hour.
        pytest.param([(0.0, 0.0), (3600.0, 0.1), (3600.1, 0.1)], [0, 0, 0.1], id="re-anchor-gap"),
    ],
)
def test_pacer(frames: list[tuple[float, float]], expected: list[float]) -> None:
    pacer = Pacer()
    assert [pacer.wait_s(pts, now) for pts, now in frames] == pytest.approx(expected)


def _stamps(fps: float, seconds: float, jitter_s: float = 0.0) -> list[float]:
    n = round(fps * seconds)
    return [i / fps + (jitter_s if i % 2 else -jitter_s) * (i > 0) for i in range(n)]


@pytest.mark.parametrize(
    ("source_fps", "cap", "jitter_s", "kept"),
    [
        (30, 10, 0.0, 30),  # every third frame of 3 s
        (30, 15, 0.0, 45),  # every other frame
        (30, 20, 0.0, 60),  # two of three
        (30, 30, 0.0, 90),  # all
        (30, 60, 0.0, 90),  # a cap above the source rate keeps everything
        (30, 1, 0.0, 3),
        (25, 10, 0.0, 30),
        (30, 10, 0.004, 30),  # timestamps jittering by 4 ms do not change the count
        (30, 15, 0.004, 45),
    ],
)
def test_fps_cap_counts(source_fps: float, cap: float, jitter_s: float, kept: int) -> None:
    limiter = FpsCap(cap)
    admitted = [t for t in _stamps(source_fps, 3.0, jitter_s) if limiter.admit(t)]
    assert len(admitted) == kept


@pytest.mark.parametrize(("source_fps", "cap"), [(30, 10), (30, 20), (25, 10), (60, 7)])
def test_fps_cap_spreads_evenly(source_fps: float, cap: float) -> None:
    limiter = FpsCap(cap)
    admitted = [t for t in _stamps(source_fps, 4.0) if limiter.admit(t)]
    gaps = [b - a for a, b in zip(admitted, admitted[1:], strict=False)]
    # No two kept frames closer than a source frame below the cap interval, none further
    # than a source frame above it.
    assert min(gaps) >= 1 / cap - 1 / source_fps - 1e-9
    assert max(gaps) <= 1 / cap + 1 / source_fps + 1e-9


def test_fps_cap_after_a_gap_does_not_burst() -> None:
    limiter = FpsCap(10)
    kept = [t for t in [0.0, 0.1, 5.0, 5.033, 5.066, 5.1] if limiter.admit(t)]
    assert kept == [0.0, 0.1, 5.0, 5.1]


def test_fps_cap_must_be_positive() -> None:
    with pytest.raises(ValueError):
        FpsCap(0)
