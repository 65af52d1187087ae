"""``facewatch calibrate DIR`` on real photos: saved when the set is large enough, refused with a
reason (and the pack's default kept) when it is not, unreadable photos skipped and counted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_cli import lines

from facewatch.recognizer.calibration import MIN_PEOPLE

#: People of faces_scale in the calibration folder: ~2.3 photos each, about 4,000 comparisons,
#: enough for an FPIR of 5 % at 10 templates, not for 1 %.
PEOPLE = 42


def facewatch(*args: str | Path, cache: Path, data_dir: Path) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FACE_AI_")}
    environment |= {
        "FACE_AI_CACHE_DIR": str(cache),
        "FACE_AI_PROVIDERS": "cpu",
        "FACE_AI_LOG_LEVEL": "WARNING",
        "FACE_AI_DATA_DIR": str(data_dir),
    }
    return subprocess.run(
        [sys.executable, "-m", "facewatch", *map(str, args)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=600,  # embeds about a hundred photos on a busy CPU
        check=False,
    )


def people_folder(tmp_path: Path, faces_scale_dir: Path, count: int) -> Path:
    """``count`` person folders of faces_scale, linked (never copied) under tmp_path."""
    root = tmp_path / "people"
    root.mkdir()
    for folder in sorted((faces_scale_dir / "identities").iterdir())[:count]:
        (root / folder.name).symlink_to(folder, target_is_directory=True)
    return root


def test_too_few_people_keep_the_packs_default(
    tmp_path: Path, faces_scale_dir: Path, model_cache: Path
) -> None:
    data_dir = tmp_path / "data"
    folder = people_folder(tmp_path, faces_scale_dir, 3)
    result = facewatch("calibrate", folder, cache=model_cache, data_dir=data_dir)
    assert result.returncode == 1
    assert f"at least {MIN_PEOPLE}" in result.stderr and "stays in effect" in result.stderr
    assert not (data_dir / "calibration").exists()

    missing = facewatch("calibrate", tmp_path / "nowhere", cache=model_cache, data_dir=data_dir)
    assert missing.returncode == 1 and "is not a folder" in missing.stderr

    wrong = facewatch(
        "calibrate", folder, "--target-fpir", "1.5", cache=model_cache, data_dir=data_dir
    )
    assert wrong.returncode == 1 and "between 0 and 1" in wrong.stderr


@pytest.mark.slow
def test_calibrate_saves_what_the_status_then_uses(
    tmp_path: Path, faces_scale_dir: Path, faces_dir: Path, model_cache: Path
) -> None:
    data_dir = tmp_path / "data"
    folder = people_folder(tmp_path, faces_scale_dir, PEOPLE)
    broken = folder / "zz_broken_photos"
    broken.mkdir()
    (broken / "1.jpg").write_bytes(b"not a photo")
    (broken / "2.jpg").symlink_to(faces_dir / "identities" / "kit_harington" / "1.jpeg")

    # The default target (1 %) needs rarer rates than ~4,000 comparisons can tell: refused.
    refused = facewatch("calibrate", folder, cache=model_cache, data_dir=data_dir)
    assert refused.returncode == 1, refused.stderr
    [record] = lines(refused.stdout)
    assert record["saved"] is None and "not enough for an FPIR of 0.01" in record["error"]
    assert "stays in effect" in refused.stderr
    assert not (data_dir / "calibration").exists()

    saved = facewatch(
        "calibrate", folder, "--target-fpir", "0.05", cache=model_cache, data_dir=data_dir
    )
    assert saved.returncode == 0, saved.stderr
    [record] = lines(saved.stdout)
    assert record["people"] == PEOPLE + 1 and record["people_used"] == PEOPLE + 1
    assert record["skipped"] == {"unreadable": 1, "no_face": 0}
    assert "1.jpg" in saved.stderr  # the skipped photo is named
    photos = record["photos"] - 1
    assert record["photos_used"] == photos
    # Each photo against every person but its own: photos * (people - 1) comparisons.
    assert record["comparisons"] == photos * PEOPLE
    thresholds = {row["persons"]: row for row in record["thresholds"]}
    assert not thresholds[10]["clamped"] and thresholds[10]["expected_fpir"] <= 0.05
    assert np.all(np.diff([row["threshold"] for row in record["thresholds"]]) >= 0)
    assert (
        Path(record["saved"]).is_file()
        and Path(record["saved"]).parent == (data_dir / "calibration").resolve()
    )

    status = facewatch("status", cache=model_cache, data_dir=data_dir)
    assert status.returncode == 0, status.stderr
    matching = lines(status.stdout)[0]["matching"]
    # Nobody is enrolled: the pack's threshold, with the local calibration standing by.
    assert (matching["source"], matching["calibration"]) == ("pack", "local")
    assert matching["persons"] == 0 and matching["expected_fpir"] == 0.0
