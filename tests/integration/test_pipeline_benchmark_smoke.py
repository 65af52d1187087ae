"""The pipeline benchmark runs end to end and prints well-formed figures (never judged by speed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "pipeline.py"
QUICK_STREAMS = ("1", "2")
GOALS = {"unpaced_speedup_ge_3x", "paced_alert_p95_lt_250ms", "overhead_lt_0_15"}
PERFORMERS = {"lin_manuel_miranda", "alex_lacamoire"}


@pytest.fixture(scope="module")
def quick_run(faces_dir: Path, model_cache: Path) -> dict[str, Any]:
    env = {
        **os.environ,
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
    """Percentiles in order when there were alerts, all None when there were none."""
    assert latency["samples"] >= 0
    values = [latency[k] for k in ("p50_ms", "p95_ms", "p99_ms")]
    if latency["samples"]:
        assert 0 < values[0] <= values[1] <= values[2], latency
    else:
        assert values == [None, None, None], latency


@pytest.mark.slow
def test_quick_run_describes_itself(quick_run: dict[str, Any]) -> None:
    assert quick_run["mode"] == "quick"
    assert set(quick_run["machine"]) >= {"cpu_count", "cpu_model", "onnxruntime", "load_average"}
    assert quick_run["streams"] == [1, 2]
    assert quick_run["pairs"] == 1
    clip = quick_run["clip"]
    assert clip["frames"] > 0 and clip["fps"] > 0
    assert PERFORMERS <= set(quick_run["watchlist"]["persons"])
    assert quick_run["pipeline_settings"]["paced"]["cooldown_s"] == 0


@pytest.mark.slow
def test_unpaced_runs_compare_the_same_frames(quick_run: dict[str, Any]) -> None:
    frames = quick_run["clip"]["frames"]
    assert set(quick_run["unpaced"]) == set(QUICK_STREAMS)
    for streams, run in quick_run["unpaced"].items():
        naive, pipeline = run["naive"], run["pipeline"]
        # A file read without pacing is processed whole, by both ways.
        assert naive["frames"] == pipeline["frames"] == int(streams) * frames
        assert pipeline["frames_processed_runs"] == [pipeline["frames"]] * quick_run["pairs"]
        assert pipeline["dropped_runs"] == [0] * quick_run["pairs"]
        assert run["same_frames"] is True
        for figures in (naive, pipeline):
            assert figures["frames_per_s"] > 0
            assert figures["wall_s"] > 0 and figures["cpu_s"] > 0
            assert figures["faces"] > 0
            assert figures["embeddings_per_video_s"] > 0
            assert figures["overhead_share"] < 1
        for figures in (naive, pipeline):
            assert figures["engine_stage_s"]["detect.infer"] > 0
        # The naive loop embeds every face; the pipeline, with tracking, far fewer.
        assert naive["embeddings"] == naive["faces"]
        assert 0 < pipeline["embeddings"] < naive["embeddings"]
        assert run["speedup_frames_per_s"] > 0
        assert run["speedup_cpu_s"] > 0
        assert PERFORMERS <= set(pipeline["persons_matched"])
        check_latency(pipeline["alert_latency_ms"])
        assert all(n >= 0 for n in pipeline["dropped"].values())


@pytest.mark.slow
def test_paced_runs_report_rates_drops_and_latency(quick_run: dict[str, Any]) -> None:
    assert set(quick_run["paced"]) == set(QUICK_STREAMS)
    for streams, run in quick_run["paced"].items():
        assert run["window_s"] > 0
        assert run["start_offset_s"] >= 0
        assert run["processed_frames_per_s"] > 0
        assert run["input_frames_per_s"] > 0
        assert run["offered_frames_per_s"] == pytest.approx(
            int(streams) * quick_run["clip"]["fps"], rel=1e-3
        )
        assert 0 < run["processed_share"] <= 1
        assert run["frames_processed"] <= run["frames_decoded"]
        assert all(n >= 0 for n in run["dropped"].values())
        assert run["embeddings_per_video_s"] >= 0
        assert run["embed_queue_depth"]["max"] >= run["embed_queue_depth"]["mean"] >= 0
        check_latency(run["alert_latency_ms"])


@pytest.mark.slow
def test_goals_are_reported_not_asserted(quick_run: dict[str, Any]) -> None:
    assert quick_run["goals_judged_at_streams"] == 2
    assert set(quick_run["goals"]) == GOALS
    assert all(isinstance(met, bool) for met in quick_run["goals"].values())
    figures = quick_run["goal_figures"]
    assert figures["streams"] == 2
    assert figures["unpaced_speedup_frames_per_s"] > 0
    assert figures["unpaced_overhead_share"] < 1
    assert set(figures["paced_alert_latency_p95_ms_by_streams"]) == set(QUICK_STREAMS)
