"""A facewatch server in a child process, for the benchmarks that talk to it over HTTP.

The child runs what ``facewatch serve`` runs (``create_app`` under
:class:`~facewatch.web.server.FacewatchServer`, lifespan on) on 127.0.0.1, port 0, with the
settings it is given (merged over the environment's ``FACE_AI_*`` ones). Once it listens it
creates an operator with an API key and announces ``{"port", "token"}`` on its first stdout
line. A process of its own keeps the clients' Python off the server's GIL and lets a benchmark
read the server's own CPU time, memory, descriptors and threads (:attr:`ChildServer.process`).

The child's log goes to a file (``log_path``) rather than the benchmark's stderr, so that a
flood of warnings under load cannot drown the progress lines; :meth:`ChildServer.log_summary`
counts its lines by level.

Memory profiling: with ``FACEWATCH_BENCH_TRACEMALLOC=<file>`` in its environment the child
starts :mod:`tracemalloc` and appends, every ``FACEWATCH_BENCH_TRACEMALLOC_S`` seconds (60 by
default), one JSON line to that file: the traced size and the 25 source lines whose allocations
grew most since the first snapshot (taken one period after the start). It slows the server
down; use it to tell a leak from warm-up, never for figures.

Run as ``python benchmarks/bench_server.py DATA_DIR SETTINGS_JSON`` by :func:`start_server`
only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from prometheus_client.parser import text_string_to_metric_families

SERVER_USER = "benchmark"
SERVER_PASSWORD = "benchmark password, long enough"
#: Longest wait for the child to listen (loading the models included), seconds.
SERVER_START_S = 300.0
#: Longest wait for a graceful stop before the child is killed, seconds.
SERVER_STOP_S = 60.0
TRACEMALLOC_ENV = "FACEWATCH_BENCH_TRACEMALLOC"
TRACEMALLOC_EVERY_ENV = "FACEWATCH_BENCH_TRACEMALLOC_S"
TRACEMALLOC_TOP = 25
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_LEVEL = re.compile(r"^\S+ \S+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


def merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` merged in, nested dictionaries key by key."""
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def server_settings(data_dir: Path, changes: dict[str, Any] | None = None) -> dict[str, Any]:
    """Keyword arguments of ``load_settings``: the data folder, the CPU, 127.0.0.1 port 0."""
    base: dict[str, Any] = {
        "data_dir": str(data_dir),
        "engine": {"providers": "cpu"},
        "server": {"host": "127.0.0.1", "port": 0},
    }
    return merged(base, changes or {})


# --- the child ----------------------------------------------------------------------------------


def serve_child(data_dir: Path, settings_json: str) -> int:
    """Child process: run the server, then print ``{"port", "token"}`` once it listens."""
    import uvicorn

    from facewatch.config import load_settings
    from facewatch.web.app import create_app
    from facewatch.web.auth import Role
    from facewatch.web.server import FacewatchServer

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format=LOG_FORMAT)
    settings = load_settings(**json.loads(settings_json))
    if settings.data_dir.resolve() != data_dir.resolve():
        raise SystemExit(f"settings name the data folder {settings.data_dir}, not {data_dir}")
    app = create_app(settings)
    server = FacewatchServer(
        uvicorn.Config(
            app,
            host=settings.server.host,
            port=settings.server.port,
            lifespan="on",
            log_level="warning",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=int(settings.server.shutdown_grace_s) or None,
        )
    )

    async def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            await asyncio.sleep(0.05)
        accounts = app.state.services.accounts
        user = await asyncio.to_thread(
            accounts.create_user, SERVER_USER, SERVER_PASSWORD, Role.operator
        )
        token = await asyncio.to_thread(accounts.issue, user.id, "api_key", name="benchmark")
        port = server.servers[0].sockets[0].getsockname()[1]
        print(json.dumps({"port": port, "token": token}), flush=True)

    async def main() -> None:
        tasks = [asyncio.create_task(announce())]
        if os.environ.get(TRACEMALLOC_ENV):
            tasks.append(asyncio.create_task(trace_allocations(Path(os.environ[TRACEMALLOC_ENV]))))
        try:
            await server.serve()
        finally:
            for task in tasks:
                task.cancel()

    asyncio.run(main())
    return 0 if server.started else 1


async def trace_allocations(target: Path) -> None:
    """Every few seconds, one JSON line: traced bytes and the lines that grew most since the
    first snapshot."""
    every = float(os.environ.get(TRACEMALLOC_EVERY_ENV) or 60)
    tracemalloc.start(8)
    started = time.monotonic()
    # The reference is taken one period in, once the models and the first requests are in.
    await asyncio.sleep(every)
    first = await asyncio.to_thread(tracemalloc.take_snapshot)
    while True:
        await asyncio.sleep(every)
        snapshot = await asyncio.to_thread(tracemalloc.take_snapshot)
        grown = await asyncio.to_thread(snapshot.compare_to, first, "lineno")
        current, peak = tracemalloc.get_traced_memory()
        record = {
            "t_s": round(time.monotonic() - started, 1),
            "traced_bytes": current,
            "traced_peak_bytes": peak,
            "top_growth": [
                {
                    "where": str(stat.traceback[0]),
                    "size_diff_bytes": stat.size_diff,
                    "size_bytes": stat.size,
                    "count_diff": stat.count_diff,
                }
                for stat in grown[:TRACEMALLOC_TOP]
            ],
        }
        with target.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


# --- reading the server ------------------------------------------------------------------------


@dataclass(frozen=True)
class Metrics:
    """One scrape of ``/metrics``: samples by name (``_total`` suffixes kept), with labels."""

    samples: dict[str, list[tuple[dict[str, str], float]]]

    @classmethod
    def parse(cls, text: str) -> Metrics:
        samples: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
        return cls(samples)

    def total(self, name: str) -> float:
        """The sum of every sample of ``name`` (0 when there is none)."""
        return float(sum(value for _, value in self.samples.get(name, [])))

    def by(self, name: str, label: str) -> dict[str, float]:
        """``name``'s samples summed per value of ``label``."""
        out: dict[str, float] = {}
        for labels, value in self.samples.get(name, []):
            key = labels.get(label, "")
            out[key] = out.get(key, 0.0) + value
        return out


# --- the parent's handle ------------------------------------------------------------------------


@dataclass
class ChildServer:
    """A running child server: its process, base URL, operator token and log file."""

    process: subprocess.Popen[str]
    url: str
    token: str
    log_path: Path

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http")

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def cpu_s(self) -> float:
        """User + system CPU seconds of the server process so far, all its threads."""
        times = psutil.Process(self.pid).cpu_times()
        return float(times.user + times.system)

    def fd_limit(self) -> list[int]:
        """The server process's RLIMIT_NOFILE, [soft, hard]."""
        return [int(v) for v in psutil.Process(self.pid).rlimit(psutil.RLIMIT_NOFILE)]

    def log_summary(self, tail: int = 5) -> dict[str, Any]:
        """Lines of the server's log by level, and its last warnings or errors."""
        levels: Counter[str] = Counter()
        worst: list[str] = []
        tracebacks = 0
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            lines = []
        for line in lines:
            if line.startswith("Traceback"):
                tracebacks += 1
            found = _LEVEL.match(line)
            if found:
                levels[found.group(1)] += 1
                if found.group(1) in ("WARNING", "ERROR", "CRITICAL"):
                    worst.append(line[:300])
        return {
            "lines_by_level": dict(levels),
            "tracebacks": tracebacks,
            "last_warnings": worst[-tail:],
        }

    def stop(self) -> None:
        """SIGTERM, a graceful stop within :data:`SERVER_STOP_S`, else SIGKILL."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=SERVER_STOP_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


def start_server(
    data_dir: Path,
    settings: dict[str, Any] | None = None,
    *,
    log_path: Path | None = None,
    env: dict[str, str] | None = None,
) -> ChildServer:
    """Start the child server on ``data_dir`` with ``server_settings(data_dir, settings)``.

    Raises:
        SystemExit: (1) the child did not announce itself within :data:`SERVER_START_S`.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_path or data_dir.parent / f"{data_dir.name}-server.log"
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        str(data_dir),
        json.dumps(server_settings(data_dir, settings)),
    ]
    with log_path.open("w", encoding="utf-8") as log:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, **(env or {})},
        )
    stdout = process.stdout
    assert stdout is not None
    line: list[str] = []
    # The child's first line announces it; a thread bounds the wait for it.
    reader = threading.Thread(target=lambda: line.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(SERVER_START_S)
    if not line or not line[0].strip():
        process.kill()
        process.wait(timeout=30)
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        print(f"the server did not start; its log ends:\n{tail}", file=sys.stderr, flush=True)
        raise SystemExit(1)
    announced = json.loads(line[0])
    return ChildServer(
        process, f"http://127.0.0.1:{announced['port']}", announced["token"], log_path
    )


if __name__ == "__main__":
    sys.exit(serve_child(Path(sys.argv[1]), sys.argv[2]))
