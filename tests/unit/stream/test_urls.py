"""Stream URLs: their kind, their file path, and redaction of credentials."""

from __future__ import annotations

from pathlib import Path

import pytest

from facewatch.stream.urls import file_path, redact_url, source_kind


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("rtsp://admin:s3cret@10.0.0.5:554/stream1", "rtsp://***@10.0.0.5:554/stream1"),
        ("rtsps://user:p%40ss@cam.local/live", "rtsps://***@cam.local/live"),
        ("rtsp://onlyuser@cam/live", "rtsp://***@cam/live"),
        ("http://u:p@cam/video.mjpg?fps=5", "http://***@cam/video.mjpg?fps=5"),
        (
            "http://cam/cgi?user=admin&password=hunter2&ch=1",
            "http://cam/cgi?user=***&password=***&ch=1",
        ),
        ("http://cam/snap?token=abc#frag", "http://cam/snap?token=***#frag"),
        ("rtsp://cam/path@with-at", "rtsp://cam/path@with-at"),  # '@' after the host: no userinfo
        ("rtsp://10.0.0.5/stream1", "rtsp://10.0.0.5/stream1"),
        ("/videos/clip.mp4", "/videos/clip.mp4"),
        ("webrtc", "webrtc"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("rtsp://cam/1", "rtsp"),
        ("RTSP://cam/1", "rtsp"),
        ("rtsps://cam/1", "rtsp"),
        ("http://cam/v.mjpg", "http"),
        ("https://cam/v.mjpg", "http"),
        ("file:///videos/a.mp4", "file"),
        ("/videos/a.mp4", "file"),
        ("a.mp4", "file"),
        ("C:\\videos\\a.mp4", "file"),
        ("webrtc", "webrtc"),
    ],
)
def test_source_kind(url: str, kind: str) -> None:
    assert source_kind(url) == kind


@pytest.mark.parametrize("url", ["", "  ", "ftp://host/a.mp4", "udp://239.0.0.1:1234"])
def test_source_kind_refuses(url: str) -> None:
    with pytest.raises(ValueError):
        source_kind(url)


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("/videos/a.mp4", Path("/videos/a.mp4")),
        ("clips/a.mp4", Path("clips/a.mp4")),
        ("file:///videos/my%20clip.mp4", Path("/videos/my clip.mp4")),
        ("file://localhost/videos/a.mp4", Path("/videos/a.mp4")),
        ("file://clips/a.mp4", Path("clips/a.mp4")),
    ],
)
def test_file_path(url: str, path: Path) -> None:
    assert file_path(url) == path
