"""Right name or no name on video: the hard properties, on short labelled clips.

The real pipeline reads each clip as ``facewatch watch`` reads a file (every frame processed);
what it shows is judged by ``benchmarks/recognition_video.py``'s own code against the clip's ground
truth (``benchmarks/labelled_video.py``):

* the Hamilton clip, with its performers, Obama (in the audience after the cut from Lin's
  close-up) and ten distractors enrolled, names exactly Lin, Alex and Obama;
* a clip of hard cuts, where after every cut another person's face (enrolled people and
  strangers in turn) appears where the previous one was, names every enrolled person, and no
  track changes person: no track's alerts name two people, no track's boxes cover two people,
  and no alert names a face that is someone else.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from hamilton import enrolled as enrolled  # a fixture

from facewatch.config import EngineSettings, Settings, load_settings
from facewatch.recognizer.engine import FaceEngine
from facewatch.watchlist.service import Watchlist

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

import labelled_video  # noqa: E402
import recognition_video  # noqa: E402
from labelled_video import LabelledVideo  # noqa: E402
from recognition_video import Run  # noqa: E402

HAMILTON_NAMED = {"lin_manuel_miranda", "alex_lacamoire", "barack_obama"}


def pipeline_settings(data_dir: Path, engine_settings: EngineSettings) -> Settings:
    """Default pipeline settings, but snapshots off and a drain that is never cut short."""
    return load_settings(
        data_dir=data_dir,
        engine=engine_settings.model_dump(),
        watchlist={"snapshot_interval_s": 0},
        pipeline=recognition_video.PIPELINE_OVERRIDES,
    )


@pytest.fixture(scope="module")
def watch_settings(
    tmp_path_factory: pytest.TempPathFactory, engine_settings: EngineSettings
) -> Settings:
    """The data folder the Hamilton watchlist is enrolled into (hamilton.py's ``enrolled``)."""
    return pipeline_settings(tmp_path_factory.mktemp("hamilton-data"), engine_settings)


@pytest.fixture(scope="module")
def hamilton_run(
    watch_settings: Settings,
    engine: FaceEngine,
    enrolled: dict[int, str],
    faces_dir: Path,
) -> tuple[LabelledVideo, Run]:
    video = labelled_video.hamilton_video(faces_dir)
    with Watchlist.open(watch_settings, engine) as watchlist:
        assert HAMILTON_NAMED <= set(enrolled.values())
        run = recognition_video.pipeline_run(watch_settings, engine, watchlist, video, False)
    return video, run


@pytest.fixture(scope="module")
def cuts_run(
    tmp_path_factory: pytest.TempPathFactory,
    engine_settings: EngineSettings,
    engine: FaceEngine,
    faces_dir: Path,
    faces_scale_dir: Path,
) -> tuple[LabelledVideo, Run, dict[str, Any]]:
    """The short cut clip: 6 shots of 1.5 s, enrolled people and strangers in turn."""
    video = labelled_video.build(
        recognition_video.QUICK_SPECS["cuts"], faces_dir, faces_scale_dir, engine
    )
    settings = pipeline_settings(tmp_path_factory.mktemp("cuts-data"), engine_settings)
    with Watchlist.open(settings, engine) as watchlist:
        enrollment = recognition_video.enroll(watchlist, video.enroll)
        assert set(video.shown) <= set(enrollment["persons"]), enrollment
        run = recognition_video.pipeline_run(settings, engine, watchlist, video, False)
    return video, run, enrollment


def persons_per_track(run: Run) -> dict[int, set[str]]:
    assert run.alerts is not None
    persons: defaultdict[int, set[str]] = defaultdict(set)
    for alert in run.alerts:
        persons[alert.track].add(alert.person)
    return persons


@pytest.mark.slow
def test_hamilton_names_lin_alex_and_obama_and_nobody_else(
    hamilton_run: tuple[LabelledVideo, Run],
) -> None:
    video, run = hamilton_run
    assert len(run.shown) == video.frames  # every frame processed
    assert run.alerts is not None
    assert {alert.person for alert in run.alerts} == HAMILTON_NAMED


@pytest.mark.slow
def test_cut_clip_names_every_enrolled_person(
    cuts_run: tuple[LabelledVideo, Run, dict[str, Any]],
) -> None:
    video, run, _ = cuts_run
    shots = recognition_video.QUICK_SPECS["cuts"].shots
    assert len(video.shown) == (shots + 1) // 2 and len(video.strangers) == shots // 2
    assert len(video.cuts) == shots - 1
    assert run.alerts is not None
    assert {alert.person for alert in run.alerts} >= set(video.shown)


@pytest.mark.slow
def test_no_track_of_the_cut_clip_changes_person(
    cuts_run: tuple[LabelledVideo, Run, dict[str, Any]],
) -> None:
    video, run, enrollment = cuts_run
    two_names = {t: p for t, p in persons_per_track(run).items() if len(p) > 1}
    assert not two_names, f"tracks whose alerts name two persons: {two_names}"
    figures = recognition_video.evaluate(video, run, set(enrollment["persons"]))
    assert figures["tracks_changed_person_by_truth"] == 0, figures["changed_tracks"]
    assert figures["wrong_alerts"] == 0, figures["wrong_alert_examples"]
