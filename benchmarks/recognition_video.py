"""Recognition on video: right name or no name, measured on labelled clips; prints JSON.

Usage::

    python benchmarks/recognition_video.py [--quick] [--videos NAME,...] [--json-out FILE]
                                           [--paced] [--faces-dir DIR] [--scale-dir DIR]

Videos (``--videos``, default all): the labelled clips of :mod:`labelled_video` (``cuts``,
``pan_zoom``, ``occlusion``, ``small_faces``, ``side_by_side``; built once and cached outside the
repository) and ``hamilton``: ``videos/fr_short_hamilton_clip.mp4`` with the hand-written labels of
``benchmarks/data/hamilton_labels.csv`` (who is visible in which time range, and a region holding
their face; every other face is "other"). ``--quick`` builds short versions (4 to 9 s: two 2 s
shots, six 1.5 s shots for ``cuts``) and keeps the whole Hamilton clip.

Each video gets its own watchlist in a temporary SQLite data folder: for a built clip, its
enrolled people from every photo of theirs that the clip does not show, plus a few enrolled people
who never appear; for Hamilton, all photos of lin_manuel_miranda, alex_lacamoire and barack_obama
and the ten distractors of ``tests/integration/hamilton.py``. Then, side by side in the same run:

* **pipeline**: the real :class:`~facewatch.pipeline.runner.Pipeline` with its default settings
  (snapshots off, a long shutdown grace so the drain is never cut short), the clip read as
  ``facewatch watch`` reads a file: unpaced, every frame processed (``--paced``: in real time, as
  a camera, dropping frames when behind). What it shows is read from ``pipeline.subscribe()``
  (alerts) and ``pipeline.watch_frames()`` (the live metadata the live view draws: per frame, each
  tracked face's track, box and name).
* **per_frame_identify**: a naive reference with no tracking: every face of every frame detected,
  embedded and searched (``engine.detect_aligned`` + ``embed_crops`` + ``watchlist.match``); a face
  is named when its best person reaches the watchlist threshold. It has no tracks and no alerts:
  those figures are null.

Ground truth is matched to shown boxes per frame: for a built clip, one to one by IoU >= 0.3 or
the box centre inside the true face box (greedy by IoU); for Hamilton, a box belongs to the
labelled person whose region holds its centre, else it is "other". Figures per video and in total:

* ``tracks_changed_person``: tracks whose alerts or live names show two different persons
  (``..._by_name``), or whose boxes covered two different ground-truth people (``..._by_truth``;
  for Hamilton, "other" counts as one person: a track going from Lin to the audience changed);
* ``enrolled_present`` / ``enrolled_named``: enrolled people on screen for at least 1 s with a face
  of at least 40 px (Hamilton: every labelled person), and those of them whose name was shown on
  their own face at least once (``..._by_alert``: named by a match/update alert on their face);
* ``wrong_alerts``: match/update alerts naming someone other than the person at the alert's box
  in its frame (the frame from the alert's ``frame_index``/``pts_s`` when it has them, else from
  its ``ts``, which is the wall-clock time of a frame the live metadata also carries);
* ``wrong_name_frames``: frames where the live metadata shows a name on a face that is someone
  else or a stranger (Hamilton: a name shown while that person is not labelled at that box);
  ``named_unlabelled_frames``: names on boxes that match no true face of a built clip (false
  detections);
* ``time_to_name_s``: per enrolled person present, from their first frame on screen to the first
  frame showing their name on their face, in seconds of video; median and max over people, never
  named people left out of both and listed;
* ``embeddings_per_video_s``: faces embedded per second of video;
* ``strangers_named``: distinct never-enrolled people (strangers, and for Hamilton the "other"
  faces counted per frame instead) whose face was shown with a name.

``goals`` judges the pipeline on every video at once: no track changed person, no wrong alert,
every enrolled person present named, each within 1 s of appearing, no stranger named. Goals are
reported, not asserted; the exit status is 0 unless the arguments or the data are wrong (2) or a
run does not finish (1). Progress goes to stderr; stdout carries only the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

import labelled_video
from bench_host import FACES_ENV, REPO, faces_root, host, load_average, progress
from facewatch.config import Settings, load_settings
from facewatch.errors import EnrollmentRejected
from facewatch.pipeline.alerts import Alert
from facewatch.pipeline.runner import Pipeline, fitted_detection_size
from facewatch.recognizer.engine import FaceEngine
from facewatch.stream.config import StreamConfig
from facewatch.watchlist.service import Photo, Watchlist
from labelled_video import XYXY, FaceTruth, LabelledVideo, VideoSpec

SCALE_ENV = "FACEWATCH_TEST_FACES_SCALE"
HAMILTON = "hamilton"
#: Enrolled beside the Hamilton clip's people; the same as tests/integration/hamilton.py.
HAMILTON_DISTRACTORS = (
    "joe_biden",
    "bradley_cooper",
    "john_lennon",
    "eric_clapton",
    "angelina_jolie",
    "anthony_hopkins",
    "bbt_sheldon",
    "bbt_leonard",
    "bbt_howard",
    "bbt_raj",
)
FULL_SPECS = {
    "cuts": VideoSpec("cuts", shots=8, shot_s=2.0),
    "pan_zoom": VideoSpec("pan_zoom", shots=4, shot_s=3.0),
    "occlusion": VideoSpec("occlusion", shots=4, shot_s=3.0),
    "small_faces": VideoSpec("small_faces", shots=3, shot_s=3.0),
    "side_by_side": VideoSpec("side_by_side", shots=3, shot_s=3.0),
}
QUICK_SPECS = {
    "cuts": VideoSpec("cuts", shots=6, shot_s=1.5),
    "pan_zoom": VideoSpec("pan_zoom", shots=2, shot_s=2.0),
    "occlusion": VideoSpec("occlusion", shots=2, shot_s=2.0),
    "small_faces": VideoSpec("small_faces", shots=2, shot_s=2.0),
    "side_by_side": VideoSpec("side_by_side", shots=2, shot_s=2.0),
}
VIDEOS = (*FULL_SPECS, HAMILTON)
#: Unpaced runs drain every frame at close: no grace period may cut that short.
PIPELINE_OVERRIDES: dict[str, Any] = {"shutdown_grace_s": 600.0, "snapshots": False}
STREAM_ID = "video"
RUN_TIMEOUT_S = 1800.0
#: A shown box is a true face's when their IoU reaches this (or the box centre is inside it).
MATCH_IOU = 0.3
#: An enrolled person counts as present when on screen this long with a face this tall.
PRESENT_S = 1.0
PRESENT_FACE_PX = 40.0
#: The goal for a person's first name, in seconds of video after they appear.
GOAL_TIME_TO_NAME_S = 1.0
OTHER = "other"
NAMING_ALERTS = ("match", "update")


# --- what a way of recognising showed ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Shown:
    """One face as shown on one frame: its track (None without tracking), box and name."""

    track: int | None
    xyxy: XYXY
    name: str | None


@dataclass(frozen=True, slots=True)
class NamedAlert:
    """A match/update alert, placed in the video: its frame (None: not found) and box."""

    track: int
    person: str
    frame: int | None
    xyxy: XYXY


@dataclass
class Run:
    """What one way showed on one video.

    Attributes:
        shown: per frame index, the faces shown (missing: frame not processed).
        alerts: match/update alerts; None for a way without alerts.
        alert_types: alerts by type.
        embeddings: faces embedded.
        wall_s: seconds the run took.
    """

    shown: dict[int, list[Shown]]
    alerts: list[NamedAlert] | None
    alert_types: dict[str, int]
    embeddings: int
    wall_s: float
    extra: dict[str, Any] = field(default_factory=dict)


# --- matching truth to boxes ------------------------------------------------------------------


def iou(a: XYXY, b: XYXY) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def centre_inside(box: XYXY, region: XYXY) -> bool:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return region[0] <= cx <= region[2] and region[1] <= cy <= region[3]


def truth_of_boxes(
    truth: Sequence[FaceTruth], boxes: Sequence[XYXY], *, regions: bool
) -> list[FaceTruth | None]:
    """The true face each shown box is (None: none matches).

    Face boxes are matched one to one, greedily by IoU, a pair qualifying by IoU >=
    :data:`MATCH_IOU` or the shown box's centre inside the true box. Regions take every box whose
    centre they hold (the smallest region when several do).
    """
    out: list[FaceTruth | None] = [None] * len(boxes)
    if regions:
        for i, box in enumerate(boxes):
            holding = [t for t in truth if centre_inside(box, t.xyxy)]
            if holding:
                out[i] = min(holding, key=lambda t: labelled_video.area(t.xyxy))
        return out
    pairs = []
    for i, box in enumerate(boxes):
        for j, face in enumerate(truth):
            overlap = iou(box, face.xyxy)
            if overlap >= MATCH_IOU or centre_inside(box, face.xyxy):
                pairs.append((overlap, i, j))
    used_boxes: set[int] = set()
    used_truth: set[int] = set()
    for _, i, j in sorted(pairs, reverse=True):
        if i not in used_boxes and j not in used_truth:
            out[i] = truth[j]
            used_boxes.add(i)
            used_truth.add(j)
    return out


def truth_label(video: LabelledVideo, face: FaceTruth | None) -> str | None:
    """Who a matched box is: a label, :data:`OTHER` for Hamilton's unlabelled faces, or None."""
    if face is not None:
        return face.label
    return OTHER if video.regions else None


# --- figures ----------------------------------------------------------------------------------


def present_people(video: LabelledVideo, enrolled: set[str]) -> dict[str, int]:
    """Enrolled people present long enough with a big enough face -> their first frame."""
    frames: Counter[str] = Counter()
    first: dict[str, int] = {}
    for index, row in enumerate(video.truth):
        for face in row:
            first.setdefault(face.label, index)
            if face.label in enrolled and (
                video.regions or (face.height >= PRESENT_FACE_PX and face.visible >= 0.5)
            ):
                frames[face.label] += 1
    needed = PRESENT_S * video.fps - 0.5
    return {p: first[p] for p, n in frames.items() if n >= needed}


def median_max(values: Iterable[float]) -> dict[str, float | None]:
    values = list(values)
    if not values:
        return {"median": None, "max": None}
    return {"median": round(statistics.median(values), 3), "max": round(max(values), 3)}


def evaluate(video: LabelledVideo, run: Run, enrolled: set[str]) -> dict[str, Any]:
    """The figures of one way on one video; see the module docstring."""
    present = present_people(video, enrolled)
    tracks: set[int] = set()
    names_of_track: defaultdict[int, set[str]] = defaultdict(set)
    truths_of_track: defaultdict[int, set[str]] = defaultdict(set)
    first_named: dict[str, int] = {}
    wrong_frames: set[int] = set()
    wrong_faces = 0
    unlabelled_frames: set[int] = set()
    strangers_named: set[str] = set()
    other_named_frames: set[int] = set()
    for index in sorted(run.shown):
        shown = run.shown[index]
        matched = truth_of_boxes(
            video.truth[index] if index < video.frames else (),
            [s.xyxy for s in shown],
            regions=video.regions,
        )
        for face, true in zip(shown, matched, strict=True):
            label = truth_label(video, true)
            if face.track is not None:
                tracks.add(face.track)
                if face.name is not None:
                    names_of_track[face.track].add(face.name)
                if label is not None:
                    truths_of_track[face.track].add(label)
            if face.name is None:
                continue
            if label is None:
                unlabelled_frames.add(index)
            elif label == face.name:
                first_named.setdefault(label, index)
            else:
                wrong_frames.add(index)
                wrong_faces += 1
                if label == OTHER:
                    other_named_frames.add(index)
                elif label not in enrolled:
                    strangers_named.add(label)
    for alert in run.alerts or ():
        names_of_track[alert.track].add(alert.person)
    by_name = sorted(t for t, names in names_of_track.items() if len(names) > 1)
    by_truth = sorted(t for t, labels in truths_of_track.items() if len(labels) > 1)
    changed = sorted(set(by_name) | set(by_truth))

    wrong_alerts: list[dict[str, Any]] | None = None
    named_by_alert: set[str] = set()
    if run.alerts is not None:
        wrong_alerts = []
        for alert in run.alerts:
            label = alert_truth(video, run, alert, truths_of_track)
            if label == alert.person:
                named_by_alert.add(label)
            elif label is not None:
                wrong_alerts.append(
                    {
                        "track": alert.track,
                        "person": alert.person,
                        "truth": label,
                        "frame": alert.frame,
                    }
                )

    waits = {
        person: (first_named[person] - first) / video.fps
        for person, first in present.items()
        if person in first_named
    }
    strangers = [s for s in video.strangers if s not in enrolled] + [
        p for p in video.shown if p not in enrolled
    ]
    processed = len(run.shown)
    figures: dict[str, Any] = {
        "frames_processed": processed,
        "tracks": len(tracks) if run.alerts is not None else None,
        "tracks_changed_person": len(changed) if run.alerts is not None else None,
        "tracks_changed_person_by_name": len(by_name) if run.alerts is not None else None,
        "tracks_changed_person_by_truth": len(by_truth) if run.alerts is not None else None,
        "changed_tracks": [
            {
                "track": t,
                "names": sorted(names_of_track.get(t, ())),
                "truths": sorted(truths_of_track.get(t, ())),
            }
            for t in changed[:10]
        ]
        if run.alerts is not None
        else None,
        "enrolled_present": len(present),
        "enrolled_named": len(present.keys() & first_named.keys()),
        "enrolled_named_by_alert": len(present.keys() & named_by_alert)
        if run.alerts is not None
        else None,
        "never_named": sorted(present.keys() - first_named.keys()),
        "alerts": run.alert_types if run.alerts is not None else None,
        "persons_in_alerts": sorted({a.person for a in run.alerts})
        if run.alerts is not None
        else None,
        "wrong_alerts": len(wrong_alerts) if wrong_alerts is not None else None,
        "wrong_alert_examples": wrong_alerts[:10] if wrong_alerts is not None else None,
        "wrong_name_frames": len(wrong_frames),
        "wrong_name_faces": wrong_faces,
        "named_unlabelled_frames": len(unlabelled_frames),
        "time_to_name_s": {p: round(s, 3) for p, s in sorted(waits.items())},
        "time_to_name_summary_s": median_max(waits.values()),
        "embeddings": run.embeddings,
        "embeddings_per_video_s": round(run.embeddings / video.seconds, 2),
        "strangers_present": len(strangers),
        "strangers_named": len(strangers_named),
        "strangers_named_list": sorted(strangers_named),
        "wall_s": round(run.wall_s, 2),
        **run.extra,
    }
    if video.regions:
        figures["other_faces_named_frames"] = len(other_named_frames)
    return figures


def alert_truth(
    video: LabelledVideo,
    run: Run,
    alert: NamedAlert,
    truths_of_track: dict[int, set[str]],
) -> str | None:
    """Who is at the alert's box in its frame; without a frame, the track's one true person."""
    if alert.frame is not None and alert.frame < video.frames:
        matched = truth_of_boxes(video.truth[alert.frame], [alert.xyxy], regions=video.regions)[0]
        return truth_label(video, matched)
    labels = truths_of_track.get(alert.track, set())
    return next(iter(labels)) if len(labels) == 1 else None


def totals(per_video: dict[str, dict[str, Any]], video_s: dict[str, float]) -> dict[str, Any]:
    """Counts summed over the videos; time to name over every person; embeddings per video s."""
    summed = (
        "frames_processed",
        "tracks",
        "tracks_changed_person",
        "tracks_changed_person_by_name",
        "tracks_changed_person_by_truth",
        "enrolled_present",
        "enrolled_named",
        "enrolled_named_by_alert",
        "wrong_alerts",
        "wrong_name_frames",
        "wrong_name_faces",
        "named_unlabelled_frames",
        "embeddings",
        "strangers_present",
        "strangers_named",
    )
    out: dict[str, Any] = {}
    for key in summed:
        values = [f[key] for f in per_video.values()]
        out[key] = None if any(v is None for v in values) else sum(values)
    waits = [w for f in per_video.values() for w in f["time_to_name_s"].values()]
    out["time_to_name_summary_s"] = median_max(waits)
    out["never_named"] = sorted(f"{v}:{p}" for v, f in per_video.items() for p in f["never_named"])
    seconds = sum(video_s.values())
    out["video_s"] = round(seconds, 3)
    out["embeddings_per_video_s"] = round(out["embeddings"] / seconds, 2) if seconds else None
    return out


def goals(total: dict[str, Any]) -> dict[str, bool]:
    worst = total["time_to_name_summary_s"]["max"]
    return {
        "no_track_changed_person": total["tracks_changed_person"] == 0,
        "no_wrong_alert": total["wrong_alerts"] == 0,
        "every_enrolled_person_named": total["enrolled_named"] == total["enrolled_present"],
        "named_within_1s": not total["never_named"]
        and worst is not None
        and worst <= GOAL_TIME_TO_NAME_S,
        "no_stranger_named": total["strangers_named"] == 0,
    }


# --- the two ways -----------------------------------------------------------------------------


def alert_frame(alert: Alert, frame_at: FrameClock) -> int | None:
    """The video frame an alert is about: its ``frame_index``, else the processed frame of its
    ``pts_s``, else of its ``ts`` (the wall-clock time the frame was decoded)."""
    if alert.frame_index is not None:
        return alert.frame_index
    if alert.pts_s is not None:
        return frame_at.by_pts.get(round(alert.pts_s, 3))
    return frame_at.by_ts.get(alert.ts)


@dataclass
class FrameClock:
    """Frame indices by the media time and by the wall-clock time of the processed frames."""

    by_pts: dict[float, int] = field(default_factory=dict)
    by_ts: dict[float, int] = field(default_factory=dict)


async def _watch(
    settings: Settings,
    engine: FaceEngine,
    watchlist: Watchlist,
    video: LabelledVideo,
    paced: bool,
) -> tuple[dict[int, list[Shown]], FrameClock, list[Alert], dict[str, Any], float]:
    shown: dict[int, list[Shown]] = {}
    frame_at = FrameClock()
    started = time.perf_counter()
    async with Pipeline(settings, engine, watchlist) as pipeline:
        subscription = pipeline.subscribe(maxsize=1_000_000)
        # Watching before the stream exists: no frame is missed.
        watch = pipeline.watch_frames(STREAM_ID, maxsize=1_000_000)

        async def collect() -> None:
            async for live in watch:
                shown[live.seq] = [
                    Shown(face.track, tuple(face.bbox), face.person)  # type: ignore[arg-type]
                    for face in live.faces
                ]
                frame_at.by_ts[live.captured_at] = live.seq
                frame_at.by_pts[round(live.pts_s, 3)] = live.seq

        collector = asyncio.create_task(collect())
        config = StreamConfig(url=str(video.path), name=video.name, loop=False, realtime=paced)
        await pipeline.add_stream(config, STREAM_ID)
        async with asyncio.timeout(RUN_TIMEOUT_S):
            await pipeline.streams.wait_all_ended()
        await pipeline.close()
        await collector
        summary = pipeline.summary()
    alerts = [alert async for alert in subscription]
    return shown, frame_at, alerts, summary, time.perf_counter() - started


def pipeline_run(
    settings: Settings,
    engine: FaceEngine,
    watchlist: Watchlist,
    video: LabelledVideo,
    paced: bool,
) -> Run:
    try:
        shown, frame_at, alerts, summary, wall = asyncio.run(
            _watch(settings, engine, watchlist, video, paced)
        )
    except TimeoutError:
        progress(f"{video.name}: the pipeline did not finish within {RUN_TIMEOUT_S:.0f} s")
        raise SystemExit(1) from None
    named = [
        NamedAlert(
            a.track,
            a.person,
            alert_frame(a, frame_at),
            (a.bbox[0], a.bbox[1], a.bbox[2], a.bbox[3]),
        )
        for a in alerts
        if a.type in NAMING_ALERTS and a.person
    ]
    stream = summary["streams"].get(STREAM_ID, {})
    return Run(
        shown=shown,
        alerts=named,
        alert_types=dict(Counter(a.type for a in alerts)),
        embeddings=summary["embeddings"],
        wall_s=wall,
        extra={
            "frames_decoded": stream.get("frames_decoded"),
            "dropped": stream.get("dropped"),
            "alerts_suppressed": summary["alerts_suppressed"],
            "alerts_unplaced": sum(1 for a in named if a.frame is None),
        },
    )


def batches(path: Path, size: int) -> Iterator[list[NDArray[np.uint8]]]:
    """The clip's frames as (H, W, 3) BGR, ``size`` at a time (never all of them in memory)."""
    batch: list[NDArray[np.uint8]] = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            batch.append(frame.to_ndarray(format="bgr24"))
            if len(batch) == size:
                yield batch
                batch = []
    if batch:
        yield batch


def per_frame_run(engine: FaceEngine, watchlist: Watchlist, video: LabelledVideo) -> Run:
    """Detect, embed and search every face of every frame; named when best >= threshold.

    Frames go through in the engine's batches at the pipeline's detector input for their shape,
    so the two ways see the same faces; batching changes the cost, not what is found.
    """
    threshold = watchlist.threshold
    size = fitted_detection_size(video.resolution_wh, engine.settings.detection_size)
    names: dict[int, str] = {}
    shown: dict[int, list[Shown]] = {}
    embeddings = 0
    started = time.perf_counter()
    index = 0
    for images in batches(video.path, engine.settings.batch_size):
        found, crops = engine.detect_aligned(images, size)
        stacked = np.concatenate(crops)
        vectors = engine.embed_crops(stacked) if len(stacked) else stacked
        embeddings += len(stacked)
        matches = watchlist.match(vectors) if len(stacked) else []
        ids = [m[0].person_id for m in matches if m and m[0].similarity >= threshold]
        missing = sorted(set(ids) - names.keys())
        if missing:
            names.update(watchlist.store.names(missing))
        row = 0
        for faces in found:
            shown[index] = []
            for i in range(len(faces)):
                candidates = matches[row]
                row += 1
                best = candidates[0] if candidates else None
                name = names[best.person_id] if best and best.similarity >= threshold else None
                x1, y1, x2, y2 = (float(v) for v in faces.xyxy[i])
                shown[index].append(Shown(None, (x1, y1, x2, y2), name))
            index += 1
    return Run(shown, None, {}, embeddings, time.perf_counter() - started)


# --- watchlists -------------------------------------------------------------------------------


def enroll(watchlist: Watchlist, people: dict[str, Sequence[Path]]) -> dict[str, Any]:
    """Each person from their photos (largest face); who could not be enrolled is reported."""
    enrolled: list[str] = []
    faces = rejected = 0
    refused: list[str] = []
    for name, paths in people.items():
        photos = [Photo(str(p), p.read_bytes()) for p in paths]
        try:
            result = watchlist.enroll({"name": name}, photos, largest=True)
        except EnrollmentRejected:
            refused.append(name)
            rejected += len(photos)
            continue
        enrolled.append(name)
        faces += len(result.accepted)
        rejected += len(result.rejected)
    return {
        "persons": sorted(enrolled),
        "faces": faces,
        "photos_rejected": rejected,
        "persons_refused": refused,
    }


def watchlist_people(video: LabelledVideo, root: Path) -> dict[str, Sequence[Path]]:
    people: dict[str, Sequence[Path]] = dict(video.enroll)
    if video.name == HAMILTON:
        for name in HAMILTON_DISTRACTORS:
            people[name] = labelled_video.photos_of(root / "identities" / name)
    return people


def settings_for(data_dir: Path, args: argparse.Namespace) -> Settings:
    return load_settings(
        data_dir=data_dir,
        engine={"providers": args.providers.split(","), "thread_pool_size": args.threads},
        watchlist={"snapshot_interval_s": 0},
        pipeline=PIPELINE_OVERRIDES,
    )


def videos_for(
    names: Sequence[str], quick: bool, root: Path, scale: Path, engine: FaceEngine
) -> list[LabelledVideo]:
    specs = QUICK_SPECS if quick else FULL_SPECS
    out = []
    for name in names:
        if name == HAMILTON:
            out.append(labelled_video.hamilton_video(root))
        else:
            out.append(labelled_video.build(specs[name], root, scale, engine, progress=progress))
    return out


def measure(
    video: LabelledVideo,
    engine: FaceEngine,
    root: Path,
    work: Path,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Both ways on one video, against one fresh watchlist."""
    settings = settings_for(work / video.name, args)
    with Watchlist.open(settings, engine) as watchlist:
        enrolled = enroll(watchlist, watchlist_people(video, root))
        names = set(enrolled["persons"])
        progress(
            f"{video.name}: {video.frames} frames ({video.seconds:.1f} s), "
            f"{len(names)} enrolled, pipeline..."
        )
        piped = evaluate(video, pipeline_run(settings, engine, watchlist, video, args.paced), names)
        progress(f"{video.name}: per-frame identify...")
        naive = evaluate(video, per_frame_run(engine, watchlist, video), names)
    progress(
        f"{video.name}: pipeline named {piped['enrolled_named']}/{piped['enrolled_present']}, "
        f"{piped['tracks_changed_person']} track(s) changed person, "
        f"{piped['wrong_alerts']} wrong alert(s), "
        f"{piped['wrong_name_frames']} wrong-name frame(s); "
        f"per-frame named {naive['enrolled_named']}/{naive['enrolled_present']}, "
        f"{naive['wrong_name_frames']} wrong-name frame(s)"
    )
    return {
        "frames": video.frames,
        "fps": round(video.fps, 3),
        "video_s": round(video.seconds, 3),
        "cuts_at_frames": list(video.cuts),
        "shown_enrolled": list(video.shown),
        "strangers": list(video.strangers),
        "spec": video.spec,
        "watchlist": enrolled,
        "threshold": watchlist.threshold,
        "pipeline": piped,
        "per_frame_identify": naive,
    }


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short clips (4 to 9 s each)")
    parser.add_argument(
        "--videos", default=None, help=f"comma-separated, of {', '.join(VIDEOS)} (default all)"
    )
    parser.add_argument("--json-out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument(
        "--paced", action="store_true", help="play the clips in real time, as a camera would"
    )
    parser.add_argument(
        "--faces-dir",
        type=Path,
        default=None,
        help=f"face data folder (default: ${FACES_ENV} or ../shared/data/faces)",
    )
    parser.add_argument(
        "--scale-dir",
        type=Path,
        default=None,
        help=f"faces_scale folder, for strangers (default: ${SCALE_ENV} or "
        "../shared/data/faces_scale)",
    )
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads")
    parser.add_argument("--providers", default="cpu", help="engine.providers (default cpu)")
    args = parser.parse_args(argv)
    args.videos = args.videos.split(",") if args.videos else list(VIDEOS)
    unknown = [v for v in args.videos if v not in VIDEOS]
    if unknown:
        parser.error(f"unknown videos {unknown}; known: {', '.join(VIDEOS)}")
    if args.threads < 0:
        parser.error("--threads must be >= 0")
    return args


def scale_root(explicit: Path | None) -> Path:
    """--scale-dir, else $FACEWATCH_TEST_FACES_SCALE, else ../shared/data/faces_scale."""
    if explicit is not None:
        return explicit
    return Path(os.environ.get(SCALE_ENV) or REPO.parent / "shared" / "data" / "faces_scale")


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_before = load_average()
    root = faces_root(args.faces_dir)
    scale = scale_root(args.scale_dir)
    if not (root / "identities").is_dir():
        progress(f"face data not found at {root}: pass --faces-dir or set ${FACES_ENV}")
        raise SystemExit(2)
    built = [v for v in args.videos if v != HAMILTON]
    if built and not (scale / "distractors").is_dir():
        progress(f"faces_scale not found at {scale}: pass --scale-dir or set ${SCALE_ENV}")
        raise SystemExit(2)
    with tempfile.TemporaryDirectory(prefix="facewatch-recognition-video-") as tmp:
        work = Path(tmp)
        settings = settings_for(work / "engine", args)
        progress("loading engine")
        engine = FaceEngine.load(settings.engine)
        videos = videos_for(args.videos, args.quick, root, scale, engine)
        per_video = {video.name: measure(video, engine, root, work, args) for video in videos}
    seconds = {name: figures["video_s"] for name, figures in per_video.items()}
    total = {
        way: totals({n: v[way] for n, v in per_video.items()}, seconds)
        for way in ("pipeline", "per_frame_identify")
    }
    return {
        "machine": {
            **host(load_before),
            "onnxruntime": ort.__version__,
            "av": av.__version__,
            "pack": engine.pack.name,
            "providers": engine.providers,
        },
        "mode": "quick" if args.quick else "full",
        "paced": args.paced,
        "pipeline_settings": {
            "overrides": PIPELINE_OVERRIDES,
            "defaults_otherwise": settings.pipeline.model_dump(
                mode="json", exclude=set(PIPELINE_OVERRIDES)
            ),
        },
        "matching": {"iou": MATCH_IOU, "present_s": PRESENT_S, "present_face_px": PRESENT_FACE_PX},
        "videos": per_video,
        "total": total,
        "goals": goals(total["pipeline"]),
    }


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    args = parse_args(argv)
    figures = run(args)
    text = json.dumps(figures, indent=2)
    if args.json_out is not None:
        args.json_out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
