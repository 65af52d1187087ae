"""The event log on real databases (SQLite, PostgreSQL, MariaDB): writing alerts from a real
alert bus, queries and pages, resuming, outages of the store, retention of events and snapshots.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from databases import fresh_database
from event_server import EventServer, event_server
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from tcp_relay import relaying

from facewatch.config import EventSettings
from facewatch.errors import StoreError
from facewatch.pipeline.alerts import Alert, AlertBus, new_alert_id
from facewatch.watchlist.models import Event
from facewatch.watchlist.store import Store
from facewatch.web.event_filters import EventFilters, InvalidEventQuery, with_links
from facewatch.web.events import EventLog

#: Whole seconds: MariaDB keeps DATETIME to the second.
NOW = float(int(time.time()))


def make_alert(
    n: int,
    *,
    stream: str = "door",
    person_id: int | None = 1,
    type: str = "match",
    ts: float | None = None,
    snapshot: str | None = None,
    similarity: float | None = 0.61,
) -> Alert:
    when = NOW - 3600 + n if ts is None else ts
    return Alert(
        id=new_alert_id(when),
        type=type,  # type: ignore[arg-type]
        stream=stream,
        track=n,
        person_id=person_id,
        person=None if person_id is None else f"person {person_id}",
        similarity=similarity,
        bbox=[10.0, 20.0, 110.0, 140.0],
        ts=when,
        track_started_at=when - 1,
        snapshot=snapshot,
        frame_snapshot=None if snapshot is None else snapshot.replace("-face", "-frame"),
    )


def varied_alerts(count: int) -> list[Alert]:
    """Alerts over three streams, four persons (and nobody) and every type, one a second."""
    streams = ("door", "hall", "gate")
    types = ("match", "update", "ended", "unknown")
    return [
        make_alert(
            n,
            stream=streams[n % 3],
            person_id=None if types[n % 4] == "unknown" else 1 + n % 5,
            type=types[n % 4],
        )
        for n in range(count)
    ]


async def eventually(condition: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    """Wait until ``condition`` holds (a bounded wait, not a measurement)."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                if condition():
                    return
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"not seen within {timeout_s} s: {what}")


def stored_ids(store: Store) -> list[str]:
    with store.sql.connect() as connection:
        return list(connection.scalars(select(Event.alert_id).order_by(Event.alert_id)))


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = Store(database_url)
    try:
        yield opened
    finally:
        opened.close()


async def test_alerts_on_the_bus_land_in_the_table_and_close_flushes(
    store: Store, tmp_path: Path
) -> None:
    bus = AlertBus()
    log = EventLog(store, EventSettings(), tmp_path)
    await log.start(bus)
    alerts = varied_alerts(30)
    alerts[3] = make_alert(3, snapshot="snapshots/2026-01-31/door/x-face.jpg")
    for alert in alerts[:20]:
        bus.publish(alert)
        await asyncio.sleep(0)
    for alert in alerts[20:]:  # no chance to write these before close: close must
        bus.publish(alert)
    await log.close()
    await log.close()  # twice is fine

    with store.sql.connect() as connection:
        rows = {row.alert_id: row for row in connection.execute(select(Event))}
    assert sorted(rows) == sorted(alert.id for alert in alerts)
    for alert in alerts:
        row = rows[alert.id]
        assert row.data == alert.as_dict()
        assert (row.type, row.stream, row.track) == (alert.type, alert.stream, alert.track)
        assert (row.person_id, row.person) == (alert.person_id, alert.person)
        assert row.ts == datetime.fromtimestamp(alert.ts, UTC)
        assert row.snapshot == alert.snapshot and row.frame_snapshot == alert.frame_snapshot
    status = log.status()
    assert (status["written"], status["pending"], status["dropped"]) == (30, 0, 0)
    assert status["store_ok"] and bus.subscribers == 0


async def test_queries_filter_page_and_resume(store: Store, tmp_path: Path) -> None:
    log = EventLog(store, EventSettings(), tmp_path)
    alerts = varied_alerts(40)
    assert await asyncio.to_thread(log.write, alerts) == 40
    assert await asyncio.to_thread(log.write, alerts[:10]) == 0  # already there: skipped
    newest_first = [a.as_dict() for a in sorted(alerts, key=lambda a: a.id, reverse=True)]

    def ids(events: list[dict[str, Any]]) -> list[str]:
        return [event["id"] for event in events]

    # Paging through everything, 7 at a time, gives every event once, newest first.
    seen: list[dict[str, Any]] = []
    cursor = None
    for _ in range(10):
        page = log.query(limit=7, cursor=cursor)
        seen += page.items
        cursor = page.next_cursor
        if cursor is None:
            break
    assert ids(seen) == ids(newest_first)
    assert seen[0]["bbox"] == newest_first[0]["bbox"] and "snapshot_url" in seen[0]

    cases: list[tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]] = [
        ({"stream": "hall"}, lambda e: e["stream"] == "hall"),
        ({"stream": "hall,gate"}, lambda e: e["stream"] in ("hall", "gate")),
        ({"person_id": "2"}, lambda e: e["person_id"] == 2),
        ({"person_id": [2, 3]}, lambda e: e["person_id"] in (2, 3)),
        ({"type": "ended"}, lambda e: e["type"] == "ended"),
        (
            {"type": "unknown", "stream": "door"},
            lambda e: e["type"] == "unknown" and e["stream"] == "door",
        ),
        ({"since": str(NOW - 3600 + 10)}, lambda e: e["ts"] >= NOW - 3600 + 10),
        (
            {
                "since": datetime.fromtimestamp(NOW - 3600 + 5, UTC).isoformat(),
                "until": NOW - 3600 + 25,
            },
            lambda e: NOW - 3600 + 5 <= e["ts"] < NOW - 3600 + 25,
        ),
    ]
    for filters, keep in cases:
        expected = [e for e in newest_first if keep(e)]
        assert expected, filters
        first = log.query(limit=3, **filters)
        assert ids(first.items) == ids(expected[:3]), filters
        rest = log.query(limit=500, cursor=first.next_cursor, **filters)
        assert ids(first.items + rest.items) == ids(expected), filters
        assert rest.next_cursor is None

    assert log.query(stream="nowhere").items == []
    one = alerts[17]
    found = log.get(one.id)
    assert found is not None and found["id"] == one.id and found["track"] == 17
    assert log.get("0" * 20) is None and log.get("not-an-id") is None

    oldest_first = list(reversed(newest_first))
    start = oldest_first[9]["id"]
    assert ids(log.after(start, 5)) == ids(oldest_first[10:15])
    assert ids(log.after(start, 5, newest=True)) == ids(oldest_first[-5:])
    hall = EventFilters.parse(stream="hall")
    assert ids(log.after(start, 100, hall)) == ids(
        [e for e in oldest_first[10:] if e["stream"] == "hall"]
    )
    with pytest.raises(InvalidEventQuery):
        log.query(cursor="garbage")
    with pytest.raises(InvalidEventQuery):
        log.query(limit=501)
    with pytest.raises(InvalidEventQuery):
        log.after("../1", 5)


async def test_resume_sees_alerts_not_written_yet_once(store: Store, tmp_path: Path) -> None:
    bus = AlertBus()
    log = EventLog(store, EventSettings(), tmp_path)
    await log.start(bus)
    alerts = varied_alerts(12)
    for alert in alerts[:6]:
        bus.publish(alert)
    await eventually(lambda: log.written == 6, "the first alerts are written")
    for alert in alerts[6:]:  # published, and the writer has not run since
        bus.publish(alert)
    replay, truncated = await log.resume(alerts[2].id, EventFilters(), limit=100)
    assert [event["id"] for event in replay] == [alert.id for alert in alerts[3:]]
    assert not truncated

    door = EventFilters.parse(stream="door")
    replay, truncated = await log.resume(alerts[0].id, door, limit=2)
    expected = [a.id for a in alerts[1:] if a.stream == "door"]
    assert [event["id"] for event in replay] == expected[-2:] and truncated
    await log.close()
    assert stored_ids(store) == sorted(alert.id for alert in alerts)


async def test_an_alert_the_store_refuses_is_set_aside_alone(store: Store, tmp_path: Path) -> None:
    bus = AlertBus()
    log = EventLog(store, EventSettings(), tmp_path)
    await log.start(bus)
    alerts = varied_alerts(5)
    alerts[2] = make_alert(2, similarity=math.nan)
    for alert in alerts:
        bus.publish(alert)
    await log.close()
    assert stored_ids(store) == sorted(a.id for i, a in enumerate(alerts) if i != 2)
    assert log.rejected == 1 and log.pending == 0


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"])
async def test_a_store_outage_loses_nothing_it_can_hold(backend: str, tmp_path: Path) -> None:
    with fresh_database(backend, tmp_path) as direct_url:
        target = make_url(direct_url)
        with relaying(target.host or "127.0.0.1", target.port or 0) as relay:
            relayed = target.set(host="127.0.0.1", port=relay.port)
            store = Store(relayed.render_as_string(hide_password=False))
            bus = AlertBus()
            log = EventLog(
                store,
                EventSettings(write_queue=10),
                tmp_path,
                retry_initial_s=0.05,
                retry_max_s=0.2,
            )
            try:
                await log.start(bus)
                before = varied_alerts(5)
                for alert in before:
                    bus.publish(alert)
                await eventually(lambda: log.written == 5, "written before the outage")

                relay.down()
                during = [make_alert(100 + n, stream="hall") for n in range(25)]
                for alert in during:
                    bus.publish(alert)
                    await asyncio.sleep(0)
                await eventually(lambda: log.write_errors >= 2, "writes fail while down")
                assert log.written == 5 and not log.status()["store_ok"]
                assert log.pending <= 10 + log.batch_size
                with pytest.raises(StoreError):
                    await asyncio.to_thread(log.query)

                relay.up()
                await eventually(lambda: log.pending == 0, "everything held is written")
                assert log.status()["store_ok"]
                after = varied_alerts(3)
                for alert in after:
                    bus.publish(alert)
                await log.close()
            finally:
                await log.close()
                store.close()

        published = [a.id for a in before + during + after]
        direct = Store(direct_url)
        try:
            kept = stored_ids(direct)
        finally:
            direct.close()
        assert len(kept) == len(set(kept))  # never twice
        assert set(kept) <= set(published)
        assert log.dropped > 0 and len(kept) + log.dropped == len(published)
        # Dropping takes the oldest: what was written before, the newest and after, are kept.
        assert {a.id for a in before + during[-5:] + after} <= set(kept)


async def test_connections_killed_by_postgresql_are_replaced(tmp_path: Path) -> None:
    with fresh_database("postgresql", tmp_path) as url:
        store = Store(url)
        bus = AlertBus()
        log = EventLog(store, EventSettings(), tmp_path, retry_initial_s=0.05, retry_max_s=0.2)
        try:
            await log.start(bus)
            alerts = varied_alerts(20)
            for alert in alerts[:10]:
                bus.publish(alert)
            await eventually(lambda: log.written == 10, "the first ten are written")
            name = make_url(url).database
            admin = create_engine(url, isolation_level="AUTOCOMMIT")
            with admin.connect() as connection:
                killed = connection.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                ).scalar()
            admin.dispose()
            assert killed and killed >= 1
            for alert in alerts[10:]:
                bus.publish(alert)
            await log.close()
            assert stored_ids(store) == sorted(alert.id for alert in alerts)
        finally:
            await log.close()
            store.close()


def write_jpeg(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8\xff\xe0 not much of a JPEG \xff\xd9")
    return path.as_posix()


async def test_retention_deletes_old_events_and_their_snapshots(
    store: Store, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    old_ts, new_ts = NOW - 3 * 86400, NOW - 60
    old_day = datetime.fromtimestamp(old_ts, UTC).strftime("%Y-%m-%d")
    new_day = datetime.fromtimestamp(new_ts, UTC).strftime("%Y-%m-%d")

    def snapshot(day: str, name: str) -> str:
        relative = f"snapshots/{day}/door/{name}-face.jpg"
        write_jpeg(data_dir / relative)
        write_jpeg(data_dir / relative.replace("-face", "-frame"))
        return relative

    old = [make_alert(n, ts=old_ts + n, snapshot=snapshot(old_day, f"old{n}")) for n in range(3)]
    shared = snapshot(old_day, "shared")
    old_ended = make_alert(10, ts=old_ts + 10, snapshot=shared, type="ended")
    recent = [
        make_alert(20 + n, ts=new_ts + n, snapshot=snapshot(new_day, f"new{n}")) for n in range(2)
    ]
    recent_update = make_alert(30, ts=new_ts + 30, snapshot=shared, type="update")
    outside = tmp_path / "outside.jpg"
    write_jpeg(outside)
    hostile = make_alert(40, ts=old_ts + 40, snapshot="snapshots/../../outside.jpg")
    orphan = data_dir / f"snapshots/{old_day}/hall/dropped-face.jpg"
    write_jpeg(orphan)
    partial = data_dir / f"snapshots/{old_day}/hall/.half-face.jpg.tmp"
    partial.write_bytes(b"\xff\xd8")
    link = data_dir / f"snapshots/{old_day}/hall/link-face.jpg"
    os.symlink(outside, link)

    log = EventLog(store, EventSettings(keep_days=1), data_dir)
    log.write([*old, old_ended, *recent, recent_update, hostile])
    result = await asyncio.to_thread(log.purge)

    kept = set(stored_ids(store))
    assert kept == {a.id for a in [*recent, recent_update]}
    assert result.events == 5
    for alert in old:
        assert alert.snapshot and alert.frame_snapshot
        assert not (data_dir / alert.snapshot).exists()
        assert not (data_dir / alert.frame_snapshot).exists()
    for alert in [*recent, recent_update]:  # still named by kept events
        assert alert.snapshot and alert.frame_snapshot
        assert (data_dir / alert.snapshot).is_file()
        assert (data_dir / alert.frame_snapshot).is_file()
    assert not orphan.exists() and not partial.exists() and not link.is_symlink()
    assert outside.is_file()  # never anything outside the snapshots folder
    assert not (data_dir / f"snapshots/{old_day}/hall").exists()  # emptied folders go
    # 3 pairs of the old events; in the old day folder the orphan, the half file and the link.
    assert result.files == 6 + 3
    assert log.status()["purged_events"] == 5
    assert (await asyncio.to_thread(log.purge)).events == 0


async def test_retention_runs_when_the_log_starts(store: Store, tmp_path: Path) -> None:
    old = [make_alert(n, ts=NOW - 5 * 86400 + n) for n in range(4)]
    fresh = [make_alert(10 + n, ts=NOW - 10 + n) for n in range(2)]
    log = EventLog(store, EventSettings(keep_days=2), tmp_path)
    log.write(old + fresh)
    await log.start(AlertBus())
    await eventually(lambda: log.status()["purged_events"] == 4, "the first run at start")
    await log.close()
    with store.sql.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(Event)) == 2
    assert set(stored_ids(store)) == {a.id for a in fresh}


def test_old_timestamps_are_utc_in_every_backend(store: Store, tmp_path: Path) -> None:
    moment = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # a DST change in Europe
    alert = make_alert(1, ts=moment.timestamp())
    log = EventLog(store, EventSettings(), tmp_path)
    log.write([alert])
    page = log.query(since=moment - timedelta(seconds=1), until=moment + timedelta(seconds=1))
    assert [item["id"] for item in page.items] == [alert.id]
    assert log.query(since=moment + timedelta(seconds=1)).items == []


async def raw_get(server: EventServer, target: str, headers: dict[str, str]) -> tuple[int, Any]:
    """GET ``target`` exactly as written (no client normalises its dots); status, JSON or bytes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", make_url_port(server.url))
    lines = [f"GET {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    is_json = b"application/json" in head.lower()
    return status, json.loads(body) if is_json else body


def make_url_port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def test_the_events_api_pages_filters_and_explains_errors(tmp_path: Path) -> None:
    async with event_server(tmp_path) as server:
        alerts = varied_alerts(25)
        for alert in alerts:
            server.bus.publish(alert)
        await eventually(lambda: server.events.written == 25, "stored")
        newest_first = sorted(alerts, key=lambda a: a.id, reverse=True)
        async with httpx.AsyncClient(base_url=server.url, headers=server.auth()) as client:
            seen: list[str] = []
            params: dict[str, Any] = {"limit": 10, "stream": "door,hall"}
            for _ in range(5):
                response = await client.get("/api/events", params=params)
                assert response.status_code == 200
                page = response.json()
                seen += [item["id"] for item in page["items"]]
                if page["next_cursor"] is None:
                    break
                params["cursor"] = page["next_cursor"]
            assert seen == [a.id for a in newest_first if a.stream in ("door", "hall")]

            one = alerts[7]
            response = await client.get(f"/api/events/{one.id}")
            assert response.status_code == 200
            assert response.json() == with_links(one.as_dict())
            missing = await client.get("/api/events/00000000000000000000")
            assert missing.status_code == 404
            assert missing.json()["error"]["code"] == "event_not_found"

            for params, parameter in [
                ({"since": "last tuesday"}, "since"),
                ({"type": "sighting"}, "type"),
                ({"person_id": "ada"}, "person_id"),
                ({"cursor": "bm9wZQ"}, "cursor"),
            ]:
                response = await client.get("/api/events", params=params)
                assert response.status_code == 422, params
                error = response.json()["error"]
                assert error["code"] == "invalid_query" and error["parameter"] == parameter
                assert parameter in error["message"]
            response = await client.get("/api/events", params={"limit": 501})
            assert response.status_code == 422
            assert response.json()["error"]["code"] == "invalid_request"

        async with httpx.AsyncClient(base_url=server.url) as anonymous:
            for path in ("/api/events", f"/api/events/{one.id}", "/api/snapshots/a.jpg"):
                response = await anonymous.get(path)
                assert response.status_code == 401, path
                assert response.headers["www-authenticate"] == "Bearer"


async def test_snapshots_are_served_from_their_folder_only(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    # Today: retention, which runs when the server starts, sweeps old day folders.
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    face = data_dir / f"snapshots/{day}/door/0190-face.jpg"
    write_jpeg(face)
    (data_dir / f"snapshots/{day}/door/notes.txt").write_text("not a snapshot")
    (data_dir / "facewatch-secret.jpg").write_bytes(b"\xff\xd8 a file beside the folder")
    outside = tmp_path / "outside"
    outside.mkdir()
    write_jpeg(outside / "elsewhere.jpg")
    os.symlink(outside / "elsewhere.jpg", data_dir / f"snapshots/{day}/door/link-face.jpg")
    os.symlink(outside, data_dir / "snapshots/linked-day")
    async with event_server(data_dir) as server:
        viewer = server.auth("viewer")
        for target in (
            f"/api/snapshots/{day}/door/0190-face.jpg",
            f"/api/snapshots/snapshots/{day}/door/0190-face.jpg",
        ):
            status, body = await raw_get(server, target, viewer)
            assert status == 200 and body == face.read_bytes(), target

        refused = [
            "/api/snapshots/../facewatch-secret.jpg",
            f"/api/snapshots/{day}/../../facewatch-secret.jpg",
            "/api/snapshots/%2e%2e/facewatch-secret.jpg",
            "/api/snapshots/%2E%2E%2Ffacewatch-secret.jpg",
            "/api/snapshots/..%2f..%2foutside%2felsewhere.jpg",
            "/api/snapshots/%252e%252e/facewatch-secret.jpg",
            "/api/snapshots//etc/passwd",
            "/api/snapshots/%2Fetc%2Fpasswd",
            f"/api/snapshots/{outside.as_posix()}/elsewhere.jpg",
            "/api/snapshots/..%5cfacewatch-secret.jpg",
            f"/api/snapshots/{day}/door/link-face.jpg",  # a link out
            "/api/snapshots/linked-day/elsewhere.jpg",  # a linked folder out
            f"/api/snapshots/{day}/door/notes.txt",  # not a snapshot
            f"/api/snapshots/{day}/door",  # a folder
            f"/api/snapshots/{day}/door/missing-face.jpg",
            f"/api/snapshots/{day}/door/0190-face.jpg%00.txt",
        ]
        for target in refused:
            status, body = await raw_get(server, target, viewer)
            assert status == 404, target
            assert body["error"]["code"] == "snapshot_not_found", target
            assert "elsewhere" not in json.dumps(body) and "secret" not in json.dumps(body)
