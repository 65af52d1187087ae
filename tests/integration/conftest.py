"""Integration fixtures: a loopback HTTP server, isolated settings, fresh databases."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from databases import BACKENDS, fresh_database
from loopback_server import PackServer, serving

from facewatch.config import ENV_PREFIX


@pytest.fixture
def pack_server() -> Iterator[PackServer]:
    """A real HTTP server on 127.0.0.1 (port 0) for one test; see :mod:`loopback_server`."""
    with serving() as server:
        yield server


@pytest.fixture
def isolated_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from the test alone, not from FACE_AI_* variables of the caller's shell."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database on SQLite, PostgreSQL and MariaDB in turn (skips unreachable ones)."""
    with fresh_database(request.param, tmp_path) as url:
        yield url
