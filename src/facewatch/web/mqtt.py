"""Alerts published to an MQTT broker (aiomqtt).

Each alert's JSON goes to ``<prefix>/alerts/<stream>/<person id or "unknown">`` with the
configured QoS. ``<prefix>/status`` is retained: ``online`` once connected, ``offline`` on a clean
close, and ``offline`` as the last will, which the broker publishes when the connection dies.

The pipeline never waits for the broker: alerts go from the bus into a bounded outbox (oldest
dropped and counted while the broker is away) and a task publishes them, reconnecting with
backoff. An alert leaves the outbox only once the broker took it (at least once delivery: an
alert whose acknowledgement was lost in a disconnection is published again).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import secrets
import socket
import time
from typing import Any

import aiomqtt

from facewatch.config import MqttSettings
from facewatch.pipeline.alerts import Alert, AlertBus
from facewatch.stream.backoff import backoff_delay
from facewatch.web.outbox import AlertFeed, Outbox, worth_logging

log = logging.getLogger(__name__)

#: Alerts published at once before waiting for the broker's acknowledgements.
WINDOW = 64
ONLINE = "online"
OFFLINE = "offline"
CONNECTION_ENDED = "the connection to the broker ended"


class ConnectionLost(Exception):
    """The broker connection ended while alerts were being published."""


def alert_topic(prefix: str, alert: Alert) -> str:
    """``<prefix>/alerts/<stream>/<person id or "unknown">``, each level safe for MQTT."""
    person = "unknown" if alert.person_id is None else str(alert.person_id)
    return f"{prefix}/alerts/{topic_level(alert.stream)}/{person}"


def status_topic(prefix: str) -> str:
    return f"{prefix}/status"


def topic_level(name: str) -> str:
    """One topic level: no level separator, no wildcard, no NUL; never empty."""
    cleaned = "".join("_" if c in "/+#\x00" else c for c in name)
    return cleaned or "_"


def alert_payload(alert: Alert) -> bytes:
    """The alert as compact JSON.

    Raises:
        ValueError: it holds numbers JSON cannot (NaN, infinities).
    """
    return json.dumps(
        alert.as_dict(), separators=(",", ":"), allow_nan=False, default=_plain
    ).encode()


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return item()
    return str(value)


class MqttPublisher:
    """Publishes every alert of an :class:`~facewatch.pipeline.alerts.AlertBus` to a broker.

    Args:
        settings: the broker, topics, QoS and queue size.
        retry_initial_s, retry_max_s: the reconnection backoff.
        timeout_s: how long one broker operation (connect, acknowledgement) may take.
        close_timeout_s: how long :meth:`close` may take, flushing included.
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 30.0,
        timeout_s: float = 10.0,
        close_timeout_s: float = 5.0,
    ) -> None:
        self.settings = settings
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.timeout_s = timeout_s
        self.close_timeout_s = close_timeout_s
        self.client_id = settings.client_id or (
            f"facewatch-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        )
        self.status_topic = status_topic(settings.topic_prefix)
        self.published = 0
        self.errors = 0
        self.connections = 0
        self.connected = False
        self.last_error: str | None = None
        self.connected_since: float | None = None
        self._outbox: Outbox[Alert] = Outbox(settings.queue_size)
        self._in_flight: list[Alert] = []
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._feed = AlertFeed(self._outbox, settings.queue_size, self._wake.set, "MQTT publisher")
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._draining = False
        self._closed = asyncio.Event()

    @property
    def pending(self) -> int:
        return len(self._outbox) + len(self._in_flight)

    @property
    def dropped(self) -> int:
        """Alerts never published because the queue was full while the broker was away."""
        return self._feed.dropped

    @property
    def broker(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def status(self) -> dict[str, Any]:
        """Counters for health pages and metrics."""
        return {
            "broker": self.broker,
            "connected": self.connected,
            "connected_since": self.connected_since,
            "published": self.published,
            "pending": self.pending,
            "dropped": self.dropped,
            "errors": self.errors,
            "reconnects": max(0, self.connections - 1),
            "last_error": self.last_error,
        }

    async def start(self, bus: AlertBus) -> None:
        """Subscribe to ``bus`` and start connecting (in the background: never waits)."""
        if self._task is not None:
            return
        self._feed.start(bus)
        self._task = asyncio.create_task(self._run(), name="facewatch-mqtt")

    async def close(self) -> None:
        """Publish what is pending, then ``offline``, and disconnect: ``close_timeout_s`` at most.

        Safe to call twice.
        """
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        try:
            async with asyncio.timeout(self.close_timeout_s):
                await self._feed.close()
                self._draining = True
                self._stop.set()
                self._wake.set()
                if self._task is not None:
                    await asyncio.shield(self._task)
        except TimeoutError:
            log.warning("MQTT publisher did not close within %.1f s", self.close_timeout_s)
        finally:
            if self._task is not None and not self._task.done():
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
            if self.pending:
                log.warning("%d alerts not published to MQTT before shutdown", self.pending)
            self.connected = False
            self._closed.set()

    # --- connection -----------------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while True:
            connections = self.connections
            try:
                await self._connected_session()
            except (aiomqtt.MqttError, ConnectionLost, OSError) as exc:
                # A connection that was up and then lost starts a new outage: short delays again.
                failures = 1 if self.connections > connections else failures + 1
                self._note_failure(exc, failures)
            finally:
                self.connected = False
            if self._draining:
                return
            delay = backoff_delay(
                max(0, failures - 1), self.retry_initial_s, self.retry_max_s, random.random()
            )
            try:
                async with asyncio.timeout(delay):
                    await self._stop.wait()
            except TimeoutError:
                pass

    def _client(self) -> aiomqtt.Client:
        settings = self.settings
        client = aiomqtt.Client(
            settings.host,
            settings.port,
            username=settings.username,
            password=settings.password,
            identifier=self.client_id,
            will=aiomqtt.Will(self.status_topic, OFFLINE, qos=1, retain=True),
            timeout=self.timeout_s,
            keepalive=30,
            tls_params=aiomqtt.TLSParameters() if settings.tls else None,
            logger=logging.getLogger("facewatch.web.mqtt.client"),
        )
        # A full window of publishes awaiting acknowledgement is normal here, not a warning.
        client.pending_calls_threshold = WINDOW + 1
        return client

    async def _connected_session(self) -> None:
        """One connection: announce ``online``, publish until closing, then ``offline``."""
        client = self._client()
        async with client:
            self.connected = True
            self.connected_since = time.time()
            self.connections += 1
            log.info("MQTT connected to %s as %s", self.broker, self.client_id)
            watcher = asyncio.create_task(_watch(client), name="facewatch-mqtt-watch")
            try:
                await self._guarded(client.publish(self.status_topic, ONLINE, 1, True), watcher)
                await self._publish_until_closed(client, watcher)
                await self._guarded(client.publish(self.status_topic, OFFLINE, 1, True), watcher)
            finally:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)

    async def _publish_until_closed(
        self, client: aiomqtt.Client, watcher: asyncio.Task[None]
    ) -> None:
        while True:
            if not self._outbox:
                if self._draining:
                    return
                self._wake.clear()
                waiter = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait({waiter, watcher}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                if watcher.done():
                    raise ConnectionLost(CONNECTION_ENDED)
                continue
            window = self._outbox.take(WINDOW)
            self._in_flight = window
            try:
                results = await self._guarded(self._publish_window(client, window), watcher)
            except BaseException:
                self._in_flight = []
                self._outbox.restore(window)
                raise
            self._in_flight = []
            unsent = [alert for alert, ok in zip(window, results, strict=True) if not ok]
            if unsent:
                self._outbox.restore(unsent)
                raise ConnectionLost("the broker stopped acknowledging alerts")

    async def _publish_window(self, client: aiomqtt.Client, window: list[Alert]) -> list[bool]:
        """Publish alerts together; per alert, whether the broker took it (or it was refused)."""
        prefix, qos = self.settings.topic_prefix, self.settings.qos

        async def one(alert: Alert) -> bool:
            try:
                payload = alert_payload(alert)
                topic = alert_topic(prefix, alert)
            except (TypeError, ValueError) as exc:
                self._refuse(alert, exc)
                return True
            try:
                await client.publish(topic, payload, qos=qos, timeout=self.timeout_s)
            except aiomqtt.MqttError:
                return False
            except (TypeError, ValueError) as exc:  # paho refuses the topic or payload
                self._refuse(alert, exc)
                return True
            self.published += 1
            return True

        return list(await asyncio.gather(*(one(alert) for alert in window)))

    async def _guarded(self, operation: Any, watcher: asyncio.Task[None]) -> Any:
        """Await ``operation`` unless the connection ends first (then raise ConnectionLost)."""
        task = asyncio.ensure_future(operation)
        try:
            await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise ConnectionLost(CONNECTION_ENDED)

    def _refuse(self, alert: Alert, exc: Exception) -> None:
        self.errors += 1
        self.last_error = f"alert {alert.id} not publishable: {exc}"
        log.error("alert %s not published to MQTT: %s", alert.id, exc)

    def _note_failure(self, exc: BaseException, failures: int) -> None:
        self.errors += 1
        self.last_error = str(exc) or type(exc).__name__
        if self.connected_since is not None and failures == 1:
            log.warning("MQTT connection to %s lost: %s", self.broker, self.last_error)
        elif worth_logging(failures):
            log.warning(
                "MQTT broker %s unreachable (%d tries, %d alerts waiting, %d dropped): %s",
                self.broker,
                failures,
                self.pending,
                self.dropped,
                self.last_error,
            )


async def _watch(client: aiomqtt.Client) -> None:
    """Ends when the connection does: aiomqtt ends message iteration on a disconnection."""
    try:
        async for _ in client.messages:
            pass
    except aiomqtt.MqttError:
        return
