"""What the web layer serves from: one :class:`Services` per running server.

The app reads it from ``request.app.state.services`` (:func:`get_services`); tests can hand
``create_app`` their own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import HTTPConnection

from facewatch.config import Settings
from facewatch.pipeline.runner import Pipeline
from facewatch.recognizer.engine import FaceEngine
from facewatch.watchlist.service import Watchlist

if TYPE_CHECKING:
    from facewatch.web.accounts import Accounts
    from facewatch.web.events import EventLog
    from facewatch.web.mqtt import MqttPublisher

log = logging.getLogger(__name__)


@dataclass
class Services:
    """The engine, watchlist, pipeline and the web layer's own parts, opened and closed together.

    Attributes:
        accounts: users and credentials (``web/accounts.py``).
        events: the event history and live event fan-out (``web/events.py``).
        mqtt: the MQTT publisher, None when MQTT is off.
        extras: parts a feature keeps for the life of the server (e.g. WebRTC peers).
    """

    settings: Settings
    engine: FaceEngine
    watchlist: Watchlist
    pipeline: Pipeline
    accounts: Accounts
    events: EventLog
    mqtt: MqttPublisher | None = None
    started_at: float = field(default_factory=time.time)
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    async def open(cls, settings: Settings) -> Services:
        """Load the models, open the store and index, start the pipeline and the event writers."""
        from facewatch.web.accounts import Accounts
        from facewatch.web.events import EventLog
        from facewatch.web.mqtt import MqttPublisher

        engine = await asyncio.to_thread(FaceEngine.load, settings.engine)
        watchlist = await asyncio.to_thread(Watchlist.open, settings, engine)
        pipeline = Pipeline(settings, engine, watchlist)
        try:
            accounts = Accounts(watchlist.store, settings.auth)
            events = EventLog(watchlist.store, settings.events, settings.data_dir.expanduser())
            mqtt = MqttPublisher(settings.mqtt) if settings.mqtt.enabled else None
            await pipeline.start()
            await events.start(pipeline.bus)
            if mqtt is not None:
                await mqtt.start(pipeline.bus)
        except BaseException:
            await pipeline.close()
            await asyncio.to_thread(watchlist.close)
            raise
        return cls(settings, engine, watchlist, pipeline, accounts, events, mqtt)

    async def close(self) -> None:
        """Close the browsers' video peers, stop the streams and drain the pipeline, then flush
        events, then save the index."""
        # Webcam publishers first: their streams go through the pipeline, which must still run.
        for key in ("webcam_publisher", "live_views"):
            part = self.extras.pop(key, None)
            if part is not None:
                await part.close_all()
        await self.pipeline.close()
        await self.events.close()
        if self.mqtt is not None:
            await self.mqtt.close()
        await asyncio.to_thread(self.watchlist.close)


def get_services(connection: HTTPConnection) -> Services:
    """FastAPI dependency (works for requests and WebSockets)."""
    services: Services = connection.app.state.services
    return services
