"""The real server of the end-to-end tests (``tests/e2e/live_server.py``), for integration tests
that need the whole server (a store, the pipeline and the API together) to fault it."""

from __future__ import annotations

import sys
from pathlib import Path

_E2E = str(Path(__file__).resolve().parents[1] / "e2e")
if _E2E not in sys.path:
    sys.path.append(_E2E)

from live_server import PASSWORD, LiveServer, server_settings, serving  # noqa: E402

__all__ = ["PASSWORD", "LiveServer", "server_settings", "serving"]
