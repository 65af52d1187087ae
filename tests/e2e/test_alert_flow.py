"""The whole way from a camera to a subscriber, through the real server only.

An operator enrolls a performer of the Hamilton clip and adds the clip as a stream over the REST
API; a viewer subscribed to ``/ws/alerts`` gets the match, the event history holds it and its
snapshot is served. Then the stream is deleted.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import pytest
from live_server import LiveServer
from websockets.sync.client import connect

#: The other performer of the clip: the browser test enrolls lin_manuel_miranda on the same
#: server, and one person enrolled twice would split his matches between two names.
PERFORMER = "alex_lacamoire"
CLIP = "videos/fr_short_hamilton_clip.mp4"


@pytest.mark.slow
def test_a_match_reaches_a_websocket_subscriber_and_the_event_history(
    server: LiveServer, faces_dir: Path
) -> None:
    photos = sorted((faces_dir / "identities" / PERFORMER).iterdir())
    name = f"{PERFORMER}-{uuid.uuid4().hex[:6]}"
    with server.client("operator") as operator, server.client("viewer") as viewer:
        enrolled = operator.post(
            "/api/people",
            data={"name": name},
            files=[("photos", (p.name, p.read_bytes(), "image/jpeg")) for p in photos],
        )
        assert enrolled.status_code == 201, enrolled.text
        person_id = enrolled.json()["person"]["id"]
        try:
            check_alert_flow(server, faces_dir, operator, viewer, person_id, name)
        finally:
            assert operator.delete(f"/api/people/{person_id}").status_code in (200, 204)


def check_alert_flow(
    server: LiveServer,
    faces_dir: Path,
    operator: httpx.Client,
    viewer: httpx.Client,
    person_id: int,
    name: str,
) -> None:
    url = f"{server.ws_url}/ws/alerts?person={person_id}&type=match"
    headers = {"Authorization": f"Bearer {server.token('viewer')}"}
    with connect(url, additional_headers=headers, open_timeout=30) as socket:
        hello = json.loads(socket.recv(timeout=30))
        assert hello["type"] == "hello"
        added = operator.post(
            "/api/streams", json={"url": str(faces_dir / CLIP), "name": "alert-flow"}
        )
        assert added.status_code == 201, added.text
        stream_id = added.json()["id"]
        try:
            while True:
                message = json.loads(socket.recv(timeout=180))
                if message["type"] == "alert":
                    break
            alert = message["alert"]
        finally:
            assert operator.delete(f"/api/streams/{stream_id}").status_code in (200, 204)

    assert alert["type"] == "match"
    assert alert["person_id"] == person_id and alert["person"] == name
    assert alert["stream"] == stream_id
    assert alert["similarity"] >= server.services.watchlist.threshold

    stored = viewer.get(f"/api/events/{alert['id']}")
    assert stored.status_code == 200, stored.text
    assert stored.json()["person_id"] == person_id
    listed = viewer.get("/api/events", params={"person_id": person_id, "type": "match"})
    assert alert["id"] in [item["id"] for item in listed.json()["items"]]

    snapshot = viewer.get(f"/api/snapshots/{alert['snapshot']}")
    assert snapshot.status_code == 200
    assert snapshot.content[:3] == b"\xff\xd8\xff"
    with server.client(None) as stranger:
        assert stranger.get(f"/api/snapshots/{alert['snapshot']}").status_code == 401
