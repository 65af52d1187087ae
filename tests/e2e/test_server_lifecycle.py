"""The test server itself: it starts with every part open, refuses anonymous calls, stops clean."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
from live_server import server_settings, serving
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect


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


def test_stopping_tells_every_websocket_client_going_away(
    tmp_path: Path, model_cache: Path, faces_dir: Path
) -> None:
    """Alert subscribers and live-view metadata sockets get 1001, not uvicorn's 1012 (restart)."""
    clip = faces_dir / "videos" / "fr_short_hamilton_clip.mp4"
    stream = {"id": "stage", "url": str(clip), "loop": True}
    codes: dict[str, int | None] = {}

    def read_until_closed(name: str, socket: ClientConnection) -> None:
        try:
            while True:
                socket.recv(timeout=60)
        except ConnectionClosed:
            codes[name] = socket.close_code
        except TimeoutError:
            codes[name] = None

    with serving(server_settings(tmp_path / "data", model_cache)) as live:
        with live.client("operator") as client:
            added = client.post("/api/streams", json=stream)
            assert added.status_code == 201, added.text
        headers = {"Authorization": f"Bearer {live.token('viewer')}"}
        with (
            connect(f"{live.ws_url}/ws/alerts", additional_headers=headers) as alerts,
            connect(f"{live.ws_url}/ws/live/stage", additional_headers=headers) as metadata,
        ):
            assert json.loads(alerts.recv(timeout=60))["type"] == "hello"
            assert json.loads(metadata.recv(timeout=60))["type"] == "hello"
            readers = [
                threading.Thread(target=read_until_closed, args=("alerts", alerts)),
                threading.Thread(target=read_until_closed, args=("live", metadata)),
            ]
            for reader in readers:
                reader.start()
            live.stop()
            for reader in readers:
                reader.join(90)
    assert codes == {"alerts": 1001, "live": 1001}
