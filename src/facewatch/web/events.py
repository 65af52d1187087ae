"""The event history and live fan-out (placeholder: the events feature replaces this module)."""

from __future__ import annotations

from pathlib import Path

from facewatch.config import EventSettings
from facewatch.pipeline.alerts import AlertBus
from facewatch.watchlist.store import Store


class EventLog:
    def __init__(self, store: Store, settings: EventSettings, data_dir: Path) -> None:
        self.store = store
        self.settings = settings
        self.data_dir = data_dir

    async def start(self, bus: AlertBus) -> None:
        self.bus = bus

    async def close(self) -> None:
        return None
