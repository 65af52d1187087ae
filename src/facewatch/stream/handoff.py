"""Handing frames from a decode thread to the event loop, one pending frame at most.

``loop.call_soon_threadsafe`` queues callbacks without bound: a decoder faster than the loop
would pile up frames (and their megabytes) in the loop's ready queue. :class:`Handoff` keeps
a single slot instead and schedules one callback per filled slot. A live producer overwrites
a frame the loop has not taken yet (and counts it); a lossless producer (an unpaced file)
waits until the loop has taken it, which is how such a file is read at the consumer's pace.

With a ``window``, a waiting producer also waits while that many of its frames are still
unfinished: handed over, and not yet reported done (processed or dropped) through
:meth:`Handoff.release`. That carries the back-pressure through the consumer's own queues.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

from facewatch.pipeline.types import Frame

logger = logging.getLogger(__name__)

#: How often a waiting producer re-checks its stop event, in seconds.
_POLL_S = 0.1


class HandoffClosed(Exception):
    """The handoff was closed, or its event loop is gone: nobody takes frames any more."""


class Handoff:
    """A one-frame slot between a producer thread and ``deliver`` on ``loop``.

    Args:
        loop: the event loop ``deliver`` runs on.
        deliver: called on the loop with each frame taken from the slot; must not block.
        window: for waiting producers, how many frames may be unfinished at once (None: no
            limit beyond the slot).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        deliver: Callable[[Frame], None],
        *,
        window: int | None = None,
    ) -> None:
        if window is not None and window < 1:
            raise ValueError("window must be at least 1")
        self._loop = loop
        self._deliver = deliver
        self._window = window
        self._cond = threading.Condition()
        self._pending: Frame | None = None
        self._unfinished: set[int] = set()  # seq of frames handed over by a waiting producer
        self._closed = False

    def _full(self) -> bool:
        window = self._window
        return self._pending is not None or (window is not None and len(self._unfinished) >= window)

    def put(self, frame: Frame, *, wait: bool, stopped: Callable[[], bool]) -> Frame | None:
        """Offer ``frame`` to the loop (producer thread).

        Args:
            frame: the frame to hand over.
            wait: wait until the loop has taken the previous frame instead of replacing it.
            stopped: polled while waiting; True ends the wait and discards the frame.

        Returns:
            The frame that was replaced (to be counted as dropped), or None.

        Raises:
            HandoffClosed: after :meth:`close`, or once the loop is closed.
        """
        with self._cond:
            if wait:
                while self._full() and not self._closed and not stopped():
                    self._cond.wait(_POLL_S)
                if not self._closed and stopped():
                    return None
                if self._window is not None:
                    self._unfinished.add(frame.seq)
            if self._closed:
                raise HandoffClosed
            replaced, self._pending = self._pending, frame
        if replaced is None:
            # The slot was empty, so no take is scheduled yet; the one scheduled here takes
            # whatever the slot holds when it runs.
            try:
                self._loop.call_soon_threadsafe(self._take)
            except RuntimeError:  # the loop is closed
                self.close()
                raise HandoffClosed from None
        return replaced

    def _take(self) -> None:
        with self._cond:
            frame, self._pending = self._pending, None
            self._cond.notify_all()
        if frame is None:
            return
        try:
            self._deliver(frame)
        except Exception:  # a bug in the sink must not stop the stream
            logger.exception("frame sink failed on %s frame %d", frame.stream_id, frame.seq)
            self.release(frame.seq)

    def release(self, seq: int) -> None:
        """The consumer is done with frame ``seq`` (processed or dropped); any thread."""
        with self._cond:
            if seq in self._unfinished:
                self._unfinished.discard(seq)
                self._cond.notify_all()

    def close(self) -> None:
        """Discard the pending frame and refuse new ones; a waiting producer returns."""
        with self._cond:
            self._closed = True
            self._pending = None
            self._cond.notify_all()
