"""The REST API under many concurrent clients while streams run and alert subscribers listen,
against the same API mix on an idle pipeline; prints one JSON object.

Usage::

    python benchmarks/load.py [--quick] [--faces-dir DIR] [--clients N,...] [--streams N]
                              [--subscribers N] [--duration S] [--pairs N] [--mix KIND=W,...]
                              [--cooldown S] [--providers P]

A real server (``bench_server.py``: what ``facewatch serve`` runs, in a child process on
127.0.0.1, port 0, an SQLite store in a temporary data folder, the offline pack on the CPU)
holds a few identities, enrolled over ``POST /api/people`` from all their photos: the two
performers of ``videos/fr_short_hamilton_clip.mp4`` (lin_manuel_miranda, alex_lacamoire), who
raise alerts when the clip plays, and distractors who are not in it.

For each client count (100, 200 and 500 by default) two kinds of phase alternate in pairs, the
order flipping from one pair to the next, so that load from elsewhere on the machine hits both
alike:

* **loaded**: ``--subscribers`` (50) WebSocket clients hold ``/ws/alerts`` (from a process of
  their own, each reading as fast as it can), then ``--streams`` (8) streams of the Hamilton clip
  are added over ``POST /api/streams`` (looped, paced at the clip's frame rate, like cameras);
  once every stream runs and ``SETTLE_S`` has passed, the clients run for ``--duration`` seconds.
  Afterwards the streams are deleted and the subscribers disconnect.
* **baseline**: the same clients and mix, no stream and no subscriber.

Clients are asyncio tasks sharing one ``httpx.AsyncClient`` with as many connections, each
sending its next request as soon as its previous one is answered, until the duration is over
(every connection is opened by one unmeasured ``GET /health/live`` first). ``--mix`` weighs the
request kinds (default ``people=30,streams=20,events=20,health=20,detect=5,query=5``):

* ``people``: ``GET /api/people?search=...`` (a name fragment, cycling);
* ``streams``: ``GET /api/streams``;  ``events``: ``GET /api/events?limit=50``;
* ``health``: ``GET /health`` (authenticated);
* ``detect`` / ``query``: ``POST /api/faces/detect`` / ``/api/faces/query`` with a photo
  (the enrolled identities' last photos and a group photo, cycling).

Each client walks a fixed shuffled cycle of 100 kinds drawn by the weights, from its own offset.

Figures per phase: requests/s (answers / seconds from the first send to the last answer),
latency p50/p95/p99 in ms (send to answer as the client sees it; all and per kind), errors by
status or exception name (``failures_first``: when the first few failed requests were sent and
how long they took to fail), the seconds every connection's first, unmeasured request took
(``connect_s_per_run``), the server's and the clients' CPU seconds. Per client count: the
medians over the pairs, and ``loaded_vs_baseline``: medians of the per-pair ratios loaded /
baseline of requests/s and of the latency percentiles, i.e. what streams and subscribers cost
the API.

Pipeline, per loaded phase, from two scrapes of ``/metrics`` around the client run (its
connecting and its last answers included, ``window_s``): frames processed per second (all
streams, and min/median/max per stream), frames decoded per second, drops by reason, alerts by
type (``facewatch_alerts_total``).

Alerts delivered vs produced, per loaded phase. Alert ids start with their creation time in
milliseconds, so the window is a range of ids: **produced** = the events the store holds with
an id created between the start and the end of the client run (read over ``GET /api/events``
once the event writer has nothing pending); **delivered** = per subscriber, the alerts of that
range it received (subscribers stay connected from before the streams start until after the
store has caught up, so no alert of the window is still on its way). Reported: produced, the
metric's count as a cross-check (``produced_metric``, over the pipeline window, which also
holds the clients' connecting before and their last answers after, ``produced_metric_window_s``:
so it is the larger), delivered min/median/max, how many subscribers got every produced alert,
and subscribers the server closed with 1013 (too slow), counted apart: nothing may be lost for
a subscriber that keeps up. The default per-person cooldown of 30 s would raise few alerts;
loaded phases use ``--cooldown`` (0: a match per track), reported under ``server_settings``.

File descriptors: the script raises its own soft RLIMIT_NOFILE to the hard limit before it
starts the server, which inherits it; both are reported. The clients, the subscribers and the
server share the machine: ``machine.load_average`` gives the load before and after.

Goals, reported and never asserted: ``no_alert_lost_for_subscribers_that_keep_up`` (every
subscriber not closed with 1013 got every produced alert, in every loaded phase) and
``zero_errors_at_largest_client_count``.

Progress goes to stderr; stdout carries only the JSON object. Exits with status 2 when the face
data is missing or the arguments are wrong, 1 when the server does not start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench_host import FACES_ENV, faces_root, host, load_average, progress
from bench_server import ChildServer, Metrics, start_server

CLIENTS = (100, 200, 500)
QUICK_CLIENTS = (5, 10)
STREAMS = 8
QUICK_STREAMS = 2
SUBSCRIBERS = 50
QUICK_SUBSCRIBERS = 2
DURATION_S = 20.0
QUICK_DURATION_S = 3.0
PAIRS = 2
#: Seconds between every stream running and the window opening: first tracks, warm batches.
SETTLE_S = 5.0
QUICK_SETTLE_S = 1.0
DEFAULT_MIX = "people=30,streams=20,events=20,health=20,detect=5,query=5"
KINDS = ("people", "streams", "events", "health", "detect", "query")
#: Length of the cycle of request kinds each client walks.
CYCLE = 100
CLIP = "videos/fr_short_hamilton_clip.mp4"
PERFORMERS = ("lin_manuel_miranda", "alex_lacamoire")
DISTRACTORS = ("joe_biden", "angelina_jolie", "kit_harington", "rose_leslie")
QUICK_DISTRACTORS = ("joe_biden",)
GROUP = "groups/fr_two_people.jpg"
SEARCH_TERMS = ("lin", "alex", "jo", "a", "nobody-here")
REQUEST_TIMEOUT_S = 600.0
#: Longest wait for the streams to run, the subscribers to connect or the store to catch up.
WAIT_S = 120.0
#: Seconds the store's event list must stay the same before it counts as caught up.
STABLE_S = 1.0
TOKEN_ENV = "FACEWATCH_BENCH_TOKEN"
TRY_AGAIN_LATER = 1013
#: Failed requests listed per run (when and how fast they failed), the rest only counted.
FAILURES_SHOWN = 10
SCRIPT = str(Path(__file__).resolve())


# --- alert subscribers, in a child process ------------------------------------------------------


async def subscribers_child(ws_url: str, count: int) -> int:
    """Child process: ``count`` subscribers of ``/ws/alerts`` reading as fast as they can.

    Prints ``{"ready": n, "failed": [...]}`` once every one got its hello; on a line (or EOF)
    on stdin, closes the sockets and prints ``{"subscribers": [...]}``: per subscriber the ids of
    the alerts it received and how its connection ended.
    """
    from websockets.asyncio.client import ClientConnection, connect
    from websockets.exceptions import ConnectionClosed

    headers = {"Authorization": f"Bearer {os.environ[TOKEN_ENV]}"}
    stopping = asyncio.Event()
    results: list[dict[str, Any]] = [
        {"alerts": [], "close_code": None, "closed_by_server": False, "error": None}
        for _ in range(count)
    ]

    async def open_one(index: int) -> ClientConnection | None:
        try:
            socket = await connect(
                f"{ws_url}/ws/alerts", additional_headers=headers, open_timeout=WAIT_S
            )
            hello = json.loads(await asyncio.wait_for(socket.recv(), WAIT_S))
            if hello.get("type") != "hello":
                raise RuntimeError(f"first message {hello.get('type')!r}, not hello")
            return socket
        except Exception as exc:  # reported, not raised: the benchmark counts it
            results[index]["error"] = f"{type(exc).__name__}: {exc}"[:200]
            return None

    async def read(index: int, socket: ClientConnection) -> None:
        mine = results[index]
        try:
            async for raw in socket:
                message = json.loads(raw)
                if message.get("type") == "alert":
                    mine["alerts"].append(message["alert"]["id"])
        except ConnectionClosed:
            pass
        if socket.close_code is not None:
            mine["close_code"] = socket.close_code
            mine["closed_by_server"] = not stopping.is_set()

    sockets = await asyncio.gather(*(open_one(i) for i in range(count)))
    readers = [asyncio.create_task(read(i, socket)) for i, socket in enumerate(sockets) if socket]
    failed = [r["error"] for r in results if r["error"]]
    print(json.dumps({"ready": len(readers), "failed": failed}), flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    stopping.set()
    await asyncio.gather(*(s.close() for s in sockets if s is not None))
    await asyncio.gather(*readers)
    print(json.dumps({"subscribers": results}), flush=True)
    return 0


@dataclass
class Subscribers:
    """The parent's handle on the subscribers' child process."""

    process: asyncio.subprocess.Process

    @classmethod
    async def start(cls, server: ChildServer, count: int) -> Subscribers:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            SCRIPT,
            "--child-subscribers",
            server.ws_url,
            "--subscribers",
            str(count),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, TOKEN_ENV: server.token},
        )
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), WAIT_S + 30)
        ready = json.loads(line or b"{}")
        if ready.get("ready") != count:
            process.kill()
            await process.wait()
            raise RuntimeError(f"{count} subscribers asked, {ready} connected")
        return cls(process)

    async def stop(self) -> list[dict[str, Any]]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(b"stop\n")
        await self.process.stdin.drain()
        # Read to the end: the report of 50 subscribers is far longer than a stream's line limit.
        output = await asyncio.wait_for(self.process.stdout.read(), WAIT_S)
        await asyncio.wait_for(self.process.wait(), WAIT_S)
        subscribers: list[dict[str, Any]] = json.loads(output.splitlines()[-1])["subscribers"]
        return subscribers


# --- the request mix ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Photo:
    name: str
    data: bytes


def parse_mix(text: str) -> dict[str, int]:
    """``"people=30,detect=5"`` -> weights per kind; unknown kinds or bad weights raise."""
    weights: dict[str, int] = {}
    for part in text.split(","):
        kind, _, weight = part.strip().partition("=")
        if kind not in KINDS:
            raise ValueError(f"unknown request kind {kind!r}: one of {', '.join(KINDS)}")
        weights[kind] = int(weight)
        if weights[kind] < 0:
            raise ValueError(f"{kind}: a weight is not negative")
    if sum(weights.values()) <= 0:
        raise ValueError("the weights add up to nothing")
    return weights


def kind_cycle(weights: dict[str, int]) -> list[str]:
    """:data:`CYCLE` kinds in the proportions of ``weights``, shuffled with a fixed seed."""
    total = sum(weights.values())
    cycle: list[str] = []
    for kind, weight in weights.items():
        cycle += [kind] * round(CYCLE * weight / total)
    random.Random(0).shuffle(cycle)
    return cycle or [max(weights, key=lambda k: weights[k])]


async def send(http: httpx.AsyncClient, kind: str, turn: int, photos: Sequence[Photo]) -> int:
    """One request of ``kind`` (its parameters vary with ``turn``); its status code."""
    if kind == "people":
        term = SEARCH_TERMS[turn % len(SEARCH_TERMS)]
        response = await http.get("/api/people", params={"search": term, "per_page": 20})
    elif kind == "streams":
        response = await http.get("/api/streams")
    elif kind == "events":
        response = await http.get("/api/events", params={"limit": 50})
    elif kind == "health":
        response = await http.get("/health")
    else:
        photo = photos[turn % len(photos)]
        files = {"file": (photo.name, photo.data, "image/jpeg")}
        response = await http.post(f"/api/faces/{kind}", files=files)
    await response.aclose()
    return response.status_code


@dataclass
class Drive:
    """What one client run measured."""

    clients: int
    wall_s: float
    started_at: float
    ended_at: float
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    #: Seconds the unmeasured first request of every connection took, all together.
    connect_s: float = 0.0
    #: Failed requests: (error, seconds from the start to sending it, seconds until it failed).
    failures: list[tuple[str, float, float]] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(len(v) for v in self.latencies_ms.values()) + sum(self.errors.values())

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.wall_s


async def drive(
    server: ChildServer,
    clients: int,
    duration_s: float,
    cycle: Sequence[str],
    photos: Sequence[Photo],
) -> Drive:
    """``clients`` concurrent clients sending ``cycle``'s kinds for ``duration_s`` seconds."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    latencies: dict[str, list[float]] = {kind: [] for kind in set(cycle)}
    errors: Counter[str] = Counter()
    failures: list[tuple[str, float, float]] = []
    finished: list[float] = []

    async def client_loop(
        http: httpx.AsyncClient, index: int, started: float, deadline: float
    ) -> None:
        # Clients start at different places of the cycle, so the kinds mix from the start.
        turn = index * len(cycle) // clients
        while time.perf_counter() < deadline:
            kind = cycle[turn % len(cycle)]
            turn += 1
            began = time.perf_counter()
            try:
                status = await send(http, kind, turn + index, photos)
            except httpx.HTTPError as exc:
                error = f"{kind}:{type(exc).__name__}"
            else:
                if status == 200:
                    latencies[kind].append(1000 * (time.perf_counter() - began))
                    continue
                error = f"{kind}:{status}"
            errors[error] += 1
            failures.append((error, began - started, time.perf_counter() - began))
        finished.append(time.perf_counter())

    async with httpx.AsyncClient(
        base_url=server.url, headers=server.headers, limits=limits, timeout=REQUEST_TIMEOUT_S
    ) as http:
        # Every connection opened before the clock starts.
        connecting = time.perf_counter()
        await asyncio.gather(*(http.get("/health/live") for _ in range(clients)))
        connect_s = time.perf_counter() - connecting
        cpu_before, own_before = server.cpu_s, time.process_time()
        started_at = time.time()
        started = time.perf_counter()
        deadline = started + duration_s
        await asyncio.gather(*(client_loop(http, i, started, deadline) for i in range(clients)))
        ended_at = started_at + duration_s
        wall = max(finished) - started
        server_cpu = server.cpu_s - cpu_before
        client_cpu = time.process_time() - own_before
    return Drive(
        clients,
        wall,
        started_at,
        ended_at,
        {k: v for k, v in latencies.items()},
        errors,
        server_cpu,
        client_cpu,
        connect_s,
        failures,
    )


# --- streams, metrics and events ----------------------------------------------------------------


async def add_streams(control: httpx.AsyncClient, clip: Path, count: int) -> list[str]:
    ids = []
    for number in range(1, count + 1):
        response = await control.post(
            "/api/streams", json={"url": str(clip), "name": f"load-{number}", "loop": True}
        )
        if response.status_code != 201:
            raise RuntimeError(f"adding a stream failed: {response.text}")
        ids.append(response.json()["id"])
    deadline = time.monotonic() + WAIT_S
    while True:
        listed = (await control.get("/api/streams")).json()["items"]
        states = {s["id"]: s["state"] for s in listed}
        if all(states.get(i) == "running" for i in ids):
            return ids
        if time.monotonic() > deadline:
            raise RuntimeError(f"streams not running after {WAIT_S:g} s: {states}")
        await asyncio.sleep(0.2)


async def delete_streams(control: httpx.AsyncClient, ids: Sequence[str]) -> None:
    for stream_id in ids:
        response = await control.delete(f"/api/streams/{stream_id}")
        if response.status_code != 200:
            raise RuntimeError(f"deleting stream {stream_id} failed: {response.text}")


async def scrape(control: httpx.AsyncClient) -> tuple[float, Metrics]:
    response = await control.get("/metrics")
    response.raise_for_status()
    return time.monotonic(), Metrics.parse(response.text)


def pipeline_figures(
    before: tuple[float, Metrics], after: tuple[float, Metrics], stream_ids: Sequence[str]
) -> dict[str, Any]:
    """Rates over the window between two scrapes of ``/metrics``."""
    seconds = after[0] - before[0]
    m0, m1 = before[1], after[1]

    def delta(name: str, label: str) -> dict[str, float]:
        old = m0.by(name, label)
        return {k: v - old.get(k, 0.0) for k, v in m1.by(name, label).items()}

    processed = delta("facewatch_frames_processed_total", "stream")
    decoded = delta("facewatch_frames_decoded_total", "stream")
    per_stream = [processed.get(s, 0.0) / seconds for s in stream_ids]
    dropped = {k: int(v) for k, v in delta("facewatch_frames_dropped_total", "reason").items() if v}
    alerts = {k: int(v) for k, v in delta("facewatch_alerts_total", "type").items() if v}
    return {
        "window_s": round(seconds, 2),
        "streams": len(stream_ids),
        "processed_fps": round(sum(per_stream), 2),
        "processed_fps_per_stream": spread(per_stream, 2),
        "decoded_fps": round(sum(decoded.get(s, 0.0) for s in stream_ids) / seconds, 2),
        "dropped_by_reason": dropped,
        "alerts_by_type": alerts,
    }


async def events_between(
    control: httpx.AsyncClient, first_ms: int, end_ms: int
) -> tuple[set[str], int]:
    """Ids of the stored events created in [first_ms, end_ms), and the pages read."""
    found: set[str] = set()
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 500}
        if cursor:
            params["cursor"] = cursor
        response = await control.get("/api/events", params=params)
        response.raise_for_status()
        page = response.json()
        pages += 1
        oldest = end_ms
        for item in page["items"]:
            created = alert_millis(item["id"])
            oldest = min(oldest, created)
            if first_ms <= created < end_ms:
                found.add(item["id"])
        cursor = page.get("next_cursor")
        if not cursor or oldest < first_ms:
            return found, pages


def alert_millis(alert_id: str) -> int:
    """When an alert was created, UNIX milliseconds: the first 12 hex digits of its id."""
    return int(alert_id[:12], 16)


async def stored_alerts(control: httpx.AsyncClient, first_ms: int, end_ms: int) -> set[str]:
    """The window's events once the event writer has written them all (bounded wait)."""
    deadline = time.monotonic() + WAIT_S
    previous: set[str] | None = None
    while True:
        events = (await control.get("/health/detailed")).json().get("events") or {}
        found, _ = await events_between(control, first_ms, end_ms)
        if events.get("pending") == 0 and found == previous:
            return found
        if time.monotonic() > deadline:
            progress(f"  the event store did not settle in {WAIT_S:g} s; counting what it has")
            return found
        previous = found
        await asyncio.sleep(STABLE_S)


def delivery_figures(
    produced: set[str],
    metric_count: int,
    metric_window_s: float,
    subscribers: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    """Alerts produced in the window against what each subscriber received of them."""
    slow = [s for s in subscribers if s["closed_by_server"] and s["close_code"] == TRY_AGAIN_LATER]
    other_closes = Counter(
        str(s["close_code"])
        for s in subscribers
        if s["closed_by_server"] and s["close_code"] != TRY_AGAIN_LATER
    )
    kept_up = [s for s in subscribers if not s["closed_by_server"] and not s["error"]]
    delivered = [len(produced.intersection(s["alerts"])) for s in subscribers]
    duplicates = sum(len(s["alerts"]) - len(set(s["alerts"])) for s in subscribers)
    every = sum(1 for s in kept_up if produced <= set(s["alerts"]))
    return {
        "produced": len(produced),
        "produced_metric": metric_count,
        "produced_metric_window_s": metric_window_s,
        "subscribers": len(subscribers),
        "delivered_per_subscriber": spread(delivered, 0),
        "subscribers_with_every_alert": every,
        "subscribers_kept_up": len(kept_up),
        "closed_too_slow_1013": len(slow),
        "closed_by_server_otherwise": dict(other_closes),
        "subscriber_errors": sum(1 for s in subscribers if s["error"]),
        "lost_for_subscribers_that_kept_up": sum(len(produced - set(s["alerts"])) for s in kept_up),
        "duplicates_received": duplicates,
    }


def spread(values: Sequence[float], digits: int) -> dict[str, float | None]:
    if not values:
        return {"min": None, "median": None, "max": None}
    return {
        "min": round(float(min(values)), digits),
        "median": round(float(statistics.median(values)), digits),
        "max": round(float(max(values)), digits),
    }


# --- phases -------------------------------------------------------------------------------------


@dataclass
class Phase:
    kind: str  # "loaded" or "baseline"
    pair: int
    run: Drive
    pipeline: dict[str, Any] | None = None
    alerts: dict[str, Any] | None = None


async def loaded_phase(
    args: argparse.Namespace,
    server: ChildServer,
    control: httpx.AsyncClient,
    clients: int,
    pair: int,
    clip: Path,
    cycle: Sequence[str],
    photos: Sequence[Photo],
) -> Phase:
    subscribers = await Subscribers.start(server, args.subscribers)
    stream_ids: list[str] = []
    try:
        stream_ids = await add_streams(control, clip, args.streams)
        await asyncio.sleep(args.settle)
        before = await scrape(control)
        run = await drive(server, clients, args.duration, cycle, photos)
        after = await scrape(control)
        first_ms, end_ms = int(1000 * run.started_at), int(1000 * run.ended_at)
        produced = await stored_alerts(control, first_ms, end_ms)
    finally:
        received = await subscribers.stop()
        if stream_ids:
            await delete_streams(control, stream_ids)
    pipeline = pipeline_figures(before, after, stream_ids)
    metric_count = sum(pipeline["alerts_by_type"].values())
    delivery = delivery_figures(produced, metric_count, pipeline["window_s"], received)
    return Phase("loaded", pair, run, pipeline, delivery)


async def measure(
    args: argparse.Namespace,
    server: ChildServer,
    clip: Path,
    cycle: Sequence[str],
    photos: Sequence[Photo],
) -> dict[int, list[Phase]]:
    phases: dict[int, list[Phase]] = {}
    async with httpx.AsyncClient(
        base_url=server.url, headers=server.headers, timeout=REQUEST_TIMEOUT_S
    ) as control:
        # Warm-up, not measured: lazy imports, first inferences, allocator growth.
        await drive(server, 4, min(2.0, args.duration), cycle, photos)
        for pair in range(args.pairs):
            for clients in args.clients:
                order = ("baseline", "loaded") if pair % 2 == 0 else ("loaded", "baseline")
                for kind in order:
                    if kind == "loaded":
                        phase = await loaded_phase(
                            args, server, control, clients, pair, clip, cycle, photos
                        )
                    else:
                        phase = Phase(
                            "baseline",
                            pair,
                            await drive(server, clients, args.duration, cycle, photos),
                        )
                    phases.setdefault(clients, []).append(phase)
                    describe_phase(phase)
    return phases


def describe_phase(phase: Phase) -> None:
    run = phase.run
    line = (
        f"x{run.clients} {phase.kind} pair {phase.pair + 1}: {run.requests_per_s:.1f} req/s, "
        f"{sum(run.errors.values())} errors"
    )
    if phase.pipeline is not None and phase.alerts is not None:
        line += (
            f", {phase.pipeline['processed_fps']:.1f} frames/s processed, alerts "
            f"{phase.alerts['produced']} produced, "
            f"{phase.alerts['subscribers_with_every_alert']}/{phase.alerts['subscribers']} "
            f"subscribers got all, {phase.alerts['closed_too_slow_1013']} closed 1013"
        )
    progress(line)


# --- figures ------------------------------------------------------------------------------------


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    array = np.asarray(values)
    return {f"p{q}_ms": round(float(np.percentile(array, q)), 2) for q in (50, 95, 99)}


def api_figures(runs: Sequence[Drive]) -> dict[str, Any]:
    errors: Counter[str] = Counter()
    for run in runs:
        errors.update(run.errors)
    every = [ms for run in runs for values in run.latencies_ms.values() for ms in values]
    kinds = sorted({k for run in runs for k in run.latencies_ms})
    return {
        "requests_per_s": round(statistics.median(r.requests_per_s for r in runs), 2),
        "requests_per_s_runs": [round(r.requests_per_s, 2) for r in runs],
        "requests_runs": [r.requests for r in runs],
        "latency_ms": percentiles(every),
        "latency_ms_by_kind": {
            kind: {
                "requests": sum(len(r.latencies_ms.get(kind, [])) for r in runs),
                **percentiles([ms for r in runs for ms in r.latencies_ms.get(kind, [])]),
            }
            for kind in kinds
        },
        "errors": sum(errors.values()),
        "errors_by_status": dict(sorted(errors.items())),
        "failures_first": [
            {"error": e, "sent_at_s": round(at, 2), "failed_after_ms": round(1000 * after, 1)}
            for run in runs
            for e, at, after in run.failures[:FAILURES_SHOWN]
        ],
        "connect_s_per_run": [round(r.connect_s, 2) for r in runs],
        "server_cpu_s_per_run": round(statistics.median(r.server_cpu_s for r in runs), 2),
        "client_cpu_s_per_run": round(statistics.median(r.client_cpu_s for r in runs), 2),
    }


def ratio_figures(pairs: Sequence[tuple[Drive, Drive]]) -> dict[str, float | None]:
    """Medians of loaded / baseline over the pairs: requests/s and latency percentiles."""
    out: dict[str, float | None] = {
        "requests_per_s": round(
            statistics.median(a.requests_per_s / b.requests_per_s for a, b in pairs), 3
        )
    }
    for name in ("p50_ms", "p95_ms", "p99_ms"):
        ratios = []
        for loaded, baseline in pairs:
            a = percentiles([ms for v in loaded.latencies_ms.values() for ms in v])[name]
            b = percentiles([ms for v in baseline.latencies_ms.values() for ms in v])[name]
            if a is not None and b:
                ratios.append(a / b)
        out[name.removesuffix("_ms")] = round(statistics.median(ratios), 3) if ratios else None
    return out


def loaded_extras(phases: Sequence[Phase]) -> dict[str, Any]:
    pipelines = [p.pipeline for p in phases if p.pipeline is not None]
    alerts = [p.alerts for p in phases if p.alerts is not None]
    return {
        "pipeline": {
            "processed_fps": round(statistics.median(p["processed_fps"] for p in pipelines), 2),
            "decoded_fps": round(statistics.median(p["decoded_fps"] for p in pipelines), 2),
            "runs": pipelines,
        },
        "alerts": {
            "produced": sum(a["produced"] for a in alerts),
            "subscriber_windows": sum(a["subscribers"] for a in alerts),
            "subscriber_windows_with_every_alert": sum(
                a["subscribers_with_every_alert"] for a in alerts
            ),
            "closed_too_slow_1013": sum(a["closed_too_slow_1013"] for a in alerts),
            "lost_for_subscribers_that_kept_up": sum(
                a["lost_for_subscribers_that_kept_up"] for a in alerts
            ),
            "runs": alerts,
        },
    }


def report(
    args: argparse.Namespace,
    phases: dict[int, list[Phase]],
    about: dict[str, Any],
    enrolled: dict[str, int],
    weights: dict[str, int],
    cycle: Sequence[str],
) -> dict[str, Any]:
    by_clients: dict[str, Any] = {}
    for clients, runs in phases.items():
        loaded = [p for p in runs if p.kind == "loaded"]
        baseline = [p for p in runs if p.kind == "baseline"]
        pairs = [
            (a.run, b.run)
            for a, b in zip(
                sorted(loaded, key=lambda p: p.pair),
                sorted(baseline, key=lambda p: p.pair),
                strict=True,
            )
        ]
        by_clients[str(clients)] = {
            "loaded": {**api_figures([p.run for p in loaded]), **loaded_extras(loaded)},
            "baseline": api_figures([p.run for p in baseline]),
            "loaded_vs_baseline": ratio_figures(pairs),
        }
    largest = str(max(args.clients))
    every_alert = all(
        run["lost_for_subscribers_that_kept_up"] == 0
        for figures in by_clients.values()
        for run in figures["loaded"]["alerts"]["runs"]
    )
    return {
        "mode": "quick" if args.quick else "full",
        "clients": args.clients,
        "streams": args.streams,
        "subscribers": args.subscribers,
        "duration_s": args.duration,
        "settle_s": args.settle,
        "pairs": args.pairs,
        "mix": weights,
        "mix_cycle": dict(Counter(cycle)),
        "identities": sorted(enrolled),
        "server_settings": {"pipeline": {"cooldown_s": args.cooldown}},
        "machine": about,
        "by_clients": by_clients,
        "goals": {
            "no_alert_lost_for_subscribers_that_keep_up": every_alert,
            "zero_errors_at_largest_client_count": (
                by_clients[largest]["loaded"]["errors"] == 0
                and by_clients[largest]["baseline"]["errors"] == 0
            ),
        },
    }


# --- main -------------------------------------------------------------------------------------


def raise_fd_limit() -> list[int]:
    """Soft RLIMIT_NOFILE up to the hard limit (the server, a child, inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return [int(v) for v in resource.getrlimit(resource.RLIMIT_NOFILE)]


def enroll(server: ChildServer, root: Path, names: Sequence[str]) -> dict[str, int]:
    ids = {}
    with httpx.Client(
        base_url=server.url, headers=server.headers, timeout=REQUEST_TIMEOUT_S
    ) as client:
        for name in names:
            folder = root / "identities" / name
            paths = sorted(p for p in folder.iterdir() if p.is_file())
            response = client.post(
                "/api/people",
                data={"name": name, "largest": "true"},
                files=[("photos", (p.name, p.read_bytes(), "image/jpeg")) for p in paths],
            )
            if response.status_code != 201:
                raise SystemExit(f"enrolling {name} failed: {response.text}")
            ids[name] = response.json()["person"]["id"]
    return ids


def photos_for(root: Path, names: Sequence[str]) -> list[Photo]:
    photos = []
    for name in names:
        last = sorted(p for p in (root / "identities" / name).iterdir() if p.is_file())[-1]
        photos.append(Photo(last.name, last.read_bytes()))
    group = root / GROUP
    photos.append(Photo(group.name, group.read_bytes()))
    return photos


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="5 and 10 clients, 2 streams, 2 subscribers, 3 s, one pair: a smoke run",
    )
    parser.add_argument(
        "--faces-dir",
        type=Path,
        default=None,
        help=f"face data folder (default: ${FACES_ENV} or ../shared/data/faces)",
    )
    parser.add_argument("--clients", default=None, help="comma-separated client counts")
    parser.add_argument("--streams", type=int, default=None, help="streams in loaded phases (8)")
    parser.add_argument(
        "--subscribers", type=int, default=None, help="WebSocket subscribers in loaded phases (50)"
    )
    parser.add_argument("--duration", type=float, default=None, help="seconds per phase (20)")
    parser.add_argument("--pairs", type=int, default=None, help="loaded/baseline pairs (2)")
    parser.add_argument(
        "--mix", default=DEFAULT_MIX, help=f"request kinds and weights (default {DEFAULT_MIX})"
    )
    parser.add_argument(
        "--cooldown",
        type=float,
        default=0.0,
        help="pipeline.cooldown_s of the server (default 0: a match per track)",
    )
    parser.add_argument(
        "--providers", default="cpu", help="engine.providers, e.g. cpu or auto (default cpu)"
    )
    parser.add_argument("--child-subscribers", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_subscribers is not None:
        args.subscribers = SUBSCRIBERS if args.subscribers is None else args.subscribers
        return args
    try:
        chosen = args.clients.split(",") if args.clients else None
        args.clients = sorted(
            {int(c) for c in chosen} if chosen else set(QUICK_CLIENTS if args.quick else CLIENTS)
        )
        args.weights = parse_mix(args.mix)
    except ValueError as exc:
        parser.error(f"--clients takes comma-separated integers, --mix KIND=WEIGHT,... ({exc})")
    quick = args.quick
    args.streams = (
        args.streams if args.streams is not None else (QUICK_STREAMS if quick else STREAMS)
    )
    if args.subscribers is None:
        args.subscribers = QUICK_SUBSCRIBERS if quick else SUBSCRIBERS
    args.duration = args.duration or (QUICK_DURATION_S if quick else DURATION_S)
    args.pairs = args.pairs or (1 if quick else PAIRS)
    args.settle = QUICK_SETTLE_S if quick else SETTLE_S
    if min(args.clients) < 1 or args.pairs < 1 or args.duration <= 0:
        parser.error("client counts, --pairs and --duration must be positive")
    if args.streams < 0 or args.subscribers < 0 or args.cooldown < 0:
        parser.error("--streams, --subscribers and --cooldown must not be negative")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_before = load_average()
    root = faces_root(args.faces_dir)
    names = (*PERFORMERS, *(QUICK_DISTRACTORS if args.quick else DISTRACTORS))
    clip = root / CLIP
    needed = [root / "identities" / name for name in names] + [root / GROUP, clip]
    if not all(p.exists() for p in needed):
        progress(f"face data not found at {root}: pass --faces-dir or set ${FACES_ENV}")
        raise SystemExit(2)
    client_limit = raise_fd_limit()
    cycle = kind_cycle(args.weights)
    photos = photos_for(root, names)
    with tempfile.TemporaryDirectory(prefix="facewatch-load-bench-") as tmp:
        progress("starting the server")
        server = start_server(
            Path(tmp) / "server",
            {"engine": {"providers": args.providers}, "pipeline": {"cooldown_s": args.cooldown}},
        )
        try:
            enrolled = enroll(server, root, names)
            progress(f"enrolled {len(enrolled)} identities over HTTP")
            phases = asyncio.run(measure(args, server, clip, cycle, photos))
            about = {
                **host(load_before),
                "httpx": httpx.__version__,
                "fd_limit": {"clients": client_limit, "server": server.fd_limit()},
                "server_log": server.log_summary(),
            }
        finally:
            server.stop()
    return report(args, phases, about, enrolled, args.weights, cycle)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    args = parse_args(argv)
    if args.child_subscribers is not None:
        return asyncio.run(subscribers_child(args.child_subscribers, args.subscribers))
    print(json.dumps(run(args), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
