"""A long run of the server with looped streams, enrollments and API traffic: its resources
sampled every few seconds must stay flat after warm-up; prints JSON.

Usage::

    python benchmarks/soak.py [--duration S] [--interval S] [--warmup S] [--streams N]
                              [--enroll-every S] [--api-rps R] [--samples FILE]
                              [--tracemalloc FILE] [--faces-dir DIR] [--providers P]

A real server (``bench_server.py``: what ``facewatch serve`` runs, in a child process on
127.0.0.1, port 0, an SQLite store in a temporary data folder, the offline pack on the CPU)
holds the Hamilton clip's two performers and two distractors, and runs ``--streams`` (4) looped
streams paced at their frame rate, like cameras, cycling through :data:`CLIPS` (the Hamilton
clip first). For ``--duration`` seconds (1200 by default) the script keeps it busy with:

* **enrollments**: every ``--enroll-every`` seconds (30) a person is added over
  ``POST /api/people`` from all the photos of the next identity of :data:`ENROLL_POOL`; once the
  soak has more than :data:`KEEP_ENROLLED` persons of its own, the oldest :data:`FORGET_AT_ONCE`
  are deleted, so the index grows and shrinks all along;
* **API traffic**: ``--api-rps`` (2) requests per second from one client, cycling through face
  detection and identification of a photo, a people search, the event history, the streams, the
  watchlist status and ``/health``;
* **one WebSocket subscriber** on ``/ws/alerts``, reconnecting (counted) if it is closed.

Every ``--interval`` seconds (10) one sample, printed as a JSON line to ``--samples`` (stdout
when not given): of the **server process** (psutil on the child's pid) its RSS, open file
descriptors, threads and CPU percent over the interval; from ``/metrics`` the embed queue depth
(``facewatch_queue_depth``), each stream's processed frames/s and lag, frames processed,
dropped and reconnects, active tracks and alerts emitted; the event writer's pending alerts
(``/health/detailed``); rows of the ``events`` table (read-only SQLite query); persons, faces
and index size (``/api/watchlist/status``); and the script's own counts (requests, errors,
enrollments, deletions, alerts received).

The final JSON summary (stdout, after the samples when they go there too) cuts the first
``--warmup`` seconds (180, or a quarter of a shorter run) and, for each judged metric, gives
first/last/min/max/median after warm-up and the least-squares slope per hour with its standard
error. A metric is **flat** when its slope per hour is within its tolerance, or too small to
tell from the noise (|slope| < 2 standard errors). Tolerances per hour (:data:`TOLERANCES`):

* ``rss_bytes``: 5 % of the median, at least 8 MiB (a real leak of a few hundred KiB a
  minute fails it; allocator noise of a few MiB does not);
* ``open_fds`` and ``threads``: 10 % of the median, at least 4 (both are small integers that
  move with the requests in flight);
* ``embed_queue_depth`` and ``events_pending``: 10 % of the queue's capacity (the embed
  queue holds ``embed_batch_size * max_in_flight_batches``, the event outbox
  ``events.write_queue``), at least 2;
* ``processed_fps_total``, ``lag_s_max``: 10 % of the median, at least 0.5.

Growing by design and reported as rates, not judged: alerts, event rows, frames processed.
``errors`` counts failed requests by kind and status, enrollments refused, subscriber closes,
stream reconnects, alerts the event writer dropped and the server log's warnings and errors.

The machine may be shared: every sample carries the load average. With ``--tracemalloc FILE``
the server traces its allocations and writes the lines that grew most to FILE every minute
(see ``bench_server.py``): slower, to tell a leak from warm-up only. Progress goes to stderr.
Exits with status 2 when the face data is missing or the arguments are wrong, 1 when the server
does not start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import psutil

from bench_host import FACES_ENV, faces_root, host, load_average, progress
from bench_server import TRACEMALLOC_ENV, ChildServer, Metrics, server_settings, start_server

DURATION_S = 1200.0
INTERVAL_S = 10.0
WARMUP_S = 180.0
STREAMS = 4
ENROLL_EVERY_S = 30.0
API_RPS = 2.0
CLIPS = (
    "videos/fr_short_hamilton_clip.mp4",
    "videos/intel_head-pose-face-detection-female-and-male.mp4",
    "videos/intel_face-demographics-walking-and-pause.mp4",
    "videos/dlib_elon-musk-smoke.mp4",
)
BASE_IDENTITIES = ("lin_manuel_miranda", "alex_lacamoire", "joe_biden", "angelina_jolie")
#: Identities the soak enrolls and forgets in turn (each has enough usable photos).
ENROLL_POOL = (
    "bradley_cooper",
    "john_lennon",
    "eric_clapton",
    "anthony_hopkins",
    "bbt_sheldon",
    "bbt_leonard",
    "bbt_howard",
    "bbt_raj",
    "kit_harington",
    "rose_leslie",
)
KEEP_ENROLLED = 5
FORGET_AT_ONCE = 3
GROUP = "groups/fr_two_people.jpg"
API_KINDS = ("detect", "query", "people", "events", "streams", "watchlist", "health")
REQUEST_TIMEOUT_S = 120.0
WAIT_S = 120.0
MIB = 1024 * 1024
#: Judged metric -> (share of the scale per hour, floor per hour, scale: "median"|"capacity").
TOLERANCES: dict[str, tuple[float, float, str]] = {
    "rss_bytes": (0.05, 8 * MIB, "median"),
    "open_fds": (0.10, 4, "median"),
    "threads": (0.10, 4, "median"),
    "embed_queue_depth": (0.10, 2, "capacity"),
    "events_pending": (0.10, 2, "capacity"),
    "processed_fps_total": (0.10, 0.5, "median"),
    "lag_s_max": (0.10, 0.5, "median"),
}
#: Growing by design: reported as rates per hour.
RATES = ("alerts_total", "event_rows", "frames_processed_total")
#: |slope| below this many standard errors cannot be told from noise.
NOISE_SE = 2.0


# --- what the soak does to the server ----------------------------------------------------------


@dataclass
class Tally:
    """What the script did and saw, for the samples and the summary."""

    requests: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    enrolled: int = 0
    forgotten: int = 0
    ws_alerts: int = 0
    ws_connects: int = 0
    ws_closes: Counter[str] = field(default_factory=Counter)


class Soak:
    def __init__(
        self, server: ChildServer, http: httpx.AsyncClient, root: Path, args: argparse.Namespace
    ) -> None:
        self.server = server
        self.http = http
        self.root = root
        self.args = args
        self.tally = Tally()
        self.photos = [self._last_photo(name) for name in (*BASE_IDENTITIES, *ENROLL_POOL[:2])] + [
            (Path(GROUP).name, (root / GROUP).read_bytes())
        ]

    def _last_photo(self, name: str) -> tuple[str, bytes]:
        last = sorted(p for p in (self.root / "identities" / name).iterdir() if p.is_file())[-1]
        return last.name, last.read_bytes()

    async def enroll(self, name: str, label: str) -> int | None:
        folder = self.root / "identities" / name
        paths = sorted(p for p in folder.iterdir() if p.is_file())
        response = await self.http.post(
            "/api/people",
            data={"name": label, "largest": "true"},
            files=[("photos", (p.name, p.read_bytes(), "image/jpeg")) for p in paths],
        )
        self.tally.requests["enroll"] += 1
        if response.status_code != 201:
            self.tally.errors[f"enroll:{response.status_code}"] += 1
            return None
        person_id: int = response.json()["person"]["id"]
        return person_id

    async def enrollments(self, stop: asyncio.Event) -> None:
        """Enroll the next pool identity every few seconds; forget the oldest ones in bulk."""
        mine: list[int] = []
        turn = 0
        while not await wait_or_stop(stop, self.args.enroll_every):
            name = ENROLL_POOL[turn % len(ENROLL_POOL)]
            person_id = await self.enroll(name, f"{name} soak-{turn}")
            turn += 1
            if person_id is not None:
                self.tally.enrolled += 1
                mine.append(person_id)
            if len(mine) > KEEP_ENROLLED:
                for old in mine[:FORGET_AT_ONCE]:
                    response = await self.http.delete(f"/api/people/{old}")
                    self.tally.requests["forget"] += 1
                    if response.status_code == 200:
                        self.tally.forgotten += 1
                    else:
                        self.tally.errors[f"forget:{response.status_code}"] += 1
                del mine[:FORGET_AT_ONCE]

    async def traffic(self, stop: asyncio.Event) -> None:
        """``--api-rps`` requests a second, one at a time, cycling through :data:`API_KINDS`."""
        period = 1.0 / self.args.api_rps
        turn = 0
        next_at = time.monotonic()
        while not stop.is_set():
            kind = API_KINDS[turn % len(API_KINDS)]
            try:
                status = await self.request(kind, turn)
            except httpx.HTTPError as exc:
                self.tally.errors[f"{kind}:{type(exc).__name__}"] += 1
            else:
                if status != 200:
                    self.tally.errors[f"{kind}:{status}"] += 1
            self.tally.requests[kind] += 1
            turn += 1
            next_at += period
            if await wait_or_stop(stop, max(0.0, next_at - time.monotonic())):
                return

    async def request(self, kind: str, turn: int) -> int:
        photo = self.photos[turn % len(self.photos)]
        if kind in ("detect", "query"):
            files = {"file": (photo[0], photo[1], "image/jpeg")}
            response = await self.http.post(f"/api/faces/{kind}", files=files)
        elif kind == "people":
            response = await self.http.get("/api/people", params={"search": "soak"})
        elif kind == "events":
            response = await self.http.get("/api/events", params={"limit": 50})
        elif kind == "streams":
            response = await self.http.get("/api/streams")
        elif kind == "watchlist":
            response = await self.http.get("/api/watchlist/status")
        else:
            response = await self.http.get("/health")
        return response.status_code

    async def subscriber(self, stop: asyncio.Event) -> None:
        """One ``/ws/alerts`` client for the whole run, reconnecting when it is closed."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake

        url = f"{self.server.ws_url}/ws/alerts"
        while not stop.is_set():
            try:
                async with connect(url, additional_headers=self.server.headers) as socket:
                    self.tally.ws_connects += 1
                    reading = asyncio.create_task(self._read(socket))
                    stopping = asyncio.create_task(stop.wait())
                    await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
                    stopping.cancel()
                    if not reading.done():
                        reading.cancel()
                        return
                    self.tally.ws_closes[str(socket.close_code)] += 1
            except (OSError, InvalidHandshake, ConnectionClosed) as exc:
                self.tally.errors[f"ws:{type(exc).__name__}"] += 1
            await wait_or_stop(stop, 1.0)

    async def _read(self, socket: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        with contextlib.suppress(ConnectionClosed):
            async for raw in socket:
                if json.loads(raw).get("type") == "alert":
                    self.tally.ws_alerts += 1


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` unless ``stop`` is set first; whether it is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
    return stop.is_set()


async def add_streams(http: httpx.AsyncClient, root: Path, count: int) -> list[str]:
    ids = []
    for number in range(count):
        clip = root / CLIPS[number % len(CLIPS)]
        response = await http.post(
            "/api/streams", json={"url": str(clip), "name": f"soak-{number + 1}", "loop": True}
        )
        if response.status_code != 201:
            raise RuntimeError(f"adding a stream failed: {response.text}")
        ids.append(response.json()["id"])
    return ids


# --- samples -----------------------------------------------------------------------------------


class Sampler:
    """One sample of the server every interval."""

    def __init__(self, server: ChildServer, http: httpx.AsyncClient, tally: Tally) -> None:
        self.server = server
        self.http = http
        self.tally = tally
        self.process = psutil.Process(server.pid)
        self.process.cpu_percent(None)  # the first call only starts the clock
        self.database = server_data_dir(server) / "facewatch.db"

    async def sample(self, t_s: float) -> dict[str, Any]:
        with self.process.oneshot():
            rss = self.process.memory_info().rss
            fds = self.process.num_fds()
            threads = self.process.num_threads()
            cpu = self.process.cpu_percent(None)
        # Rows before the alerts counter: rows are written after their alert is counted, so
        # counted in this order there are never more rows than alerts.
        event_rows = await asyncio.to_thread(count_events, self.database)
        metrics = Metrics.parse((await self.http.get("/metrics")).text)
        detailed = (await self.http.get("/health/detailed")).json()
        watchlist = (await self.http.get("/api/watchlist/status")).json()
        events = detailed.get("events") or {}
        fps = metrics.by("facewatch_stream_processed_fps", "stream")
        lag = metrics.by("facewatch_stream_lag_seconds", "stream")
        return {
            "t_s": round(t_s, 1),
            "rss_bytes": rss,
            "open_fds": fds,
            "threads": threads,
            "cpu_percent": round(cpu, 1),
            "embed_queue_depth": metrics.by("facewatch_queue_depth", "queue").get("embed", 0.0),
            "events_pending": events.get("pending"),
            "processed_fps": {k: round(v, 2) for k, v in sorted(fps.items())},
            "processed_fps_total": round(sum(fps.values()), 2),
            "lag_s_max": round(max(lag.values()), 3) if lag else None,
            "frames_processed_total": metrics.total("facewatch_frames_processed_total"),
            "frames_dropped_total": metrics.total("facewatch_frames_dropped_total"),
            "stream_reconnects_total": metrics.total("facewatch_stream_reconnects_total"),
            "active_tracks": metrics.total("facewatch_active_tracks"),
            "alerts_total": metrics.total("facewatch_alerts_total"),
            "events_dropped": events.get("dropped"),
            "event_rows": event_rows,
            "persons": watchlist["store"]["persons"],
            "faces": watchlist["store"]["faces"],
            "index_size": watchlist["index"]["count"],
            "api_requests": sum(self.tally.requests.values()),
            "api_errors": sum(self.tally.errors.values()),
            "enrolled": self.tally.enrolled,
            "forgotten": self.tally.forgotten,
            "ws_alerts": self.tally.ws_alerts,
            "load_average": [round(v, 2) for v in load_average()],
        }


def server_data_dir(server: ChildServer) -> Path:
    # bench_server logs next to the data folder as "<data folder>-server.log".
    return server.log_path.with_name(server.log_path.name.removesuffix("-server.log"))


def count_events(database: Path) -> int | None:
    """Rows of the events table, read-only (the server owns the file)."""
    try:
        with contextlib.closing(
            sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)
        ) as connection:
            return int(connection.execute("SELECT COUNT(*) FROM events").fetchone()[0])
    except sqlite3.Error:
        return None


# --- the summary -------------------------------------------------------------------------------


def fit(times_s: Sequence[float], values: Sequence[float]) -> tuple[float, float]:
    """Least-squares slope of ``values`` per hour and its standard error (0 when undefined)."""
    n = len(values)
    if n < 3:
        return 0.0, 0.0
    hours = [t / 3600 for t in times_s]
    mean_t, mean_v = statistics.fmean(hours), statistics.fmean(values)
    sxx = sum((t - mean_t) ** 2 for t in hours)
    if sxx == 0:
        return 0.0, 0.0
    slope = sum((t - mean_t) * (v - mean_v) for t, v in zip(hours, values, strict=True)) / sxx
    residual = sum(
        (v - mean_v - slope * (t - mean_t)) ** 2 for t, v in zip(hours, values, strict=True)
    )
    return slope, math.sqrt(residual / (n - 2) / sxx)


def judge(
    name: str, times_s: Sequence[float], values: Sequence[float], capacity: float | None
) -> dict[str, Any]:
    slope, stderr = fit(times_s, values)
    share, floor, scale = TOLERANCES[name]
    median = statistics.median(values)
    base = capacity if scale == "capacity" and capacity else abs(median)
    tolerance = max(share * base, floor)
    # Warm-up that outlasts the cut shows as a slope that fades; a leak keeps its slope.
    half = len(values) // 2
    halves = [fit(times_s[:half], values[:half])[0], fit(times_s[half:], values[half:])[0]]
    return {
        "first": values[0],
        "last": values[-1],
        "min": min(values),
        "max": max(values),
        "median": median,
        "slope_per_h": round(slope, 3),
        "slope_stderr_per_h": round(stderr, 3),
        "slope_per_h_by_half": [round(v, 3) for v in halves],
        "tolerance_per_h": round(tolerance, 3),
        "flat": abs(slope) <= tolerance or abs(slope) < NOISE_SE * stderr,
    }


def summarise(
    samples: Sequence[dict[str, Any]],
    warmup_s: float,
    capacities: dict[str, float],
) -> dict[str, Any]:
    kept = [s for s in samples if s["t_s"] >= warmup_s]
    judged: dict[str, Any] = {}
    for name in TOLERANCES:
        points = [(s["t_s"], float(s[name])) for s in kept if s.get(name) is not None]
        if len(points) >= 2:
            times, values = zip(*points, strict=True)
            judged[name] = judge(name, times, values, capacities.get(name))
    rates: dict[str, Any] = {}
    for name in RATES:
        points = [(s["t_s"], float(s[name])) for s in kept if s.get(name) is not None]
        if len(points) >= 2:
            times, values = zip(*points, strict=True)
            rates[name] = {
                "first": values[0],
                "last": values[-1],
                "per_h": round(fit(times, values)[0], 1),
            }
    return {
        "samples_after_warmup": len(kept),
        "metrics": judged,
        "all_flat": bool(judged) and all(m["flat"] for m in judged.values()),
        "rates": rates,
    }


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=DURATION_S, help="seconds (1200)")
    parser.add_argument(
        "--interval", type=float, default=INTERVAL_S, help="seconds between samples (10)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds cut before judging (180, or a quarter of a shorter run)",
    )
    parser.add_argument("--streams", type=int, default=STREAMS, help="looped streams (4)")
    parser.add_argument(
        "--enroll-every", type=float, default=ENROLL_EVERY_S, help="seconds per enrollment (30)"
    )
    parser.add_argument("--api-rps", type=float, default=API_RPS, help="API requests/s (2)")
    parser.add_argument("--samples", type=Path, default=None, help="JSON lines file of samples")
    parser.add_argument(
        "--tracemalloc", type=Path, default=None, help="trace the server's allocations to FILE"
    )
    parser.add_argument(
        "--faces-dir",
        type=Path,
        default=None,
        help=f"face data folder (default: ${FACES_ENV} or ../shared/data/faces)",
    )
    parser.add_argument(
        "--providers", default="cpu", help="engine.providers, e.g. cpu or auto (default cpu)"
    )
    parser.add_argument(
        "--judge",
        type=Path,
        default=None,
        metavar="SAMPLES",
        help="run nothing: judge the samples of an earlier run (with --warmup)",
    )
    args = parser.parse_args(argv)
    if args.judge is not None:
        args.warmup = WARMUP_S if args.warmup is None else args.warmup
        return args
    if args.warmup is None:
        args.warmup = min(WARMUP_S, args.duration / 4)
    if min(args.duration, args.interval, args.enroll_every, args.api_rps) <= 0:
        parser.error("--duration, --interval, --enroll-every and --api-rps must be positive")
    if args.streams < 0 or args.warmup < 0 or args.warmup >= args.duration:
        parser.error("--streams must not be negative, --warmup within the duration")
    return args


async def soak(
    args: argparse.Namespace, server: ChildServer, root: Path, out: IO[str]
) -> tuple[list[dict[str, Any]], Tally, list[str]]:
    async with httpx.AsyncClient(
        base_url=server.url, headers=server.headers, timeout=REQUEST_TIMEOUT_S
    ) as http:
        runner = Soak(server, http, root, args)
        for name in BASE_IDENTITIES:
            if await runner.enroll(name, name) is None:
                raise SystemExit(f"enrolling {name} failed")
        stream_ids = await add_streams(http, root, args.streams)
        progress(f"{len(BASE_IDENTITIES)} identities enrolled, {len(stream_ids)} streams added")
        stop = asyncio.Event()
        workers = [
            asyncio.create_task(runner.enrollments(stop)),
            asyncio.create_task(runner.traffic(stop)),
            asyncio.create_task(runner.subscriber(stop)),
        ]
        sampler = Sampler(server, http, runner.tally)
        samples: list[dict[str, Any]] = []
        started = time.monotonic()
        try:
            tick = 0
            while True:
                tick += 1
                due = started + tick * args.interval
                if due > started + args.duration + 1e-6:
                    break
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                sample = await sampler.sample(time.monotonic() - started)
                samples.append(sample)
                out.write(json.dumps(sample) + "\n")
                out.flush()
                if tick % max(1, round(60 / args.interval)) == 0:
                    progress(
                        f"{sample['t_s']:.0f} s: rss {sample['rss_bytes'] / MIB:.0f} MiB, "
                        f"{sample['open_fds']} fds, {sample['threads']} threads, "
                        f"{sample['processed_fps_total']} frames/s, "
                        f"{sample['persons']} persons, {sample['event_rows']} events"
                    )
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*workers, return_exceptions=True), WAIT_S)
    return samples, runner.tally, stream_ids


def run(args: argparse.Namespace, out: IO[str]) -> dict[str, Any]:
    load_before = load_average()
    root = faces_root(args.faces_dir)
    needed = [root / c for c in CLIPS] + [root / GROUP]
    needed += [root / "identities" / n for n in (*BASE_IDENTITIES, *ENROLL_POOL)]
    if not all(p.exists() for p in needed):
        progress(f"face data not found at {root}: pass --faces-dir or set ${FACES_ENV}")
        raise SystemExit(2)
    with tempfile.TemporaryDirectory(prefix="facewatch-soak-") as tmp:
        data_dir = Path(tmp) / "server"
        changes: dict[str, Any] = {"engine": {"providers": args.providers}}
        capacities = capacities_of(data_dir, changes)
        env = {TRACEMALLOC_ENV: str(args.tracemalloc.resolve())} if args.tracemalloc else {}
        progress("starting the server")
        server = start_server(data_dir, changes, env=env)
        began = time.monotonic()
        try:
            samples, tally, stream_ids = asyncio.run(soak(args, server, root, out))
            fd_limit = server.fd_limit()
        finally:
            server.stop()
        log = server.log_summary()
    summary = summarise(samples, args.warmup, capacities)
    last = samples[-1] if samples else {}
    first = samples[0] if samples else {}
    errors = {
        "requests_by_status": dict(sorted(tally.errors.items())),
        "requests": sum(tally.errors.values()),
        "ws_closes_by_code": dict(tally.ws_closes),
        "ws_connects": tally.ws_connects,
        "stream_reconnects": last.get("stream_reconnects_total", 0)
        - first.get("stream_reconnects_total", 0),
        "events_dropped": last.get("events_dropped"),
        "server_log": log,
    }
    return {
        "duration_s": args.duration,
        "wall_s": round(time.monotonic() - began, 1),
        "interval_s": args.interval,
        "warmup_s": args.warmup,
        "samples": len(samples),
        "streams": {
            "count": len(stream_ids),
            "clips": [CLIPS[i % len(CLIPS)] for i in range(len(stream_ids))],
        },
        "enroll_every_s": args.enroll_every,
        "api_rps": args.api_rps,
        "activity": {
            "requests_by_kind": dict(sorted(tally.requests.items())),
            "enrolled": tally.enrolled,
            "forgotten": tally.forgotten,
            "ws_alerts_received": tally.ws_alerts,
            "persons_range": [
                min((s["persons"] for s in samples), default=None),
                max((s["persons"] for s in samples), default=None),
            ],
        },
        "tolerances": {
            name: {"share_per_h": share, "floor_per_h": floor, "of": scale}
            for name, (share, floor, scale) in TOLERANCES.items()
        },
        "capacities": capacities,
        "summary": summary,
        "errors": errors,
        "machine": {
            **host(load_before),
            "server_fd_limit": fd_limit,
            "tracemalloc": str(args.tracemalloc) if args.tracemalloc else None,
        },
    }


def capacities_of(data_dir: Path, changes: dict[str, Any]) -> dict[str, float]:
    """The judged queues' capacities under the server's settings."""
    from facewatch.config import load_settings

    settings = load_settings(**server_settings(data_dir, changes))
    return {
        "embed_queue_depth": float(
            settings.engine.embed_batch_size * settings.pipeline.max_in_flight_batches
        ),
        "events_pending": float(settings.events.write_queue),
    }


def judge_file(path: Path, warmup_s: float, providers: str) -> dict[str, Any]:
    samples = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    capacities = capacities_of(path.parent, {"engine": {"providers": providers}})
    return {
        "samples_file": str(path),
        "samples": len(samples),
        "warmup_s": warmup_s,
        "summary": summarise(samples, warmup_s, capacities),
    }


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    args = parse_args(argv)
    if args.judge is not None:
        print(json.dumps(judge_file(args.judge, args.warmup, args.providers), indent=2))
        return 0
    if args.samples is not None:
        with args.samples.open("w", encoding="utf-8") as out:
            result = run(args, out)
    else:
        result = run(args, sys.stdout)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
