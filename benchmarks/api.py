"""Throughput and latency of the REST API under concurrent clients vs. the engine alone; prints
one JSON object.

Usage::

    python benchmarks/api.py [--quick] [--faces-dir DIR] [--clients N,...] [--requests N]
                             [--baseline-requests N] [--pairs N] [--threads N] [--providers P]

A real server (``bench_server.py``: ``create_app`` under uvicorn as ``facewatch serve`` runs
it, the lifespan opening every part, an SQLite store in a temporary data folder) runs in a
child process on 127.0.0.1, port 0, so that the clients' Python does not share a GIL with it.
The benchmark gets an operator's API key there, enrolls a few identities through
``POST /api/people`` (their first two photos each, the largest face) and drives two endpoints:

* ``POST /api/faces/verify``: multipart ``file_a`` and ``file_b``, cycling through pairs of
  the enrolled identities' photos (same person, different persons);
* ``POST /api/faces/query``: multipart ``file``, cycling through the last photo of each
  enrolled person (one not enrolled, for those who have three) and a group photo.

For each endpoint and each client count (100 and 200 in a full run), ``--requests`` requests go
out from that many concurrent clients (asyncio tasks sharing one ``httpx.AsyncClient`` with as
many connections), each sending its next request as soon as its previous one is answered.
Figures: requests/s (requests / wall seconds from the first send to the last answer), latency
p50/p95/p99 in ms (send to answer, as a client sees it), errors by status (or exception name),
and the server process's CPU seconds per request (user + system, all its threads).

**Baseline**: the same requests, one at a time, through a :class:`FaceEngine` and
:class:`Watchlist` of this process, loaded with the same settings and holding the same
identities: decoding the uploaded bytes (``decode_image``), then ``engine.verify`` or
``engine.embed`` + ``watchlist.identify_faces``: what the endpoint does without HTTP, JSON,
multipart, authentication or threads. engine seconds per request = baseline wall / requests.

**Overhead** = (server seconds per request - engine seconds per request) / engine seconds per
request, where server seconds per request = wall / requests of the concurrent run (the inverse
of its throughput). Concurrent requests keep every core busy where the baseline runs one at a
time, so this can be negative; ``overhead_cpu`` compares CPU seconds per request instead (the
server process's against the baseline's own), which says what the server adds in work.
Baseline and server runs alternate in pairs, the order flipping from one pair to the next, so
that load from elsewhere on the machine hits both alike; figures are medians over the pairs,
and the overheads are medians of the per-pair overheads. The clients run on the same machine as
the server and take CPU from it: the wall-time overhead includes their cost.

Goals, reported and never asserted:

* ``zero_errors_at_200_clients``: no request failed at the largest client count;
* ``overhead_lt_0_20_at_100_clients``: overhead below 20 % of engine time at 100 clients (at
  the smallest client count in a quick run) for both endpoints.

Progress goes to stderr; stdout carries only the JSON object. Exits with status 2 when the face
data is missing or the arguments are wrong, 1 when the server does not start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
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
import onnxruntime as ort

from bench_host import FACES_ENV, faces_root, host, load_average, progress
from bench_server import ChildServer, start_server

CLIENTS = (100, 200)
QUICK_CLIENTS = (2, 4)
REQUESTS = 400
QUICK_REQUESTS = 8
BASELINE_REQUESTS = 60
QUICK_BASELINE_REQUESTS = 4
PAIRS = 3
GOAL_OVERHEAD = 0.20
ENDPOINTS = ("verify", "query")
#: Enrolled from their first two photos; their last photo is a query (a third one, when they
#: have one, so that most queries are of photos the watchlist has not seen).
IDENTITIES = ("barack_obama", "joe_biden", "kit_harington", "rose_leslie", "angelina_jolie")
QUICK_IDENTITIES = ("barack_obama", "kit_harington")
GROUP = "groups/fr_two_people.jpg"
REQUEST_TIMEOUT_S = 600.0


def settings_for(data_dir: Path, providers: str, threads: int) -> Any:
    from facewatch.config import load_settings

    return load_settings(
        data_dir=data_dir,
        engine={"providers": providers, "thread_pool_size": threads},
        server={"host": "127.0.0.1", "port": 0},
    )


def server_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The server's settings beyond ``bench_server``'s: the same engine as the baseline's."""
    return {"engine": {"providers": args.providers, "thread_pool_size": args.threads}}


# --- requests -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One request's uploads: (field, file name, bytes)."""

    files: tuple[tuple[str, str, bytes], ...]


def requests_for(root: Path, identities: Sequence[str]) -> dict[str, list[Request]]:
    def photo(name: str, index: int) -> tuple[str, bytes]:
        folder = root / "identities" / name
        path = sorted(p for p in folder.iterdir() if p.is_file())[index]
        return path.name, path.read_bytes()

    verify: list[Request] = []
    for position, name in enumerate(identities):
        other = identities[(position + 1) % len(identities)]
        verify.append(Request((("file_a", *photo(name, 0)), ("file_b", *photo(name, 1)))))
        verify.append(Request((("file_a", *photo(name, 0)), ("file_b", *photo(other, 1)))))
    query = [Request((("file", *photo(name, -1)),)) for name in identities]
    group = root / GROUP
    query.append(Request((("file", group.name, group.read_bytes()),)))
    return {"verify": verify, "query": query}


def enroll_over_http(server: ChildServer, root: Path, identities: Sequence[str]) -> dict[str, int]:
    ids = {}
    headers = {"Authorization": f"Bearer {server.token}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=REQUEST_TIMEOUT_S) as client:
        for name in identities:
            folder = root / "identities" / name
            paths = sorted(p for p in folder.iterdir() if p.is_file())[:2]
            response = client.post(
                "/api/people",
                data={"name": name, "largest": "true"},
                files=[("photos", (p.name, p.read_bytes(), "image/jpeg")) for p in paths],
            )
            if response.status_code != 201:
                raise SystemExit(f"enrolling {name} failed: {response.text}")
            ids[name] = response.json()["person"]["id"]
    return ids


@dataclass
class Run:
    """One concurrent run against the server, or one baseline run."""

    requests: int
    wall_s: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    cpu_s: float = 0.0

    @property
    def cpu_per_request_s(self) -> float:
        return self.cpu_s / self.requests

    @property
    def per_request_s(self) -> float:
        return self.wall_s / self.requests


async def drive(
    server: ChildServer, path: str, plan: Sequence[Request], clients: int, count: int
) -> Run:
    """``count`` requests from ``clients`` concurrent clients, cycling through ``plan``."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {server.token}"}
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    issued = iter(range(count))

    async def client_loop(http: httpx.AsyncClient) -> None:
        for index in issued:
            request = plan[index % len(plan)]
            files = [
                (name, (filename, data, "image/jpeg")) for name, filename, data in request.files
            ]
            started = time.perf_counter()
            try:
                response = await http.post(path, files=files)
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] += 1
                continue
            latencies.append(1000 * (time.perf_counter() - started))
            if response.status_code != 200:
                errors[str(response.status_code)] += 1

    async with httpx.AsyncClient(
        base_url=server.url, headers=headers, limits=limits, timeout=REQUEST_TIMEOUT_S
    ) as http:
        cpu_before = server.cpu_s
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(http) for _ in range(clients)))
        wall = time.perf_counter() - started
        cpu = server.cpu_s - cpu_before
    return Run(count, wall, latencies, errors, cpu)


class Baseline:
    """The endpoints' work without a server: decode, then the engine (and the watchlist)."""

    def __init__(
        self, data_dir: Path, args: argparse.Namespace, root: Path, identities: Sequence[str]
    ) -> None:
        from facewatch.recognizer.engine import FaceEngine
        from facewatch.watchlist.service import Photo, Watchlist

        settings = settings_for(data_dir, args.providers, args.threads)
        self.engine = FaceEngine.load(settings.engine)
        self.watchlist = Watchlist.open(settings, self.engine)
        for name in identities:
            folder = root / "identities" / name
            paths = sorted(p for p in folder.iterdir() if p.is_file())[:2]
            self.watchlist.enroll(
                {"name": name}, [Photo(p.name, p.read_bytes()) for p in paths], largest=True
            )
        self.max_pixels = settings.engine.max_image_pixels

    def close(self) -> None:
        self.watchlist.close()

    def one(self, endpoint: str, request: Request) -> None:
        from facewatch.errors import NoFaceError
        from facewatch.images import decode_image

        images = [decode_image(data, max_pixels=self.max_pixels) for _, _, data in request.files]
        if endpoint == "verify":
            try:
                self.engine.verify(images[0], images[1])
            except NoFaceError:
                pass
        else:
            faces = self.engine.embed(images)
            self.watchlist.identify_faces(faces, [""])

    def run(self, endpoint: str, plan: Sequence[Request], count: int) -> Run:
        latencies = []
        cpu = time.process_time()
        started = time.perf_counter()
        for index in range(count):
            began = time.perf_counter()
            self.one(endpoint, plan[index % len(plan)])
            latencies.append(1000 * (time.perf_counter() - began))
        wall = time.perf_counter() - started
        return Run(count, wall, latencies, cpu_s=time.process_time() - cpu)


# --- figures ------------------------------------------------------------------------------------


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    array = np.asarray(values)
    return {f"p{q}_ms": round(float(np.percentile(array, q)), 2) for q in (50, 95, 99)}


def server_figures(runs: Sequence[Run]) -> dict[str, Any]:
    median = sorted(runs, key=lambda r: r.wall_s)[len(runs) // 2]
    errors: Counter[str] = Counter()
    for run in runs:
        errors.update(run.errors)
    return {
        "requests": runs[0].requests,
        "requests_per_s": round(statistics.median(r.requests / r.wall_s for r in runs), 2),
        "requests_per_s_runs": [round(r.requests / r.wall_s, 2) for r in runs],
        "latency_ms_of_median_run": percentiles(median.latencies_ms),
        "errors": sum(errors.values()),
        "errors_by_status": dict(errors),
        "cpu_ms_per_request": round(1000 * statistics.median(r.cpu_per_request_s for r in runs), 2),
    }


def baseline_figures(runs: Sequence[Run]) -> dict[str, Any]:
    latencies = [ms for run in runs for ms in run.latencies_ms]
    return {
        "requests": runs[0].requests,
        "engine_ms_per_request": round(1000 * statistics.median(r.per_request_s for r in runs), 2),
        "cpu_ms_per_request": round(1000 * statistics.median(r.cpu_per_request_s for r in runs), 2),
        "latency_ms": percentiles(latencies),
    }


def machine(engine: Any, threads: int, load_before: tuple[float, ...]) -> dict[str, Any]:
    return {
        **host(load_before),
        "onnxruntime": ort.__version__,
        "httpx": httpx.__version__,
        "providers": engine.providers,
        "intra_op_threads": threads or "onnxruntime default",
        "pack": engine.pack.name,
        "max_workers": engine.settings.max_workers,
    }


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 and 4 clients, 8 requests, one pair, two identities: a smoke run",
    )
    parser.add_argument(
        "--faces-dir",
        type=Path,
        default=None,
        help=f"face data folder (default: ${FACES_ENV} or ../shared/data/faces)",
    )
    parser.add_argument("--clients", default=None, help="comma-separated client counts (100,200)")
    parser.add_argument("--requests", type=int, default=None, help="requests per server run (400)")
    parser.add_argument(
        "--baseline-requests", type=int, default=None, help="requests per baseline run (60)"
    )
    parser.add_argument("--pairs", type=int, default=None, help="baseline/server pairs (3)")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="ONNX Runtime intra-op threads per session (default 0: ONNX Runtime's own choice)",
    )
    parser.add_argument(
        "--providers", default="cpu", help="engine.providers, e.g. cpu or auto (default cpu)"
    )
    args = parser.parse_args(argv)
    try:
        chosen = args.clients.split(",") if args.clients else None
        args.clients = sorted(
            {int(c) for c in chosen} if chosen else set(QUICK_CLIENTS if args.quick else CLIENTS)
        )
    except ValueError as exc:
        parser.error(f"--clients takes comma-separated integers ({exc})")
    args.requests = args.requests or (QUICK_REQUESTS if args.quick else REQUESTS)
    args.baseline_requests = args.baseline_requests or (
        QUICK_BASELINE_REQUESTS if args.quick else BASELINE_REQUESTS
    )
    args.pairs = args.pairs or (1 if args.quick else PAIRS)
    if min(args.clients) < 1 or args.requests < 1 or args.baseline_requests < 1 or args.pairs < 1:
        parser.error("client counts, --requests, --baseline-requests and --pairs must be positive")
    if args.threads < 0:
        parser.error("--threads must not be negative")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_before = load_average()
    root = faces_root(args.faces_dir)
    identities = QUICK_IDENTITIES if args.quick else IDENTITIES
    needed = [root / "identities" / name for name in identities] + [root / GROUP]
    if not all(p.exists() for p in needed):
        progress(f"face data not found at {root}: pass --faces-dir or set ${FACES_ENV}")
        raise SystemExit(2)
    plans = requests_for(root, identities)
    with tempfile.TemporaryDirectory(prefix="facewatch-api-bench-") as tmp:
        work = Path(tmp)
        progress("starting the server")
        server = start_server(work / "server", server_changes(args))
        try:
            enrolled = enroll_over_http(server, root, identities)
            progress(f"enrolled {len(enrolled)} identities over HTTP; loading the baseline")
            baseline = Baseline(work / "baseline", args, root, identities)
            try:
                results = measure(args, server, baseline, plans)
                about = machine(baseline.engine, args.threads, load_before)
            finally:
                baseline.close()
        finally:
            server.stop()
    return report(args, results, about, enrolled, plans)


def measure(
    args: argparse.Namespace,
    server: ChildServer,
    baseline: Baseline,
    plans: dict[str, list[Request]],
) -> dict[str, dict[int, dict[str, list[Run]]]]:
    """Runs per endpoint, client count and kind ("server", "baseline"), pairs alternating."""
    results: dict[str, dict[int, dict[str, list[Run]]]] = {}
    for endpoint in ENDPOINTS:
        path = f"/api/faces/{endpoint}"
        plan = plans[endpoint]
        # Warm-up, not measured: first connections, lazy imports, allocator growth.
        asyncio.run(drive(server, path, plan, 2, 4))
        baseline.run(endpoint, plan, 2)
        results[endpoint] = {}
        for pair in range(args.pairs):
            for clients in args.clients:
                slot = results[endpoint].setdefault(clients, {"server": [], "baseline": []})
                order = ("baseline", "server") if pair % 2 == 0 else ("server", "baseline")
                for kind in order:
                    if kind == "baseline":
                        slot[kind].append(baseline.run(endpoint, plan, args.baseline_requests))
                    else:
                        slot[kind].append(
                            asyncio.run(drive(server, path, plan, clients, args.requests))
                        )
                done = slot["server"][-1]
                progress(
                    f"{endpoint} x{clients} pair {pair + 1}: "
                    f"{done.requests / done.wall_s:.1f} req/s, {sum(done.errors.values())} errors, "
                    f"engine {1000 * slot['baseline'][-1].per_request_s:.1f} ms/request"
                )
    return results


def report(
    args: argparse.Namespace,
    results: dict[str, dict[int, dict[str, list[Run]]]],
    about: dict[str, Any],
    enrolled: dict[str, int],
    plans: dict[str, list[Request]],
) -> dict[str, Any]:
    endpoints: dict[str, Any] = {}
    for endpoint, by_clients in results.items():
        endpoints[endpoint] = {}
        for clients, runs in by_clients.items():
            pairs = list(zip(runs["server"], runs["baseline"], strict=True))
            overheads = [(s.per_request_s - b.per_request_s) / b.per_request_s for s, b in pairs]
            cpu_overheads = [
                (s.cpu_per_request_s - b.cpu_per_request_s) / b.cpu_per_request_s for s, b in pairs
            ]
            endpoints[endpoint][str(clients)] = {
                "server": server_figures(runs["server"]),
                "baseline": baseline_figures(runs["baseline"]),
                "overhead": round(statistics.median(overheads), 4),
                "overhead_runs": [round(o, 4) for o in overheads],
                "overhead_cpu": round(statistics.median(cpu_overheads), 4),
            }
    most, fewest = str(max(args.clients)), str(min(args.clients))
    overhead_at = 100 if 100 in args.clients else min(args.clients)
    goals = {
        "zero_errors_at_200_clients": all(
            endpoints[e][most]["server"]["errors"] == 0 for e in endpoints
        ),
        "overhead_lt_0_20_at_100_clients": all(
            endpoints[e][str(overhead_at)]["overhead"] < GOAL_OVERHEAD for e in endpoints
        ),
    }
    return {
        "mode": "quick" if args.quick else "full",
        "clients": args.clients,
        "requests": args.requests,
        "baseline_requests": args.baseline_requests,
        "pairs": args.pairs,
        "identities": sorted(enrolled),
        "request_kinds": {name: len(plan) for name, plan in plans.items()},
        "machine": about,
        "endpoints": endpoints,
        "goals_judged_at": {"errors": int(most), "overhead": overhead_at, "fewest": int(fewest)},
        "goals": goals,
    }


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    args = parse_args(argv)
    print(json.dumps(run(args), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
