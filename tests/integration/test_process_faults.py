"""SIGKILL of the real ``facewatch serve``: nothing acknowledged is lost, store and index agree.

The server runs as an operator runs it (a subprocess on a data folder with the SQLite store),
watching the Hamilton clip in a loop with a performer enrolled while client threads enroll
persons and add photos. Its watchlist is large enough (synthetic templates beside the real
ones) that each index snapshot takes a while to write, and a snapshot is written after every
change. The server is killed with SIGKILL while all three go on: enrollments in flight, a
snapshot being written (its temp file seen in ``index/``), alerts being written to the events
table. The kill comes once a number of enrollments were acknowledged, drawn at random; set
``FACEWATCH_KILL_SEED`` to replay one.

Restarted on the same folder (in this process, to look at its index), the server must have:
every acknowledged person with their faces, each found by a search with its photo; an index
that agrees with the store row for row; every event that was readable before the kill; new
alerts with ids above every old one; and no temp file left over from the killed write once it
is old.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from enrollment_traffic import (
    EnrollmentTraffic,
    assert_acknowledged_enrollments_kept,
    identities,
)
from real_server import PASSWORD, server_settings, serving
from sqlalchemy import insert, update

from facewatch.config import ENV_PREFIX, AuthSettings, Settings, load_settings
from facewatch.recognizer.engine import FaceEngine
from facewatch.watchlist.models import Embedding, Face, Person, WatchlistState
from facewatch.watchlist.service import Watchlist
from facewatch.watchlist.store import Store
from facewatch.web.accounts import Accounts
from facewatch.web.auth import Role
from tests_support import assert_index_rows_match_store, wait_for

SEED_ENV = "FACEWATCH_KILL_SEED"
CLIP = "videos/fr_short_hamilton_clip.mp4"
PERFORMER = "alex_lacamoire"
#: Synthetic templates: a 20 MB snapshot (128-d), written after every change.
SYNTHETIC_PERSONS = 40
SYNTHETIC_FACES_EACH = 1000
#: Bound on every wait below; far above what each needs, only there so a hang fails the test.
WAIT_S = 180.0
#: Longest wait for a snapshot write to be under way once the kill is due.
SNAPSHOT_WAIT_S = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- the server process ---------------------------------------------------------------------------


@dataclass
class ServerProcess:
    """``facewatch serve`` on a data folder; its log goes to ``log``."""

    data_dir: Path
    env: dict[str, str]
    log: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port = free_port()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "facewatch", "serve", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=log,
            )

    def wait_ready(self) -> None:
        def ready() -> bool:
            assert self.process is not None and self.process.poll() is None, self.tail()
            try:
                return httpx.get(f"{self.url}/health/ready", timeout=10).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, "the server is ready")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait(timeout=60) == -signal.SIGKILL

    def stop(self) -> None:
        """SIGTERM, as an operator stops it: it saves the index snapshot on the way out."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=120)
        assert code in (0, -signal.SIGTERM), self.tail()

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=120
        )


def server_env(data_dir: Path, cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    return env | {
        "FACE_AI_DATA_DIR": str(data_dir),
        "FACE_AI_ENGINE__CACHE_DIR": str(cache),
        "FACE_AI_PROVIDERS": "cpu",
        "FACE_AI_LOG_LEVEL": "WARNING",
        # A snapshot after every change, so that one is being written when the kill comes.
        "FACE_AI_WATCHLIST__SNAPSHOT_INTERVAL_S": "0",
        # Many alerts: every track of the performer matches, every other face is "unknown".
        "FACE_AI_PIPELINE__COOLDOWN_S": "0",
        "FACE_AI_PIPELINE__UNKNOWN_EVENTS": "true",
        "FACE_AI_PIPELINE__UNKNOWN_AFTER_S": "0.5",
    }


def settings_for(data_dir: Path, cache: Path) -> Settings:
    return load_settings(data_dir=data_dir, engine={"cache_dir": cache, "providers": ["cpu"]})


def restart_settings(data_dir: Path, cache: Path) -> Settings:
    """What :func:`server_env` sets, for the server restarted in this process."""
    return server_settings(
        data_dir,
        cache,
        watchlist={"snapshot_interval_s": 0},
        pipeline={"cooldown_s": 0, "unknown_events": True, "unknown_after_s": 0.5},
    )


def prepare(data_dir: Path, cache: Path, pack_id: str, dim: int) -> str:
    """The store with an operator (returns their API key) and the synthetic templates.

    The templates go in with bulk inserts (one transaction, one version), as a migration from
    another system would bring them: enrolling them one by one would take most of a minute.
    """
    store = Store(settings_for(data_dir, cache).database_url)
    try:
        accounts = Accounts(store, AuthSettings())
        user = accounts.create_user("operator", PASSWORD, Role.operator)
        token = accounts.issue(user.id, "api_key", name="tests")
        rng = np.random.default_rng(0)
        vectors = rng.normal(size=(SYNTHETIC_PERSONS * SYNTHETIC_FACES_EACH, dim))
        vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype("<f4")
        persons = [
            {"id": p + 1, "name": f"synthetic {p}", "attributes": {}}
            for p in range(SYNTHETIC_PERSONS)
        ]
        faces, embeddings = [], []
        for row, vector in enumerate(vectors):
            face_id, person_id = row + 1, row // SYNTHETIC_FACES_EACH + 1
            faces.append(
                {
                    "id": face_id,
                    "person_id": person_id,
                    "image_sha256": f"{face_id:064x}",
                    "image_path": f"faces/synthetic/{face_id}.jpg",
                    "bbox": [0.0, 0.0, 100.0, 100.0],
                    "landmarks": [[50.0, 50.0]] * 5,
                    "det_score": 0.9,
                    "face_size": 100.0,
                    "sharpness": 100.0,
                    "frontal": 1.0,
                    "pack_id": pack_id,
                }
            )
            embeddings.append(
                {
                    "face_id": face_id,
                    "pack_id": pack_id,
                    "person_id": person_id,
                    "dim": dim,
                    "vector": vector.tobytes(),
                }
            )
        with store.sql.begin() as connection:
            connection.execute(update(WatchlistState).values(version=WatchlistState.version + 1))
            connection.execute(insert(Person), persons)
            connection.execute(insert(Face), faces)
            connection.execute(insert(Embedding), embeddings)
    finally:
        store.close()
    return token


# --- what is kept ---------------------------------------------------------------------------------


def event_ids(client: httpx.Client) -> list[str]:
    """Every stored event's id, through the API."""
    ids: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 500}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/api/events", params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        ids += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if not cursor:
            return ids


class EventWatch:
    """Reads the stored events every moment until stopped: what the API has shown as written."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-watch", daemon=True)

    def __enter__(self) -> EventWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.seen.update(event_ids(self.client))
            except (httpx.TransportError, AssertionError):
                return  # the server is gone: what was seen before stays seen
            self._stop.wait(0.2)


def snapshot_temps(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "index").glob(".*.tmp"))


def kill_during_a_snapshot_write(server: ServerProcess) -> bool:
    """SIGKILL as soon as a snapshot temp file is seen (True), or after the wait (False)."""
    folder = server.data_dir / "index"
    deadline = time.monotonic() + SNAPSHOT_WAIT_S
    while time.monotonic() < deadline:
        try:
            with os.scandir(folder) as entries:
                writing = any(entry.name.endswith(".tmp") for entry in entries)
        except FileNotFoundError:
            writing = False
        if writing:
            server.kill()
            return True
        time.sleep(0.0005)
    server.kill()
    return False


def assert_index_agrees_with_store(watchlist: Watchlist) -> None:
    assert_index_rows_match_store(watchlist)
    store, index = watchlist.store, watchlist.index
    assert len(index) == store.counts()["faces"]
    assert watchlist.applied_version == store.version()


@pytest.fixture
def server_process(tmp_path: Path, model_cache: Path) -> Iterator[ServerProcess]:
    data_dir = (tmp_path / "data").resolve()
    server = ServerProcess(data_dir, server_env(data_dir, model_cache), tmp_path / "server.log")
    try:
        yield server
    finally:
        server.close()


# --- the kill ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_during_enrollments_a_snapshot_write_and_event_writes(
    server_process: ServerProcess,
    engine: FaceEngine,
    faces_dir: Path,
    model_cache: Path,
    isolated_settings: None,
) -> None:
    seed = int(os.environ.get(SEED_ENV) or random.SystemRandom().randrange(2**32))
    rng = random.Random(seed)
    acknowledged_before_kill = rng.randint(2, 5)
    replay = f"{SEED_ENV}={seed} (kill after {acknowledged_before_kill} enrollments)"
    server = server_process
    token = prepare(server.data_dir, model_cache, engine.pack.id, engine.embedding_dim)

    server.start()
    server.wait_ready()
    with server.client(token) as operator:
        photos = sorted((faces_dir / "identities" / PERFORMER).iterdir())
        enrolled = operator.post(
            "/api/people",
            data={"name": PERFORMER},
            files=[("photos", (p.name, p.read_bytes(), "image/jpeg")) for p in photos],
        )
        assert enrolled.status_code == 201, enrolled.text
        added = operator.post(
            "/api/streams", json={"url": str(faces_dir / CLIP), "name": "stage", "loop": True}
        )
        assert added.status_code == 201, added.text
        wait_for(lambda: event_ids(operator), "the first alerts are written")

    traffic = EnrollmentTraffic(
        server.url, token, identities(faces_dir), prefix=f"kill-{uuid.uuid4().hex[:4]}-", workers=2
    )
    with server.client(token) as reader, EventWatch(reader) as events, traffic:
        traffic.wait_for(acknowledged_before_kill)
        caught = kill_during_a_snapshot_write(server)
    assert caught, f"{replay}: no snapshot write was seen to kill it during"
    assert events.seen, f"{replay}: no event was seen written before the kill"
    for answer in traffic.snapshot():
        # Answers before the kill are clean; requests cut off by it have none.
        assert answer.status in (201, 422, None), f"{replay}: {answer.describe()}"
    left_over = snapshot_temps(server.data_dir)
    old = time.time() - 2 * 3600
    for temp in left_over:  # made old, as after a long outage: the next start clears them
        os.utime(temp, (old, old))

    assert "Traceback" not in server.tail(), server.tail()

    with serving(restart_settings(server.data_dir, model_cache)) as restarted:
        assert snapshot_temps(server.data_dir) == [], f"{replay}: left-overs {left_over} stayed"
        watchlist = restarted.services.watchlist
        assert watchlist.loaded_from in ("snapshot", "snapshot+store"), replay
        assert_index_agrees_with_store(watchlist)
        with restarted.client("operator") as operator:
            assert_acknowledged_enrollments_kept(operator, traffic)
            kept = set(event_ids(operator))
            assert events.seen <= kept, f"{replay}: {sorted(events.seen - kept)} lost"
            # The restored stream goes on; its alerts have ids above every old one.
            newer = wait_for(
                lambda: set(event_ids(operator)) - kept, "new alerts after the restart"
            )
            assert min(newer) > max(kept), replay
