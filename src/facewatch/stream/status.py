"""What a stream is doing: its state, rates, counters and last error.

:class:`StreamStats` is written by a stream's decode thread and by the pipeline on the event
loop, so every access takes its lock; :meth:`StreamStats.snapshot` hands out an immutable
:class:`StreamStatus`.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field, fields
from typing import Any, Literal

StreamState = Literal["starting", "running", "paused", "reconnecting", "ended", "stopped"]

#: Reasons a frame is dropped, as counted in :attr:`StreamStatus.dropped`.
DROP_REASONS = ("fps_cap", "queue_full", "paused", "decode_error", "detect_error")


@dataclass(frozen=True, slots=True)
class StreamStatus:
    """A snapshot of one stream.

    Attributes:
        id: the stream id.
        name: its human name (the id when it has none).
        url: its URL with credentials replaced by ``***``.
        state: starting, running, paused, reconnecting, ended (a file reached its end, or
            could not be read; it stays "ended" once stopped) or stopped (removed, or the
            manager closed).
        input_fps: frames decoded per second over the last few seconds.
        processed_fps: frames per second the pipeline reported done over the last few seconds.
        frames_decoded: frames decoded since the stream was added, dropped ones included.
        frames_processed: frames the pipeline reported done.
        dropped: frames dropped, by reason: fps_cap, paused, queue_full (here or in the
            pipeline), and whatever else the pipeline reports. ``decode_error`` counts packets
            that could not be decoded and frames the decoder had to patch up (damaged data),
            which are not in ``frames_decoded``; every other decoded frame is processed,
            dropped or still on its way.
        reconnects: attempts to reopen the source after it failed.
        last_error: the last failure, credentials redacted; None when it never failed.
        last_error_at: when that was, UNIX seconds.
        lag_s: for the last processed frame, seconds from its decoding to the end of its
            processing.
        resolution_wh: width, height of the last decoded frame in pixels.
    """

    id: str
    name: str
    url: str
    state: StreamState
    input_fps: float
    processed_fps: float
    frames_decoded: int
    frames_processed: int
    dropped: dict[str, int]
    reconnects: int
    last_error: str | None
    last_error_at: float | None
    lag_s: float | None
    resolution_wh: tuple[int, int] | None

    def as_dict(self) -> dict[str, Any]:
        """Plain values, ready for JSON."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["dropped"] = dict(self.dropped)
        out["resolution_wh"] = list(self.resolution_wh) if self.resolution_wh else None
        return out


@dataclass(slots=True)
class RateMeter:
    """Events per second over a sliding window, in bounded memory. No I/O: pass the time.

    Until the window has been filled once the rate is taken over the time since the first
    event (at least ``min_span_s``), so it is right early on without a spike at the start.
    """

    window_s: float = 5.0
    min_span_s: float = 1.0
    max_events: int = 4096
    _times: deque[float] = field(default_factory=deque)
    _first: float | None = None

    def add(self, now: float) -> None:
        """One event at ``now`` (monotonic seconds)."""
        if self._first is None:
            self._first = now
        self._times.append(now)
        if len(self._times) > self.max_events:
            self._times.popleft()

    def rate(self, now: float) -> float:
        """Events per second over the last ``window_s`` before ``now``."""
        horizon = now - self.window_s
        while self._times and self._times[0] <= horizon:
            self._times.popleft()
        if not self._times or self._first is None:
            return 0.0
        if len(self._times) == self.max_events:
            # More events in the window than we keep: measure over the ones kept.
            span = now - self._times[0]
            return (len(self._times) - 1) / span if span > 0 else 0.0
        return len(self._times) / max(now - max(horizon, self._first), self.min_span_s)


class StreamStats:
    """The counters of one stream, shared by its decode thread and the event loop."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.state: StreamState = "starting"
        self.frames_decoded = 0
        self.frames_processed = 0
        self.dropped: Counter[str] = Counter()
        self.reconnects = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.lag_s: float | None = None
        self.resolution_wh: tuple[int, int] | None = None
        self.input_rate = RateMeter()
        self.processed_rate = RateMeter()

    def drop(self, reason: str, n: int = 1) -> None:
        with self.lock:
            self.dropped[reason] += n

    def error(self, message: str) -> None:
        with self.lock:
            self.last_error = message
            self.last_error_at = time.time()

    def processed(self, decoded_at: float) -> None:
        now = time.monotonic()
        with self.lock:
            self.frames_processed += 1
            self.processed_rate.add(now)
            self.lag_s = max(0.0, now - decoded_at)

    def snapshot(self, *, stream_id: str, name: str, url: str, paused: bool) -> StreamStatus:
        """The current status; ``paused`` shows as the state unless the stream is over."""
        now = time.monotonic()
        with self.lock:
            state = self.state
            if paused and state not in ("ended", "stopped"):
                state = "paused"
            return StreamStatus(
                id=stream_id,
                name=name,
                url=url,
                state=state,
                input_fps=round(self.input_rate.rate(now), 2),
                processed_fps=round(self.processed_rate.rate(now), 2),
                frames_decoded=self.frames_decoded,
                frames_processed=self.frames_processed,
                dropped=dict(self.dropped),
                reconnects=self.reconnects,
                last_error=self.last_error,
                last_error_at=self.last_error_at,
                lag_s=self.lag_s,
                resolution_wh=self.resolution_wh,
            )
