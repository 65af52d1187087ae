"""The identification benchmark runs end to end on a few faces_scale people (facewatch side
only: the OpenCV reference needs its own venv) and prints well-formed figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "identification.py"


@pytest.mark.slow
def test_quick_run_reports_every_figure(faces_scale_dir: Path, model_cache: Path) -> None:
    env = {**os.environ, "FACE_AI_ENGINE__CACHE_DIR": str(model_cache)}
    quick = ["--limit", "4", "--strangers", "12", "--no-reference"]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--data", str(faces_scale_dir), *quick],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert (result["people"], result["strangers"]) == (4, 12)
    assert result["mated_probes"] >= 4
    figures = result["facewatch"]
    for key in ("rank1", "rank1_at_threshold", "dir_at_fpir_1pct", "strangers_named_at_threshold"):
        assert 0.0 <= figures[key] <= 1.0, key
    assert figures["enrolled"] + figures["enrollment_refused"] == 4
    assert figures["embeddings_per_s"] > 0
    assert set(result["facewatch_quality_weighted"]) == {
        "weight_1.0",
        "weight_0.95",
        "weight_0.9",
        "weight_0.8",
    }
