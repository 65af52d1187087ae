"""Alerts published to MQTT (placeholder: the MQTT feature replaces this module)."""

from __future__ import annotations

from facewatch.config import MqttSettings
from facewatch.pipeline.alerts import AlertBus


class MqttPublisher:
    def __init__(self, settings: MqttSettings) -> None:
        self.settings = settings

    async def start(self, bus: AlertBus) -> None:
        self.bus = bus

    async def close(self) -> None:
        return None
