"""PostgreSQL outages under a running server: restarted for real, and its connections killed.

A real server (in this process, for a look at its services) keeps its store in a PostgreSQL
server of the test's own (see :mod:`private_postgres`), watches the Hamilton clip in a loop with
one performer enrolled, and answers enrollments and photo additions from client threads while
the database goes away and comes back. What must hold:

- every answer is a 201, a 422 refusal of the photo, or a 503 ``store_unavailable`` in the error
  shape; never a 500, never a dropped connection. Nothing is retried on the server: a client may
  send again after a 503 (see ``web/routes/people.py``);
- ``/health/ready`` names the store while it is down, and is ready again after, with no restart;
- recognition goes on during the outage (the index lives in memory), its alerts wait in the
  event log's outbox and are all written once the database is back, none dropped, none twice;
- everything acknowledged (persons, faces, events written before the fault) is in the store
  afterwards, the index agrees with the store row for row, and each acknowledged photo is found
  by a search.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from enrollment_traffic import (
    EnrollmentTraffic,
    assert_acknowledged_enrollments_kept,
    identities,
)
from private_postgres import PrivatePostgres, wait_until_accepting
from private_postgres import private_postgres as private_postgres
from real_server import LiveServer, server_settings, serving
from sqlalchemy import create_engine, select
from sqlalchemy.engine import make_url

from facewatch.config import ENV_PREFIX
from facewatch.watchlist.models import Event
from facewatch.watchlist.service import Watchlist
from tests_support import assert_index_rows_match_store, wait_for

CLIP = "videos/fr_short_hamilton_clip.mp4"
PERFORMER = "alex_lacamoire"
#: Bound on every wait below; far above what each needs, only there so a hang fails the test.
WAIT_S = 120.0
#: How long the database stays away: long enough for requests, probes and alerts to meet it.
OUTAGE_S = 2.0
#: How long connections are killed over and over.
KILLING_S = 2.0


@dataclass
class Watched:
    """The server, its database, and every alert its pipeline published (ids, in order)."""

    server: LiveServer
    postgres: PrivatePostgres
    database_url: str
    stream_id: str
    alerts: list[str] = field(default_factory=list)

    @property
    def database(self) -> str:
        name = make_url(self.database_url).database
        assert name is not None
        return name

    def stored_events(self) -> list[str]:
        engine = create_engine(self.database_url)
        try:
            with engine.connect() as connection:
                return list(connection.scalars(select(Event.alert_id).order_by(Event.alert_id)))
        finally:
            engine.dispose()

    def frames_processed(self) -> int:
        stream = self.server.services.pipeline.streams.get(self.stream_id)
        return stream.status().frames_processed


@pytest.fixture(scope="module")
def watched(
    private_postgres: PrivatePostgres,
    faces_dir: Path,
    model_cache: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Watched]:
    saved = {name: os.environ.pop(name) for name in list(os.environ) if name.startswith(ENV_PREFIX)}
    url = private_postgres.create_database()
    settings = server_settings(
        tmp_path_factory.mktemp("store-faults"),
        model_cache,
        watchlist={"database_url": url, "snapshot_interval_s": 0.5},
        # Many alerts: every track of the performer matches, every other face is "unknown".
        pipeline={"cooldown_s": 0, "unknown_events": True, "unknown_after_s": 0.5},
    )
    try:
        with serving(settings) as server:
            watched = Watched(server, private_postgres, url, "")
            server.call(_collect(server, watched.alerts))
            with server.client("operator") as operator:
                photos = sorted((faces_dir / "identities" / PERFORMER).iterdir())
                enrolled = operator.post(
                    "/api/people",
                    data={"name": PERFORMER},
                    files=[("photos", (p.name, p.read_bytes(), "image/jpeg")) for p in photos],
                )
                assert enrolled.status_code == 201, enrolled.text
                added = operator.post(
                    "/api/streams",
                    json={"url": str(faces_dir / CLIP), "name": "stage", "loop": True},
                )
                assert added.status_code == 201, added.text
                watched.stream_id = added.json()["id"]
            yield watched
    finally:
        os.environ.update(saved)


async def _collect(server: LiveServer, into: list[str]) -> None:
    """Subscribe on the server's loop and keep every alert id the pipeline publishes."""
    subscription = server.services.pipeline.subscribe(maxsize=100_000)

    async def pump() -> None:
        async for alert in subscription:
            into.append(alert.id)

    asyncio.get_running_loop().create_task(pump(), name="test-alert-collector")


# --- checks ---------------------------------------------------------------------------------------


def assert_answers_are_clean(traffic: EnrollmentTraffic) -> int:
    """Every answer is 201, 422 (photo refused) or 503 store_unavailable; returns the 503s."""
    unavailable = 0
    for answer in traffic.snapshot():
        assert answer.status in (201, 422, 503), answer.describe()
        if answer.status == 201:
            continue
        error = answer.body["error"]
        assert set(error) >= {"code", "message"}, answer.describe()
        if answer.status == 503:
            assert error["code"] == "store_unavailable", answer.describe()
            unavailable += 1
        else:
            assert error["code"] == "enrollment_rejected", answer.describe()
    return unavailable


def assert_index_agrees_with_store(watchlist: Watchlist) -> None:
    assert_index_rows_match_store(watchlist)
    store, index = watchlist.store, watchlist.index
    assert len(index) == store.counts()["faces"]


def assert_every_alert_written(watched: Watched, before: list[str]) -> None:
    """Nothing published is missing from the table, nothing is there twice, and every event
    stored before the fault is still there."""
    events = watched.server.services.events
    wait_for(lambda: events.pending == 0, "the events held during the outage are written")
    published = list(watched.alerts)
    stored = watched.stored_events()
    assert len(stored) == len(set(stored))
    assert set(before) <= set(stored)
    missing = set(published) - set(stored)
    assert not missing, f"{len(missing)} of {len(published)} alerts not written: {events.status()}"
    assert events.dropped == 0


def wait_ready(server: LiveServer) -> None:
    wait_for(
        lambda: httpx.get(f"{server.url}/health/ready", timeout=30).status_code == 200,
        "the server is ready again",
    )


# --- the faults -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_postgresql_restart_loses_nothing_acknowledged(watched: Watched, faces_dir: Path) -> None:
    server, postgres = watched.server, watched.postgres
    events = server.services.events
    wait_for(lambda: events.written > 0, "the first alerts are written")
    traffic = EnrollmentTraffic(
        server.url,
        server.token("operator"),
        identities(faces_dir, part=0, parts=2),
        prefix=f"restart-{uuid.uuid4().hex[:4]}-",
    )
    with traffic:
        traffic.wait_for(2)
        before = watched.stored_events()

        postgres.stop("fast")
        down_at = time.monotonic()
        ready = wait_for(
            lambda: (
                (r := httpx.get(f"{server.url}/health/ready", timeout=30)).status_code == 503 and r
            ),
            "readiness names the store",
        )
        error = ready.json()["error"]
        assert error["failing"] == ["store"] and error["checks"]["store"]["ok"] is False
        with server.client("viewer") as viewer:
            refused = viewer.get("/api/people")
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "store_unavailable"
        # Recognition goes on: alerts keep coming and wait for the store.
        held = len(watched.alerts)
        wait_for(
            lambda: len(watched.alerts) > held and events.pending > 0, "alerts wait in the outbox"
        )
        assert events.status()["store_ok"] is False
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))

        postgres.start()
        wait_until_accepting(postgres)
        back_at = time.monotonic()
        wait_ready(server)
        traffic.wait_for(1, after=back_at)

    assert assert_answers_are_clean(traffic) >= 1  # the outage was met by requests
    assert_every_alert_written(watched, before)
    assert events.status()["store_ok"] is True
    with server.client("operator") as operator:
        assert_acknowledged_enrollments_kept(operator, traffic)
    assert_index_agrees_with_store(server.services.watchlist)
    frames = watched.frames_processed()
    wait_for(lambda: watched.frames_processed() > frames, "the stream is still processed")


@pytest.mark.slow
def test_killed_connections_lose_nothing_acknowledged(watched: Watched, faces_dir: Path) -> None:
    server, postgres = watched.server, watched.postgres
    traffic = EnrollmentTraffic(
        server.url,
        server.token("operator"),
        identities(faces_dir, part=1, parts=2),
        prefix=f"killed-{uuid.uuid4().hex[:4]}-",
    )
    with traffic:
        traffic.wait_for(1)
        before = watched.stored_events()
        killed = 0
        started = time.monotonic()
        # Kill whatever is connected, again and again, while enrollments and events go on.
        while time.monotonic() - started < KILLING_S:
            killed += postgres.terminate(watched.database)
            time.sleep(0.2)
        assert killed >= 1
        back_at = time.monotonic()
        traffic.wait_for(1, after=back_at)

    assert_answers_are_clean(traffic)
    wait_ready(server)
    assert_every_alert_written(watched, before)
    with server.client("operator") as operator:
        assert_acknowledged_enrollments_kept(operator, traffic)
    assert_index_agrees_with_store(server.services.watchlist)
