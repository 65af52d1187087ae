"""What refining landmarks at full resolution costs on video frames; prints one JSON object.

Usage::

    python benchmarks/refine_cost.py [--faces-dir DIR] [--frames N] [--rounds N]

Frames are read from the shared clips (``videos/fr_short_hamilton_clip.mp4``, 640x360, and
``videos/intel_face-demographics-walking.mp4``, 768x432, every 10th frame). Each round times,
on the same frames and in turn: ``detect_aligned`` at the settings' detection size as the
pipeline calls it (``plain``); the same with ``refine=True`` (every face refined); and
``plain`` followed by ``refine_aligned`` on the largest face of each frame (the pipeline's
case: only the faces it embeds). Figures: median over rounds of seconds per frame, the ratio of
each to ``plain`` (median of per-round ratios), milliseconds per refined face, and how far the
refinement moved the landmarks (median, in eye distances). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bench_host import faces_root, host, load_average, progress
from facewatch.config import load_settings
from facewatch.recognizer.engine import FaceEngine

CLIPS = ("videos/fr_short_hamilton_clip.mp4", "videos/intel_face-demographics-walking.mp4")


def read_frames(path: Path, count: int, every: int = 10) -> list[np.ndarray]:  # type: ignore[type-arg]
    capture = cv2.VideoCapture(str(path))
    frames, index = [], 0
    try:
        while len(frames) < count:
            ok, frame = capture.read()
            if not ok:
                break
            if index % every == 0:
                frames.append(frame)
            index += 1
    finally:
        capture.release()
    return frames


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces-dir", type=Path, default=None)
    parser.add_argument("--frames", type=int, default=24, help="frames per clip")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    root = faces_root(args.faces_dir)
    frames = [f for clip in CLIPS for f in read_frames(root / clip, args.frames)]
    if not frames:
        parser.error(f"no frames read from {root}/videos")
    engine = FaceEngine.load(load_settings(engine={"providers": ["cpu"]}).engine)
    load_before = load_average()

    def plain() -> int:
        return sum(len(f) for f in engine.detect_aligned(frames)[0])

    def refine_all() -> int:
        return sum(len(f) for f in engine.detect_aligned(frames, refine=True)[0])

    def refine_largest() -> int:
        faces, _ = engine.detect_aligned(frames)
        refined = 0
        for frame, found in zip(frames, faces, strict=True):
            if len(found):
                engine.refine_aligned(frame, found[np.array([found.largest()])])
                refined += 1
        return refined

    ways = {"plain": plain, "refine_all": refine_all, "plain_then_refine_largest": refine_largest}
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    counts: dict[str, int] = {}
    for round_ in range(args.rounds):
        order = list(ways)[round_ % 3 :] + list(ways)[: round_ % 3]
        for name in order:
            began = time.perf_counter()
            counts[name] = ways[name]()
            seconds[name].append(time.perf_counter() - began)
        progress(f"round {round_ + 1}/{args.rounds}")

    faces, _ = engine.detect_aligned(frames)
    moved = []
    for frame, found in zip(frames, faces, strict=True):
        if not len(found):
            continue
        refined, _ = engine.refine_aligned(frame, found)
        eyes = np.linalg.norm(refined.kps[:, 1] - refined.kps[:, 0], axis=1)
        moved += (np.linalg.norm(found.kps - refined.kps, axis=2).mean(axis=1) / eyes).tolist()

    per_frame = {k: statistics.median(v) / len(frames) for k, v in seconds.items()}
    ratio = {
        k: round(statistics.median(a / b for a, b in zip(v, seconds["plain"], strict=True)), 3)
        for k, v in seconds.items()
    }
    extra = [a - b for a, b in zip(seconds["refine_all"], seconds["plain"], strict=True)]
    result: dict[str, Any] = {
        "frames": len(frames),
        "faces": counts["plain"],
        "ms_per_frame": {k: round(v * 1000, 2) for k, v in per_frame.items()},
        "ratio_to_plain": ratio,
        "ms_per_refined_face": round(statistics.median(extra) * 1000 / counts["refine_all"], 2)
        if counts["refine_all"]
        else None,
        "landmarks_moved_eye_distances_median": round(float(np.median(moved)), 4)
        if moved
        else None,
        "machine": host(load_before),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
