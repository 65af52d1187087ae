"""Streams through the API on a real server and a real clip: add, watch the status move, pause,
resume, change, delete; masked credentials; the file-source rule; streams.json across restarts."""

from __future__ import annotations

import json
import shutil
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_server import LiveServer, server_settings, serving

from facewatch.web.stream_registry import REGISTRY_FILE, restore_streams

CLIP = "videos/intel_asl_hungry.mkv"  # 49 frames, 640x480, 30 frames/s
#: Longest wait for a stream's status to move (a bound, not a speed expectation).
WAIT_S = 60.0
SECRET_URL = "rtsp://admin:s3cret-pw@127.0.0.1:9/cam?password=hunter2&channel=1"


@pytest.fixture(scope="module")
def operator(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client("operator") as client:
        yield client


@pytest.fixture(scope="module")
def viewer(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client("viewer") as client:
        yield client


def unique(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] and error["message"]
    return error


def wait_for(
    client: httpx.Client, stream_id: str, check: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The stream once ``check`` holds (polled; fails after WAIT_S with its last status)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        stream: dict[str, Any] = client.get(f"/api/streams/{stream_id}").json()
        if check(stream):
            return stream
        if time.monotonic() > deadline:
            pytest.fail(f"stream {stream_id} never got there: {stream}")
        time.sleep(0.1)


def saved(server: LiveServer) -> dict[str, dict[str, Any]]:
    document = json.loads((server.data_dir / REGISTRY_FILE).read_text())
    return {entry["id"]: entry["config"] for entry in document["streams"]}


# --- life of a stream ---------------------------------------------------------------------------


def test_a_file_stream_runs_pauses_resumes_changes_and_goes(
    operator: httpx.Client, viewer: httpx.Client, faces_dir: Path, server: LiveServer
) -> None:
    name = unique("Door Cam")
    clip = str(faces_dir / CLIP)
    created = operator.post(
        "/api/streams", json={"url": clip, "name": name, "loop": True, "realtime": True}
    )
    assert created.status_code == 201, created.text
    stream = created.json()
    stream_id = stream["id"]
    assert stream_id == name.lower().replace(" ", "-")
    assert (stream["name"], stream["url"], stream["kind"]) == (name, clip, "file")
    assert stream["persisted"] is True and stream["config"]["loop"] is True
    assert stream_id in [s["id"] for s in viewer.get("/api/streams").json()["items"]]
    assert saved(server)[stream_id]["url"] == clip
    try:
        running = wait_for(
            viewer,
            stream_id,
            lambda s: s["state"] == "running" and s["status"]["frames_processed"] > 0,
        )
        assert running["status"]["resolution_wh"] == [640, 480]

        paused = operator.post(f"/api/streams/{stream_id}/pause")
        assert paused.status_code == 200 and paused.json()["state"] == "paused"
        assert saved(server)[stream_id]["enabled"] is False
        # A paced file keeps decoding while paused, and counts what it does not hand over.
        wait_for(viewer, stream_id, lambda s: s["status"]["dropped"].get("paused", 0) > 0)

        resumed = operator.post(f"/api/streams/{stream_id}/resume")
        assert resumed.status_code == 200 and resumed.json()["state"] != "paused"
        before = resumed.json()["status"]["frames_processed"]
        wait_for(viewer, stream_id, lambda s: s["status"]["frames_processed"] > before)
        assert saved(server)[stream_id]["enabled"] is True

        changed = operator.patch(f"/api/streams/{stream_id}", json={"fps_cap": 5})
        assert changed.status_code == 200, changed.text
        assert changed.json()["config"]["fps_cap"] == 5
        assert saved(server)[stream_id]["fps_cap"] == 5
        wait_for(viewer, stream_id, lambda s: s["status"]["dropped"].get("fps_cap", 0) > 0)

        disabled = operator.patch(f"/api/streams/{stream_id}", json={"enabled": False})
        assert disabled.json()["state"] == "paused"
    finally:
        deleted = operator.delete(f"/api/streams/{stream_id}")
    assert deleted.status_code == 200 and deleted.json() == {"id": stream_id, "deleted": True}
    assert error_of(viewer.get(f"/api/streams/{stream_id}"), 404)["code"] == "stream_not_found"
    assert stream_id not in saved(server)


def test_credentials_are_masked_everywhere_but_kept_for_the_camera(
    operator: httpx.Client, viewer: httpx.Client, server: LiveServer
) -> None:
    stream_id = unique("cam")
    created = operator.post(
        "/api/streams",
        json={"url": SECRET_URL, "id": stream_id, "open_timeout_s": 1, "reconnect_max_s": 1},
    )
    assert created.status_code == 201, created.text
    try:
        shown = [
            created.text,
            viewer.get(f"/api/streams/{stream_id}").text,
            viewer.get("/api/streams").text,
            viewer.get("/health/detailed").text,
        ]
        # The camera refuses; its error is shown, without the password either.
        failed = wait_for(viewer, stream_id, lambda s: s["status"]["last_error"] is not None)
        shown.append(json.dumps(failed))
        for text in shown:
            assert "s3cret-pw" not in text and "hunter2" not in text
        assert created.json()["url"] == "rtsp://***@127.0.0.1:9/cam?password=***&channel=1"
        # streams.json keeps the real URL, readable by the server's user only.
        path = server.data_dir / REGISTRY_FILE
        assert saved(server)[stream_id]["url"] == SECRET_URL
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        # Sending the masked URL back (as a form would) keeps the real one.
        renamed = operator.patch(
            f"/api/streams/{stream_id}", json={"url": created.json()["url"], "name": "Gate"}
        )
        assert renamed.status_code == 200, renamed.text
        assert renamed.json()["name"] == "Gate"
        assert saved(server)[stream_id]["url"] == SECRET_URL
    finally:
        operator.delete(f"/api/streams/{stream_id}")


# --- refusals -----------------------------------------------------------------------------------


def bad_bodies(faces_dir: Path, data_dir: Path) -> list[tuple[dict[str, Any], str, str]]:
    clip = str(faces_dir / CLIP)
    return [
        ({"name": "no url"}, "invalid_request", "body.url"),
        ({"url": "ftp://cam/1"}, "invalid_request", "body.url"),
        ({"url": clip, "fps_cap": 0}, "invalid_request", "body.fps_cap"),
        ({"url": clip, "roi": [0.5, 0, 0.2, 1]}, "invalid_request", "body.roi"),
        ({"url": clip, "detection_size": [100, 100]}, "invalid_request", "body.detection_size"),
        ({"url": clip, "colour": "red"}, "invalid_request", "body.colour"),
        ({"url": "videos/clip.mp4"}, "stream_open_failed", "absolute"),
        ({"url": str(faces_dir / "videos/missing.mp4")}, "stream_open_failed", "no such file"),
        ({"url": "/etc/passwd"}, "stream_open_failed", "not a video file"),
        ({"url": "/proc/self/environ"}, "stream_open_failed", "/proc"),
        ({"url": str(faces_dir / "videos")}, "stream_open_failed", "not a regular file"),
        (
            {"url": str(faces_dir / "identities/barack_obama/1.jpg")},
            "stream_open_failed",
            "not a video file",
        ),
        ({"url": str(data_dir / "facewatch.db")}, "stream_open_failed", "data directory"),
        ({"url": clip, "id": "no spaces allowed"}, "invalid_stream_id", "bad stream id"),
    ]


def test_bad_settings_and_unusable_files_are_422_saying_why(
    operator: httpx.Client, faces_dir: Path, server: LiveServer
) -> None:
    for body, code, words in bad_bodies(faces_dir, server.data_dir):
        error = error_of(operator.post("/api/streams", json=body), 422)
        assert error["code"] == code, (body, error)
        assert words in error["message"], (body, error)
    ids = {s["id"] for s in operator.get("/api/streams").json()["items"]}
    assert not ids & {"no-url", "no spaces allowed"}


def test_a_taken_id_is_409_and_unknown_ids_are_404(operator: httpx.Client, faces_dir: Path) -> None:
    stream_id = unique("twice")
    body = {"url": str(faces_dir / CLIP), "id": stream_id, "enabled": False}
    assert operator.post("/api/streams", json=body).status_code == 201
    try:
        assert error_of(operator.post("/api/streams", json=body), 409)["code"] == "stream_exists"
        changed = operator.patch(f"/api/streams/{stream_id}", json={"fps_cap": -2})
        assert "body.fps_cap" in error_of(changed, 422)["message"]
        assert (
            "id"
            in error_of(operator.patch(f"/api/streams/{stream_id}", json={"id": "x"}), 422)[
                "message"
            ]
        )
    finally:
        operator.delete(f"/api/streams/{stream_id}")
    missing = unique("missing")
    for response in (
        operator.get(f"/api/streams/{missing}"),
        operator.patch(f"/api/streams/{missing}", json={"fps_cap": 1}),
        operator.post(f"/api/streams/{missing}/pause"),
        operator.post(f"/api/streams/{missing}/resume"),
        operator.delete(f"/api/streams/{missing}"),
    ):
        assert error_of(response, 404)["code"] == "stream_not_found"


def test_viewers_read_streams_but_do_not_change_them(viewer: httpx.Client, faces_dir: Path) -> None:
    assert viewer.get("/api/streams").status_code == 200
    body = {"url": str(faces_dir / CLIP), "name": unique("viewer")}
    assert viewer.post("/api/streams", json=body).status_code == 403


# --- streams.json -------------------------------------------------------------------------------


def listed(live: LiveServer) -> dict[str, dict[str, Any]]:
    with live.client("viewer") as viewer:
        return {s["id"]: s for s in viewer.get("/api/streams").json()["items"]}


def restored(live: LiveServer, wanted: set[str]) -> dict[str, dict[str, Any]]:
    """The streams after a start-up: restored by the server, or by restore_streams here."""
    if not wanted <= set(listed(live)):
        live.call(restore_streams(live.services))
    return listed(live)


def test_configured_streams_come_back_after_a_restart(
    tmp_path: Path, model_cache: Path, faces_dir: Path
) -> None:
    first = server_settings(tmp_path / "first", model_cache)
    gone = tmp_path / "gone.mkv"
    shutil.copyfile(faces_dir / CLIP, gone)
    with serving(first) as live, live.client("operator") as operator:
        for body in (
            {"url": str(faces_dir / CLIP), "id": "lobby", "enabled": False, "fps_cap": 2},
            {"url": SECRET_URL, "id": "gate", "open_timeout_s": 1, "reconnect_max_s": 1},
            {"url": str(gone), "id": "gone", "enabled": False},
        ):
            assert operator.post("/api/streams", json=body).status_code == 201
        before = listed(live)
    gone.unlink()  # its stream cannot come back, but is not forgotten either

    # The restarted server: a data dir with that streams.json (the test server's accounts
    # cannot be created twice in one store, and the streams depend on nothing else there).
    second = server_settings(tmp_path / "second", model_cache)
    second.data_dir.mkdir()
    shutil.copy2(first.data_dir / REGISTRY_FILE, second.data_dir / REGISTRY_FILE)
    with serving(second) as live:
        after = restored(live, {"lobby", "gate"})
        assert set(after) == {"lobby", "gate"}
        for stream_id in ("lobby", "gate"):
            assert after[stream_id]["config"] == before[stream_id]["config"]
        assert after["lobby"]["state"] == "paused"
        assert saved(live)["gate"]["url"] == SECRET_URL
        assert "gone" in saved(live)
        with live.client("operator") as operator:
            assert operator.delete("/api/streams/gone").status_code == 200
            assert operator.delete("/api/streams/gone").status_code == 404
        assert set(saved(live)) == {"lobby", "gate"}


def test_a_damaged_streams_json_is_set_aside(tmp_path: Path, model_cache: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / REGISTRY_FILE).write_text('{"streams": [{"id": "x"')
    with serving(server_settings(data_dir, model_cache)) as live:
        restored(live, {"never"})
        assert listed(live) == {}
        aside = list(data_dir.glob(f"{REGISTRY_FILE}.damaged-*"))
        assert len(aside) == 1 and aside[0].read_text() == '{"streams": [{"id": "x"'
