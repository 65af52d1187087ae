"""End-to-end fixtures: one real facewatch server for the whole test session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_server import LiveServer, server_settings, serving

from facewatch.config import ENV_PREFIX


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[LiveServer]:
    """A real server on 127.0.0.1:<port 0> with an admin, an operator and a viewer.

    Tests share it: each creates the persons, streams and events it needs under names of its
    own, and removes the streams it adds.
    """
    saved = {name: os.environ.pop(name) for name in list(os.environ) if name.startswith(ENV_PREFIX)}
    try:
        settings = server_settings(tmp_path_factory.mktemp("server-data"), model_cache)
        with serving(settings) as live:
            yield live
    finally:
        os.environ.update(saved)
