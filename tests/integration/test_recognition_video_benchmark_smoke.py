"""The recognition-on-video benchmark runs end to end and prints well-formed figures.

Only the short cut clip (``--quick --videos cuts``): the figures' shape and consistency are
checked here, never their values (those are the benchmark's goals, and the lead's work).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "recognition_video.py"
WAYS = ("pipeline", "per_frame_identify")
GOALS = {
    "no_track_changed_person",
    "no_wrong_alert",
    "every_enrolled_person_named",
    "named_within_1s",
    "no_stranger_named",
}


@pytest.fixture(scope="module")
def quick_run(
    faces_dir: Path,
    faces_scale_dir: Path,
    model_cache: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Any:
    scale = faces_scale_dir
    out = tmp_path_factory.mktemp("recognition-video") / "figures.json"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FACE_AI_")},
        "FACEWATCH_TEST_FACES": str(faces_dir),
        "FACEWATCH_TEST_FACES_SCALE": str(scale),
        "FACE_AI_ENGINE__CACHE_DIR": str(model_cache),
    }
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--videos", "cuts", "--json-out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout)  # stdout holds the JSON object and nothing else
    assert json.loads(out.read_text()) == figures
    return figures


@pytest.mark.slow
def test_quick_run_reports_both_ways_on_the_same_frames(quick_run: Any) -> None:
    assert quick_run["mode"] == "quick"
    assert set(quick_run["videos"]) == {"cuts"}
    cuts = quick_run["videos"]["cuts"]
    assert cuts["frames"] == round(cuts["video_s"] * cuts["fps"])
    assert len(cuts["cuts_at_frames"]) == cuts["spec"]["shots"] - 1
    assert set(cuts["shown_enrolled"]) <= set(cuts["watchlist"]["persons"])
    for way in WAYS:
        figures = cuts[way]
        assert figures["frames_processed"] == cuts["frames"]
        assert figures["enrolled_present"] == len(cuts["shown_enrolled"])
        assert 0 <= figures["enrolled_named"] <= figures["enrolled_present"]
        assert figures["strangers_present"] == len(cuts["strangers"])
        assert figures["embeddings"] > 0
        assert set(figures["time_to_name_s"]) <= set(cuts["shown_enrolled"])
    # The reference embeds every face of every frame; the pipeline only what its tracks need.
    assert cuts["pipeline"]["embeddings"] < cuts["per_frame_identify"]["embeddings"]
    # Tracks and alerts are the pipeline's alone.
    assert cuts["pipeline"]["tracks"] >= 1
    assert cuts["per_frame_identify"]["tracks"] is None
    assert cuts["per_frame_identify"]["wrong_alerts"] is None


@pytest.mark.slow
def test_totals_sum_the_videos_and_goals_are_reported(quick_run: Any) -> None:
    cuts = quick_run["videos"]["cuts"]
    for way in WAYS:
        total = quick_run["total"][way]
        assert total["frames_processed"] == cuts[way]["frames_processed"]
        assert total["wrong_name_frames"] == cuts[way]["wrong_name_frames"]
        assert total["video_s"] == cuts["video_s"]
    assert set(quick_run["goals"]) == GOALS
    assert all(isinstance(met, bool) for met in quick_run["goals"].values())
