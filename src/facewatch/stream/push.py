"""Sources whose frames are pushed to us (by a WebRTC peer) rather than pulled from a URL.

A :class:`PushFeed` belongs to a stream and outlives its connections: a peer attaches
(:meth:`~PushFeed.connect`), pushes decoded frames from the event loop and detaches; a later
peer may attach to the same stream. The feed holds one frame at most: when the stream's
thread has not taken the last frame yet, a new one replaces it (counted as skipped), so a
slow consumer never makes memory or latency grow. :class:`PushSource` is the stream thread's
side; converting a frame to BGR happens there, off the event loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
from av.video.frame import VideoFrame

from facewatch.errors import DecodeError, StreamError, StreamOpenError
from facewatch.stream.source import RawFrame


class PushFeed:
    """The meeting point of a pushing peer (event loop) and a stream's decode thread."""

    def __init__(self) -> None:
        #: Called (on the pushing thread) when a peer attaches; the stream wakes its thread.
        self.on_connect: Callable[[], None] | None = None
        self._cond = threading.Condition()
        self._frame: VideoFrame | None = None
        self._skipped = 0
        self._peer: object | None = None
        self._lost: str | None = None

    @property
    def connected(self) -> bool:
        with self._cond:
            return self._peer is not None

    def connect(self, peer: object) -> None:
        """``peer`` (any token) pushes from now on, replacing any earlier peer."""
        with self._cond:
            self._peer = peer
            self._frame = None
            self._lost = None
            self._cond.notify_all()
        if self.on_connect is not None:
            self.on_connect()

    def disconnect(self, peer: object, reason: str) -> None:
        """``peer`` stopped pushing; ignored when another peer has taken over since."""
        with self._cond:
            if self._peer is peer:
                self._peer = None
                self._lost = reason
                self._cond.notify_all()

    def push(self, peer: object, frame: VideoFrame) -> None:
        """A decoded frame from ``peer``; never blocks (replaces an untaken frame)."""
        with self._cond:
            if self._peer is not peer:
                return
            if self._frame is not None:
                self._skipped += 1
            self._frame = frame
            self._cond.notify_all()

    def wake(self) -> None:
        """Wake the waiting thread so it re-checks whether it was interrupted."""
        with self._cond:
            self._cond.notify_all()

    def wait_connected(self, timeout_s: float, interrupted: threading.Event) -> bool:
        """Wait until a peer is attached; False after ``timeout_s`` or when interrupted."""
        with self._cond:
            return (
                self._cond.wait_for(
                    lambda: self._peer is not None or interrupted.is_set(), timeout_s
                )
                and not interrupted.is_set()
            )

    def take(self, timeout_s: float, interrupted: threading.Event) -> tuple[VideoFrame, int] | None:
        """The latest frame and how many were replaced before it; None when interrupted.

        Raises:
            StreamError: the peer went away, or sent nothing for ``timeout_s`` seconds.
        """
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._frame is None:
                if interrupted.is_set():
                    return None
                if self._peer is None:
                    raise StreamError(f"webrtc: {self._lost or 'no peer connected'}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StreamError(f"webrtc: no frame for {timeout_s:g} s")
                self._cond.wait(remaining)
            frame, self._frame = self._frame, None
            skipped, self._skipped = self._skipped, 0
            return frame, skipped


class PushSource:
    """The stream thread's view of a :class:`PushFeed`; see ``FrameSource``.

    Args:
        feed: the stream's feed.
        open_timeout_s: how long :meth:`open` waits for a peer.
        read_timeout_s: how long :meth:`read` waits for a frame.
    """

    url = "webrtc"

    def __init__(self, feed: PushFeed, *, open_timeout_s: float, read_timeout_s: float) -> None:
        self._feed = feed
        self._open_timeout_s = open_timeout_s
        self._read_timeout_s = read_timeout_s
        self._interrupted = threading.Event()

    def open(self) -> None:
        if not self._feed.wait_connected(self._open_timeout_s, self._interrupted):
            if not self._interrupted.is_set():
                raise StreamOpenError(self.url, "no WebRTC peer connected")

    def read(self) -> RawFrame | None:
        taken = self._feed.take(self._read_timeout_s, self._interrupted)
        if taken is None:
            return None
        frame, skipped = taken
        try:
            image = frame.to_ndarray(format="bgr24")
        except ValueError as exc:
            raise DecodeError(self.url, str(exc)) from None
        return RawFrame(image=image.astype(np.uint8, copy=False), pts_s=frame.time, skipped=skipped)

    def interrupt(self) -> None:
        self._interrupted.set()
        self._feed.wake()

    def close(self) -> None:
        self._interrupted.set()
