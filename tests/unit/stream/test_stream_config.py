"""StreamConfig: what it accepts, what it refuses (naming the field), what it implies."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from facewatch.stream.config import StreamConfig


def test_defaults() -> None:
    config = StreamConfig(url="rtsp://cam/1")
    assert config.enabled and config.fps_cap is None and config.rtsp_transport == "tcp"
    assert (config.open_timeout_s, config.read_timeout_s) == (10.0, 5.0)
    assert (config.reconnect_initial_s, config.reconnect_max_s) == (0.5, 30.0)


@pytest.mark.parametrize(
    ("values", "field", "expected"),
    [
        ({"detection_size": "640,480"}, "detection_size", (640, 480)),
        ({"detection_size": "320x320"}, "detection_size", (320, 320)),
        ({"detection_size": [1280, 736]}, "detection_size", (1280, 736)),
        ({"roi": "0,0.25,1,0.75"}, "roi", (0.0, 0.25, 1.0, 0.75)),
        ({"roi": [0.1, 0.1, 0.9, 0.9]}, "roi", (0.1, 0.1, 0.9, 0.9)),
        ({"url": "  rtsp://cam/1 "}, "url", "rtsp://cam/1"),
        ({"name": " Front door "}, "name", "Front door"),
        ({"fps_cap": 2.5}, "fps_cap", 2.5),
        ({"rtsp_transport": "udp"}, "rtsp_transport", "udp"),
    ],
)
def test_accepts(values: dict[str, Any], field: str, expected: Any) -> None:
    config = StreamConfig.model_validate({"url": "rtsp://cam/1", **values})
    assert getattr(config, field) == expected


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"url": ""}, "url"),
        ({"url": "   "}, "url"),
        ({"url": "ftp://host/clip.mp4"}, "url"),
        ({"name": "  "}, "name"),
        ({"fps_cap": 0}, "fps_cap"),
        ({"fps_cap": -5}, "fps_cap"),
        ({"detection_size": (641, 480)}, "detection_size"),
        ({"detection_size": "640"}, "detection_size"),
        ({"detection_size": (0, 0)}, "detection_size"),
        ({"roi": (0.5, 0.0, 0.4, 1.0)}, "roi"),  # x1 >= x2
        ({"roi": (0.0, 0.5, 1.0, 0.5)}, "roi"),  # y1 >= y2
        ({"roi": (0.0, 0.0, 1.5, 1.0)}, "roi"),  # not a fraction
        ({"roi": "0,0,1"}, "roi"),
        ({"rtsp_transport": "http"}, "rtsp_transport"),
        ({"open_timeout_s": 0}, "open_timeout_s"),
        ({"read_timeout_s": -1}, "read_timeout_s"),
        ({"reconnect_initial_s": 0}, "reconnect_initial_s"),
        ({"reconnect_initial_s": 5, "reconnect_max_s": 1}, "reconnect_max_s"),
        ({"enabled": "sometimes"}, "enabled"),
        ({"fps": 10}, "fps"),  # unknown keys are refused, not ignored
    ],
)
def test_refuses_naming_the_field(values: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        StreamConfig.model_validate({"url": "rtsp://cam/1", **values})
    assert [error["loc"][0] for error in caught.value.errors()] == [field]


def test_frozen() -> None:
    config = StreamConfig(url="rtsp://cam/1")
    with pytest.raises(ValidationError):
        config.fps_cap = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("values", "kind", "paced", "lossless", "endless"),
    [
        ({"url": "rtsp://cam/1"}, "rtsp", False, False, True),
        ({"url": "rtsps://cam/1"}, "rtsp", False, False, True),
        ({"url": "http://cam/video.mjpg"}, "http", False, False, True),
        ({"url": "webrtc"}, "webrtc", False, False, True),
        ({"url": "clip.mp4"}, "file", False, True, False),
        ({"url": "file:///videos/clip.mp4"}, "file", False, True, False),
        ({"url": "clip.mp4", "realtime": True}, "file", True, False, False),
        ({"url": "clip.mp4", "loop": True}, "file", True, False, True),  # loop: paced by default
        ({"url": "clip.mp4", "loop": True, "realtime": False}, "file", False, True, True),
        ({"url": "rtsp://cam/1", "realtime": True}, "rtsp", False, False, True),  # files only
    ],
)
def test_source_behaviour(
    values: dict[str, Any], kind: str, paced: bool, lossless: bool, endless: bool
) -> None:
    config = StreamConfig.model_validate(values)
    assert (config.kind, config.paced, config.lossless, config.endless) == (
        kind,
        paced,
        lossless,
        endless,
    )
    assert config.live is not lossless
