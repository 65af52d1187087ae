"""Alerts: what the pipeline tells the world, their snapshots, and their subscribers.

Every subscriber has its own bounded queue; :meth:`AlertBus.publish` never waits. A subscriber
whose queue is full is dropped (its iterator ends and ``overflowed`` is set), so a stuck client
can neither slow the pipeline nor the other subscribers.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from numpy.typing import NDArray

log = logging.getLogger(__name__)

AlertType = Literal["match", "update", "ended", "unknown"]
#: Room around a face in its snapshot, as a fraction of the box side.
SNAPSHOT_MARGIN = 0.25


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert.

    Attributes:
        id: unique, sortable by creation time.
        type: ``match`` (a track is first named), ``update`` (the same person, clearly
            more certain), ``ended`` (a named track was lost), ``unknown`` (a track nobody
            matches, when enabled).
        stream: stream id.
        track: track id within the stream.
        person_id, person: who, or None for ``unknown``.
        similarity: cosine similarity of the track's evidence to the person (best person for
            ``unknown``), None when nothing was searched.
        bbox: [x1, y1, x2, y2] of the face in frame pixels.
        ts: wall-clock time (UNIX seconds) of the frame the alert is about.
        track_started_at: wall-clock time the track was first seen.
        pts_s: media time, in seconds, of the alert's frame in its stream (the frame of the
            snapshot; for ``ended``, the last frame the face was seen in): where in the video.
            Files count from their start; live streams carry the source's timestamps.
        frame_index: the frame's number in its stream, from 0, counting every decoded frame
            (for a file read once, its index in the file); None for ``ended``.
        snapshot: path of the face JPEG, relative to the data directory (None when off).
        frame_snapshot: path of the whole-frame JPEG, relative to the data directory.
    """

    id: str
    type: AlertType
    stream: str
    track: int
    person_id: int | None
    person: str | None
    similarity: float | None
    bbox: list[float]
    ts: float
    track_started_at: float
    pts_s: float | None = None
    frame_index: int | None = None
    snapshot: str | None = None
    frame_snapshot: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("extra")
        out.update(self.extra)
        return out


_sequence = itertools.count()


def new_alert_id(now: float | None = None) -> str:
    """A unique id that sorts by time: milliseconds, a per-process counter, the process id."""
    millis = int(1000 * (time.time() if now is None else now))
    return f"{millis:012x}{next(_sequence) % 0x10000:04x}{os.getpid() % 0x10000:04x}"


class Subscription:
    """One subscriber's bounded queue of alerts; iterate it with ``async for``."""

    def __init__(self, bus: AlertBus, maxsize: int) -> None:
        self._bus = bus
        self._queue: deque[Alert] = deque()
        self._maxsize = maxsize
        self._ready = asyncio.Event()
        self.closed = False
        self.overflowed = False

    def __len__(self) -> int:
        return len(self._queue)

    def offer(self, alert: Alert) -> bool:
        """Queue an alert; False (and the subscription closed) when the queue was full."""
        if self.closed:
            return False
        if len(self._queue) >= self._maxsize:
            self.overflowed = True
            self.close()
            return False
        self._queue.append(alert)
        self._ready.set()
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._bus.unsubscribe(self)
        self._ready.set()

    async def get(self) -> Alert | None:
        """The next alert; None once closed and drained."""
        while not self._queue:
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()

    def __aiter__(self) -> AsyncIterator[Alert]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Alert]:
        while (alert := await self.get()) is not None:
            yield alert


class AlertBus:
    """Fans alerts out to subscribers without ever waiting on one."""

    def __init__(self) -> None:
        self._subscribers: list[Subscription] = []
        self.published = 0
        self.dropped_subscribers = 0

    def subscribe(self, maxsize: int = 1000) -> Subscription:
        subscription = Subscription(self, maxsize)
        self._subscribers.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscribers:
            self._subscribers.remove(subscription)
            if subscription.overflowed:
                self.dropped_subscribers += 1
                log.warning("alert subscriber dropped: its queue of %d was full", len(subscription))

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, alert: Alert) -> None:
        self.published += 1
        for subscription in list(self._subscribers):
            subscription.offer(alert)

    def close(self) -> None:
        """End every subscription (they drain what they hold, then stop)."""
        for subscription in list(self._subscribers):
            subscription.close()


class SnapshotWriter:
    """Writes alert snapshots as JPEG under ``<data_dir>/snapshots/<day>/<stream>/``."""

    def __init__(self, data_dir: Path, quality: int = 85) -> None:
        self.data_dir = data_dir
        self.quality = quality

    def write(
        self, alert_id: str, stream: str, ts: float, image: NDArray[np.uint8], bbox: list[float]
    ) -> tuple[str, str]:
        """Save the face crop and the whole frame; returns their paths relative to data_dir.

        Raises:
            OSError: the files cannot be written (the caller logs it and goes on without them).
        """
        day = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")
        folder = Path("snapshots") / day / _safe(stream)
        (self.data_dir / folder).mkdir(parents=True, exist_ok=True)
        face_path = folder / f"{alert_id}-face.jpg"
        frame_path = folder / f"{alert_id}-frame.jpg"
        self._save(self.data_dir / face_path, crop_with_margin(image, bbox))
        try:
            self._save(self.data_dir / frame_path, image)
        except OSError:
            # The alert goes out without snapshots: keep no face image nobody points to.
            (self.data_dir / face_path).unlink(missing_ok=True)
            raise
        return face_path.as_posix(), frame_path.as_posix()

    def _save(self, path: Path, image: NDArray[np.uint8]) -> None:
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise OSError(f"could not encode {path.name} as JPEG")
        # Renamed into place so a reader never sees half a JPEG; not fsynced: a snapshot lost in
        # a power cut is not worth two disk flushes per alert.
        partial = path.with_name(f".{path.name}.tmp")
        try:
            partial.write_bytes(encoded.tobytes())
            os.replace(partial, path)
        except OSError:
            partial.unlink(missing_ok=True)  # a full disk: leave no half file behind
            raise


def crop_with_margin(image: NDArray[np.uint8], bbox: list[float]) -> NDArray[np.uint8]:
    """The box grown by :data:`SNAPSHOT_MARGIN` on each side, clipped to the image."""
    x1, y1, x2, y2 = bbox
    pad = SNAPSHOT_MARGIN * max(x2 - x1, y2 - y1)
    height, width = image.shape[:2]
    left, top = max(0, int(x1 - pad)), max(0, int(y1 - pad))
    right, bottom = min(width, int(np.ceil(x2 + pad))), min(height, int(np.ceil(y2 + pad)))
    if right <= left or bottom <= top:
        return image
    return image[top:bottom, left:right]


def _safe(name: str) -> str:
    """A stream id usable as one path component."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".")
    return cleaned or "stream"
