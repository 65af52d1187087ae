"""The engine benchmark runs end to end and prints well-formed figures (never judged by speed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "engine.py"
BATCH_SIZES = ("1", "4", "8", "16", "32")


@pytest.fixture(scope="module")
def quick_run(faces_dir: Path, model_cache: Path) -> dict:  # type: ignore[type-arg]
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
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)  # stdout holds the JSON object and nothing else


@pytest.mark.slow
def test_quick_run_reports_every_figure(quick_run: dict) -> None:  # type: ignore[type-arg]
    assert quick_run["frames"] > 0
    assert quick_run["faces_per_pass"] > 0
    assert set(quick_run["machine"]) >= {"cpu_count", "cpu_model", "onnxruntime", "providers"}
    assert set(quick_run["batched"]) == set(BATCH_SIZES)
    for figures in [*quick_run["batched"].values(), quick_run["naive"]]:
        assert figures["frames_per_s"] > 0
        assert figures["faces_per_s"] > 0
    for figures in quick_run["batched"].values():
        assert 0 <= figures["overhead_share"] < 1
    assert set(quick_run["speedup_faces_per_s"]) == set(BATCH_SIZES)
    assert all(ratio > 0 for ratio in quick_run["speedup_faces_per_s"].values())
    assert 0 <= quick_run["overhead_at_16"] < 1
    assert set(quick_run["goals"]) == {"batching_speedup_ge_1_5", "overhead_at_16_lt_0_10"}
    assert all(isinstance(met, bool) for met in quick_run["goals"].values())


@pytest.mark.slow
def test_both_ways_embed_the_same_faces(quick_run: dict) -> None:  # type: ignore[type-arg]
    # The script exits non-zero if the face counts differ; the embeddings must agree too.
    assert quick_run["min_embedding_cosine_naive_vs_batched"] > 0.999
