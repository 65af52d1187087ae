"""``facewatch serve``: the server (REST API, WebSockets, live view) under uvicorn.

uvicorn handles the signals: the first SIGINT/SIGTERM stops accepting and lets open requests
finish within ``server.shutdown_grace_s``, then the app's lifespan closes the pipeline, the event
writer and the index in order; a second signal forces the exit.

A start-up that fails on purpose (unusable models, a GPU asked for and missing, an unreachable
store) ends like every other command: ``facewatch: error: <what, where, what to do>`` on stderr
and exit code 2, with no traceback, before the server ever listens.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from facewatch.config import Settings
from facewatch.errors import FacewatchError

log = logging.getLogger(__name__)


def add_serve_command(commands: Any, data_dir: argparse.ArgumentParser) -> None:
    serve = commands.add_parser(
        "serve", help="run the server: REST API, alerts, live view", parents=[data_dir]
    )
    serve.add_argument("--host", help="address to listen on (FACE_AI_ASGI_HOST)")
    serve.add_argument("--port", type=int, help="port (FACE_AI_ASGI_PORT)")
    serve.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here: the web stack takes a second to import, which the other commands never need.
    import uvicorn

    from facewatch.web.app import create_app
    from facewatch.web.server import FacewatchServer

    changes: dict[str, Any] = {}
    if args.host:
        changes["host"] = args.host
    if args.port is not None:
        changes["port"] = args.port
    if changes:
        settings = settings.model_copy(
            update={
                "server": settings.server.model_validate(
                    {**settings.server.model_dump(), **changes}
                )
            }
        )
    app = StartupErrors(create_app(settings))
    config = uvicorn.Config(
        app,
        host=settings.server.host,
        port=settings.server.port,
        lifespan="on",
        log_level=settings.log_level.lower(),
        # Our own log format; uvicorn's access log would double every request line.
        log_config=None,
        access_log=settings.debug,
        timeout_graceful_shutdown=int(settings.server.shutdown_grace_s) or None,
        # Forwarded headers only from the proxies named: from anyone else they would let a
        # client choose the address its failed logins are counted against.
        proxy_headers=bool(settings.server.trusted_proxies),
        forwarded_allow_ips=",".join(settings.server.trusted_proxies) or None,
        server_header=False,
    )
    server = FacewatchServer(config)
    try:
        server.run()
    except SystemExit:
        # uvicorn exits (code 3) when the lifespan start-up fails; ours say why in their error.
        if app.error is not None:
            raise app.error from None
        raise
    # uvicorn returns normally after a signal; `started` unset means it never served.
    return 0 if server.started else 2


class StartupErrors:
    """ASGI wrapper keeping a :class:`FacewatchError` that fails the lifespan start-up.

    Starlette reports a failed start-up to uvicorn with the whole traceback as the message, and
    uvicorn logs it. For facewatch's own errors the message already says what is wrong and what
    to do, so the wrapper reports the start-up failure without text and keeps the error in
    ``error`` for the command to print. Anything else passes through untouched.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.error: FacewatchError | None = None

    @property
    def state(self) -> Any:
        """The wrapped app's state: the server reaches the services through it at shutdown."""
        return getattr(self.app, "state", None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        held: list[Message] = []

        async def hold_startup_failure(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed":
                held.append(message)
                return
            await send(message)

        try:
            await self.app(scope, receive, hold_startup_failure)
        except FacewatchError as exc:
            if not held:
                raise
            self.error = exc
            await send({"type": "lifespan.startup.failed", "message": ""})
            return
        except BaseException:
            for message in held:
                await send(message)
            raise
        for message in held:
            await send(message)
