"""Throughput of the face engine, batched vs. naive, on real frames; prints one JSON object.

Usage::

    python benchmarks/engine.py [--quick] [--faces-dir DIR] [--frames N] [--reps N] [--threads N]

The frame set is fixed: frames spread evenly over three video clips (stage and audience, two
people turning their heads, a walking crowd resized to 1280 wide) and group photos, taken in turn
so that every batch mixes them.

Two ways of doing the same work with the same ONNX Runtime sessions, thread settings and
pre-processing:

* **batched**: ``FaceEngine.embed`` on consecutive chunks of ``batch_size`` frames (one detection
  call per chunk, one embedding call for every face of the chunk), for each batch size;
* **naive**: per frame one detection call on that frame alone, then per face one alignment and
  one embedding call on a single crop (``engine.detector`` / ``engine.embedder`` of the batch-16
  engine).

Every configuration is warmed up once. Then, in each repetition, the configurations take turns
(in a rotating order) on each segment of 32 frames, so that load from elsewhere on the machine
hits them alike. Figures are medians over the repetitions; speed-ups are medians of the
per-repetition ratios naive seconds / batched seconds (wall time; ``speedup_cpu_s`` uses the
process's CPU time, which others' load inflates less). ``overhead_share`` is the part of the wall
time of the ``engine.embed`` calls spent outside ONNX Runtime
(``1 - (detect.infer + embed.infer) / wall``, from ``engine.times``). Goals are judged at batch
16, the default ``engine.batch_size``.

Progress goes to stderr; stdout carries only the JSON object. Exits with status 2 when the face
data is missing and 1 when the two ways do not find the same faces.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from bench_host import FACES_ENV, faces_root, host, progress
from facewatch.config import load_settings
from facewatch.images import read_image, validate_array
from facewatch.pipeline.types import Faces
from facewatch.recognizer.align import align_faces, frontal, sharpness
from facewatch.recognizer.engine import INFERENCE_STAGES, FaceEngine

BATCH_SIZES = (1, 4, 8, 16, 32)
GOAL_BATCH = 16
GOAL_SPEEDUP = 1.5
GOAL_OVERHEAD = 0.10
#: Large enough that every face of a 32-frame batch goes into one embedding call.
EMBED_BATCH_SIZE = 1024
SEGMENT = 32
MAX_WIDTH = 1280
VIDEOS = (
    "fr_short_hamilton_clip.mp4",
    "intel_head-pose-face-detection-female-and-male.mp4",
    "facenet-pytorch_crowd_walking.mp4",
)
GROUPS = (
    "compreface_000_5.jpg",
    "faceapi_bbt1.jpg",
    "compreface_016_8.jpg",
    "deepface_selfie-many-people.jpg",
    "compreface_015_6.jpg",
    "insightface_t1.jpg",
    "compreface_014_5.jpg",
    "faceapi_bbt4.jpg",
    "compreface_013_4.jpg",
    "facenet-pytorch_multiface.jpg",
    "compreface_012_4.jpg",
    "dlib_voc_2007_007763.jpg",
    "compreface_011_3.jpg",
    "faceapi_bbt5.jpg",
    "faceapi_bbt2.jpg",
    "faceapi_bbt3.jpg",
)
NAIVE = "naive"

Image = NDArray[np.uint8]


# --- input ------------------------------------------------------------------------------------


def fit_width(image: Image, max_width: int = MAX_WIDTH) -> Image:
    """Downscale (never upscale) so the width is at most ``max_width`` pixels."""
    height, width = image.shape[:2]
    if width <= max_width:
        return image
    size = (max_width, round(height * max_width / width))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def video_frames(path: Path, count: int) -> list[Image]:
    """``count`` frames spread evenly over the clip, decoded in order (no seeking)."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise SystemExit(f"cannot open video {path}")
    try:
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if total <= 0:
            raise SystemExit(f"{path} reports no frames")
        wanted = {int(i) for i in np.linspace(0, total - 1, count).round()}
        frames: list[Image] = []
        index = 0
        while len(frames) < len(wanted):
            ok, frame = capture.read()
            if not ok:
                break
            if index in wanted:
                frames.append(fit_width(frame))
            index += 1
    finally:
        capture.release()
    if len(frames) < count:
        raise SystemExit(f"{path}: decoded {len(frames)} of the {count} frames wanted")
    return frames


def frame_set(root: Path, count: int) -> tuple[list[Image], list[str]]:
    """``count`` frames taken in turn from each clip and the group photos, with their sources."""
    missing = [
        p
        for p in [root / "videos" / v for v in VIDEOS] + [root / "groups" / g for g in GROUPS]
        if not p.is_file()
    ]
    if missing:
        raise SystemExit(
            f"face data incomplete under {root}: missing {missing[0]} and "
            f"{len(missing) - 1} more (set --faces-dir or ${FACES_ENV})"
        )
    sources = len(VIDEOS) + 1
    per_source = [count // sources + (1 if i < count % sources else 0) for i in range(sources)]
    if per_source[-1] > len(GROUPS):
        raise SystemExit(f"at most {len(GROUPS) * sources} frames are available")
    streams: list[list[tuple[Image, str]]] = []
    for name, n in zip(VIDEOS, per_source[:-1], strict=True):
        streams.append([(f, f"videos/{name}") for f in video_frames(root / "videos" / name, n)])
    streams.append(
        [
            (fit_width(read_image(root / "groups" / g)), f"groups/{g}")
            for g in GROUPS[: per_source[-1]]
        ]
    )
    taken = [stream[i] for i in range(max(per_source)) for stream in streams if i < len(stream)]
    return [image for image, _ in taken], [source for _, source in taken]


# --- the two ways -----------------------------------------------------------------------------


def naive_embed(engine: FaceEngine, images: Sequence[Image]) -> list[Faces]:
    """Same outputs as ``engine.embed``: one detection call per frame (and one refinement of its
    faces' landmarks at full resolution), one embed call per face (flip-averaged)."""
    size = engine.pack.recognizer.input_size
    out = []
    for image in images:
        frame = validate_array(image)
        det = engine.detector.detect([frame])[0]
        found = Faces(
            det.xyxy,
            det.kps,
            det.score,
            np.zeros(len(det.score), np.float32),
            np.zeros(len(det.score), np.float32),
        )
        refined, _ = engine.refine_aligned(frame, found)
        crops, embeddings = [], []
        for kps in refined.kps:
            crop = align_faces(frame, kps[None], size)
            crops.append(crop)
            embeddings.append(engine.embed_crops(crop, flip=True))
        all_crops = np.concatenate(crops) if crops else np.zeros((0, size[1], size[0], 3), np.uint8)
        embedding = (
            np.concatenate(embeddings)
            if embeddings
            else np.zeros((0, engine.embedding_dim), np.float32)
        )
        out.append(
            Faces(
                refined.xyxy,
                refined.kps,
                refined.score,
                sharpness(all_crops),
                frontal(refined.kps),
                embedding,
            )
        )
    return out


@dataclass
class Sample:
    """Seconds one configuration spent on some frames: wall, process CPU, engine stages."""

    wall_s: float = 0.0
    cpu_s: float = 0.0
    stages_s: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    def add(self, other: Sample) -> None:
        self.wall_s += other.wall_s
        self.cpu_s += other.cpu_s
        for stage, seconds in other.stages_s.items():
            self.stages_s[stage] = self.stages_s.get(stage, 0.0) + seconds
        for stage, calls in other.calls.items():
            self.calls[stage] = self.calls.get(stage, 0) + calls


def batched_embed(engine: FaceEngine, images: Sequence[Image]) -> tuple[list[Faces], Sample]:
    """``engine.embed`` on consecutive chunks of ``batch_size`` frames, timing only those calls."""
    step = engine.settings.batch_size
    out: list[Faces] = []
    sample = Sample()
    engine.times.reset()
    for start in range(0, len(images), step):
        chunk = images[start : start + step]
        wall, cpu = time.perf_counter(), time.process_time()
        out.extend(engine.embed(chunk))
        sample.wall_s += time.perf_counter() - wall
        sample.cpu_s += time.process_time() - cpu
    for stage, value in engine.times.snapshot().items():
        sample.stages_s[stage] = value["seconds"]
        sample.calls[stage] = int(value["calls"])
    return out, sample


def measure(
    name: str, engines: dict[int, FaceEngine], frames: Sequence[Image]
) -> tuple[list[Faces], Sample]:
    """One pass of configuration ``name`` (``naive`` or a batch size) over ``frames``."""
    if name != NAIVE:
        return batched_embed(engines[int(name)], frames)
    wall, cpu = time.perf_counter(), time.process_time()
    faces = naive_embed(engines[GOAL_BATCH], frames)
    return faces, Sample(time.perf_counter() - wall, time.process_time() - cpu)


def check_same_faces(reference: list[Faces], other: list[Faces], label: str) -> float:
    """Exit unless both found as many faces in every frame; return the least embedding cosine."""
    expected = [len(f) for f in reference]
    found = [len(f) for f in other]
    if found != expected:
        differing = [i for i, (a, b) in enumerate(zip(expected, found, strict=True)) if a != b]
        progress(
            f"{label} found {sum(found)} faces where naive found {sum(expected)} "
            f"(frames {differing} differ): the comparison would be unfair"
        )
        raise SystemExit(1)
    cosines = [
        float(np.min(np.sum(a.embedding * b.embedding, axis=1)))  # type: ignore[operator]
        for a, b in zip(reference, other, strict=True)
        if len(a)
    ]
    return min(cosines, default=1.0)


# --- figures ----------------------------------------------------------------------------------


def summarise(samples: list[Sample], frames: int, faces: int) -> dict[str, Any]:
    """Medians over the repetitions of one configuration."""
    wall = statistics.median(s.wall_s for s in samples)
    result: dict[str, Any] = {
        "frames_per_s": frames / wall,
        "faces_per_s": faces / wall,
        "wall_s": wall,
        "cpu_s": statistics.median(s.cpu_s for s in samples),
        "wall_s_runs": [round(s.wall_s, 4) for s in samples],
    }
    if samples[0].stages_s:
        stages = sorted({k for s in samples for k in s.stages_s})
        result["overhead_share"] = statistics.median(
            1 - sum(s.stages_s.get(k, 0.0) for k in INFERENCE_STAGES) / s.wall_s for s in samples
        )
        result["stage_ms_per_frame"] = {
            k: 1000 * statistics.median(s.stages_s.get(k, 0.0) for s in samples) / frames
            for k in stages
        }
        result["inference_calls_per_pass"] = {
            k: samples[0].calls[k] for k in INFERENCE_STAGES if k in samples[0].calls
        }
    return result


def paired_ratio(naive: list[Sample], batched: list[Sample], key: str) -> float:
    """Median over repetitions of naive seconds / batched seconds in the same repetition."""
    return statistics.median(
        getattr(n, key) / getattr(b, key) for n, b in zip(naive, batched, strict=True)
    )


def machine(engine: FaceEngine, threads: int) -> dict[str, Any]:
    return {
        **host(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "onnxruntime": ort.__version__,
        "providers": engine.providers,
        "intra_op_threads": threads or "onnxruntime default",
        "pack": engine.pack.name,
        "detection_size": list(engine.settings.detection_size),
    }


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="4 frames, 2 repetitions: a smoke run of well under a minute",
    )
    parser.add_argument(
        "--faces-dir",
        type=Path,
        default=None,
        help=f"face data folder (default: ${FACES_ENV} or ../shared/data/faces)",
    )
    parser.add_argument("--frames", type=int, default=None, help="frames in the set (default 64)")
    parser.add_argument(
        "--reps", type=int, default=None, help="timed repetitions per configuration (default 5)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="ONNX Runtime intra-op threads per session, the same for every "
        "configuration (default 0: ONNX Runtime's own choice)",
    )
    parser.add_argument(
        "--providers", default="cpu", help="engine.providers, e.g. cpu or auto (default cpu)"
    )
    args = parser.parse_args(argv)
    args.frames = args.frames or (4 if args.quick else 64)
    args.reps = args.reps or (2 if args.quick else 5)
    if args.frames < 1 or args.reps < 1:
        parser.error("--frames and --reps must be positive")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    root = faces_root(args.faces_dir)
    if not (root / "videos").is_dir() or not (root / "groups").is_dir():
        progress(f"face data not found at {root}: pass --faces-dir or set ${FACES_ENV}")
        raise SystemExit(2)

    progress(f"reading {args.frames} frames from {root}")
    frames, sources = frame_set(root, args.frames)

    engines: dict[int, FaceEngine] = {}
    for batch in BATCH_SIZES:
        progress(f"loading engine, batch_size={batch}")
        settings = load_settings(
            engine={
                "providers": args.providers.split(","),
                "batch_size": batch,
                "embed_batch_size": EMBED_BATCH_SIZE,
                "thread_pool_size": args.threads,
            }
        ).engine
        engines[batch] = FaceEngine.load(settings)

    names = [NAIVE, *(str(b) for b in BATCH_SIZES)]
    # Configurations take turns on segments of SEGMENT frames (a multiple of every batch size),
    # so a burst of load from elsewhere on the machine hits them alike.
    segments = [frames[i : i + SEGMENT] for i in range(0, len(frames), SEGMENT)]

    progress("warm-up pass of every configuration")
    reference: list[list[Faces]] = []
    min_cosine = 1.0
    for segment in segments:
        reference.append(measure(NAIVE, engines, segment)[0])
        for name in names[1:]:
            faces, _ = measure(name, engines, segment)
            min_cosine = min(min_cosine, check_same_faces(reference[-1], faces, f"batch {name}"))
    all_faces = [faces for part in reference for faces in part]
    face_count = sum(len(f) for f in all_faces)
    progress(f"{len(frames)} frames, {face_count} faces a pass")

    samples: dict[str, list[Sample]] = {name: [] for name in names}
    turn = 0
    for rep in range(args.reps):
        totals = {name: Sample() for name in names}
        for expected, segment in zip(reference, segments, strict=True):
            # Rotate the order so that no configuration always follows the same one.
            order = names[turn % len(names) :] + names[: turn % len(names)]
            turn += 1
            for name in order:
                faces, sample = measure(name, engines, segment)
                check_same_faces(expected, faces, name)
                totals[name].add(sample)
        for name in names:
            samples[name].append(totals[name])
        progress(
            f"repetition {rep + 1}/{args.reps}: "
            + ", ".join(f"{name} {face_count / totals[name].wall_s:.1f}" for name in names)
            + " faces/s"
        )

    batched = {name: summarise(samples[name], len(frames), face_count) for name in names[1:]}
    speedups = {name: paired_ratio(samples[NAIVE], samples[name], "wall_s") for name in names[1:]}
    overhead = batched[str(GOAL_BATCH)]["overhead_share"]
    return {
        "machine": machine(engines[GOAL_BATCH], args.threads),
        "mode": "quick" if args.quick else "full",
        "frames": len(frames),
        "faces_per_pass": face_count,
        "faces_by_source": _faces_by_source(all_faces, sources),
        "repetitions": args.reps,
        "min_embedding_cosine_naive_vs_batched": min_cosine,
        "batched": batched,
        "naive": summarise(samples[NAIVE], len(frames), face_count),
        "speedup_faces_per_s": speedups,
        "speedup_cpu_s": {
            name: paired_ratio(samples[NAIVE], samples[name], "cpu_s") for name in names[1:]
        },
        "overhead_at_16": overhead,
        "goals": {
            "batching_speedup_ge_1_5": speedups[str(GOAL_BATCH)] >= GOAL_SPEEDUP,
            "overhead_at_16_lt_0_10": overhead < GOAL_OVERHEAD,
        },
    }


def _faces_by_source(faces: list[Faces], sources: list[str]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for item, source in zip(faces, sources, strict=True):
        entry = out.setdefault(source, {"frames": 0, "faces": 0})
        entry["frames"] += 1
        entry["faces"] += len(item)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    print(json.dumps(run(parse_args(argv)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
