"""The watchlist commands' contract: enroll, import, people, identify, forget, reindex, status."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
from test_cli import facewatch, lines

OBAMA = "identities/barack_obama"
JOLIE = "identities/angelina_jolie"
BIDEN = "identities/joe_biden/1.jpg"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def run(*args: str | Path, cache: Path, data_dir: Path, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return facewatch(*args, "--data-dir", data_dir, cache=cache, env=env)


@pytest.mark.slow
def test_enroll_identify_people_forget(faces_dir: Path, model_cache: Path, data_dir: Path) -> None:
    enrolled = run(
        "enroll",
        "--name",
        "Barack Obama",
        "--age",
        "63",
        "--address",
        "1600 Pennsylvania Ave",
        faces_dir / OBAMA / "1.jpg",
        faces_dir / OBAMA / "2.jpg",
        cache=model_cache,
        data_dir=data_dir,
    )
    assert enrolled.returncode == 0, enrolled.stderr
    [record] = lines(enrolled.stdout)
    person = record["person"]
    assert (person["name"], person["age"], person["face_count"]) == ("Barack Obama", 63, 2)
    assert len(record["accepted"]) == 2 and record["rejected"] == []

    identified = run(
        "identify",
        faces_dir / OBAMA / "5.jpg",
        faces_dir / BIDEN,
        cache=model_cache,
        data_dir=data_dir,
    )
    assert identified.returncode == 0, identified.stderr
    faces = lines(identified.stdout)
    assert [f["image"] for f in faces] == [str(faces_dir / OBAMA / "5.jpg"), str(faces_dir / BIDEN)]
    assert set(faces[0]) >= {"image", "bbox", "person", "person_id", "similarity"}
    assert (faces[0]["person"], faces[0]["person_id"]) == ("Barack Obama", person["id"])
    assert faces[1]["person"] is None and faces[1]["person_id"] is None
    assert faces[0]["similarity"] > faces[1]["similarity"]

    people = run("people", "--search", "pennsylvania", cache=model_cache, data_dir=data_dir)
    assert [p["id"] for p in lines(people.stdout)] == [person["id"]]
    assert (
        lines(run("people", "--search", "nobody", cache=model_cache, data_dir=data_dir).stdout)
        == []
    )

    forgotten = run("forget", "Barack Obama", cache=model_cache, data_dir=data_dir)
    assert forgotten.returncode == 0, forgotten.stderr
    assert lines(forgotten.stdout)[0]["faces_removed"] == 2
    again = run("identify", faces_dir / OBAMA / "5.jpg", cache=model_cache, data_dir=data_dir)
    assert lines(again.stdout)[0]["person"] is None
    missing = run("forget", "Barack Obama", cache=model_cache, data_dir=data_dir)
    assert missing.returncode == 1 and "no person" in missing.stderr


def test_enroll_refusals_exit_1_with_reasons(
    faces_dir: Path, model_cache: Path, data_dir: Path, tmp_path: Path
) -> None:
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8 not really a jpeg")
    result = run(
        "enroll",
        "--name",
        "X",
        junk,
        faces_dir / "edge_cases/inspireface_view_no_face.jpg",
        tmp_path / "missing.jpg",
        cache=model_cache,
        data_dir=data_dir,
    )
    assert result.returncode == 1
    record = lines(result.stdout)[0]
    assert record["person"] is None
    assert sorted(r["reason"] for r in record["rejected"]) == [
        "no_face",
        "not_an_image",
        "not_an_image",
    ]
    assert "facewatch: error:" in result.stderr
    status = lines(run("status", cache=model_cache, data_dir=data_dir).stdout)[0]
    assert status["store"]["persons"] == 0


@pytest.mark.slow
def test_import_then_resume_and_reindex(
    faces_dir: Path, model_cache: Path, data_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "people"
    for name, source in (("Barack Obama", OBAMA), ("Angelina Jolie", JOLIE)):
        (folder / name).mkdir(parents=True)
        for photo in sorted((faces_dir / source).iterdir())[:2]:
            (folder / name / photo.name).symlink_to(photo)
    (folder / "Empty").mkdir()
    first = run("import", folder, "--largest", cache=model_cache, data_dir=data_dir)
    records = lines(first.stdout)
    summary = records[-1]["summary"]
    assert summary["persons"] == 3 and summary["enrolled"] == 2 and summary["failed"] == 1
    assert first.returncode == 1  # the empty folder enrolled nobody
    assert {r["person"] for r in records[:-1]} == {"Barack Obama", "Angelina Jolie", "Empty"}

    second = run("import", folder, "--largest", cache=model_cache, data_dir=data_dir)
    summary = lines(second.stdout)[-1]["summary"]
    assert (summary["resumed"], summary["photos_accepted"], summary["photos_skipped"]) == (2, 0, 4)

    reindexed = run("reindex", cache=model_cache, data_dir=data_dir)
    assert reindexed.returncode == 0, reindexed.stderr
    assert lines(reindexed.stdout) == [
        {"pack": lines(reindexed.stdout)[0]["pack"], "faces": 0, "embedded": 0, "lost": 0}
    ]
    status = lines(run("status", cache=model_cache, data_dir=data_dir).stdout)[0]
    assert status["store"]["persons"] == 2 and status["index"]["count"] == 4
    assert json.dumps(status).count("password") == 0


def test_reset_needs_yes(model_cache: Path, data_dir: Path) -> None:
    refused = run("reset", cache=model_cache, data_dir=data_dir)
    assert refused.returncode == 1 and "--yes" in refused.stderr
    done = run("reset", "--yes", cache=model_cache, data_dir=data_dir)
    assert done.returncode == 0 and lines(done.stdout) == [{"reset": True, "faces_removed": 0}]


def test_enroll_keeps_a_blurred_face_with_a_warning(
    faces_dir: Path, model_cache: Path, data_dir: Path, tmp_path: Path
) -> None:
    blurred = tmp_path / "blurred.jpg"
    image = cv2.imread(str(faces_dir / OBAMA / "2.jpg"))
    assert cv2.imwrite(str(blurred), cv2.GaussianBlur(image, (0, 0), 6))
    enrolled = run(
        "enroll", "--name", "Barack Obama", blurred, cache=model_cache, data_dir=data_dir
    )
    assert enrolled.returncode == 0, enrolled.stderr
    [record] = lines(enrolled.stdout)
    assert record["rejected"] == []
    [face] = record["accepted"]
    [warning] = record["warnings"]
    assert (warning["image"], warning["face_id"], warning["warning"]) == (
        str(blurred),
        face["id"],
        "blurry",
    )
    assert warning["detail"].startswith("sharpness ")

    strict = run(
        "enroll",
        "--name",
        "Someone Strict",
        blurred,
        cache=model_cache,
        data_dir=data_dir / "strict",
        env={"FACE_AI_WATCHLIST__ENROLL_STRICT_QUALITY": "true"},
    )
    assert strict.returncode == 1
    assert [r["reason"] for r in lines(strict.stdout)[0]["rejected"]] == ["too_blurry"]
