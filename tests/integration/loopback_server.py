"""A real HTTP server on loopback that serves model-pack archives and records requests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True, slots=True)
class Truncated:
    """A response that announces ``declared`` bytes and sends only ``body``."""

    body: bytes
    declared: int


@dataclass(frozen=True, slots=True)
class Raw:
    """Bytes written as they are, without an HTTP status line or headers."""

    data: bytes


Route = bytes | int | Truncated | Raw


@dataclass
class PackServer:
    """What a test's HTTP server serves (path -> body, error status, truncated body or raw bytes).

    Attributes:
        url: base URL, ``http://127.0.0.1:<port>/packs``.
        routes: ``/packs/<name>.zip`` -> response; unknown paths get 404.
        requests: every path asked for, in order.
    """

    url: str
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def serve(self, filename: str, response: Route) -> None:
        self.routes[f"/packs/{filename}"] = response


def _handler(state: PackServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            route = state.routes.get(self.path, 404)
            if isinstance(route, int):
                self.send_error(route)
                return
            if isinstance(route, Raw):
                self.wfile.write(route.data)
                return
            body, declared = (
                (route.body, route.declared)
                if isinstance(route, Truncated)
                else (route, len(route))
            )
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(declared))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep test output clean; requests are recorded in state.requests

    return Handler


@contextmanager
def serving() -> Iterator[PackServer]:
    """A ThreadingHTTPServer on 127.0.0.1, port 0, stopped and closed on exit."""
    state = PackServer(url="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    host, port = server.server_address[:2]
    state.url = f"http://{host!s}:{port}/packs"
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="pack-server", daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
