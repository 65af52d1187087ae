"""Health and metrics on a real server: liveness, readiness (and its 503 when the database goes
away), the detailed report and the Prometheus text."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_server import LiveServer, server_settings, serving
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

import facewatch
from facewatch.pipeline.metrics import STAGES
from facewatch.web.routes.health import (
    HttpMetricsMiddleware,
    install_http_metrics,
    stage_latencies,
)

CLIP = "videos/intel_asl_hungry.mkv"
POSTGRES_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
WAIT_S = 120.0


@pytest.fixture(scope="module")
def viewer(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client("viewer") as client:
        yield client


@pytest.fixture(scope="module")
def processed_clip(server: LiveServer, faces_dir: Path) -> Iterator[str]:
    """A clip read to its end by the shared server, so that every stage has timings."""
    stream_id = f"health-{uuid.uuid4().hex[:8]}"
    with server.client("operator") as operator:
        created = operator.post(
            "/api/streams", json={"url": str(faces_dir / CLIP), "id": stream_id}
        )
        assert created.status_code == 201, created.text
        deadline = time.monotonic() + WAIT_S
        while not done(operator.get(f"/api/streams/{stream_id}").json()):
            assert time.monotonic() < deadline, "the clip was not processed to its end"
            time.sleep(0.1)
        yield stream_id
        operator.delete(f"/api/streams/{stream_id}")


def done(stream: dict[str, Any]) -> bool:
    """Read to its end ("ended" means decoded) and every frame through the pipeline."""
    status = stream["status"]
    return stream["state"] == "ended" and status["frames_processed"] == status["frames_decoded"]


def test_liveness_is_public(server: LiveServer) -> None:
    response = httpx.get(f"{server.url}/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": facewatch.__version__}


def test_health_needs_credentials(server: LiveServer, viewer: httpx.Client) -> None:
    anonymous = httpx.get(f"{server.url}/health")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert viewer.get("/health").json() == {"status": "ok", "version": facewatch.__version__}


def test_readiness_is_public_and_checks_every_part(server: LiveServer) -> None:
    response = httpx.get(f"{server.url}/health/ready")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    checks = body["checks"]
    assert {name: check["ok"] for name, check in checks.items()} == {
        "models": True,
        "store": True,
        "index": True,
    }
    assert checks["models"]["pack"] == server.services.engine.pack.name
    assert checks["store"]["dialect"] == "sqlite"
    assert checks["index"]["size"] == len(server.services.watchlist.index)


def test_readiness_fails_with_the_store_and_recovers_with_it(
    tmp_path: Path, model_cache: Path
) -> None:
    name = f"facewatch_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {name}"))
    except OperationalError as exc:
        admin.dispose()
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_ADMIN}: {exc.orig}")
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    settings = server_settings(tmp_path / "data", model_cache, watchlist={"database_url": url})
    try:
        with serving(settings) as live:
            ready = f"{live.url}/health/ready"
            assert httpx.get(ready).status_code == 200
            with admin.connect() as connection:
                connection.execute(text(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
                connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        f"WHERE datname = '{name}'"
                    )
                )
            down = httpx.get(ready)
            assert down.status_code == 503, down.text
            error = down.json()["error"]
            assert error["code"] == "not_ready" and error["failing"] == ["store"]
            assert error["checks"]["store"]["ok"] is False
            assert error["checks"]["models"]["ok"] and error["checks"]["index"]["ok"]
            assert "store:" in error["message"]
            with admin.connect() as connection:
                connection.execute(text(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
            assert httpx.get(ready).status_code == 200
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def test_the_detailed_report_covers_machine_engine_index_and_streams(
    viewer: httpx.Client, server: LiveServer, processed_clip: str
) -> None:
    assert httpx.get(f"{server.url}/health/detailed").status_code == 401
    response = viewer.get("/health/detailed")
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    system = report["system"]
    assert system["memory"]["total_bytes"] > system["memory"]["available_bytes"] > 0
    assert system["process"]["rss_bytes"] > 0 and system["cpu"]["count"] >= 1
    assert system["disk"]["path"] == str(server.data_dir)
    assert system["disk"]["total_bytes"] >= system["disk"]["free_bytes"] > 0
    assert report["gpu"]["providers_in_use"]["detector"] == ["CPUExecutionProvider"]
    assert report["gpu"]["on_gpu"] == {"detector": False, "recognizer": False}
    assert report["engine"]["embedding_dim"] == server.services.engine.embedding_dim
    assert report["watchlist"]["ok"] is True
    assert report["matching"] == report["watchlist"]["matching"]
    assert report["matching"]["threshold"] == server.services.watchlist.threshold
    assert report["watchlist"]["index"]["backend"] == "faiss"
    streams = {s["id"]: s for s in report["streams"]}
    assert streams[processed_clip]["state"] == "ended"
    assert streams[processed_clip]["status"]["frames_processed"] > 0
    stages = report["pipeline"]["stages"]
    assert set(stages) == set(STAGES)
    for stage in ("queue", "track"):  # timed per frame: every processed frame has them
        figures = stages[stage]
        assert figures["count"] >= 49, (stage, figures)  # the clip's frames, and maybe others
        assert figures["mean_ms"] > 0 and 0 < figures["p50_ms"] <= figures["p95_ms"]
    assert report["uptime_s"] >= 0 and report["version"] == facewatch.__version__
    # The event writer reports itself; MQTT is off in the test server.
    assert isinstance(report["events"], dict) and "error" not in report["events"]
    assert report["mqtt"] is None


def families(body: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(body)}


def test_metrics_are_prometheus_text_with_the_pipeline_series(
    viewer: httpx.Client, server: LiveServer, processed_clip: str
) -> None:
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    response = viewer.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = families(response.text)
    for name in (
        "facewatch_stage_seconds",
        "facewatch_batch_size",
        "facewatch_frames_processed",
        "facewatch_frames_decoded",
        "facewatch_alerts",
        "process_resident_memory_bytes",
        "python_gc_objects_collected",
    ):
        assert name in found, name
    decoded = {s.labels["stream"]: s.value for s in found["facewatch_frames_decoded"].samples}
    assert decoded[processed_clip] == 49


def test_http_requests_are_counted_by_route_template_and_status(
    tmp_path: Path, model_cache: Path
) -> None:
    live = LiveServer(server_settings(tmp_path / "data", model_cache))
    if not any(m.cls is HttpMetricsMiddleware for m in live.app.user_middleware):
        install_http_metrics(live.app)  # until create_app installs it itself
    live.start()
    try:
        with live.client("viewer") as viewer:
            for person_id in (101, 102, 103):
                assert viewer.get(f"/api/people/{person_id}").status_code == 404
            viewer.get("/no/such/page")
            found = families(viewer.get("/metrics").text)
    finally:
        live.stop()
    requests = {
        (s.labels["method"], s.labels["route"], s.labels["status"]): s.value
        for s in found["facewatch_http_requests"].samples
        if s.name == "facewatch_http_requests_total"
    }
    assert requests[("GET", "/api/people/{person_id}", "404")] == 3
    assert requests[("GET", "<unmatched>", "404")] == 1
    assert not any("101" in route for _, route, _ in requests)
    latency = {
        s.labels["route"]: s.value
        for s in found["facewatch_http_request_duration_seconds"].samples
        if s.name == "facewatch_http_request_duration_seconds_count"
    }
    assert latency["/api/people/{person_id}"] == 3


def test_stage_latencies_interpolate_within_buckets() -> None:
    registry = CollectorRegistry()
    stages = Histogram(
        "facewatch_stage_seconds", "", ["stage"], buckets=(0.01, 0.1, 1.0), registry=registry
    )
    for seconds in (0.005, 0.05, 0.05, 0.5):
        stages.labels("detect").observe(seconds)
    summary = stage_latencies(registry)
    assert summary["detect"]["count"] == 4
    assert summary["detect"]["mean_ms"] == pytest.approx(151.25)
    # Rank 2 of 4 is the first of the two in (10 ms, 100 ms]: halfway through that bucket.
    assert summary["detect"]["p50_ms"] == pytest.approx(55.0)
    # Rank 3.8 of 4 is 80 % into the (100 ms, 1 s] bucket.
    assert summary["detect"]["p95_ms"] == pytest.approx(820.0)
    assert summary["embed"] == {"count": 0, "mean_ms": None, "p50_ms": None, "p95_ms": None}
