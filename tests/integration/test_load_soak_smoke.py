"""The load benchmark and the soak script run end to end against a real server and print
well-formed, consistent figures (never judged by speed).

Both scripts run at once, in a short form: ``load.py --quick`` (5 and 10 clients, 2 streams of
the Hamilton clip, 2 alert subscribers, 3 s phases) and ``soak.py`` for 40 s with a sample every
5 s. A quiet run has no failed request, and no subscriber that keeps up misses an alert.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SOAK_S = 40
SOAK_INTERVAL_S = 5
SOAK_WARMUP_S = 10
SOAK_STREAMS = 4
QUICK_CLIENTS = ["5", "10"]
KINDS = {"people", "streams", "events", "health", "detect", "query"}
JUDGED = {"rss_bytes", "open_fds", "threads", "embed_queue_depth", "events_pending"}
SAMPLE_KEYS = {
    "t_s",
    "rss_bytes",
    "open_fds",
    "threads",
    "embed_queue_depth",
    "events_pending",
    "processed_fps",
    "processed_fps_total",
    "alerts_total",
    "event_rows",
    "persons",
    "faces",
    "index_size",
    "api_errors",
    "load_average",
}
RUN_TIMEOUT_S = 420


@pytest.fixture(scope="module")
def runs(
    faces_dir: Path, model_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Both scripts' JSON, and the soak's samples; they run side by side to save time."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FACE_AI_")},
        "FACEWATCH_TEST_FACES": str(faces_dir),
        "FACE_AI_ENGINE__CACHE_DIR": str(model_cache),
    }
    samples = tmp_path_factory.mktemp("soak") / "samples.jsonl"
    soak_args = [
        "--duration",
        str(SOAK_S),
        "--interval",
        str(SOAK_INTERVAL_S),
        "--warmup",
        str(SOAK_WARMUP_S),
        "--enroll-every",
        "10",
        "--samples",
        str(samples),
    ]
    commands = {
        "load": [sys.executable, str(BENCHMARKS / "load.py"), "--quick"],
        "soak": [sys.executable, str(BENCHMARKS / "soak.py"), *soak_args],
    }
    started = {
        name: subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for name, command in commands.items()
    }
    out: dict[str, Any] = {}
    for name, process in started.items():
        try:
            stdout, stderr = process.communicate(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            for other in started.values():
                other.kill()
            raise
        assert process.returncode == 0, f"{name}: {stderr[-3000:]}"
        out[name] = json.loads(stdout)
    out["samples"] = [json.loads(line) for line in samples.read_text().splitlines()]
    return out


def check_latency(latency: dict[str, Any]) -> None:
    values = [latency[k] for k in ("p50_ms", "p95_ms", "p99_ms")]
    assert 0 < values[0] <= values[1] <= values[2], latency


def check_api(figures: dict[str, Any], pairs: int) -> None:
    assert figures["requests_per_s"] > 0
    assert len(figures["requests_per_s_runs"]) == pairs
    check_latency(figures["latency_ms"])
    assert set(figures["latency_ms_by_kind"]) <= KINDS
    by_kind = sum(k["requests"] for k in figures["latency_ms_by_kind"].values())
    assert by_kind == sum(figures["requests_runs"])  # no errors: every request is timed
    # A quiet run: no request fails.
    assert figures["errors"] == 0 and figures["errors_by_status"] == {}
    assert figures["server_cpu_s_per_run"] > 0


@pytest.mark.slow
def test_load_quick_run_describes_itself(runs: dict[str, Any]) -> None:
    load = runs["load"]
    assert load["mode"] == "quick"
    assert load["clients"] == [int(c) for c in QUICK_CLIENTS]
    assert load["streams"] == 2 and load["subscribers"] == 2 and load["pairs"] == 1
    assert set(load["mix"]) == KINDS
    assert sum(load["mix_cycle"].values()) == 100
    assert {"lin_manuel_miranda", "alex_lacamoire"} <= set(load["identities"])
    limits = load["machine"]["fd_limit"]
    assert all(len(limits[side]) == 2 and limits[side][0] > 0 for side in ("clients", "server"))
    assert set(load["goals"]) == {
        "no_alert_lost_for_subscribers_that_keep_up",
        "zero_errors_at_largest_client_count",
    }


@pytest.mark.slow
def test_load_figures_are_consistent_per_client_count(runs: dict[str, Any]) -> None:
    load = runs["load"]
    assert set(load["by_clients"]) == set(QUICK_CLIENTS)
    for figures in load["by_clients"].values():
        check_api(figures["loaded"], load["pairs"])
        check_api(figures["baseline"], load["pairs"])
        assert figures["loaded_vs_baseline"]["requests_per_s"] > 0
        pipeline = figures["loaded"]["pipeline"]
        assert len(pipeline["runs"]) == load["pairs"]
        for window in pipeline["runs"]:
            assert window["streams"] == load["streams"]
            assert window["window_s"] >= load["duration_s"]
            # The streams ran through the window: frames were decoded and processed.
            assert window["decoded_fps"] > 0 and window["processed_fps"] > 0
            spread = window["processed_fps_per_stream"]
            assert spread["min"] <= spread["median"] <= spread["max"]


@pytest.mark.slow
def test_load_subscribers_that_keep_up_miss_no_alert(runs: dict[str, Any]) -> None:
    load = runs["load"]
    for figures in load["by_clients"].values():
        alerts = figures["loaded"]["alerts"]
        for window in alerts["runs"]:
            assert window["subscribers"] == load["subscribers"]
            assert window["subscriber_errors"] == 0
            delivered = window["delivered_per_subscriber"]
            assert 0 <= delivered["min"] <= delivered["max"] <= window["produced"]
            kept_up = window["subscribers_kept_up"]
            assert kept_up + window["closed_too_slow_1013"] <= window["subscribers"]
            assert window["lost_for_subscribers_that_kept_up"] == 0
            assert window["subscribers_with_every_alert"] == kept_up
            assert window["duplicates_received"] == 0
        assert alerts["lost_for_subscribers_that_kept_up"] == 0
    assert load["goals"]["no_alert_lost_for_subscribers_that_keep_up"] is True


@pytest.mark.slow
def test_soak_samples_the_server_every_interval(runs: dict[str, Any]) -> None:
    soak, samples = runs["soak"], runs["samples"]
    assert soak["samples"] == len(samples) == SOAK_S // SOAK_INTERVAL_S
    times = [s["t_s"] for s in samples]
    assert times == sorted(times) and times[-1] <= SOAK_S + SOAK_INTERVAL_S
    for sample in samples:
        assert SAMPLE_KEYS <= set(sample)
        assert sample["rss_bytes"] > 0 and sample["open_fds"] > 0 and sample["threads"] > 0
        assert len(sample["processed_fps"]) == SOAK_STREAMS
        # Rows come from alerts: never more rows than alerts emitted.
        assert 0 <= sample["event_rows"] <= sample["alerts_total"]
        assert sample["index_size"] > 0 and sample["persons"] >= 4
    assert samples[-1]["api_errors"] == 0


@pytest.mark.slow
def test_soak_summary_judges_every_resource(runs: dict[str, Any]) -> None:
    soak = runs["soak"]
    assert soak["warmup_s"] == SOAK_WARMUP_S
    assert soak["streams"]["count"] == SOAK_STREAMS
    summary = soak["summary"]
    assert summary["samples_after_warmup"] == sum(
        1 for s in runs["samples"] if s["t_s"] >= SOAK_WARMUP_S
    )
    assert JUDGED <= set(summary["metrics"])
    for name, metric in summary["metrics"].items():
        assert metric["min"] <= metric["median"] <= metric["max"], name
        assert metric["min"] <= metric["first"] <= metric["max"], name
        assert metric["min"] <= metric["last"] <= metric["max"], name
        assert metric["tolerance_per_h"] > 0 and isinstance(metric["flat"], bool), name
    assert summary["all_flat"] == all(m["flat"] for m in summary["metrics"].values())
    assert soak["activity"]["enrolled"] >= 1
    assert soak["errors"]["requests"] == 0 and soak["errors"]["requests_by_status"] == {}
    assert soak["errors"]["ws_connects"] >= 1
