"""The built-in packs' calibrations from the shared data, and a check of what they predict.

Usage (from the repository root; the one command to run again after a change to detection,
alignment or the models)::

    PYTHONPATH=src python benchmarks/calibrate_packs.py [--packs yunet_sface,retinaface_sface]
        [--faces-dir DIR] [--scale-dir DIR] [--cache-dir DIR] [--target-fpir 0.01] [--no-write]

For each pack it writes ``src/facewatch/recognizer/calibrations/<pack>.json`` (numbers only:
the non-mated score distribution, the counts it rests on, the SHA-256 of the model files, the
data sets and the date) and prints one JSON object with the calibration's figures and the check.

Calibration set: the people of ``faces_scale/identities`` (694 LFW people, 2-3 photos) and of
``faces/identities`` (52 people) together; each person enrolled with their first photo, every
photo compared with every other person (about 1.3 million comparisons). The single-photo
strangers of ``faces_scale/distractors`` are not used: they are kept for the check.

Check (the prediction against a measurement on data the calibration never saw): enroll photo 1
of the first N people of ``faces_scale/identities`` (name order) for N = 10, 100, 694; the
measured FPIR is the share of the 2,000 distractors whose best score reaches the threshold.
Both at the calibrated threshold for ``--target-fpir`` at N and at the pack's own threshold.
``first_n`` is the brief's measurement (one gallery); ``groups_mean`` repeats it over every
disjoint group of N people (694 // N galleries) and averages, which is less noisy at small N.
``within_factor_2`` holds when measured / predicted lies in [0.5, 2] for ``first_n``.

Embeddings are cached under ``--cache-dir`` (default ``$TMPDIR/facewatch-calibration``), keyed by
the model files, the source of ``facewatch/recognizer`` and the photo list: a rerun after no
change takes seconds; a change to alignment or detection code embeds again (about 3-4 minutes a
pack on two cores).

Progress goes to stderr; stdout carries only the JSON object. Exit status 2 when the data is
missing; 1 when a check is outside the factor of 2 (files are still written).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench_host import REPO, faces_root, host, load_average, progress
from facewatch import __version__
from facewatch.config import load_settings
from facewatch.recognizer.calibrate import (
    EmbeddedPhotos,
    Pick,
    calibration_of,
    embed_photos,
    labels_of,
    person_folders,
)
from facewatch.recognizer.calibration import Calibration
from facewatch.recognizer.calibration_files import pack_facts, write_calibration
from facewatch.recognizer.engine import FaceEngine

PACKS = ("yunet_sface", "retinaface_sface")
SCALE_ENV = "FACEWATCH_TEST_FACES_SCALE"
CHECK_SIZES = (10, 100, 694)
OUT_DIR = REPO / "src" / "facewatch" / "recognizer" / "calibrations"
RECOGNIZER_SOURCE = REPO / "src" / "facewatch" / "recognizer"


def main() -> int:
    args = _parser().parse_args()
    faces = faces_root(args.faces_dir)
    scale = args.scale_dir or Path(
        os.environ.get(SCALE_ENV) or REPO.parent / "shared" / "data" / "faces_scale"
    )
    for root in (faces / "identities", scale / "identities", scale / "distractors"):
        if not root.is_dir():
            progress(f"data not found: {root} (see --faces-dir / --scale-dir)")
            return 2
    load_before = load_average()
    results = {}
    all_within = True
    for pack in args.packs.split(","):
        result = calibrate_pack(pack, faces, scale, args)
        all_within &= all(row["first_n"]["within_factor_2"] for row in result["check"]["rows"])
        results[pack] = result
    print(
        json.dumps(
            {
                "target_fpir": args.target_fpir,
                "packs": results,
                "all_within_factor_2": all_within,
                "host": host(load_before),
            },
            indent=1,
        )
    )
    return 0 if all_within else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packs", default=",".join(PACKS))
    parser.add_argument("--faces-dir", type=Path, help="shared faces (../shared/data/faces)")
    parser.add_argument(
        "--scale-dir", type=Path, help=f"faces_scale (${SCALE_ENV}, ../shared/data/faces_scale)"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "facewatch-calibration",
        help="embedding cache (and converted models)",
    )
    parser.add_argument("--target-fpir", type=float, default=0.01)
    parser.add_argument(
        "--no-write", action="store_true", help="print only; leave the package's files alone"
    )
    return parser


def calibrate_pack(pack: str, faces: Path, scale: Path, args: argparse.Namespace) -> dict[str, Any]:
    settings = load_settings(
        engine={"model_name": pack, "providers": ["cpu"], "cache_dir": args.cache_dir / "models"}
    )
    engine = FaceEngine.load(settings.engine)
    # One pool of people: the two sets hold no one in common (faces_scale left them out).
    shared = {f"faces/{k}": v for k, v in person_folders(faces / "identities").items()}
    lfw = {f"faces_scale/{k}": v for k, v in person_folders(scale / "identities").items()}
    paths, person_ids = labels_of(shared | lfw)
    # LFW photos are cropped around their subject: the largest face can be someone beside them
    # (a couple, two swimmers), who would count as a stranger scoring 0.6-0.9 against themself.
    photos = joined(
        cached_embeddings(engine, labels_of(shared)[0], args, f"{pack}-faces", "largest"),
        cached_embeddings(engine, labels_of(lfw)[0], args, f"{pack}-faces_scale", "central"),
    )
    provenance = {
        "pack": pack_facts(engine.pack),
        "data": {
            "sets": ["faces/identities", "faces_scale/identities"],
            "people": len(shared) + len(lfw),
            "photos": len(paths),
            "face_used": {"faces": "largest", "faces_scale": "nearest the centre"},
            "unreadable": len(photos.unreadable),
            "no_face": photos.no_face,
            "templates_per_person": 1,
            "kept_for_checking": "faces_scale/distractors",
        },
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "facewatch": __version__,
        "command": "benchmarks/calibrate_packs.py",
    }
    started = time.perf_counter()
    calibration = calibration_of(photos, person_ids, provenance)
    progress(
        f"{pack}: {calibration.comparisons} comparisons in {time.perf_counter() - started:.1f} s"
    )
    if not args.no_write:
        write_calibration(OUT_DIR / f"{pack}.json", calibration)
    distractor_paths = sorted((scale / "distractors").iterdir())
    distractors = cached_embeddings(
        engine, distractor_paths, args, f"{pack}-distractors", "central"
    )
    gallery = first_photos(scale, photos, paths)
    return {
        "pack_id": engine.pack.id,
        "people": calibration.people,
        "photos": calibration.photos,
        "comparisons": calibration.comparisons,
        "unreadable": len(photos.unreadable),
        "no_face": photos.no_face,
        "supported_max_threshold": calibration.supported_max,
        "smallest_rate": calibration.smallest_rate,
        "pack_threshold": engine.pack.recognizer.match_threshold,
        "rate_at_pack_threshold": calibration.false_match_rate(
            engine.pack.recognizer.match_threshold
        ),
        "thresholds": calibration.table(args.target_fpir),
        "check": check(
            calibration,
            gallery,
            distractors.embeddings[distractors.found],
            args.target_fpir,
            engine.pack.recognizer.match_threshold,
        ),
        "written": None if args.no_write else str((OUT_DIR / f"{pack}.json").relative_to(REPO)),
    }


def first_photos(scale: Path, photos: EmbeddedPhotos, paths: list[Path]) -> NDArray[np.float32]:
    """(P, D): photo 1 of each faces_scale person, in name order (those where it held a face)."""
    row_of = {path: row for row, path in enumerate(paths)}
    rows = []
    for folder in sorted(p for p in (scale / "identities").iterdir() if p.is_dir()):
        first = sorted(folder.iterdir())[0]
        row = row_of.get(first)
        if row is not None and photos.found[row]:
            rows.append(row)
    return photos.embeddings[rows]


def check(
    calibration: Calibration,
    gallery: NDArray[np.float32],
    strangers: NDArray[np.float32],
    target: float,
    pack_threshold: float,
) -> dict[str, Any]:
    """Predicted vs measured FPIR on the distractors, at N = CHECK_SIZES."""
    scores = strangers @ gallery.T  # (strangers, persons)
    rows = []
    for size in CHECK_SIZES:
        size = min(size, len(gallery))
        calibrated = calibration.threshold_for(target, size)
        for label, threshold in (
            ("calibrated", calibrated.threshold),
            ("pack", pack_threshold),
        ):
            predicted = calibration.expected_fpir(threshold, size)
            first = float((scores[:, :size].max(axis=1) >= threshold).mean())
            groups = [
                float((scores[:, start : start + size].max(axis=1) >= threshold).mean())
                for start in range(0, len(gallery) - size + 1, size)
            ]
            rows.append(
                {
                    "persons": size,
                    "at": label,
                    "threshold": threshold,
                    "clamped": calibrated.clamped if label == "calibrated" else False,
                    "predicted_fpir": round(predicted, 5),
                    "first_n": _versus(first, predicted, len(strangers)),
                    "groups_mean": {
                        "groups": len(groups),
                        **_versus(float(np.mean(groups)), predicted, len(strangers)),
                    },
                }
            )
    return {"strangers": len(strangers), "gallery": len(gallery), "rows": rows}


def _versus(measured: float, predicted: float, strangers: int) -> dict[str, Any]:
    ratio = measured / predicted if predicted > 0 else None
    return {
        "measured_fpir": round(measured, 5),
        "named": round(measured * strangers, 2),
        "measured_over_predicted": round(ratio, 3) if ratio is not None else None,
        "within_factor_2": ratio is not None and 0.5 <= ratio <= 2.0,
    }


# --- the embedding cache ------------------------------------------------------------------------


def joined(first: EmbeddedPhotos, second: EmbeddedPhotos) -> EmbeddedPhotos:
    return EmbeddedPhotos(
        first.paths + second.paths,
        np.concatenate([first.embeddings, second.embeddings]),
        np.concatenate([first.found, second.found]),
        {**first.unreadable, **second.unreadable},
    )


def cached_embeddings(
    engine: FaceEngine, paths: list[Path], args: argparse.Namespace, label: str, pick: Pick
) -> EmbeddedPhotos:
    """:func:`embed_photos` of ``paths``, from the cache when nothing it depends on changed."""
    cache_dir: Path = args.cache_dir
    key = _cache_key(engine, paths, pick)
    target = cache_dir / f"{label}-{pick}-{key[:16]}.npz"
    if target.is_file():
        with np.load(target, allow_pickle=False) as saved:
            unreadable = json.loads(str(saved["unreadable"]))
            progress(f"{label}: embeddings from {target}")
            return EmbeddedPhotos(paths, saved["embeddings"], saved["found"], unreadable)
    progress(f"{label}: embedding {len(paths)} photos")
    started = time.perf_counter()
    photos = embed_photos(engine, paths, _every_tenth(label), pick=pick)
    progress(f"{label}: {time.perf_counter() - started:.0f} s")
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".tmp.npz")
    np.savez(
        partial,
        embeddings=photos.embeddings,
        found=photos.found,
        unreadable=np.array(json.dumps(photos.unreadable)),
    )
    partial.replace(target)
    return photos


def _cache_key(engine: FaceEngine, paths: list[Path], pick: Pick) -> str:
    digest = hashlib.sha256(pick.encode())
    digest.update(engine.pack.detector.sha256.encode())
    digest.update(engine.pack.recognizer.sha256.encode())
    digest.update(repr(engine.settings.detection_size).encode())
    # Decoding, detection, alignment and embedding code: a change there changes the embeddings
    # (the calibration's own modules do not).
    sources = [p for p in RECOGNIZER_SOURCE.glob("*.py") if not p.name.startswith("calibrat")]
    for source in sorted([*sources, RECOGNIZER_SOURCE.parent / "images.py"]):
        digest.update(source.name.encode() + source.read_bytes())
    for path in paths:
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _every_tenth(label: str) -> Any:
    shown = [-1]

    def report(done: int, total: int) -> None:
        tenth = done * 10 // max(total, 1)
        if tenth != shown[0]:
            shown[0] = tenth
            progress(f"{label}: {done}/{total}")

    return report


if __name__ == "__main__":
    sys.exit(main())
