"""Tracker: association, confirmation, loss, motion prediction and epochs, as tables of frames."""

from __future__ import annotations

import numpy as np
import pytest
from builders import make_faces, square

from facewatch.pipeline.tracker import (
    NO_TRACK,
    Tracker,
    TrackerConfig,
    TrackUpdate,
    greedy_match,
    plausible_scale,
)
from facewatch.pipeline.types import Faces
from facewatch.recognizer.boxes import iou_matrix

# One detection: centre x, centre y (pixels) and score; every box is 100 x 100 pixels.
Det = tuple[float, float, float]
# One frame: its time in seconds and its detections, in the order the detector gives them.
FrameSpec = tuple[float, list[Det]]


def faces_of(dets: list[Det]) -> Faces:
    return make_faces([square(cx, cy) for cx, cy, _s in dets], score=[s for _c, _y, s in dets])


def run(frames: list[FrameSpec]) -> list[TrackUpdate]:
    tracker = Tracker()
    return [tracker.update(faces_of(dets), ts) for ts, dets in frames]


def times(n: int, step: float = 0.1, start: float = 0.0) -> list[float]:
    return [round(start + i * step, 6) for i in range(n)]


def _crossing() -> list[FrameSpec]:
    # A moves right and B left at 400 px/s, 10 px apart vertically, passing each other
    # between two frames (t = 0.525): right after, each is nearer the other's last box than its
    # own, so only motion keeps them apart. The detector lists them in a different order on
    # every other frame.
    frames: list[FrameSpec] = []
    for i, t in enumerate(times(11)):
        a, b = (100 + 400 * t, 200.0, 0.9), (520 - 400 * t, 210.0, 0.9)
        frames.append((t, [a, b] if i % 2 == 0 else [b, a]))
    return frames


def _moving(ts: list[float], speed: float, score: float = 0.9) -> list[FrameSpec]:
    return [(t, [(100 + speed * t, 200.0, score)]) for t in ts]


still = (300.0, 300.0, 0.9)
weak = (300.0, 300.0, 0.45)  # between low_score and high_score
faint = (300.0, 300.0, 0.2)  # below low_score
unsure = (300.0, 300.0, 0.7)  # confident, but below confirm_score

# (frames, expected track ids per frame, {frame index: ended ids})
CASES = {
    "linear motion keeps its id": (
        _moving(times(10, 0.04), 300.0),
        [[1]] * 10,
        {},
    ),
    "two faces crossing keep their ids": (
        _crossing(),
        [[1, 2] if i % 2 == 0 else [2, 1] for i in range(11)],
        {},
    ),
    "missing for less than max_age keeps its id": (
        [(0.0, [still]), (0.1, [still])] + [(t, []) for t in times(8, 0.1, 0.2)] + [(1.0, [still])],
        [[1], [1]] + [[]] * 8 + [[1]],
        {},
    ),
    "missing for more than max_age ends, a new id starts": (
        [(0.0, [still]), (0.1, [still]), (0.6, []), (1.2, []), (1.3, [still])],
        [[1], [1], [], [], [2]],
        {3: (1,)},
    ),
    "coming back after max_age without frames between ends the old track": (
        [(0.0, [still]), (0.1, [still]), (1.5, [still])],
        [[1], [1], [2]],
        {2: (1,)},
    ),
    "single weak frame never starts a track": (
        [(0.0, [weak]), (0.1, [weak]), (0.2, [weak])],
        [[NO_TRACK], [NO_TRACK], [NO_TRACK]],
        {},
    ),
    "tentative track confirmed at min_hits": (
        [(0.0, [unsure]), (0.1, [unsure]), (0.2, [unsure])],
        [[NO_TRACK], [1], [1]],
        {},
    ),
    "tentative track dies at its first miss": (
        [(0.0, [unsure]), (0.1, []), (0.2, [unsure]), (0.3, [unsure])],
        [[NO_TRACK], [], [NO_TRACK], [1]],
        {},
    ),
    "weak detections keep a track alive past max_age": (
        [(0.0, [still])] + [(t, [weak]) for t in times(15, 0.1, 0.1)] + [(1.6, [still])],
        [[1]] * 17,
        {},
    ),
    "detections below low_score are ignored": (
        [(0.0, [still]), (0.5, [faint]), (1.2, [faint]), (1.3, [still])],
        [[1], [NO_TRACK], [NO_TRACK], [2]],
        {2: (1,)},
    ),
    "a weak detection beside the track does not hold it": (
        [(0.0, [still]), (0.5, [(360.0, 300.0, 0.45)]), (1.2, [])],
        [[1], [NO_TRACK], []],
        {2: (1,)},
    ),
    "timestamp going back ends every track": (
        [(10.0, [still]), (10.1, [still]), (0.0, [still]), (0.1, [still])],
        [[1], [1], [2], [2]],
        {2: (1,)},
    ),
    "empty frames": (
        [(t, []) for t in times(5)],
        [[]] * 5,
        {},
    ),
    "jittery still face bridges a gap": (
        # +-4 px of detector jitter at 25 fps must not read as a speed that carries the
        # prediction away during 0.6 s without detections.
        [
            (t, [(300.0 + 4 * (-1) ** i, 300.0 - 4 * (-1) ** i, 0.9)])
            for i, t in enumerate(times(10, 0.04))
        ]
        + [(t, []) for t in times(14, 0.04, 0.40)]
        + [(0.96, [still])],
        [[1]] * 10 + [[]] * 14 + [[1]],
        {},
    ),
    "dropped frames bridged by motion prediction": (
        # 300 px/s, then nothing for 0.5 s: the face moves 150 px, more than its own size, so
        # only the predicted box overlaps it.
        _moving(times(4) + [0.8, 0.9], 300.0),
        [[1]] * 6,
        {},
    ),
}


@pytest.mark.parametrize(("frames", "expected_ids", "expected_ended"), CASES.values(), ids=CASES)
def test_tracker_scenarios(
    frames: list[FrameSpec], expected_ids: list[list[int]], expected_ended: dict[int, tuple[int]]
) -> None:
    updates = run(frames)
    assert [u.track_ids.tolist() for u in updates] == expected_ids
    assert [u.ended for u in updates] == [expected_ended.get(i, ()) for i in range(len(frames))]
    # Every id is announced in `started` exactly once, on the first frame that reports it.
    seen: set[int] = set()
    for update in updates:
        new = {int(i) for i in update.track_ids if i != NO_TRACK} - seen
        assert set(update.started) == new
        seen |= new


def test_without_motion_prediction_the_dropped_frames_case_would_lose_the_face() -> None:
    # Guards the case above: the last seen box and the face after the gap do not overlap.
    before, after = square(100 + 300 * 0.3, 200), square(100 + 300 * 0.8, 200)
    assert iou_matrix(np.array([before]), np.array([after]))[0, 0] == 0.0


def test_ids_are_unique_and_increasing_and_flush_ends_all() -> None:
    tracker = Tracker(first_id=10)
    update = tracker.update(faces_of([(100, 100, 0.9), (400, 100, 0.9), (700, 100, 0.7)]), 0.0)
    assert update.track_ids.tolist() == [10, 11, NO_TRACK] and update.started == (10, 11)
    update = tracker.update(faces_of([(700, 100, 0.7), (100, 100, 0.9)]), 0.1)
    assert update.track_ids.tolist() == [12, 10] and update.started == (12,)
    assert tracker.active == (10, 11, 12)
    assert tracker.box(10).tolist() == square(100, 100)
    assert tracker.flush() == (10, 11, 12)
    assert tracker.active == () and tracker.flush() == ()
    with pytest.raises(KeyError):
        tracker.box(10)
    assert tracker.update(faces_of([(100, 100, 0.9)]), 0.0).track_ids.tolist() == [13]


def test_confirmed_track_takes_the_detection_before_a_tentative_one() -> None:
    tracker = Tracker()
    tracker.update(faces_of([(300, 300, 0.9)]), 0.0)
    update = tracker.update(faces_of([(305, 300, 0.9)]), 0.1)
    assert update.track_ids.tolist() == [1] and update.started == ()


def test_non_finite_time_is_rejected() -> None:
    with pytest.raises(ValueError, match="finite"):
        Tracker().update(Faces.empty(), float("nan"))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"low_score": 0.7, "high_score": 0.6},
        {"match_iou": 0.0},
        {"low_match_iou": 1.5},
        {"min_hits": 0},
        {"max_age_s": -1.0},
    ],
    ids=["low above high", "zero iou", "iou above one", "no hits", "negative age"],
)
def test_config_is_validated(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        TrackerConfig(**kwargs)  # type: ignore[arg-type]


IOU_CASES = {
    "identical": ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
    "disjoint": ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),
    "touching": ([0, 0, 10, 10], [10, 0, 20, 10], 0.0),
    "half overlap": ([0, 0, 10, 10], [5, 0, 15, 10], 50 / 150),
    "contained": ([0, 0, 10, 10], [0, 0, 5, 5], 0.25),
    "both empty": ([0, 0, 0, 0], [0, 0, 0, 0], 0.0),
}


@pytest.mark.parametrize(("a", "b", "expected"), IOU_CASES.values(), ids=IOU_CASES)
def test_iou(a: list[float], b: list[float], expected: float) -> None:
    assert iou_matrix(np.array([a]), np.array([b]))[0, 0] == pytest.approx(expected)


def test_iou_matrix_shapes() -> None:
    a = np.array([square(0, 0), square(50, 0), square(500, 0)])
    b = np.array([square(0, 0), square(500, 0)])
    iou = iou_matrix(a, b)
    assert iou.shape == (3, 2)
    assert iou_matrix(a, np.zeros((0, 4))).shape == (3, 0)
    assert iou.argmax(axis=1).tolist() == [0, 0, 1]


MATCH_CASES = {
    "diagonal": ([[0.9, 0.1], [0.1, 0.8]], 0.3, [(0, 0), (1, 1)]),
    "below threshold": ([[0.2, 0.0], [0.0, 0.25]], 0.3, []),
    "best pair first": ([[0.6, 0.5], [0.9, 0.0]], 0.3, [(1, 0), (0, 1)]),
    "one column for two rows": ([[0.6], [0.7]], 0.3, [(1, 0)]),
    "empty": (np.zeros((0, 3)), 0.3, []),
}


@pytest.mark.parametrize(("iou", "threshold", "expected"), MATCH_CASES.values(), ids=MATCH_CASES)
def test_greedy_match(
    iou: list[list[float]], threshold: float, expected: list[tuple[int, int]]
) -> None:
    assert greedy_match(np.asarray(iou, np.float64), threshold) == expected


# (side at t=0, side at t=gap, gap in seconds, same track?) for a face that stays centred on
# one place and changes size: a face can come closer, but not double in a frame.
SCALE_CASES = {
    "steady size": (100.0, 100.0, 0.04, True),
    "grows 30 % in a frame": (100.0, 130.0, 0.04, True),
    # IoU 0.44 and 0.5 would keep these two: only the size gives the other face away.
    "grows 1.5x in a frame: another face": (100.0, 150.0, 0.04, False),
    "shrinks to 0.7x in a frame: another face": (100.0, 70.0, 0.04, False),
    "grows 1.5x over a second: came closer": (100.0, 150.0, 1.0, True),
}


@pytest.mark.parametrize(("before", "after", "gap", "same"), SCALE_CASES.values(), ids=SCALE_CASES)
def test_a_box_that_jumps_in_size_starts_a_new_track(
    before: float, after: float, gap: float, same: bool
) -> None:
    tracker = Tracker(TrackerConfig(max_age_s=2.0))
    first = tracker.update(make_faces([square(300, 300, before)]), 0.0)
    second = tracker.update(make_faces([square(300, 300, after)]), gap)
    (track,) = first.track_ids.tolist()
    assert (second.track_ids.tolist() == [track]) is same
    if not same:
        assert second.track_ids[0] not in (track, NO_TRACK)  # the new face starts its own track


def test_plausible_scale_is_a_pure_table() -> None:
    predicted = np.array([square(0, 0, 100), square(0, 0, 100)], np.float64)
    detected = np.array([square(0, 0, 139), square(0, 0, 141)], np.float32)
    allowed = plausible_scale(predicted, detected, np.array([0.04, 0.4]), TrackerConfig())
    # 1.4 per 0.2 s: 139 px fits in a frame, 141 px does not; 0.4 s allows 1.4 ** 2 = 1.96.
    assert allowed.tolist() == [[True, False], [True, True]]


def test_split_gives_the_face_a_new_id_and_keeps_following_it() -> None:
    tracker = Tracker()
    (track,) = tracker.update(make_faces([square(300, 300)]), 0.0).track_ids.tolist()
    new = tracker.split(track)
    assert new != track and tracker.active == (new,)
    update = tracker.update(make_faces([square(305, 300)]), 0.04)
    assert update.track_ids.tolist() == [new] and update.ended == ()
    with pytest.raises(KeyError):
        tracker.split(track)
