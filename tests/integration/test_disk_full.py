"""A full data directory: writes fail cleanly, the old index snapshot stays, health says so.

A real server (in this process) keeps its data directory on a small tmpfs mounted for the test
(root is needed; the test skips when mounting fails) and its database elsewhere. With a person
enrolled and the index snapshot written, the tmpfs is filled to the last byte. Then:

- an enrollment whose photo must be kept is refused, 507 ``insufficient_storage`` in the error
  shape, and nobody is created;
- an enrollment whose photo is kept already succeeds; its index snapshot cannot be written: the
  previous snapshot file stays byte for byte (no temp file left beside it), still loads, and the
  running index finds the new person;
- alerts still come, without their JPEG snapshots, which are counted;
- ``/health/detailed`` is ``degraded`` and says why: the disk is low, the snapshot and photo
  writes failed with "No space left on device" and when; ``/health`` says ``degraded``.

Once space is freed, the next enrollment keeps its photo, the snapshot is written, and health
is ``ok`` again.
"""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from real_server import LiveServer, server_settings, serving

from facewatch.pipeline.alerts import Alert
from facewatch.stream.config import StreamConfig
from facewatch.watchlist.index import FaissIndex
from facewatch.watchlist.snapshot import load_snapshot, snapshot_path
from tests_support import wait_for

TMPFS_SIZE = "16m"
CLIP = "videos/fr_short_hamilton_clip.mp4"
PERFORMER = "alex_lacamoire"
NEWCOMER = "identities/rose_leslie/1.jpg"
#: Bound on every wait below; far above what each needs, only there so a hang fails the test.
WAIT_S = 180.0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of TMPFS_SIZE mounted on a fresh folder, unmounted afterwards."""
    mount_point = tmp_path / "data"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (root needed): {mounted.stderr.strip()}")
    try:
        yield mount_point.resolve()
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(folder: Path) -> Path:
    """A file that takes every free byte of ``folder``'s file system."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as handle:
        for size in (1 << 20, 1 << 12, 1):
            block = b"\0" * size
            try:
                while True:
                    handle.write(block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    return filler


def photo_files(faces_dir: Path, *relative: str) -> list[Any]:
    return [
        ("photos", (Path(r).name, (faces_dir / r).read_bytes(), "image/jpeg")) for r in relative
    ]


def detailed(viewer: httpx.Client) -> dict[str, Any]:
    response = viewer.get("/health/detailed")
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    return report


def wait_for_alert(server: LiveServer, faces_dir: Path, person_id: int) -> Alert:
    """Run the clip once, unpaced, and return the first alert naming ``person_id``."""

    async def watch() -> Alert:
        pipeline = server.services.pipeline
        subscription = pipeline.subscribe()
        stream = await pipeline.add_stream(
            StreamConfig(url=str(faces_dir / CLIP)), f"disk-{uuid.uuid4().hex[:6]}"
        )
        try:
            async with asyncio.timeout(WAIT_S):
                async for alert in subscription:
                    if alert.person_id == person_id:
                        return alert
            raise AssertionError("the clip ended without an alert for the performer")
        finally:
            subscription.close()
            await pipeline.remove_stream(stream.id)

    alert: Alert = server.call(watch(), timeout=WAIT_S + 30)
    return alert


@pytest.mark.slow
def test_a_full_data_directory_fails_writes_cleanly_and_recovers(
    small_disk: Path, tmp_path: Path, model_cache: Path, faces_dir: Path, isolated_settings: None
) -> None:
    settings = server_settings(
        small_disk,
        model_cache,
        watchlist={
            "database_url": f"sqlite:///{tmp_path / 'facewatch.db'}",
            "snapshot_interval_s": 0,
        },
    )
    performer_photos = [
        f"identities/{PERFORMER}/{p.name}"
        for p in sorted((faces_dir / "identities" / PERFORMER).iterdir())
    ]
    with (
        serving(settings) as server,
        server.client("operator") as operator,
        server.client("viewer") as viewer,
    ):
        watchlist = server.services.watchlist
        snapshot = snapshot_path(watchlist.data_dir, watchlist.pack_id)
        enrolled = operator.post(
            "/api/people",
            data={"name": PERFORMER},
            files=photo_files(faces_dir, *performer_photos),
        )
        assert enrolled.status_code == 201, enrolled.text
        performer = enrolled.json()
        wait_for(
            lambda: watchlist.storage_status()["index_snapshot"]["behind"] is False,
            "the snapshot is written",
        )
        good_snapshot = snapshot.read_bytes()
        good_version = watchlist.storage_status()["index_snapshot"]["version"]
        before = detailed(viewer)
        assert before["status"] == "ok" and before["problems"] == [], before["problems"]
        assert before["storage"]["low"] is False

        filler = fill(small_disk)

        # A photo that must be kept: refused, nobody enrolled.
        refused = operator.post(
            "/api/people", data={"name": "newcomer"}, files=photo_files(faces_dir, NEWCOMER)
        )
        assert refused.status_code == 507, refused.text
        error = refused.json()["error"]
        assert error["code"] == "insufficient_storage"
        assert "No space left on device" in error["message"]
        assert operator.get("/api/people", params={"search": "newcomer"}).json()["total"] == 0

        # A photo kept already: enrolled; its snapshot cannot be written.
        twin = operator.post(
            "/api/people", data={"name": "twin"}, files=photo_files(faces_dir, performer_photos[0])
        )
        assert twin.status_code == 201, twin.text
        twin_id = twin.json()["person"]["id"]
        report = wait_for(
            lambda: (r := detailed(viewer))["storage"]["index_snapshot"]["ok"] is False and r,
            "the failed snapshot write is reported",
        )
        assert snapshot.read_bytes() == good_snapshot
        assert sorted(p.name for p in snapshot.parent.iterdir()) == [snapshot.name]
        restored = FaissIndex(watchlist.index.dim, use_gpu=False)
        assert load_snapshot(snapshot, restored, pack_id=watchlist.pack_id).version == good_version
        found = viewer.post(
            "/api/faces/query",
            files={"file": ("q.jpg", (faces_dir / performer_photos[0]).read_bytes())},
        )
        assert found.status_code == 200, found.text
        candidates = {c["person_id"] for f in found.json()["faces"] for c in f["candidates"]}
        assert {twin_id, performer["person"]["id"]} <= candidates

        # A stream that could not be saved to streams.json is not added (it would vanish at a
        # restart); the streams saved before are untouched.
        streams_file = small_disk / "streams.json"
        saved_streams = streams_file.read_bytes() if streams_file.exists() else None
        added = operator.post(
            "/api/streams", json={"id": "door", "url": str(faces_dir / CLIP), "loop": True}
        )
        assert added.status_code == 507, added.text
        assert added.json()["error"]["code"] == "streams_not_saved"
        assert "No space left on device" in added.json()["error"]["message"]
        assert operator.get("/api/streams/door").status_code == 404
        assert (streams_file.read_bytes() if streams_file.exists() else None) == saved_streams
        assert not [p for p in small_disk.iterdir() if p.name.startswith(".streams.json")]

        # Alerts go on without their snapshot images.
        alert = wait_for_alert(server, faces_dir, performer["person"]["id"])
        assert alert.snapshot is None and alert.frame_snapshot is None

        report = detailed(viewer)
        storage = report["storage"]
        assert report["status"] == "degraded"
        assert storage["low"] is True and storage["free_bytes"] < storage["low_below_bytes"]
        assert storage["alert_snapshots"]["errors"] >= 1
        for part in ("index_snapshot", "photos"):
            assert storage[part]["ok"] is False
            assert "No space left on device" in storage[part]["last_error"]
            assert storage[part]["failing_since"] <= storage[part]["last_failure_at"] <= time.time()
        assert storage["index_snapshot"]["version"] == good_version
        problems = " | ".join(report["problems"])
        for words in ("disk:", "index snapshot:", "enrollment photos:", "No space left"):
            assert words in problems, problems
        assert viewer.get("/health").json()["status"] == "degraded"

        # Space again: the next enrollment keeps its photo, the snapshot follows, health clears.
        os.unlink(filler)
        again = operator.post(
            "/api/people", data={"name": "newcomer"}, files=photo_files(faces_dir, NEWCOMER)
        )
        assert again.status_code == 201, again.text
        wait_for(lambda: detailed(viewer)["status"] == "ok", "health clears once space is back")
        cleared = detailed(viewer)["storage"]
        assert cleared["index_snapshot"]["ok"] is True and cleared["photos"]["ok"] is True
        assert cleared["index_snapshot"]["failures"] >= 1  # the history stays
        assert viewer.get("/health").json()["status"] == "ok"
        added = operator.post(
            "/api/streams", json={"id": "door", "url": str(faces_dir / CLIP), "enabled": False}
        )
        assert added.status_code == 201, added.text
        assert "door" in streams_file.read_text()
        restored = FaissIndex(watchlist.index.dim, use_gpu=False)
        info = load_snapshot(snapshot, restored, pack_id=watchlist.pack_id)
        assert info.version > good_version and len(restored) == len(watchlist.index)
