"""The alerts WebSocket through a real uvicorn: credentials, filters, resuming without gap or
duplicate, a client that never reads, client messages, pings and shutdown.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from event_server import EventServer, event_server
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from facewatch.pipeline.alerts import Alert, new_alert_id
from facewatch.web.event_filters import with_links
from facewatch.web.routes import alerts_ws

BASE_TS = 1_769_846_400.0
STREAMS = ("door", "hall", "gate")
TYPES = ("match", "update", "ended", "unknown")


def make_alert(
    n: int, *, stream: str | None = None, type: str | None = None, **extra: Any
) -> Alert:
    chosen_type = type or TYPES[n % 4]
    person_id = None if chosen_type == "unknown" else 1 + n % 5
    return Alert(
        id=new_alert_id(BASE_TS + n),
        type=chosen_type,  # type: ignore[arg-type]
        stream=stream or STREAMS[n % 3],
        track=n,
        person_id=person_id,
        person=None if person_id is None else f"person {person_id}",
        similarity=None if person_id is None else 0.5,
        bbox=[1.0, 2.0, 30.0, 40.0],
        ts=BASE_TS + n,
        track_started_at=BASE_TS + n - 1,
        snapshot=f"snapshots/2026-01-31/door/{n}-face.jpg",
        frame_snapshot=f"snapshots/2026-01-31/door/{n}-frame.jpg",
        extra=extra,
    )


def open_socket(server: EventServer, query: str = "", role: str | None = "viewer") -> connect:
    headers = server.auth(role) if role else {}
    return connect(
        f"{server.ws_url}/ws/alerts{query}",
        additional_headers=headers,
        proxy=None,
        open_timeout=30,
        max_size=None,
    )


async def receive(ws: ClientConnection, timeout_s: float = 30) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout_s))
    return message


async def next_message(ws: ClientConnection, kind: str) -> dict[str, Any]:
    """The next message of ``kind``, skipping pings (60 s at most)."""
    async with asyncio.timeout(60):
        while True:
            message = await receive(ws)
            if message["type"] == kind:
                return message
            assert message["type"] == "ping", message


async def alerts_until(ws: ClientConnection, last_id: str) -> list[dict[str, Any]]:
    """Alerts received up to and including the one with ``last_id`` (120 s at most)."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(120):
        while not got or got[-1]["id"] != last_id:
            got.append((await next_message(ws, "alert"))["alert"])
    return got


async def closed_code(ws: ClientConnection) -> tuple[int, str]:
    """Read until the server closes; its close code and reason."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), 30)
    assert closed.value.rcvd is not None, "closed without a close frame"
    return closed.value.rcvd.code, closed.value.rcvd.reason


def ids(events: list[dict[str, Any]]) -> list[str]:
    return [event["id"] for event in events]


async def eventually(condition: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                if condition():
                    return
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"not seen within {timeout_s} s: {what}")


async def test_credentials_are_required(tmp_path: Path) -> None:
    async with event_server(tmp_path) as server:
        refused = [
            ("", {}),
            ("", {"Authorization": "Bearer fw_not_a_real_key"}),
            ("?token=nope", {}),
        ]
        for query, headers in refused:
            async with connect(
                f"{server.ws_url}/ws/alerts{query}", additional_headers=headers, proxy=None
            ) as ws:
                code, reason = await closed_code(ws)
                assert code == 1008 and "authentication" in reason
        assert server.bus.subscribers == 1  # the event log's: no refused client subscribed
        async with connect(
            f"{server.ws_url}/ws/alerts?token={server.tokens['viewer']}", proxy=None
        ) as ws:
            assert (await receive(ws))["type"] == "hello"


async def test_filters_from_the_query_and_from_messages(tmp_path: Path) -> None:
    async with (
        event_server(tmp_path) as server,
        open_socket(server, "?stream=door,hall&type=match") as ws,
    ):
        hello = await receive(ws)
        assert hello["type"] == "hello"
        assert hello["filters"] == {"stream": ["door", "hall"], "person": [], "type": ["match"]}
        assert (hello["resumed"], hello["truncated"]) == (0, False)

        alerts = [make_alert(n) for n in range(40)]
        last = make_alert(40, stream="door", type="match")
        for alert in [*alerts, last]:
            server.bus.publish(alert)
        got = await alerts_until(ws, last.id)
        wanted = [a for a in [*alerts, last] if a.stream in ("door", "hall") and a.type == "match"]
        assert ids(got) == [a.id for a in wanted]
        assert got[0] == with_links(wanted[0].as_dict())
        assert (
            got[0]["snapshot_url"] == f"/api/snapshots/2026-01-31/door/{wanted[0].track}-face.jpg"
        )

        await ws.send(json.dumps({"filters": {"person": "3", "type": None}}))
        ack = await next_message(ws, "filters")
        assert ack["filters"] == {"stream": [], "person": [3], "type": []}
        more = [make_alert(100 + n) for n in range(20)]
        last = make_alert(122)  # person 3
        assert last.person_id == 3
        for alert in [*more, last]:
            server.bus.publish(alert)
        got = await alerts_until(ws, last.id)
        assert ids(got) == [a.id for a in [*more, last] if a.person_id == 3]

        # Unusable messages get an error; the connection and its filters stay.
        for sent, code in [
            ("not json", "malformed_message"),
            (b"\x00\x01", "binary_message"),
            (json.dumps({"filters": {"type": "sighting"}}), "invalid_filters"),
            (json.dumps({"hello": 1}), "unknown_message"),
        ]:
            await ws.send(sent)
            error = await next_message(ws, "error")
            assert error["error"]["code"] == code and error["error"]["message"]
        await ws.send(json.dumps({"type": "ping"}))
        assert (await next_message(ws, "pong")) == {"type": "pong"}
        last = make_alert(132)  # a match of person 3 again
        assert (last.person_id, last.type) == (3, "match")
        server.bus.publish(make_alert(125))
        server.bus.publish(last)
        assert ids(await alerts_until(ws, last.id)) == [last.id]


async def test_unusable_query_parameters_are_explained_then_closed(tmp_path: Path) -> None:
    async with event_server(tmp_path) as server:
        for query, parameter in [
            ("?type=sighting", "type"),
            ("?person=ada", "person"),
            ("?after=../../etc", "after"),
        ]:
            async with open_socket(server, query) as ws:
                error = await receive(ws)
                assert error["type"] == "error" and error["error"]["code"] == "invalid_query"
                assert parameter in error["error"]["message"]
                assert (await closed_code(ws))[0] == 1003


async def test_a_message_above_64_kib_closes_with_1009(tmp_path: Path) -> None:
    async with event_server(tmp_path) as server, open_socket(server) as ws:
        await receive(ws)
        await ws.send(json.dumps({"type": "ping"}) + " " * (64 * 1024))
        assert (await closed_code(ws))[0] == 1009
        assert server.bus.subscribers == 1


async def test_resuming_has_no_gap_and_no_duplicate(tmp_path: Path) -> None:
    async with event_server(tmp_path) as server:
        stored = [make_alert(n) for n in range(30)]
        for alert in stored:
            server.bus.publish(alert)
        await eventually(lambda: server.events.written == 30, "the first alerts are stored")

        # Alerts keep coming while the client connects, subscribes and replays.
        published = list(stored)
        stop = asyncio.Event()

        async def keep_publishing() -> None:
            n = 1000
            while not stop.is_set():
                alert = make_alert(n)
                server.bus.publish(alert)
                published.append(alert)
                n += 1
                await asyncio.sleep(0.001)

        publisher = asyncio.create_task(keep_publishing())
        try:
            await asyncio.sleep(0.05)
            async with open_socket(server, f"?after={stored[9].id}") as ws:
                hello = await receive(ws)
                assert hello["resumed"] >= 20 and not hello["truncated"]
                received = []
                while len(received) < hello["resumed"] + 100:
                    received.append((await next_message(ws, "alert"))["alert"])
                stop.set()
                await publisher
                last = make_alert(9999)
                server.bus.publish(last)
                published.append(last)
                received += await alerts_until(ws, last.id)
        finally:
            stop.set()
            await publisher
        assert ids(received) == [a.id for a in published if a.id > stored[9].id]


async def test_a_long_gap_replays_the_latest_and_says_so(tmp_path: Path) -> None:
    async with event_server(tmp_path, resume_limit=5) as server:
        stored = [make_alert(n) for n in range(30)]
        for alert in stored:
            server.bus.publish(alert)
        await eventually(lambda: server.events.written == 30, "stored")
        async with open_socket(server, f"?after={stored[0].id}&stream=door") as ws:
            hello = await receive(ws)
            assert (hello["resumed"], hello["truncated"]) == (5, True)
            door = [a.id for a in stored if a.stream == "door"]
            replayed = [(await next_message(ws, "alert"))["alert"] for _ in range(5)]
            assert ids(replayed) == door[-5:]


class StuckClient:
    """A WebSocket client that completes its handshake and then does not read, over a socket
    with a small receive buffer, as a browser tab frozen by its machine would."""

    def __init__(self, sock: socket.socket, protocol: ClientProtocol) -> None:
        self.sock = sock
        self.protocol = protocol

    @classmethod
    async def open(cls, url: str, headers: dict[str, str]) -> StuckClient:
        uri = parse_uri(url)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(30)
        await asyncio.to_thread(sock.connect, (uri.host, uri.port))
        protocol = ClientProtocol(uri, max_size=None)
        request = protocol.connect()
        for name, value in headers.items():
            request.headers[name] = value
        protocol.send_request(request)
        sock.sendall(b"".join(protocol.data_to_send()))
        while not any(isinstance(event, Response) for event in protocol.events_received()):
            protocol.receive_data(await asyncio.to_thread(sock.recv, 4096))
        return cls(sock, protocol)

    def read_until_closed(self) -> tuple[int | None, str, int]:
        """Blocking: read everything; the close code and reason, and the alerts read."""
        alerts = 0
        try:
            while self.protocol.close_rcvd is None:
                data = self.sock.recv(65536)
                if not data:
                    self.protocol.receive_eof()
                    break
                self.protocol.receive_data(data)
                for event in self.protocol.events_received():
                    if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                        alerts += json.loads(event.data)["type"] == "alert"
                self.sock.sendall(b"".join(self.protocol.data_to_send()))
        finally:
            self.sock.close()
        close = self.protocol.close_rcvd
        return (None, "", alerts) if close is None else (close.code, close.reason, alerts)


async def test_a_client_that_never_reads_is_dropped_and_the_others_get_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the full queue may end the stuck client here, however slow this machine is.
    monkeypatch.setattr(alerts_ws, "SEND_TIMEOUT_S", 300.0)
    async with event_server(tmp_path) as server:
        stuck = await StuckClient.open(f"{server.ws_url}/ws/alerts", server.auth())
        async with open_socket(server) as reader:
            await receive(reader)
            assert server.bus.subscribers == 3
            published: list[Alert] = []
            received: list[dict[str, Any]] = []
            for batch in range(200):
                # Each alert carries 4 KiB of random text: the stuck client's socket fills up.
                chunk = [
                    make_alert(64 * batch + n, padding=os.urandom(2048).hex()) for n in range(64)
                ]
                for alert in chunk:
                    server.bus.publish(alert)  # never waits, whoever is stuck
                published += chunk
                received += await alerts_until(reader, chunk[-1].id)
                if server.bus.dropped_subscribers:
                    break
            assert server.bus.dropped_subscribers == 1  # the stuck one, not the reader
            assert server.bus.subscribers == 2
            after = [make_alert(100_000 + n) for n in range(5)]
            for alert in after:
                server.bus.publish(alert)
            received += await alerts_until(reader, after[-1].id)
            assert ids(received) == [a.id for a in published + after]

            code, reason, read = await asyncio.to_thread(stuck.read_until_closed)
            assert code == 1013 and "too slow" in reason
            assert read < len(published)


async def test_pings_come_periodically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alerts_ws, "PING_INTERVAL_S", 0.05)
    async with event_server(tmp_path) as server, open_socket(server) as ws:
        hello = await receive(ws)
        assert hello["ping_interval_s"] == 0.05
        assert [(await receive(ws))["type"] for _ in range(3)] == ["ping"] * 3


async def test_shutdown_closes_subscribers_with_1001(tmp_path: Path) -> None:
    async with event_server(tmp_path) as server:
        async with open_socket(server) as first, open_socket(server, "?stream=hall") as second:
            await receive(first)
            await receive(second)
            await alerts_ws.close_alert_sockets(server.services)  # type: ignore[arg-type]
            for ws in (first, second):
                code, reason = await closed_code(ws)
                assert code == 1001 and "shutting down" in reason
        await eventually(lambda: server.bus.subscribers == 1, "subscriptions released")

        # The pipeline closing its bus ends the connections the same way.
        async with open_socket(server) as ws:
            await receive(ws)
            alert = make_alert(1)
            server.bus.publish(alert)
            assert (await next_message(ws, "alert"))["alert"]["id"] == alert.id
            server.bus.close()
            assert (await closed_code(ws))[0] == 1001
