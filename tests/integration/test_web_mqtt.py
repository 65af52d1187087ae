"""Alerts published to the real Mosquitto on 127.0.0.1:1883: topics, payloads, the retained
status and last will, a broker that goes away and comes back, and one that is not there.

Each test uses a topic prefix of its own and clears the retained status it leaves.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiomqtt
import pytest
from tcp_relay import TcpRelay, relaying

from facewatch.config import MqttSettings
from facewatch.pipeline.alerts import Alert, AlertBus, new_alert_id
from facewatch.web.mqtt import MqttPublisher, alert_topic

BROKER = ("127.0.0.1", 1883)
BASE_TS = 1_769_846_400.0


def make_alert(n: int, *, stream: str = "door", person_id: int | None = 4) -> Alert:
    return Alert(
        id=new_alert_id(BASE_TS + n),
        type="match" if person_id is not None else "unknown",
        stream=stream,
        track=n,
        person_id=person_id,
        person=None if person_id is None else "Ada",
        similarity=0.47,
        bbox=[1.0, 2.0, 30.0, 40.0],
        ts=BASE_TS + n,
        track_started_at=BASE_TS + n - 2,
        snapshot="snapshots/2026-01-31/door/x-face.jpg",
    )


def broker_reachable() -> bool:
    try:
        socket.create_connection(BROKER, timeout=2).close()
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(
    not broker_reachable(), reason=f"no MQTT broker at {BROKER[0]}:{BROKER[1]}"
)


@pytest.fixture
def prefix() -> str:
    return f"facewatch-test-{uuid.uuid4().hex[:10]}"


class Listener:
    """A subscriber on ``<prefix>/#``, collecting (topic, payload, qos, retain) as they come."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.messages: list[tuple[str, bytes, int, bool]] = []
        self.changed = asyncio.Event()

    async def collect(self) -> None:
        async for message in self.client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            self.messages.append((str(message.topic), payload, message.qos, message.retain))
            self.changed.set()

    def payloads(self, topic: str) -> list[bytes]:
        return [payload for name, payload, _, _ in self.messages if name == topic]

    async def wait_for(
        self, condition: Callable[[], bool], what: str, timeout_s: float = 60
    ) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                while not condition():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            pytest.fail(f"not seen within {timeout_s} s: {what}; got {self.messages[-5:]}")


@asynccontextmanager
async def listening(prefix: str) -> AsyncIterator[Listener]:
    async with aiomqtt.Client(*BROKER, identifier=f"{prefix}-listener") as client:
        await client.subscribe(f"{prefix}/#", qos=1)
        listener = Listener(client)
        task = asyncio.create_task(listener.collect())
        try:
            yield listener
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            # Leave no retained message behind on the shared broker.
            await client.publish(f"{prefix}/status", b"", qos=1, retain=True)


async def eventually(condition: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                if condition():
                    return
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"not seen within {timeout_s} s: {what}")


def settings(prefix: str, **changes: Any) -> MqttSettings:
    return MqttSettings(
        **{"enabled": True, "host": BROKER[0], "port": BROKER[1], "topic_prefix": prefix, **changes}
    )


async def test_alerts_arrive_on_their_topics_and_the_status_is_retained(prefix: str) -> None:
    async with listening(prefix) as listener:
        bus = AlertBus()
        publisher = MqttPublisher(settings(prefix, qos=1))
        await publisher.start(bus)
        status = f"{prefix}/status"
        await listener.wait_for(lambda: b"online" in listener.payloads(status), "online")

        alerts = [
            make_alert(0),
            make_alert(1, stream="hall", person_id=9),
            make_alert(2, person_id=None),
            make_alert(3),
        ]
        for alert in alerts:
            bus.publish(alert)
        expected_topics = [
            f"{prefix}/alerts/door/4",
            f"{prefix}/alerts/hall/9",
            f"{prefix}/alerts/door/unknown",
            f"{prefix}/alerts/door/4",
        ]
        assert [alert_topic(prefix, a) for a in alerts] == expected_topics

        def alert_messages() -> list[tuple[str, bytes, int, bool]]:
            return [m for m in listener.messages if "/alerts/" in m[0]]

        await listener.wait_for(lambda: len(alert_messages()) >= 4, "the four alerts")
        by_id = {
            json.loads(payload)["id"]: (topic, json.loads(payload), qos)
            for topic, payload, qos, _ in alert_messages()
        }
        for alert, topic in zip(alerts, expected_topics, strict=True):
            got_topic, payload, qos = by_id[alert.id]
            assert got_topic == topic and payload == alert.as_dict() and qos == 1
        await eventually(lambda: publisher.published == 4, "the broker acknowledged all four")
        assert publisher.status()["connected"]

        await publisher.close()
        await listener.wait_for(lambda: listener.payloads(status)[-1:] == [b"offline"], "offline")
        assert not publisher.connected and publisher.pending == 0

        # The status is retained: whoever comes later reads "offline".
        async with aiomqtt.Client(*BROKER, identifier=f"{prefix}-late") as late:
            await late.subscribe(status, qos=1)
            async with asyncio.timeout(30):
                message = await anext(aiter(late.messages))
            assert message.payload == b"offline" and message.retain


async def test_the_broker_going_away_and_back_loses_no_alert(prefix: str) -> None:
    status = f"{prefix}/status"
    with relaying(*BROKER) as relay:
        await broker_outage(prefix, status, relay)


async def broker_outage(prefix: str, status: str, relay: TcpRelay) -> None:
    async with listening(prefix) as listener:
        bus = AlertBus()
        publisher = MqttPublisher(
            settings(prefix, port=relay.port),
            retry_initial_s=0.05,
            retry_max_s=0.3,
            # The relay, down, accepts and hangs up: a try ends when no CONNACK came in time.
            timeout_s=2,
        )
        await publisher.start(bus)
        await listener.wait_for(lambda: listener.payloads(status) == [b"online"], "online")
        before = [make_alert(n) for n in range(5)]
        for alert in before:
            bus.publish(alert)
        await eventually(lambda: publisher.published == 5, "published before the outage")

        relay.down()
        # The broker saw the connection die: it publishes the last will.
        await listener.wait_for(lambda: listener.payloads(status)[-1:] == [b"offline"], "will")
        await eventually(lambda: not publisher.connected, "the publisher noticed")
        during = [make_alert(10 + n, stream="hall") for n in range(20)]
        for alert in during:
            bus.publish(alert)  # never waits for the broker
        await eventually(lambda: relay.refused >= 2, "reconnection attempts while down")
        assert publisher.pending == 20 and publisher.dropped == 0

        relay.up()
        await listener.wait_for(lambda: listener.payloads(status)[-1:] == [b"online"], "back")
        await eventually(lambda: publisher.pending == 0, "the backlog is published")
        await publisher.close()

        def received_ids() -> set[str]:
            return {
                json.loads(payload)["id"]
                for topic, payload, _, _ in listener.messages
                if "/alerts/" in topic
            }

        wanted = {alert.id for alert in before + during}
        await listener.wait_for(lambda: received_ids() >= wanted, "every alert")
        assert received_ids() == wanted
        assert publisher.status()["reconnects"] >= 1


async def test_an_unreachable_broker_neither_blocks_nor_crashes(prefix: str) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    try:
        bus = AlertBus()
        publisher = MqttPublisher(
            settings(prefix, port=closed.getsockname()[1], queue_size=5),
            retry_initial_s=0.05,
            retry_max_s=0.2,
        )
        await publisher.start(bus)
        for n in range(20):
            bus.publish(make_alert(n))
            await asyncio.sleep(0)
        await eventually(lambda: publisher.errors >= 3, "connection attempts fail and go on")
        state = publisher.status()
        assert not state["connected"] and state["published"] == 0
        assert (state["pending"], state["dropped"]) == (5, 15)
        assert "refused" in (state["last_error"] or "").lower()
        async with asyncio.timeout(30):
            await publisher.close()
        await publisher.close()  # twice is fine
        assert bus.subscribers == 0
    finally:
        closed.close()
