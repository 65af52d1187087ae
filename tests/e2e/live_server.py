"""A real facewatch server on 127.0.0.1, port 0, in a thread of the test process.

The server is the one ``facewatch serve`` runs (``create_app`` under uvicorn, lifespan on), with
the real engine on the offline pack (CPU), an SQLite store and the index in a temporary data
directory. Running it in-process lets tests look at its services (the pipeline, the accounts)
while talking to it only over HTTP and WebSockets.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from facewatch.config import Settings
from facewatch.web.app import create_app
from facewatch.web.server import FacewatchServer
from facewatch.web.services import Services

#: The users every test server has, one per role; passwords are long enough for any policy.
ROLES = ("admin", "operator", "viewer")
PASSWORD = "correct horse battery staple"


class LiveServer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir
        self.app = create_app(settings)
        self._server = FacewatchServer(
            uvicorn.Config(
                self.app,
                host="127.0.0.1",
                port=0,
                lifespan="on",
                log_level="warning",
                timeout_graceful_shutdown=int(settings.server.shutdown_grace_s) or None,
            )
        )
        self._thread = threading.Thread(target=self._server.run, name="facewatch-test-server")
        self._tokens: dict[str, str] = {}
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The server's event loop, to run a coroutine on it from a test thread."""
        server_loop = self._loop
        assert server_loop is not None
        return server_loop

    def call(self, coroutine: Any, timeout: float = 60) -> Any:
        """Run a coroutine on the server's loop (e.g. a pipeline call) and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def start(self, timeout: float = 180) -> None:
        self._thread.start()
        done = threading.Event()

        def poll() -> None:
            # uvicorn sets `started` once the lifespan has run and the socket listens.
            while not self._server.started and self._thread.is_alive():
                done.wait(0.05)

        poll_thread = threading.Thread(target=poll)
        poll_thread.start()
        poll_thread.join(timeout)
        if not self._server.started:
            self.stop()
            raise RuntimeError("the test server did not start (see the log above)")
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        self._loop = self._find_loop()
        for role in ROLES:
            self._tokens[role] = self._create_user(role)

    def _find_loop(self) -> asyncio.AbstractEventLoop:
        # The server's loop is the one running its lifespan tasks; uvicorn does not expose it, so
        # ask the pipeline, which captured it when it started.
        task = self.services.pipeline._task  # noqa: SLF001 - the test fixture may peek
        assert task is not None
        return task.get_loop()

    def _create_user(self, role: str) -> str:
        from facewatch.web.auth import Role

        accounts = self.services.accounts
        user = accounts.create_user(f"test-{role}", PASSWORD, Role(role))
        return accounts.issue(user.id, "api_key", name="tests")

    def token(self, role: str) -> str:
        return self._tokens[role]

    def client(self, role: str | None = "admin", **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token(role)}"} if role else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120, **kwargs)

    def async_client(self, role: str | None = "admin", **kwargs: Any) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.token(role)}"} if role else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=120, **kwargs)

    def stop(self, timeout: float = 60) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError("the test server did not stop")


@contextmanager
def serving(settings: Settings) -> Iterator[LiveServer]:
    server = LiveServer(settings)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def server_settings(data_dir: Path, model_cache: Path, **overrides: Any) -> Settings:
    from facewatch.config import load_settings

    sections: dict[str, Any] = {
        "data_dir": data_dir,
        "engine": {"cache_dir": model_cache, "providers": ["cpu"]},
        "server": {"shutdown_grace_s": 5},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(sections.get(key), dict):
            sections[key] = {**sections[key], **value}
        else:
            sections[key] = value
    return load_settings(**sections)
