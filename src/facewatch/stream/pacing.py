"""Timing rules for frames, with no I/O: monotonic timestamps, real-time pacing, an fps cap.

Each takes the current time as an argument, so tests drive them with tables of numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Frame interval assumed until two timestamps have been seen (30 frames/s).
DEFAULT_STEP_S = 1 / 30


@dataclass(slots=True)
class PtsClock:
    """Turns a source's timestamps into a non-decreasing timeline across loops and reconnects.

    The timeline starts at 0 with the stream's first frame, whatever the source's origin (an
    MP4 whose first frame is stamped 0.85 s, a camera's clock): a frame's time is where it lies in
    the stream, which alerts report (``pts_s``) and players seek to. A looping file starts again
    at 0 and a reconnected camera restarts its clock; downstream (trackers, pacing, the fps cap)
    needs time that never runs backwards. After
    :meth:`new_segment` the next frame continues one frame interval after the last one,
    whatever the source says. Inside a segment a small step back (reordering jitter) is
    clamped to the last time; a large one (a source that restarted on its own) is treated
    like a new segment.
    """

    last_s: float | None = None
    offset_s: float = 0.0
    step_s: float = DEFAULT_STEP_S
    _segment_start: bool = True
    _step_known: bool = False

    def new_segment(self) -> None:
        """The source starts over (loop, reconnect): its next timestamp is not comparable."""
        self._segment_start = True

    def __call__(self, pts_s: float | None) -> float:
        """The monotonic time of a frame whose source timestamp is ``pts_s`` (None: unknown)."""
        last = self.last_s
        if last is None:
            out = 0.0
            self.offset_s = 0.0 if pts_s is None else -pts_s
        elif pts_s is None:
            # No timestamp (some MJPEG sources): assume the usual frame interval.
            out = last + self.step_s
        else:
            out = pts_s + self.offset_s
            if self._segment_start or last - out > max(2 * self.step_s, 0.1):
                self.offset_s += last + self.step_s - out
                out = last + self.step_s
            elif out < last:
                out = last
            elif not self._step_known and out > last:
                self.step_s, self._step_known = out - last, True
            elif last < out <= last + 4 * self.step_s:
                # Follow the frame interval smoothly, ignoring gaps (lost packets, pauses).
                self.step_s += 0.25 * (out - last - self.step_s)
        self._segment_start = False
        self.last_s = out
        return out


@dataclass(slots=True)
class Pacer:
    """How long to wait before handing over a frame so a file plays at its own rate.

    The first frame anchors the source timeline to the clock. When the consumer falls more
    than ``max_behind_s`` behind (or a timestamp jumps more than ``max_wait_s`` ahead) the
    anchor moves instead of bursting frames out, or stalling, to catch up.
    """

    max_behind_s: float = 0.5
    max_wait_s: float = 2.0
    _anchor: tuple[float, float] | None = None  # (pts_s, monotonic seconds)

    def wait_s(self, pts_s: float, now: float) -> float:
        """Seconds to wait before the frame stamped ``pts_s`` is due; ``now`` is monotonic."""
        if self._anchor is None:
            self._anchor = (pts_s, now)
            return 0.0
        pts0, t0 = self._anchor
        delay = t0 + (pts_s - pts0) - now
        if delay < -self.max_behind_s or delay > self.max_wait_s:
            self._anchor = (pts_s, now)
            return 0.0
        return max(0.0, delay)


@dataclass(slots=True)
class FpsCap:
    """Keeps at most ``fps`` frames per second of the source's timeline, spread evenly.

    The timeline is the frame's monotonic pts, not the wall clock: an unpaced file capped at
    10 frames/s keeps every third frame of a 30 frames/s clip however fast it decodes, and a
    live source's pts follow the wall clock anyway.
    """

    fps: float
    tolerance: float = 0.1  # of an interval: timestamps jitter by a few milliseconds
    _next_s: float | None = None
    _last_s: float | None = None

    def __post_init__(self) -> None:
        if self.fps <= 0:
            raise ValueError("fps must be > 0")

    def admit(self, pts_s: float) -> bool:
        """True when the frame stamped ``pts_s`` (seconds, non-decreasing) is kept."""
        interval = 1.0 / self.fps
        due, last = self._next_s, self._last_s
        self._last_s = pts_s
        # Early by less than the jitter allowance still counts as due; never by half a
        # source frame or more, or a low cap would take the frame before the due one.
        slack = self.tolerance * interval
        if last is not None and pts_s > last:
            slack = min(slack, 0.5 * (pts_s - last))
        if due is not None and pts_s < due - slack:
            return False
        # Step from the due time, not from pts_s, so the long-run rate is exactly fps; after
        # a gap longer than an interval start afresh rather than letting a burst through.
        if due is None or pts_s - due >= interval:
            self._next_s = pts_s + interval
        else:
            self._next_s = due + interval
        return True
