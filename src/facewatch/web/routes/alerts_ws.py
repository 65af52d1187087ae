"""Routes: the alerts WebSocket, ``/ws/alerts`` (role viewer).

Query parameters: ``stream`` and ``person`` (comma-separated ids), ``type`` (``match``,
``update``, ``ended``, ``unknown``) and ``after`` (the id of the last alert the client has, to
resume); credentials as for every route, or ``?token=``. The server sends::

    {"type": "hello", "filters": {...}, "resumed": n, "truncated": bool, "ping_interval_s": s}
    {"type": "alert", "alert": {"id", "type", "stream", ..., "snapshot_url", ...}}
    {"type": "ping"}                                   every ping_interval_s
    {"type": "filters", "filters": {...}}              after the client changed them
    {"type": "error", "error": {"code", "message"}}

and the client may send ``{"filters": {"stream": ..., "person": ..., "type": ...}}`` or
``{"type": "ping"}`` (answered ``{"type": "pong"}``).

Resuming subscribes to the bus first, then replays the events after ``after`` (stored, or still
waiting to be written), then the live ones, skipping those already replayed: no gap, no
duplicate. Each connection has its own bounded queue on the bus: a client that falls behind is
closed with 1013 and never slows the pipeline or the other clients. Close codes: 1008 refused
credentials, 1003 unusable query parameters, 1009 a client message above 64 KiB, 1013 too slow
(or the store down while resuming), 1001 the server shutting down.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from facewatch.errors import StoreError
from facewatch.pipeline.alerts import Subscription
from facewatch.web.auth import Role, authenticate_websocket
from facewatch.web.event_filters import (
    EventFilters,
    InvalidEventQuery,
    check_alert_id,
    with_links,
)
from facewatch.web.services import Services, get_services

log = logging.getLogger(__name__)

router = APIRouter(tags=["alerts"])

#: Alerts waiting for one client at most; beyond, the client is too slow and is closed (1013).
SUBSCRIBER_QUEUE = 256
#: Seconds one message may take to leave; beyond, the client is too slow (1013).
SEND_TIMEOUT_S = 10.0
#: Seconds the closing handshake may take before the connection is left to the server.
CLOSE_TIMEOUT_S = 5.0
#: Seconds between two ``{"type": "ping"}`` messages.
PING_INTERVAL_S = 20.0
#: Largest message a client may send, in bytes.
MAX_CLIENT_MESSAGE = 64 * 1024

GOING_AWAY = 1001
UNSUPPORTED_DATA = 1003
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
TRY_AGAIN_LATER = 1013

FILTER_KEYS = ("stream", "person", "type")
SOCKETS_KEY = "alert_sockets"


@dataclass(frozen=True, slots=True)
class Reply:
    """What answering one client message gives: a message to send, maybe new filters."""

    message: dict[str, Any]
    filters: EventFilters | None = None


def error_message(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"code": code, "message": message}}


def answer(text: str) -> Reply:
    """The reply to one text message from a client (no I/O)."""
    try:
        request = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        return Reply(error_message("malformed_message", "messages are JSON objects"))
    if not isinstance(request, dict):
        return Reply(error_message("malformed_message", "messages are JSON objects"))
    if "filters" in request:
        given = request["filters"]
        if not isinstance(given, dict):
            return Reply(
                error_message("invalid_filters", 'filters are {"stream", "person", "type"}')
            )
        unknown = sorted(set(given) - set(FILTER_KEYS))
        if unknown:
            return Reply(
                error_message(
                    "invalid_filters",
                    f"unknown filter {str(unknown[0])[:40]!r}: one of {', '.join(FILTER_KEYS)}",
                )
            )
        try:
            filters = EventFilters.parse(
                given.get("stream"), given.get("person"), given.get("type")
            )
        except InvalidEventQuery as exc:
            return Reply(error_message("invalid_filters", str(exc)))
        return Reply({"type": "filters", "filters": filters.as_dict()}, filters)
    if request.get("type") == "ping":
        return Reply({"type": "pong"})
    return Reply(error_message("unknown_message", 'send {"filters": {...}} or {"type": "ping"}'))


class AlertSocket:
    """One ``/ws/alerts`` connection: its subscription, filters and the alerts it replayed."""

    def __init__(
        self, websocket: WebSocket, subscription: Subscription, filters: EventFilters
    ) -> None:
        self.websocket = websocket
        self.subscription = subscription
        self.filters = filters
        self.finished = asyncio.Event()
        self._replayed: set[str] = set()
        self._send_lock = asyncio.Lock()
        self._ending: tuple[int, str] | None = None
        self._client_gone = False

    def shut_down(self) -> None:
        """Close with 1001 once the alerts already queued for the client are sent."""
        self._end(GOING_AWAY, "the server is shutting down")
        self.subscription.close()

    async def serve(self, hello: dict[str, Any], replay: list[dict[str, Any]]) -> None:
        """Send the hello and the replay, then live alerts until either side ends."""
        try:
            if await self._send(hello) and await self._replay(replay):
                await self._run()
            if self._ending is not None and not self._client_gone:
                await self.close(*self._ending)
        finally:
            self.subscription.close()
            self.finished.set()

    async def close(self, code: int, reason: str) -> None:
        await close_bounded(self.websocket, code, reason)

    async def _replay(self, events: list[dict[str, Any]]) -> bool:
        for event in events:
            self._replayed.add(event["id"])
            if not await self._send({"type": "alert", "alert": event}):
                return False
        return True

    async def _run(self) -> None:
        forward = asyncio.create_task(self._forward(), name="facewatch-ws-alerts-forward")
        receive = asyncio.create_task(self._receive(), name="facewatch-ws-alerts-receive")
        try:
            await asyncio.wait({forward, receive}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (forward, receive):
                task.cancel()
            await asyncio.gather(forward, receive, return_exceptions=True)

    async def _forward(self) -> None:
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + PING_INTERVAL_S
        while self._ending is None:
            if self.subscription.overflowed:
                self._too_slow()
                return
            wait = next_ping - loop.time()
            if wait <= 0:
                if not await self._send({"type": "ping"}):
                    return
                next_ping = loop.time() + PING_INTERVAL_S
                continue
            try:
                async with asyncio.timeout(wait):
                    alert = await self.subscription.get()
            except TimeoutError:
                continue
            if alert is None:
                self._subscription_ended()
                return
            if alert.id in self._replayed:
                self._replayed.discard(alert.id)
                continue
            data = alert.as_dict()
            if self.filters.matches(data):
                if not await self._send({"type": "alert", "alert": with_links(data)}):
                    return

    async def _receive(self) -> None:
        while self._ending is None:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                self._client_gone = True
                return
            text: str | None = message.get("text")
            data: bytes | None = message.get("bytes")
            size = len(text.encode()) if text is not None else len(data or b"")
            if size > MAX_CLIENT_MESSAGE:
                self._end(MESSAGE_TOO_BIG, f"messages are {MAX_CLIENT_MESSAGE // 1024} KiB at most")
                return
            if text is None:
                reply = Reply(error_message("binary_message", "messages are JSON text"))
            else:
                reply = answer(text)
            if reply.filters is not None:
                self.filters = reply.filters
            if not await self._send(reply.message):
                return

    async def _send(self, message: dict[str, Any]) -> bool:
        """Send within :data:`SEND_TIMEOUT_S`; False (and the end decided) when it failed."""
        if self._client_gone:
            return False
        text = json.dumps(message, separators=(",", ":"), default=str)
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                async with self._send_lock:
                    await self.websocket.send_text(text)
            return True
        except TimeoutError:
            self._end(
                TRY_AGAIN_LATER,
                f"too slow: a message waited more than {SEND_TIMEOUT_S:g} s to be sent",
            )
        except (WebSocketDisconnect, RuntimeError, OSError):
            self._client_gone = True
        return False

    def _subscription_ended(self) -> None:
        """The bus ended our subscription: it overflowed, or the server is shutting down."""
        if self.subscription.overflowed:
            self._too_slow()
        else:
            self._end(GOING_AWAY, "the server is shutting down")

    def _too_slow(self) -> None:
        self._end(TRY_AGAIN_LATER, f"too slow: more than {SUBSCRIBER_QUEUE} alerts waiting")

    def _end(self, code: int, reason: str) -> None:
        if self._ending is None:
            self._ending = (code, reason)


class AlertSockets:
    """The open ``/ws/alerts`` connections of one server, so that shutdown can close them."""

    def __init__(self) -> None:
        self._open: set[AlertSocket] = set()

    def __len__(self) -> int:
        return len(self._open)

    def add(self, socket: AlertSocket) -> None:
        self._open.add(socket)

    def discard(self, socket: AlertSocket) -> None:
        self._open.discard(socket)

    async def close(self, timeout_s: float = CLOSE_TIMEOUT_S + 1) -> None:
        """Close every connection with 1001 and wait for them, ``timeout_s`` at most."""
        sockets = list(self._open)
        for socket in sockets:
            socket.shut_down()
        if not sockets:
            return
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*(socket.finished.wait() for socket in sockets))
        except TimeoutError:
            log.warning("%d alert WebSockets did not close in %.1f s", len(sockets), timeout_s)


def alert_sockets(services: Services) -> AlertSockets:
    """The server's open alert connections (kept in ``services.extras``)."""
    sockets = services.extras.get(SOCKETS_KEY)
    if not isinstance(sockets, AlertSockets):
        sockets = services.extras[SOCKETS_KEY] = AlertSockets()
    return sockets


async def close_alert_sockets(services: Services) -> None:
    """Close every alert WebSocket with 1001: call at shutdown, before the server's own close."""
    await alert_sockets(services).close()


@router.websocket("/ws/alerts")
async def alerts_websocket(websocket: WebSocket) -> None:
    services = get_services(websocket)
    if await authenticate_websocket(websocket, Role.viewer) is None:
        # Accepted only to close it with a code the browser can read: nothing is sent.
        await websocket.accept()
        await close_bounded(websocket, POLICY_VIOLATION, "authentication required")
        return
    params = websocket.query_params
    try:
        filters = EventFilters.parse(
            ",".join(params.getlist("stream")) or None,
            ",".join(params.getlist("person")) or None,
            ",".join(params.getlist("type")) or None,
        )
        after = check_alert_id(params["after"]) if params.get("after") else None
    except InvalidEventQuery as exc:
        await _refuse(websocket, UNSUPPORTED_DATA, error_message("invalid_query", str(exc)))
        return
    subscription = services.pipeline.bus.subscribe(SUBSCRIBER_QUEUE)
    try:
        replay: list[dict[str, Any]] = []
        truncated = False
        if after is not None:
            limit = services.events.settings.resume_limit
            replay, truncated = await services.events.resume(after, filters, limit)
    except StoreError as exc:
        subscription.close()
        await _refuse(
            websocket,
            TRY_AGAIN_LATER,
            error_message("store_unavailable", f"cannot resume now: {exc}"),
        )
        return
    except BaseException:
        subscription.close()
        raise
    await websocket.accept()
    socket = AlertSocket(websocket, subscription, filters)
    sockets = alert_sockets(services)
    sockets.add(socket)
    hello = {
        "type": "hello",
        "filters": filters.as_dict(),
        "resumed": len(replay),
        "truncated": truncated,
        "ping_interval_s": PING_INTERVAL_S,
    }
    try:
        await socket.serve(hello, replay)
    finally:
        sockets.discard(socket)


async def _refuse(websocket: WebSocket, code: int, message: dict[str, Any]) -> None:
    """Accept, say why in one message, and close with ``code``."""
    await websocket.accept()
    try:
        async with asyncio.timeout(SEND_TIMEOUT_S):
            await websocket.send_text(json.dumps(message))
    except (TimeoutError, WebSocketDisconnect, RuntimeError, OSError):
        return
    await close_bounded(websocket, code, message["error"]["message"])


async def close_bounded(websocket: WebSocket, code: int, reason: str) -> None:
    """Close, waiting at most :data:`CLOSE_TIMEOUT_S` (a stuck client cannot take more)."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            # A close reason is at most 123 bytes.
            await websocket.close(code, reason.encode()[:120].decode(errors="ignore"))
    except (TimeoutError, WebSocketDisconnect, RuntimeError, OSError):
        pass
