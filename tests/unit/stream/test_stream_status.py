"""Stream status: rates over a sliding window, snapshots, the paused display."""

from __future__ import annotations

import json

import pytest

from facewatch.stream.status import RateMeter, StreamStats, StreamStatus


def _meter(times: list[float], **kwargs: float) -> RateMeter:
    meter = RateMeter(**kwargs)  # type: ignore[arg-type]
    for t in times:
        meter.add(t)
    return meter


@pytest.mark.parametrize(
    ("times", "now", "expected"),
    [
        pytest.param([], 10.0, 0.0, id="nothing"),
        pytest.param([i / 30 for i in range(300)], 10.0, 30.0, id="steady-30"),
        pytest.param([i / 10 for i in range(20)], 2.0, 10.0, id="young-stream"),
        pytest.param([0.0], 0.0, 1.0, id="first-frame-no-spike"),
        pytest.param([i / 30 for i in range(300)], 12.5, 15.0, id="stalled-decays"),
        pytest.param([i / 30 for i in range(300)], 30.0, 0.0, id="stalled-long-ago"),
        pytest.param([100 + i / 25 for i in range(250)], 110.0, 25.0, id="late-start"),
    ],
)
def test_rate_meter(times: list[float], now: float, expected: float) -> None:
    assert _meter(times).rate(now) == pytest.approx(expected, rel=0.05)


def test_rate_meter_memory_is_bounded() -> None:
    meter = _meter([i / 10_000 for i in range(50_000)], max_events=1000)
    assert meter.rate(5.0) == pytest.approx(10_000, rel=0.01)
    assert len(meter._times) == 1000


@pytest.mark.parametrize(
    ("state", "paused", "shown"),
    [
        ("running", False, "running"),
        ("running", True, "paused"),
        ("reconnecting", True, "paused"),
        ("starting", True, "paused"),
        ("ended", True, "ended"),
        ("stopped", True, "stopped"),
    ],
)
def test_paused_is_shown_unless_over(state: str, paused: bool, shown: str) -> None:
    stats = StreamStats()
    stats.state = state  # type: ignore[assignment]
    assert stats.snapshot(stream_id="s", name="s", url="u", paused=paused).state == shown


def test_snapshot_and_as_dict() -> None:
    stats = StreamStats()
    stats.frames_decoded = 10
    stats.resolution_wh = (640, 480)
    stats.drop("fps_cap", 3)
    stats.drop("queue_full")
    stats.error("cannot open rtsp://***@cam/1: Connection refused")
    status = stats.snapshot(stream_id="cam", name="Cam", url="rtsp://***@cam/1", paused=False)
    assert isinstance(status, StreamStatus)
    assert status.dropped == {"fps_cap": 3, "queue_full": 1}
    assert status.last_error_at is not None and status.lag_s is None
    data = status.as_dict()
    assert data["resolution_wh"] == [640, 480] and data["state"] == "starting"
    json.dumps(data)  # plain values only
    stats.drop("fps_cap")
    assert status.dropped["fps_cap"] == 3  # a snapshot does not change afterwards
