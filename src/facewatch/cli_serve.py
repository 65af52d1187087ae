"""``facewatch serve``: the server (REST API, WebSockets, live view) under uvicorn.

uvicorn handles the signals: the first SIGINT/SIGTERM stops accepting and lets open requests
finish within ``server.shutdown_grace_s``, then the app's lifespan closes the pipeline, the event
writer and the index in order; a second signal forces the exit.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import uvicorn

from facewatch.config import Settings
from facewatch.web.app import create_app
from facewatch.web.server import FacewatchServer

log = logging.getLogger(__name__)


def add_serve_command(commands: Any, data_dir: argparse.ArgumentParser) -> None:
    serve = commands.add_parser(
        "serve", help="run the server: REST API, alerts, live view", parents=[data_dir]
    )
    serve.add_argument("--host", help="address to listen on (FACE_AI_ASGI_HOST)")
    serve.add_argument("--port", type=int, help="port (FACE_AI_ASGI_PORT)")
    serve.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
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
    app = create_app(settings)
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
        proxy_headers=False,
        server_header=False,
    )
    server = FacewatchServer(config)
    server.run()
    # uvicorn returns normally after a signal; a failed start-up (port taken, models missing)
    # leaves `started` unset and has logged why.
    return 0 if server.started else 2
