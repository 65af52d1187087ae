"""The ASGI application: REST API, WebSockets, the live view and its pages.

:func:`create_app` builds it. Given ``services``, the app serves them and leaves their life to
the caller (tests); without, its lifespan opens them at start-up and closes them at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

import facewatch
from facewatch.config import Settings
from facewatch.web.errors import install_error_handlers
from facewatch.web.openapi import install_error_descriptions
from facewatch.web.routes import (
    alerts_ws,
    auth,
    events,
    faces,
    health,
    live,
    pages,
    people,
    streams,
)
from facewatch.web.routes.health import install_http_metrics
from facewatch.web.security_headers import SecurityHeaders
from facewatch.web.services import Services
from facewatch.web.stream_registry import restore_streams

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"


def create_app(settings: Settings, services: Services | None = None) -> FastAPI:
    """The facewatch ASGI app.

    Args:
        settings: the server's settings.
        services: already open services to serve; None opens them in the app's lifespan.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if services is not None:
            app.state.services = services
            yield
            return
        opened = await Services.open(settings)
        app.state.services = opened
        try:
            await restore_streams(opened)
        except BaseException:
            await opened.close()
            raise
        hint = first_run_hint(settings, await asyncio.to_thread(opened.accounts.has_users))
        if hint:
            log.warning("%s", hint)
        try:
            yield
        finally:
            await opened.close()

    app = FastAPI(
        title="facewatch",
        version=facewatch.__version__,
        description="Realtime face recognition for camera fleets.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    if services is not None:
        app.state.services = services
    install_error_handlers(app)
    install_error_descriptions(app)
    install_http_metrics(app)
    if settings.server.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.server.cors_origins,
            allow_credentials=True,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    docs = (app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url)
    app.add_middleware(SecurityHeaders, without_policy=[path for path in docs if path])
    for module in (health, auth, faces, people, streams, events, alerts_ws, live, pages):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def first_run_hint(settings: Settings, has_users: bool) -> str | None:
    """What to tell an operator starting a server nobody can log in to yet."""
    if has_users:
        return None
    host = settings.server.host
    shown = "localhost" if host in ("0.0.0.0", "::", "127.0.0.1") else host
    # Port 0 is picked at start, after this is logged: name the page, not a wrong address.
    where = f"http://{shown}:{settings.server.port}/setup" if settings.server.port else "/setup"
    return (
        f"no account exists yet: open {where} to create the first (admin) account, or run "
        "`facewatch user add NAME --role admin`"
    )
