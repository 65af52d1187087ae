"""A small real server for the event routes, in the test's own event loop.

uvicorn on 127.0.0.1, port 0, serving the events and alerts routers (and the error handlers)
over real services: an SQLite store, the real accounts (one user and API key per role), a real
alert bus and event log. Running in the test's loop lets a test publish on the bus directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import uvicorn
from fastapi import FastAPI

from facewatch.config import AuthSettings, EventSettings
from facewatch.pipeline.alerts import AlertBus
from facewatch.watchlist.store import Store
from facewatch.web.accounts import Accounts
from facewatch.web.auth import Role
from facewatch.web.errors import install_error_handlers
from facewatch.web.events import EventLog
from facewatch.web.routes import alerts_ws, events

PASSWORD = "correct horse battery staple"


@dataclass
class EventServices:
    """The part of :class:`facewatch.web.services.Services` the event routes use."""

    accounts: Accounts
    events: EventLog
    pipeline: Any
    mqtt: Any = None
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class EventServer:
    url: str
    ws_url: str
    services: EventServices
    bus: AlertBus
    store: Store
    data_dir: Path
    tokens: dict[str, str]

    @property
    def events(self) -> EventLog:
        return self.services.events

    def auth(self, role: str = "viewer") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


def build_app(services: EventServices) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(events.router)
    app.include_router(alerts_ws.router)
    app.state.services = services
    return app


@asynccontextmanager
async def event_server(data_dir: Path, **event_settings: Any) -> AsyncIterator[EventServer]:
    """Serve the event routes; the event log is started on the server's bus."""
    store = await asyncio.to_thread(Store, f"sqlite:///{data_dir / 'facewatch.db'}")
    accounts = Accounts(store, AuthSettings())
    tokens = {}
    for role in Role:
        user = await asyncio.to_thread(accounts.create_user, f"test-{role}", PASSWORD, role)
        tokens[str(role)] = await asyncio.to_thread(accounts.issue, user.id, "api_key")
    bus = AlertBus()
    log = EventLog(store, EventSettings(**event_settings), data_dir)
    services = EventServices(accounts, log, SimpleNamespace(bus=bus))
    server = uvicorn.Server(
        uvicorn.Config(
            build_app(services),
            host="127.0.0.1",
            port=0,
            lifespan="off",
            log_level="warning",
            timeout_graceful_shutdown=5,
        )
    )
    await log.start(bus)
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(30):
            while not server.started:
                if serving.done():
                    serving.result()  # raises what stopped it
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield EventServer(
            f"http://127.0.0.1:{port}",
            f"ws://127.0.0.1:{port}",
            services,
            bus,
            store,
            data_dir,
            tokens,
        )
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 30)
        await log.close()
        store.close()
