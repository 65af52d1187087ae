"""The watchlist benchmark runs end to end and prints well-formed figures (never timed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from facewatch.watchlist.index import IndexPolicy

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "watchlist.py"
QUICK_SIZES = ("2000", "20000")
GOALS = {"exact_batched_ge_5x_numpy_single", "approximate_p99_lt_5ms_recall_ge_0_99"}


@pytest.fixture(scope="module")
def quick_run() -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)  # type: ignore[no-any-return]  # stdout: the JSON alone


def ivf_names(run: dict[str, Any]) -> set[str]:
    return {f"ivf_nprobe_{p}" for p in run["nprobe_swept"]}


def sizes(run: dict[str, Any]) -> list[dict[str, Any]]:
    return list(run["sizes"].values())


@pytest.mark.slow
def test_quick_run_describes_itself(quick_run: dict[str, Any]) -> None:
    assert quick_run["mode"] == "quick"
    assert set(quick_run["machine"]) >= {"cpu_count", "cpu_model", "faiss", "faiss_threads"}
    assert set(quick_run["sizes"]) == set(QUICK_SIZES)
    assert quick_run["dim"] == 512
    assert quick_run["queries"] > 0
    assert quick_run["k"] >= 1
    assert IndexPolicy().nprobe in quick_run["nprobe_swept"]
    assert quick_run["policy_defaults"] == {
        "approximate_above": IndexPolicy().approximate_above,
        "approximate": IndexPolicy().approximate,
        "nprobe": IndexPolicy().nprobe,
        "refine_factor": IndexPolicy().refine_factor,
    }


@pytest.mark.slow
def test_every_method_has_well_formed_figures(quick_run: dict[str, Any]) -> None:
    for size in sizes(quick_run):
        methods = size["methods"]
        assert set(methods) == {"exact", "pq", "numpy"} | ivf_names(quick_run)
        for name, figures in methods.items():
            single = figures["single"]
            assert 0 < single["p50_ms"] <= single["p99_ms"], name
            assert single["mean_ms"] > 0, name
            assert single["queries_per_s"] > 0, name
            assert figures["batched"]["queries_per_s"] > 0, name
            for share in ("recall_at_1", "recall_at_1_batched", "top1_is_enrolled_identity"):
                assert 0 <= figures[share] <= 1, (name, share)
            assert figures["memory_bytes"] > 0, name


@pytest.mark.slow
def test_indexes_are_of_the_kind_asked_for(quick_run: dict[str, Any]) -> None:
    for size in sizes(quick_run):
        methods = size["methods"]
        assert methods["exact"]["kind"] == "exact"
        assert methods["exact"]["nlist"] is None
        assert methods["numpy"]["kind"] == "numpy"
        for name in ivf_names(quick_run):
            figures = methods[name]
            assert figures["kind"] == "ivf"
            assert name == f"ivf_nprobe_{figures['nprobe']}"
            assert 1 <= figures["nlist"] <= size["n"]
        assert methods["pq"]["kind"] == "pq"
        assert methods["pq"]["refine_factor"] == IndexPolicy().refine_factor
        for name in {"exact", "pq"} | ivf_names(quick_run):
            assert methods[name]["build_s"] > 0
            assert isinstance(methods[name]["rss_growth_bytes"], int)


@pytest.mark.slow
def test_exact_search_is_the_ground_truth(quick_run: dict[str, Any]) -> None:
    for size in sizes(quick_run):
        exact = size["methods"]["exact"]
        assert exact["recall_at_1"] == 1.0  # against itself
        # A genuine probe (cosine >= 0.6) beats every random impostor (cosine ~0.2 at most).
        assert exact["top1_is_enrolled_identity"] == 1.0
        assert size["methods"]["numpy"]["recall_at_1"] == 1.0
        cosine = size["probe_cosine_to_own_identity"]
        assert 0.6 - 1e-3 <= cosine["min"] <= cosine["median"] <= cosine["max"] <= 0.7 + 1e-3


@pytest.mark.slow
def test_ratios_and_goals(quick_run: dict[str, Any]) -> None:
    for size in sizes(quick_run):
        ratios = size["ratios"]
        for name in (
            "exact_batched_vs_numpy_single",
            "exact_batched_vs_numpy_batched",
            "exact_single_vs_numpy_single",
            "exact_batched_vs_exact_single",
        ):
            assert ratios[name] > 0, name
        for name in ("approximate_vs_exact_single", "approximate_vs_exact_batched"):
            assert set(ratios[name]) == {"pq"} | ivf_names(quick_run)
            assert all(ratio > 0 for ratio in ratios[name].values())
    assert quick_run["goals_judged_at_n"] == max(int(n) for n in QUICK_SIZES)
    assert set(quick_run["goals"]) == GOALS
    assert all(isinstance(met, bool) for met in quick_run["goals"].values())
    figures = quick_run["goal_figures"]
    assert figures["exact_batched_vs_numpy_single"] > 0
    assert figures["exact_batched_vs_numpy_batched"] > 0
    assert figures["approximate_method"] == "pq"
    assert 0 < figures["approximate_single_p50_ms"] <= figures["approximate_single_p99_ms"]
    assert 0 <= figures["approximate_recall_at_1"] <= 1
    assert set(figures["approximate_methods_meeting_goal"]) <= {"pq"} | ivf_names(quick_run)
