"""The command line contract: JSON lines on stdout, one-line errors, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facewatch.recognizer.engine import FaceEngine

OBAMA = "identities/barack_obama/1.jpg"
OBAMA_2 = "identities/barack_obama/3.jpg"
BIDEN = "identities/joe_biden/1.jpg"
NO_FACE = "edge_cases/inspireface_view_no_face.jpg"


def facewatch(*args: str | Path, cache: Path, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FACE_AI_")}
    environment.update(
        {
            "FACE_AI_CACHE_DIR": str(cache),
            "FACE_AI_PROVIDERS": "cpu",
            "FACE_AI_LOG_LEVEL": "WARNING",
            **(env or {}),
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "facewatch", *map(str, args)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )


def lines(stdout: str) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in stdout.splitlines()]


def test_detect_contract(faces_dir: Path, model_cache: Path) -> None:
    result = facewatch(
        "detect", faces_dir / OBAMA, faces_dir / "groups/fr_two_people.jpg", cache=model_cache
    )
    assert result.returncode == 0, result.stderr
    records = lines(result.stdout)
    assert [r["image"] for r in records] == [
        str(faces_dir / OBAMA),
        str(faces_dir / "groups/fr_two_people.jpg"),
    ]
    assert [len(r["faces"]) for r in records] == [1, 2]
    face = records[0]["faces"][0]
    x1, y1, x2, y2 = face["bbox"]
    assert 0 <= x1 < x2 and 0 <= y1 < y2
    assert 0.5 <= face["score"] <= 1
    assert len(face["landmarks"]) == 5 and all(len(p) == 2 for p in face["landmarks"])
    assert set(face["quality"]) == {"score", "size", "sharpness", "frontal"}
    assert "embedding" not in face


def test_embed_matches_the_engine(faces_dir: Path, model_cache: Path, engine: FaceEngine) -> None:
    result = facewatch("embed", faces_dir / OBAMA, cache=model_cache)
    assert result.returncode == 0, result.stderr
    (record,) = lines(result.stdout)
    embedding = np.array(record["faces"][0]["embedding"], np.float32)
    assert embedding.shape == (engine.embedding_dim,)
    assert np.linalg.norm(embedding) == pytest.approx(1.0, abs=1e-4)
    from facewatch.images import read_image

    expected = engine.embed([read_image(faces_dir / OBAMA)])[0].embedding
    assert expected is not None
    assert float(embedding @ expected[0]) > 0.9999


def test_verify(faces_dir: Path, model_cache: Path) -> None:
    same = facewatch("verify", faces_dir / OBAMA, faces_dir / OBAMA_2, cache=model_cache)
    other = facewatch("verify", faces_dir / OBAMA, faces_dir / BIDEN, cache=model_cache)
    assert same.returncode == other.returncode == 0
    (s,), (o,) = lines(same.stdout), lines(other.stdout)
    assert s["same"] is True and o["same"] is False
    assert s["threshold"] == o["threshold"] == pytest.approx(0.363)
    assert s["similarity"] > s["threshold"] > o["similarity"]


def test_verify_without_a_face(faces_dir: Path, model_cache: Path) -> None:
    result = facewatch("verify", faces_dir / OBAMA, faces_dir / NO_FACE, cache=model_cache)
    assert result.returncode == 1
    assert (
        result.stderr.strip().splitlines()[-1]
        == "facewatch: error: no face found in the second image"
    )


def test_doctor(model_cache: Path) -> None:
    result = facewatch("doctor", cache=model_cache)
    assert result.returncode == 0, result.stderr
    (report,) = lines(result.stdout)
    assert report["providers_in_use"] == {
        "detector": ["CPUExecutionProvider"],
        "recognizer": ["CPUExecutionProvider"],
    }
    assert report["pack"]["embedding_dim"] == 128
    assert report["pack"]["detector"]["kind"] == "yunet"
    assert "onnxruntime" in report["onnxruntime"]["distributions"]
    assert report["device"]["cores"] >= 1
    assert report["faiss"]["installed"] is True and report["faiss"]["device"] in ("cpu", "gpu")
    gpu = facewatch("doctor", "--require-gpu", cache=model_cache)
    assert gpu.returncode == 1 and "GPU" in lines(gpu.stdout)[0]["error"]


def write(image: Image.Image, path: Path) -> Path:
    image.save(path, format="PNG")
    return path


def test_awkward_but_valid_images(faces_dir: Path, model_cache: Path, tmp_path: Path) -> None:
    source = Image.open(faces_dir / OBAMA).convert("RGB")
    grey = write(source.convert("L"), tmp_path / "grey.png")
    rgba = write(source.convert("RGBA"), tmp_path / "rgba.png")
    sixteen = write(
        Image.fromarray(np.asarray(source.convert("L"), np.uint16) * 257), tmp_path / "16bit.png"
    )
    disguised = tmp_path / "photo.jpg"  # a PNG under a .jpg name
    write(source, disguised)
    webp = faces_dir / "identities/deepface_id08/3.jpg"  # a WebP under a .jpg name
    result = facewatch("detect", grey, rgba, sixteen, disguised, webp, cache=model_cache)
    assert result.returncode == 0, result.stderr
    assert [len(r["faces"]) for r in lines(result.stdout)] == [1, 1, 1, 1, 1]


def test_bad_input_is_one_line_each_and_the_rest_is_processed(
    faces_dir: Path, model_cache: Path, tmp_path: Path
) -> None:
    from tests_support import png_header_only

    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes((faces_dir / OBAMA).read_bytes()[:2000])
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(100_000, 100_000))
    result = facewatch(
        "detect",
        tmp_path / "missing.jpg",
        text,
        truncated,
        bomb,
        faces_dir / OBAMA,
        cache=model_cache,
    )
    assert result.returncode == 1
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 4 and all(e.startswith("facewatch: error: ") for e in errors)
    assert "no such file" in errors[0]
    assert "not an image" in errors[1]
    assert "corrupt or truncated" in errors[2]
    assert "limit" in errors[3]
    assert [r["image"] for r in lines(result.stdout)] == [str(faces_dir / OBAMA)]


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"FACE_AI_DETECTION_SIZE": "600,600"}, "FACE_AI_DETECTION_SIZE"),
        ({"FACE_AI_SOMETHING": "1"}, "FACE_AI_SOMETHING"),
        ({"FACE_AI_MODEL_NAME": "no_such_pack", "FACE_AI_ALLOW_DOWNLOAD": "false"}, "no_such_pack"),
    ],
)
def test_bad_settings_stop_start_up(
    faces_dir: Path, model_cache: Path, env: dict[str, str], named: str
) -> None:
    result = facewatch("detect", faces_dir / OBAMA, cache=model_cache, env=env)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("facewatch: error: ") and named in line


def test_demo_recognises_the_sample_people(
    faces_dir: Path, model_cache: Path, tmp_path: Path
) -> None:
    demo = ("--data-dir", tmp_path, "demo", "--faces-dir", faces_dir)
    first = facewatch(*demo, cache=model_cache)
    assert first.returncode == 0, first.stderr
    result = facewatch(*demo, cache=model_cache)  # the sample people are enrolled only once
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout)[-1]["summary"]["watchlist"]["persons"] == 4
    records = lines(result.stdout)
    named = {
        r["image"]: sorted(f["person"] for f in r["faces"] if f["person"]) for r in records[:-1]
    }
    assert named == {
        "groups/fr_two_people.jpg": ["barack_obama", "joe_biden"],
        "groups/fr_obama_and_biden.jpg": ["barack_obama", "joe_biden"],
        "groups/fr_kit_with_rose.jpg": ["kit_harington", "rose_leslie"],
    }
    assert records[-1]["summary"]["recognised"] == 6
