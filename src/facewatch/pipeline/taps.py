"""Taps on the processed frames of a stream, for live views.

A :class:`FrameWatch` keeps only the newest few frames: a viewer that falls behind skips frames
and can never slow the pipeline, which only ever calls the non-blocking :meth:`FrameWatch.offer`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable

from facewatch.pipeline.types import LiveFrame


class FrameWatch:
    """One viewer's queue of a stream's processed frames; iterate it with ``async for``."""

    def __init__(
        self, stream_id: str, maxsize: int, on_close: Callable[[FrameWatch], None]
    ) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.stream_id = stream_id
        self._frames: deque[LiveFrame] = deque(maxlen=maxsize)
        self._ready = asyncio.Event()
        self._on_close = on_close
        self.closed = False
        self.dropped = 0

    def offer(self, frame: LiveFrame) -> None:
        """Queue a frame, pushing out the oldest when full (counted in ``dropped``)."""
        if self.closed:
            return
        if len(self._frames) == self._frames.maxlen:
            self.dropped += 1
        self._frames.append(frame)
        self._ready.set()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._on_close(self)
        self._ready.set()

    async def get(self) -> LiveFrame | None:
        """The oldest frame held; None once closed (frames still held are dropped then)."""
        while not self._frames:
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        if self.closed:
            return None
        return self._frames.popleft()

    def __aiter__(self) -> AsyncIterator[LiveFrame]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[LiveFrame]:
        while (frame := await self.get()) is not None:
            yield frame


class FrameTaps:
    """The watches of every stream."""

    def __init__(self) -> None:
        self._watches: dict[str, list[FrameWatch]] = {}

    def watch(self, stream_id: str, maxsize: int = 2) -> FrameWatch:
        watch = FrameWatch(stream_id, maxsize, self._forget)
        self._watches.setdefault(stream_id, []).append(watch)
        return watch

    def wanted(self, stream_id: str) -> bool:
        return bool(self._watches.get(stream_id))

    def offer(self, frame: LiveFrame) -> None:
        for watch in list(self._watches.get(frame.stream_id, ())):
            watch.offer(frame)

    def close_stream(self, stream_id: str) -> None:
        for watch in list(self._watches.get(stream_id, ())):
            watch.close()

    def close(self) -> None:
        for stream_id in list(self._watches):
            self.close_stream(stream_id)

    def _forget(self, watch: FrameWatch) -> None:
        watches = self._watches.get(watch.stream_id, [])
        if watch in watches:
            watches.remove(watch)
        if not watches:
            self._watches.pop(watch.stream_id, None)
