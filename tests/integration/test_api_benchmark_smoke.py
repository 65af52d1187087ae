"""The API benchmark runs end to end and prints well-formed figures (never judged by speed)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "api.py"
QUICK_CLIENTS = ("2", "4")
ENDPOINTS = {"verify", "query"}
GOALS = {"zero_errors_at_200_clients", "overhead_lt_0_20_at_100_clients"}


@pytest.fixture(scope="module")
def quick_run(faces_dir: Path, model_cache: Path) -> dict[str, Any]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FACE_AI_")},
        "FACEWATCH_TEST_FACES": str(faces_dir),
        "FACE_AI_ENGINE__CACHE_DIR": str(model_cache),
    }
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"],
        capture_output=True,
        text=True,
        env=env,
        timeout=480,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)  # type: ignore[no-any-return]  # stdout: the JSON alone


def check_latency(latency: dict[str, Any]) -> None:
    values = [latency[k] for k in ("p50_ms", "p95_ms", "p99_ms")]
    assert 0 < values[0] <= values[1] <= values[2], latency


@pytest.mark.slow
def test_quick_run_describes_itself(quick_run: dict[str, Any]) -> None:
    assert quick_run["mode"] == "quick"
    assert quick_run["clients"] == [2, 4]
    assert quick_run["pairs"] == 1
    assert quick_run["requests"] >= max(quick_run["clients"])
    assert len(quick_run["identities"]) >= 2
    assert set(quick_run["request_kinds"]) == ENDPOINTS
    assert all(count >= 2 for count in quick_run["request_kinds"].values())
    machine = quick_run["machine"]
    assert set(machine) >= {"cpu_count", "cpu_model", "onnxruntime", "load_average", "providers"}


@pytest.mark.slow
def test_every_endpoint_and_client_count_has_sane_figures(quick_run: dict[str, Any]) -> None:
    assert set(quick_run["endpoints"]) == ENDPOINTS
    for endpoint, by_clients in quick_run["endpoints"].items():
        assert set(by_clients) == set(QUICK_CLIENTS), endpoint
        for figures in by_clients.values():
            server, baseline = figures["server"], figures["baseline"]
            assert server["requests"] == quick_run["requests"]
            assert server["requests_per_s"] > 0
            assert len(server["requests_per_s_runs"]) == quick_run["pairs"]
            check_latency(server["latency_ms_of_median_run"])
            # Every request of a quick run is a good one: none may fail.
            assert server["errors"] == 0 and server["errors_by_status"] == {}
            assert server["cpu_ms_per_request"] > 0
            assert baseline["requests"] == quick_run["baseline_requests"]
            assert baseline["engine_ms_per_request"] > 0 and baseline["cpu_ms_per_request"] > 0
            check_latency(baseline["latency_ms"])
            # (server - engine) / engine: above -1 whatever the speeds, as the time is positive.
            assert figures["overhead"] > -1 and figures["overhead_cpu"] > -1
            assert figures["overhead"] == pytest.approx(statistics.median(figures["overhead_runs"]))


@pytest.mark.slow
def test_goals_are_reported_not_asserted(quick_run: dict[str, Any]) -> None:
    assert set(quick_run["goals"]) == GOALS
    assert all(isinstance(met, bool) for met in quick_run["goals"].values())
    assert quick_run["goals_judged_at"] == {"errors": 4, "overhead": 2, "fewest": 2}
    errors_at_most = [
        quick_run["endpoints"][e]["4"]["server"]["errors"] for e in quick_run["endpoints"]
    ]
    assert quick_run["goals"]["zero_errors_at_200_clients"] == (sum(errors_at_most) == 0)
