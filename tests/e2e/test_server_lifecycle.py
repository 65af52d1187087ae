"""The test server itself: it starts with every part open, refuses anonymous calls, stops clean."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
from live_server import server_settings, serving


def test_a_server_starts_serves_and_stops_leaving_no_thread(
    tmp_path: Path, model_cache: Path
) -> None:
    before = set(threading.enumerate())
    with serving(server_settings(tmp_path / "data", model_cache)) as live:
        assert httpx.get(f"{live.url}/health/live").status_code == 200
        assert httpx.get(f"{live.url}/health").status_code == 401
        with live.client("viewer") as client:
            assert client.get("/health").status_code == 200
        assert (tmp_path / "data").is_dir()
    leftover = {t for t in set(threading.enumerate()) - before if t.is_alive()}
    assert not leftover, f"threads left behind: {leftover}"
