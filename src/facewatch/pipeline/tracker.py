"""Per-stream face tracker: ByteTrack-style association on IoU with constant-velocity motion.

A :class:`Tracker` turns the detections of successive frames of one stream into tracks: the same
face keeps the same id from frame to frame, so that the pipeline embeds a face a few times per
track rather than on every frame, and alerts once per appearance rather than once per frame.

Each track remembers its last matched box and a velocity of its centre and size (pixels per
second), fitted over its recent matched boxes. Before association every track is moved to the
new frame's time, so a frame dropped upstream (a gap in timestamps) moves the prediction further
instead of losing the face. Association then runs in three rounds, as ByteTrack does:

1. confident detections (``score >= high_score``) against confirmed tracks;
2. the remaining confirmed tracks against weak detections (``low_score <= score < high_score``),
   with a stricter IoU, so a face that blurs or is partly hidden for a few frames keeps its id;
3. confident detections still unclaimed against tentative tracks.

A pair is only associated when the box's size changed no more than a face can between the two
frames (``max_scale_change`` per ``scale_step_s``): a face that overlaps the old box after a cut
or a swap, at another size, starts a new track instead of inheriting the old one's identity.

Confident detections left over start tentative tracks. A tentative track is confirmed after
``min_hits`` matched frames (at once when it appears with ``score >= confirm_score``) and only
then gets an id; it dies at its first miss. A confirmed track ends ("lost") once it has gone
unmatched for longer than ``max_age_s`` of frame time.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from facewatch.pipeline.types import Faces
from facewatch.recognizer.boxes import iou_matrix

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

#: The id reported for a detection that belongs to no confirmed track.
NO_TRACK = -1

# The velocity is the least-squares slope of the matched boxes over this much recent time: long
# enough to average out a few pixels of detector jitter (which, divided by a 40 ms frame
# interval, would otherwise read as ~100 px/s), short enough to follow a face that turns or
# stops. At most _HISTORY boxes are kept, which bounds the work at high frame rates.
_VELOCITY_WINDOW_S = 0.5
_HISTORY = 16
# A predicted box never shrinks below this many pixels a side, so an extrapolated shrinking
# face still has an area to intersect.
_MIN_SIDE = 1.0


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    """How detections become tracks.

    Attributes:
        high_score: detections at or above this score take part in the first association
            round and may start tracks.
        low_score: detections in ``[low_score, high_score)`` take part in the second round only:
            they keep confirmed tracks alive through blur or occlusion but never start a track.
            Detections below it are ignored.
        match_iou: minimum IoU between a track's predicted box and a detection to associate them
            in the first and third rounds.
        low_match_iou: the same for the second round (weak detections); stricter, because a weak
            detection is more likely a false one.
        min_hits: matched frames (the first included) before a tentative track is confirmed.
        confirm_score: a track whose first detection scores at least this is confirmed at once.
        max_age_s: seconds of frame time a confirmed track may go unmatched before it ends.
        max_scale_change: the most a box's side may grow or shrink (as a factor) between a
            track's prediction and its detection over ``scale_step_s`` or less; over a longer
            gap the factor compounds (``max_scale_change ** (gap / scale_step_s)``).
        scale_step_s: see ``max_scale_change``.
    """

    high_score: float = 0.6
    low_score: float = 0.3
    match_iou: float = 0.3
    low_match_iou: float = 0.5
    min_hits: int = 2
    confirm_score: float = 0.8
    max_age_s: float = 1.0
    max_scale_change: float = 1.4
    scale_step_s: float = 0.2

    def __post_init__(self) -> None:
        if not 0.0 <= self.low_score <= self.high_score <= 1.0:
            raise ValueError("need 0 <= low_score <= high_score <= 1")
        if not (0.0 < self.match_iou <= 1.0 and 0.0 < self.low_match_iou <= 1.0):
            raise ValueError("match_iou and low_match_iou must be in (0, 1]")
        if self.min_hits < 1:
            raise ValueError("min_hits must be at least 1")
        if self.max_age_s < 0:
            raise ValueError("max_age_s must not be negative")
        if self.max_scale_change < 1.0 or self.scale_step_s <= 0:
            raise ValueError("max_scale_change must be at least 1 and scale_step_s positive")


@dataclass(frozen=True, slots=True)
class TrackUpdate:
    """What one frame did to the tracks.

    Attributes:
        track_ids: (N,) int64, for each detection of the frame (in the order of the ``Faces``
            given) the id of its confirmed track, or ``NO_TRACK`` (-1) for a detection that is
            unassociated, below ``low_score``, or only part of a tentative track.
        started: ids of the tracks confirmed by this update, increasing.
        ended: ids of the tracks that ended in this update (lost, or all of them when the
            timestamps went back), increasing.
    """

    track_ids: I64
    started: tuple[int, ...]
    ended: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.track_ids.ndim != 1 or self.track_ids.dtype != np.int64:
            raise ValueError(
                f"track_ids must be (N,) int64, got {self.track_ids.shape} {self.track_ids.dtype}"
            )


def greedy_match(iou: F64, threshold: float) -> list[tuple[int, int]]:
    """Pairs (row, column) of ``iou``, best first, each row and column used at most once.

    Greedy rather than Hungarian: faces in one frame rarely overlap, so nearly every row has at
    most one column above the threshold and both give the same pairs. Where they could differ
    (two faces crossing) the boxes are motion-predicted, so the true pair has the higher IoU,
    which greedy takes first, whereas Hungarian maximises the sum and may trade one good pair
    for two middling ones. It is also a few lines of NumPy with no dependency.

    Args:
        iou: (A, B) IoU matrix.
        threshold: minimum IoU of a pair.

    Returns:
        The chosen (row, column) pairs in order of descending IoU (ties in row-major order).
    """
    rows, cols = np.nonzero(iou >= threshold)
    order = np.argsort(-iou[rows, cols], kind="stable")
    used_rows: set[int] = set()
    used_cols: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for k in order:
        r, c = int(rows[k]), int(cols[k])
        if r in used_rows or c in used_cols:
            continue
        used_rows.add(r)
        used_cols.add(c)
        pairs.append((r, c))
    return pairs


def plausible_scale(
    predicted_xyxy: F64, detected_xyxy: F32 | F64, gaps_s: F64, config: TrackerConfig
) -> NDArray[np.bool_]:
    """Whether each detection's size is one a track's face can reach in its time gap.

    Args:
        predicted_xyxy: (A, 4) the tracks' predicted boxes.
        detected_xyxy: (B, 4) the detections' boxes.
        gaps_s: (A,) seconds since each track was last matched.
        config: ``max_scale_change`` and ``scale_step_s``.

    Returns:
        (A, B) True where the geometric mean side changed by at most the allowed factor.
    """
    a = np.asarray(predicted_xyxy, np.float64).reshape(-1, 4)
    b = np.asarray(detected_xyxy, np.float64).reshape(-1, 4)
    side_a = np.sqrt(np.clip((a[:, 2:] - a[:, :2]).prod(axis=1), _MIN_SIDE**2, None))
    side_b = np.sqrt(np.clip((b[:, 2:] - b[:, :2]).prod(axis=1), _MIN_SIDE**2, None))
    steps = np.maximum(1.0, np.asarray(gaps_s, np.float64) / config.scale_step_s)
    allowed = steps * np.log(config.max_scale_change)
    change = np.abs(np.log(side_b[None, :] / side_a[:, None]))
    plausible: NDArray[np.bool_] = change <= allowed[:, None] + 1e-9
    return plausible


def _to_cxcywh(xyxy: F32 | F64) -> F64:
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], np.float64)


def _to_xyxy(cxcywh: F64) -> F64:
    cx, cy = cxcywh[0], cxcywh[1]
    w, h = max(float(cxcywh[2]), _MIN_SIDE), max(float(cxcywh[3]), _MIN_SIDE)
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], np.float64)


@dataclass(slots=True)
class _Track:
    """One track's motion state; ``track_id`` is ``NO_TRACK`` while it is tentative."""

    xyxy: F32  # (4,) last matched box
    last_ts: float  # frame time of the last match, seconds
    hits: int = 1
    track_id: int = NO_TRACK
    velocity: F64 = field(default_factory=lambda: np.zeros(4, np.float64))  # (4,) cxcywh per s
    history: deque[tuple[float, F64]] = field(default_factory=lambda: deque(maxlen=_HISTORY))

    def __post_init__(self) -> None:
        self.history.append((self.last_ts, _to_cxcywh(self.xyxy)))

    def predict(self, ts: float) -> F64:
        """(4,) xyxy where the face should be at ``ts``, by constant velocity."""
        return _to_xyxy(self.history[-1][1] + self.velocity * (ts - self.last_ts))

    def observe(self, xyxy: F32, ts: float) -> None:
        self.xyxy = np.asarray(xyxy, np.float32).copy()
        self.last_ts = ts
        self.hits += 1
        history = self.history
        history.append((ts, _to_cxcywh(self.xyxy)))
        while len(history) > 2 and history[0][0] < ts - _VELOCITY_WINDOW_S:
            history.popleft()
        times = np.array([t for t, _ in history], np.float64)
        states = np.stack([s for _, s in history])
        dt = times - times.mean()
        denom = float(dt @ dt)
        # Two boxes at the same time (a repeated timestamp) say nothing about speed: keep the
        # last estimate rather than divide by zero.
        if denom > 0:
            self.velocity = dt @ (states - states.mean(axis=0)) / denom


class Tracker:
    """Tracks the faces of one stream; not thread-safe (one stream, one task).

    Args:
        config: association and lifetime settings.
        first_id: the id of the first confirmed track; ids then increase by one per track.
    """

    def __init__(self, config: TrackerConfig = TrackerConfig(), first_id: int = 1) -> None:
        self.config = config
        self._next_id = first_id
        self._confirmed: dict[int, _Track] = {}
        self._tentative: list[_Track] = []
        self._last_ts: float | None = None

    @property
    def active(self) -> tuple[int, ...]:
        """Ids of the confirmed tracks still alive, increasing."""
        return tuple(sorted(self._confirmed))

    def box(self, track_id: int) -> F32:
        """(4,) xyxy last matched box of a live confirmed track; KeyError if there is none."""
        return self._confirmed[track_id].xyxy.copy()

    def split(self, track_id: int) -> int:
        """Give a live confirmed track a new id (its face turned out to be someone else's).

        The box and motion stay: the face is still where it was; only who it is starts over.

        Returns:
            The new id. Raises KeyError when ``track_id`` is not a live confirmed track.
        """
        track = self._confirmed.pop(track_id)
        return self._confirm(track)

    def flush(self) -> tuple[int, ...]:
        """End every track (the stream stopped or ended); returns the confirmed ids ended."""
        ended = self.active
        self._confirmed.clear()
        self._tentative.clear()
        self._last_ts = None
        return ended

    def update(self, faces: Faces, ts: float) -> TrackUpdate:
        """Associate one frame's detections with the tracks.

        Args:
            faces: the frame's detections (N of them; may be empty, which still ages tracks).
            ts: the frame's time in seconds (presentation or monotonic time), non-decreasing
                within an epoch. A time earlier than the previous frame's (a looping file
                starting over) ends every track and starts afresh.

        Returns:
            The track id of each detection and the tracks started and ended.
        """
        if not math.isfinite(ts):
            raise ValueError(f"ts must be finite, got {ts}")
        cfg = self.config
        ended: list[int] = []
        if self._last_ts is not None and ts < self._last_ts:
            ended.extend(self.flush())
        self._last_ts = ts

        n = len(faces)
        track_ids = np.full(n, NO_TRACK, np.int64)
        score = faces.score
        high = np.flatnonzero(score >= cfg.high_score).tolist()
        low = np.flatnonzero((score >= cfg.low_score) & (score < cfg.high_score)).tolist()

        # Tracks unseen for too long end before association, so that a face coming back after
        # max_age_s starts a new track however close it is to where the old one was.
        for track in list(self._confirmed.values()):
            if ts - track.last_ts > cfg.max_age_s:
                del self._confirmed[track.track_id]
                ended.append(track.track_id)
        confirmed = list(self._confirmed.values())
        # Round 1: confident detections against confirmed tracks.
        pairs1, rest_tracks, rest_high = self._associate(confirmed, faces, high, ts, cfg.match_iou)
        # Round 2: weak detections keep the remaining confirmed tracks alive.
        pairs2, _, _ = self._associate(rest_tracks, faces, low, ts, cfg.low_match_iou)
        for track, det in pairs1 + pairs2:
            track.observe(faces.xyxy[det], ts)
            track_ids[det] = track.track_id

        # Round 3: confident detections left over against tentative tracks; a tentative track
        # that misses here dies, since a face seen once and gone was most likely no face.
        pairs3, _, new_dets = self._associate(self._tentative, faces, rest_high, ts, cfg.match_iou)
        started: list[int] = []
        tentative: list[_Track] = []
        for track, det in pairs3:
            track.observe(faces.xyxy[det], ts)
            if track.hits >= cfg.min_hits:
                track_ids[det] = self._confirm(track)
                started.append(int(track_ids[det]))
            else:
                tentative.append(track)
        for det in new_dets:
            track = _Track(xyxy=faces.xyxy[det].astype(np.float32), last_ts=ts)
            if cfg.min_hits <= 1 or score[det] >= cfg.confirm_score:
                track_ids[det] = self._confirm(track)
                started.append(int(track_ids[det]))
            else:
                tentative.append(track)
        self._tentative = tentative
        return TrackUpdate(track_ids=track_ids, started=tuple(started), ended=tuple(sorted(ended)))

    def _confirm(self, track: _Track) -> int:
        track.track_id = self._next_id
        self._next_id += 1
        self._confirmed[track.track_id] = track
        return track.track_id

    def _associate(
        self, tracks: list[_Track], faces: Faces, dets: Sequence[int], ts: float, threshold: float
    ) -> tuple[list[tuple[_Track, int]], list[_Track], list[int]]:
        """Match ``tracks`` (predicted to ``ts``) with the detections ``dets`` of ``faces``.

        Returns:
            The matched (track, detection index) pairs, the unmatched tracks, and the unmatched
            detection indices in their given order.
        """
        if not tracks or not dets:
            return [], list(tracks), list(dets)
        predicted = np.stack([t.predict(ts) for t in tracks])
        boxes = faces.xyxy[list(dets)]
        iou = iou_matrix(predicted, boxes)
        gaps = np.array([ts - t.last_ts for t in tracks], np.float64)
        iou[~plausible_scale(predicted, boxes, gaps, self.config)] = 0.0
        pairs = greedy_match(iou, threshold)
        matched_tracks = {r for r, _ in pairs}
        matched_dets = {c for _, c in pairs}
        return (
            [(tracks[r], dets[c]) for r, c in pairs],
            [t for i, t in enumerate(tracks) if i not in matched_tracks],
            [d for j, d in enumerate(dets) if j not in matched_dets],
        )
