"""Bounded queues between pipeline stages.

Live video must never make memory or latency grow: :class:`LatestQueue` keeps at most
``maxsize`` items and, when full, drops the oldest to make room for the newest, counting what it
dropped. A producer on another thread (a decoder) hands items over with :meth:`put_threadsafe`.
:class:`FrameHub` holds one such queue per stream and hands frames out round-robin, so that one
busy stream cannot crowd the others out of a batch. :class:`ClosableQueue` is a plain bounded
FIFO whose producer waits when it is full (back-pressure between internal stages).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from facewatch.pipeline.types import Frame

T = TypeVar("T")


class QueueClosed(Exception):
    """Raised by :meth:`LatestQueue.get` once the queue is closed and empty."""


class LatestQueue(Generic[T]):
    """A bounded asyncio queue that drops the oldest item instead of blocking the producer.

    Not thread-safe except :meth:`put_threadsafe`; everything else runs on the event loop.
    """

    def __init__(self, maxsize: int = 1) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self.dropped = 0
        self.put_count = 0
        self._items: deque[T] = deque()
        self._ready = asyncio.Event()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put_nowait(self, item: T) -> T | None:
        """Add ``item``; returns the item dropped to make room, if any. Ignored once closed."""
        if self._closed:
            return None
        dropped = None
        if len(self._items) >= self.maxsize:
            dropped = self._items.popleft()
            self.dropped += 1
        self._items.append(item)
        self.put_count += 1
        self._ready.set()
        return dropped

    def put_threadsafe(self, loop: asyncio.AbstractEventLoop, item: T) -> None:
        """:meth:`put_nowait` from another thread (a no-op once the loop is closed)."""
        try:
            loop.call_soon_threadsafe(self.put_nowait, item)
        except RuntimeError:  # loop closed: the pipeline is gone, nobody wants the frame
            pass

    def get_nowait(self) -> T:
        """The oldest item; raises asyncio.QueueEmpty (or QueueClosed once closed and empty)."""
        if not self._items:
            if self._closed:
                raise QueueClosed
            raise asyncio.QueueEmpty
        item = self._items.popleft()
        if not self._items and not self._closed:
            self._ready.clear()
        return item

    async def get(self) -> T:
        """Wait for the oldest item; raises QueueClosed once the queue is closed and empty."""
        while True:
            try:
                return self.get_nowait()
            except asyncio.QueueEmpty:
                await self._ready.wait()

    def close(self) -> None:
        """No more items will be accepted; waiting getters wake up (idempotent)."""
        self._closed = True
        self._ready.set()


class ClosableQueue(Generic[T]):
    """A bounded FIFO: ``put`` waits while it is full; ``close`` wakes every waiter.

    After :meth:`close`, ``put`` raises QueueClosed and ``get`` drains what is left, then raises
    QueueClosed.
    """

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._items: deque[T] = deque()
        self._not_empty = asyncio.Event()
        self._not_full = asyncio.Event()
        self._not_full.set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    async def put(self, item: T) -> None:
        while len(self._items) >= self.maxsize and not self._closed:
            self._not_full.clear()
            await self._not_full.wait()
        if self._closed:
            raise QueueClosed
        self._items.append(item)
        self._not_empty.set()

    def get_nowait(self) -> T:
        if not self._items:
            if self._closed:
                raise QueueClosed
            raise asyncio.QueueEmpty
        item = self._items.popleft()
        self._not_full.set()
        if not self._items and not self._closed:
            self._not_empty.clear()
        return item

    async def get(self) -> T:
        while True:
            try:
                return self.get_nowait()
            except asyncio.QueueEmpty:
                await self._not_empty.wait()

    def close(self) -> None:
        """Refuse new items and wake everyone waiting (idempotent)."""
        self._closed = True
        self._not_empty.set()
        self._not_full.set()


class FrameHub:
    """The latest frames of every stream, handed out round-robin across streams.

    Each stream has its own :class:`LatestQueue` of ``depth_for(stream_id)`` frames, made when
    its first frame comes (1 for live video: only the newest frame is worth processing). A frame
    pushed out of a full queue is reported to ``on_drop(frame, "queue_full")``.
    """

    def __init__(
        self, on_drop: Callable[[Frame, str], None], depth_for: Callable[[str], int] = lambda _: 1
    ) -> None:
        self._on_drop = on_drop
        self._depth_for = depth_for
        self._queues: dict[str, LatestQueue[Frame]] = {}
        self._order: deque[str] = deque()
        self._ready = asyncio.Event()
        self._closed = False

    def depths(self) -> dict[str, int]:
        return {stream: len(queue) for stream, queue in self._queues.items()}

    def __len__(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    def close_stream(self, stream_id: str) -> list[Frame]:
        """Forget a stream; returns the frames it still had waiting."""
        queue = self._queues.pop(stream_id, None)
        if queue is None:
            return []
        self._order.remove(stream_id)
        left = []
        while len(queue):
            left.append(queue.get_nowait())
        return left

    def put(self, frame: Frame) -> None:
        """Take a frame (on the event loop); once the hub is closed, frames are refused."""
        if self._closed:
            self._on_drop(frame, "stopped")
            return
        queue = self._queues.get(frame.stream_id)
        if queue is None:
            queue = self._queues[frame.stream_id] = LatestQueue(self._depth_for(frame.stream_id))
            self._order.append(frame.stream_id)
        dropped = queue.put_nowait(frame)
        if dropped is not None:
            self._on_drop(dropped, "queue_full")
        self._ready.set()

    def get_nowait(self) -> Frame:
        """The oldest frame of the next stream in turn that has one."""
        for _ in range(len(self._order)):
            stream_id = self._order[0]
            self._order.rotate(-1)
            queue = self._queues[stream_id]
            if len(queue):
                return queue.get_nowait()
        self._ready.clear()
        if self._closed:
            raise QueueClosed
        raise asyncio.QueueEmpty

    async def get(self) -> Frame:
        while True:
            try:
                return self.get_nowait()
            except asyncio.QueueEmpty:
                await self._ready.wait()

    def close(self) -> None:
        """Refuse new frames; waiting getters take what is left, then get QueueClosed."""
        self._closed = True
        self._ready.set()
