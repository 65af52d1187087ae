"""Health and metrics: liveness, readiness, a detailed report, and Prometheus metrics.

``/health/live`` and ``/health/ready`` answer without credentials (load balancers, Kubernetes
probes); ``/health``, ``/health/detailed`` and ``/metrics`` need the viewer role.

Readiness runs real checks: the models are loaded, the store answers ``SELECT 1`` and the
vector index answers its size, each within :data:`CHECK_TIMEOUT_S`. Checks that may block (the
database, a Milvus server) run on a daemon thread of their own, one at a time per check: a
database that hangs makes readiness fail fast and never piles up threads or holds up shutdown.

The detailed report's ``storage`` section says how writes to the data directory are going: free
space (``low`` below :data:`LOW_DISK_BYTES`, :data:`LOW_DISK_SHARE` of the disk on small ones,
or the size of the index snapshot, which a new one needs again), the index snapshot and
enrollment photo writes (the last failure, its error and time, cleared by the next success) and
alert snapshots not saved. Any such problem, or an event store that cannot be written, makes the
report's ``status`` ``degraded`` with ``problems`` saying why; ``/health`` says ``degraded`` too.
None of this reads the database, so it answers during a store outage.

``/metrics`` is the pipeline's registry (stages, batches, queues, drops, streams, alerts), the
process's own (CPU, memory, file descriptors, GC) and, once :func:`install_http_metrics` has
added its middleware, HTTP requests by method, route template and status, with their latency.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from inspect import isawaitable
from typing import Annotated, Any

import psutil
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from sqlalchemy import text
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import facewatch
from facewatch.pipeline.metrics import LATENCY_BUCKETS, STAGES
from facewatch.recognizer.session import GPU_PROVIDERS
from facewatch.web import schemas
from facewatch.web.auth import Role, require
from facewatch.web.errors import error_body
from facewatch.web.routes.streams import describe
from facewatch.web.services import Services, get_services

router = APIRouter(tags=["health"])
ServicesDep = Annotated[Services, Depends(get_services)]
VIEWER = [Depends(require(Role.viewer))]
#: Longest wait for one readiness check (store, index), in seconds.
CHECK_TIMEOUT_S = 2.0
#: Longest wait for a part's own status() in the detailed report, in seconds.
STATUS_TIMEOUT_S = 2.0
_PROBES_KEY = "health_probes"
#: Free space in the data directory below which it is reported low, in bytes ...
LOW_DISK_BYTES = 100 * 1024 * 1024
#: ... or below this share of the disk, when that is less (a small dedicated volume).
LOW_DISK_SHARE = 0.05
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


# --- bounded checks -----------------------------------------------------------------------------


class Probes:
    """Blocking checks run on daemon threads, each waited for at most a timeout.

    A check still running from an earlier call is not started again: the caller hears that it
    is still pending, so a hung database costs one thread, not one per probe.
    """

    def __init__(self) -> None:
        self._running: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    async def run(self, name: str, check: Callable[[], Any], limit_s: float) -> Any:
        """``check()``'s result.

        Raises:
            TimeoutError: it did not return within ``limit_s`` seconds, or an earlier run of
                the same check has not returned yet.
            Exception: whatever ``check`` raised.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()

        def settle(result: Any, error: BaseException | None) -> None:
            if done.done():
                return
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(result)

        def body() -> None:
            result, error = None, None
            try:
                result = check()
            except Exception as exc:  # handed to the waiting coroutine
                error = exc
            finally:
                with self._lock:
                    self._running.pop(name, None)
            try:
                loop.call_soon_threadsafe(settle, result, error)
            except RuntimeError:  # the loop has closed: nobody waits any more
                pass

        with self._lock:
            if name in self._running:
                raise TimeoutError(f"the previous {name} check has not returned yet")
            thread = threading.Thread(target=body, name=f"facewatch-check-{name}", daemon=True)
            self._running[name] = thread
        thread.start()
        async with asyncio.timeout(limit_s):
            return await asyncio.shield(done)


def _probes(services: Services) -> Probes:
    probes = services.extras.get(_PROBES_KEY)
    if probes is None:
        probes = services.extras[_PROBES_KEY] = Probes()
    assert isinstance(probes, Probes)
    return probes


async def _check(
    probes: Probes, name: str, call: Callable[[], Any], limit_s: float
) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        value = await probes.run(name, call, limit_s)
    except TimeoutError as exc:
        return {"ok": False, "error": str(exc) or f"no answer within {limit_s:g} s"}
    except Exception as exc:  # any failure of the part is the answer, not a server error
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"ok": True, "ms": round(1000 * (time.perf_counter() - started), 1), **value}


def _select_one(services: Services) -> dict[str, Any]:
    with services.watchlist.store.sql.connect() as connection:
        connection.execute(text("SELECT 1")).scalar_one()
    return {"dialect": services.watchlist.store.dialect}


def _index_size(services: Services) -> dict[str, Any]:
    index = services.watchlist.index
    return {"size": len(index), "backend": type(index).__name__}


def _models(services: Services) -> dict[str, Any]:
    engine = services.engine
    return {"pack": engine.pack.name, "providers": engine.providers}


# --- routes -------------------------------------------------------------------------------------


@router.get("/health", response_model=schemas.Health, dependencies=VIEWER)
async def health(services: ServicesDep) -> Any:
    """The server answers, and who it is; ``degraded`` when data cannot be written (see
    ``/health/detailed`` for why)."""
    storage = await asyncio.to_thread(_storage, services)
    events = await _part_status(services.events)
    status = "degraded" if _problems(storage, events) else "ok"
    return schemas.Health(status=status, version=facewatch.__version__)


@router.get("/health/live", response_model=schemas.Health)
async def live() -> Any:
    """The process answers (public)."""
    return schemas.Health(status="ok", version=facewatch.__version__)


@router.get(
    "/health/ready",
    response_model=schemas.Readiness,
    responses={503: {"description": "A part is not ready: error.failing names it."}},
)
async def ready(request: Request) -> Any:
    """Models loaded, store reachable (``SELECT 1``), index loaded: 200, else 503 (public)."""
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        body = error_body("not_ready", "the server is starting", failing=["services"], checks={})
        return JSONResponse(body, status_code=503)
    probes = _probes(services)
    try:
        models = {"ok": True, **_models(services)}
    except Exception as exc:  # a session that cannot say its providers is not serving
        models = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    store, index = await asyncio.gather(
        _check(probes, "store", lambda: _select_one(services), CHECK_TIMEOUT_S),
        _check(probes, "index", lambda: _index_size(services), CHECK_TIMEOUT_S),
    )
    checks = {"models": models, "store": store, "index": index}
    failing = [name for name, check in checks.items() if not check["ok"]]
    if failing:
        reasons = "; ".join(f"{name}: {checks[name].get('error', 'failed')}" for name in failing)
        body = error_body("not_ready", f"not ready: {reasons}", failing=failing, checks=checks)
        return JSONResponse(body, status_code=503)
    return schemas.Readiness(status="ready", checks=checks)


@router.get("/health/detailed", dependencies=VIEWER)
async def detailed(request: Request, services: ServicesDep) -> dict[str, Any]:
    """Machine, engine, index, the match threshold in effect, streams, per-stage latency, event
    writer and MQTT status."""
    probes = _probes(services)
    watchlist = await _check(probes, "watchlist", services.watchlist.status, STATUS_TIMEOUT_S)
    storage = await asyncio.to_thread(_storage, services)
    events = await _part_status(services.events)
    problems = _problems(storage, events)
    return {
        "status": "degraded" if problems else "ok",
        "problems": problems,
        "version": facewatch.__version__,
        "uptime_s": round(time.time() - services.started_at, 1),
        "system": await asyncio.to_thread(_system, services),
        "gpu": _gpu(services),
        "engine": services.engine.describe(),
        # Kept by the watchlist in memory: shown even when the store does not answer.
        "matching": services.watchlist.match_threshold().as_dict(),
        "watchlist": watchlist,
        "storage": storage,
        "streams": [describe(stream) for stream in services.pipeline.streams.list()],
        "pipeline": {
            "stages": stage_latencies(services.pipeline.metrics.registry),
            "alert_latency": services.pipeline.metrics.alert_latency_percentiles(),
        },
        "events": events,
        "mqtt": await _part_status(services.mqtt),
        "http": _http_summary(request.app),
    }


@router.get(
    "/metrics",
    dependencies=VIEWER,
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
async def metrics(request: Request, services: ServicesDep) -> Response:
    """Prometheus text: pipeline, process and HTTP metrics."""
    own = app_metrics(request.app)
    body = generate_latest(services.pipeline.metrics.registry) + generate_latest(own.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


# --- the detailed report ------------------------------------------------------------------------


def _system(services: Services) -> dict[str, Any]:
    process = psutil.Process()
    memory = psutil.virtual_memory()
    data_dir = services.settings.data_dir.expanduser()
    disk = shutil.disk_usage(data_dir if data_dir.exists() else data_dir.anchor or "/")
    with process.oneshot():
        rss = process.memory_info().rss
        threads = process.num_threads()
        process_cpu = process.cpu_percent(interval=None)
    return {
        "cpu": {
            "count": psutil.cpu_count(),
            "percent": psutil.cpu_percent(interval=None),
            "load_average": [round(v, 2) for v in os.getloadavg()],
        },
        "memory": {
            "total_bytes": memory.total,
            "available_bytes": memory.available,
            "percent": memory.percent,
        },
        "process": {"rss_bytes": rss, "threads": threads, "cpu_percent": process_cpu},
        "disk": {
            "path": str(data_dir),
            "total_bytes": disk.total,
            "free_bytes": disk.free,
            "percent": round(100 * disk.used / disk.total, 1) if disk.total else None,
        },
    }


def _storage(services: Services) -> dict[str, Any]:
    """Free space in the data directory and how its writes are going (no database reads)."""
    written = services.watchlist.storage_status()
    data_dir = services.settings.data_dir.expanduser()
    total: int | None = None
    free: int | None = None
    # Not made yet (nothing written so far): the folder it will be made in tells the space.
    existing = next((folder for folder in (data_dir, *data_dir.parents) if folder.exists()), None)
    try:
        disk = shutil.disk_usage(existing or data_dir)
        total, free = disk.total, disk.free
    except OSError:  # reported as a problem: nobody can tell whether writes will fit
        pass
    snapshot = written["index_snapshot"]
    needed = snapshot["bytes"] if snapshot and snapshot["bytes"] else 0
    threshold = max(min(LOW_DISK_BYTES, int(LOW_DISK_SHARE * (total or 0))), needed)
    counts = getattr(services.pipeline, "counts", None)
    return {
        "path": str(data_dir),
        "total_bytes": total,
        "free_bytes": free,
        "low_below_bytes": threshold,
        "low": free is not None and free < threshold,
        "index_snapshot": snapshot,
        "photos": written["photos"],
        "alert_snapshots": {"errors": int(getattr(counts, "snapshot_errors", 0))},
    }


def _problems(storage: dict[str, Any], events: Any) -> list[str]:
    """What keeps data from being written, one line each (empty when all is well)."""
    problems = []
    if storage["free_bytes"] is None:
        problems.append(f"disk: cannot read the free space of {storage['path']}")
    elif storage["low"]:
        problems.append(
            f"disk: {storage['free_bytes']} bytes free in {storage['path']}, below "
            f"{storage['low_below_bytes']}"
        )
    snapshot = storage["index_snapshot"]
    if snapshot is not None and not snapshot["ok"]:
        problems.append(
            f"index snapshot: not saved since {_when(snapshot['failing_since'])} "
            f"({snapshot['last_error']}); the previous one (version {snapshot['version']}) stays"
        )
    photos = storage["photos"]
    if not photos["ok"]:
        problems.append(
            f"enrollment photos: the last could not be kept at {_when(photos['last_failure_at'])} "
            f"({photos['last_error']})"
        )
    if isinstance(events, dict) and events.get("store_ok") is False:
        problems.append(
            f"events: not written since {_when(events.get('failing_since'))} "
            f"({events.get('last_error')}); {events.get('pending')} waiting"
        )
    return problems


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "?"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def _gpu(services: Services) -> dict[str, Any]:
    """Where inference runs, as ONNX Runtime says (no nvidia-smi), and FAISS's GPUs."""
    import onnxruntime as ort

    providers = services.engine.providers
    on_gpu = {name: any(p in GPU_PROVIDERS for p in used) for name, used in providers.items()}
    try:
        import faiss

        faiss_gpus = int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0
    except ImportError:
        faiss_gpus = 0
    return {
        "providers_in_use": providers,
        "on_gpu": on_gpu,
        "available_providers": ort.get_available_providers(),
        "faiss_gpus": faiss_gpus,
    }


async def _part_status(part: object) -> Any:
    """``part.status()`` when the part offers one (sync or async), bounded; else None."""
    status = getattr(part, "status", None)
    if part is None or not callable(status):
        return None
    try:
        async with asyncio.timeout(STATUS_TIMEOUT_S):
            value = status()
            return await value if isawaitable(value) else value
    except TimeoutError:
        return {"error": f"no status within {STATUS_TIMEOUT_S:g} s"}
    except Exception as exc:  # a broken part shows as such in the report
        return {"error": f"{type(exc).__name__}: {exc}"}


def stage_latencies(registry: CollectorRegistry) -> dict[str, dict[str, Any]]:
    """Per pipeline stage: count, mean and estimated p50/p95 in ms (``facewatch_stage_seconds``).

    Percentiles are interpolated within histogram buckets, as Prometheus' histogram_quantile.
    """
    buckets: dict[str, list[tuple[float, float]]] = {stage: [] for stage in STAGES}
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for family in registry.collect():
        if family.name != "facewatch_stage_seconds":
            continue
        for sample in family.samples:
            stage = sample.labels.get("stage", "")
            if sample.name.endswith("_bucket"):
                buckets.setdefault(stage, []).append((float(sample.labels["le"]), sample.value))
            elif sample.name.endswith("_sum"):
                sums[stage] = sample.value
            elif sample.name.endswith("_count"):
                counts[stage] = sample.value
    out = {}
    for stage, cumulative in buckets.items():
        count = counts.get(stage, 0.0)
        out[stage] = {
            "count": int(count),
            "mean_ms": round(1000 * sums.get(stage, 0.0) / count, 2) if count else None,
            "p50_ms": _quantile(0.50, sorted(cumulative), count),
            "p95_ms": _quantile(0.95, sorted(cumulative), count),
        }
    return out


def _quantile(q: float, cumulative: list[tuple[float, float]], count: float) -> float | None:
    if not count or not cumulative:
        return None
    rank = q * count
    lower_bound, lower_count = 0.0, 0.0
    for bound, seen in cumulative:
        if seen >= rank:
            if bound == float("inf"):
                return round(1000 * lower_bound, 2)  # beyond the last finite bucket
            share = (rank - lower_count) / (seen - lower_count) if seen > lower_count else 1.0
            return round(1000 * (lower_bound + share * (bound - lower_bound)), 2)
        lower_bound, lower_count = bound, seen
    return None


# --- HTTP metrics -------------------------------------------------------------------------------


@dataclass
class HttpMetrics:
    """The app's own registry: process metrics and HTTP requests by route template."""

    registry: CollectorRegistry = field(
        default_factory=lambda: CollectorRegistry(auto_describe=True)
    )

    def __post_init__(self) -> None:
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.requests = Counter(
            "facewatch_http_requests_total",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "facewatch_http_request_duration_seconds",
            "Seconds from a request's arrival to the end of its response, by route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_progress = Gauge(
            "facewatch_http_requests_in_progress", "HTTP requests being answered.", registry=r
        )


def app_metrics(app: FastAPI) -> HttpMetrics:
    """The app's :class:`HttpMetrics` (made on first use when the middleware is not there)."""
    found = getattr(app.state, "http_metrics", None)
    if found is None:
        found = app.state.http_metrics = HttpMetrics()
    assert isinstance(found, HttpMetrics)
    return found


def install_http_metrics(app: FastAPI) -> HttpMetrics:
    """Count every HTTP request by method, route template and status, and time it.

    Call once, before the app starts; the figures appear at ``/metrics``.
    """
    found = app_metrics(app)
    app.add_middleware(HttpMetricsMiddleware, metrics=found)
    return found


class HttpMetricsMiddleware:
    """Pure ASGI middleware feeding :class:`HttpMetrics` (WebSockets pass untouched).

    Routes are labelled by their template (``/api/people/{person_id}``), never by the path
    itself, so label values stay few; requests no route matched share ``<unmatched>``.
    """

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception that escapes is answered 500 further out

        async def observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, observe)
        finally:
            self.metrics.in_progress.dec()
            method = scope.get("method", "GET")
            method = method if method in _METHODS else "OTHER"
            route = getattr(scope.get("route"), "path", None) or "<unmatched>"
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)


def _http_summary(app: FastAPI) -> dict[str, Any]:
    found: HttpMetrics | None = getattr(app.state, "http_metrics", None)
    if found is None:
        return {"installed": False}
    by_status: dict[str, float] = {}
    for family in found.registry.collect():
        if family.name == "facewatch_http_requests":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    key = sample.labels["status"]
                    by_status[key] = by_status.get(key, 0) + sample.value
    return {"installed": True, "requests_by_status": {k: int(v) for k, v in by_status.items()}}
