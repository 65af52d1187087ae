"""One stream's decode thread: open, read, pace, number, hand over; reconnect with backoff.

The thread owns its source: it opens, reads and closes it. The event loop only sets flags
(:meth:`Worker.stop`, :meth:`Worker.set_paused`) and interrupts the source. What happens when:

- a live source (RTSP, HTTP, WebRTC) fails to open, stalls (no video for its read timeout,
  whatever else it sends), ends or fails: wait a backoff delay and reopen, forever; the state
  is "reconnecting" meanwhile;
- a file ends: "ended", or start over when it loops (no backoff: this is not a failure);
- a file cannot be read at all: "ended" with the error, or retried with backoff when looping;
- one bad packet or damaged frame: counted as dropped "decode_error" and skipped; too many in
  a row (:data:`MAX_DECODE_ERRORS_IN_A_ROW`) count as a failure of the source.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from facewatch.errors import DecodeError, StreamError
from facewatch.pipeline.types import Frame
from facewatch.stream.backoff import Backoff
from facewatch.stream.config import StreamConfig
from facewatch.stream.handoff import Handoff, HandoffClosed
from facewatch.stream.pacing import FpsCap, Pacer, PtsClock
from facewatch.stream.source import FrameSource, RawFrame
from facewatch.stream.status import StreamState, StreamStats
from facewatch.stream.urls import redact_url

logger = logging.getLogger(__name__)

#: This many undecodable packets in a row mean the source is broken, not one bad frame.
MAX_DECODE_ERRORS_IN_A_ROW = 50

#: How often a waiting thread re-checks whether it should stop, in seconds.
_POLL_S = 0.1

_Outcome = Literal["eof", "stopped"]


@dataclass(slots=True)
class Timeline:
    """What a stream keeps across its workers (restarts by ``update``): numbering and time."""

    next_seq: int = 0
    clock: PtsClock = field(default_factory=PtsClock)


class Worker:
    """Reads one stream on a dedicated thread until stopped (or, for files, the end).

    Args:
        stream_id: the stream's id, put on every frame.
        config: the stream's settings.
        make_source: a new, unopened source for each (re)connect.
        stats: the stream's counters and state, shared with the event loop.
        timeline: the stream's frame numbering and monotonic clock.
        loop: the event loop frames go to.
        deliver: called on ``loop`` with each frame handed over; must not block.
        paused: start paused.
        window: for lossless streams, frames handed over and not yet released, at most
            (None: the consumer takes a frame and is done with it).
        on_exit: called on the thread when it is about to finish.
    """

    def __init__(
        self,
        *,
        stream_id: str,
        config: StreamConfig,
        make_source: Callable[[], FrameSource],
        stats: StreamStats,
        timeline: Timeline,
        loop: asyncio.AbstractEventLoop,
        deliver: Callable[[Frame], None],
        paused: bool = False,
        window: int | None = None,
        on_exit: Callable[[], None] | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.config = config
        self._make_source = make_source
        self._stats = stats
        self._timeline = timeline
        self._handoff = Handoff(loop, deliver, window=window)
        self._on_exit = on_exit
        self._url = redact_url(config.url)
        self._stop = threading.Event()
        self._control = threading.Condition()
        self._paused = paused
        self._woken = False
        self._source: FrameSource | None = None
        self._backoff = Backoff(config.reconnect_initial_s, config.reconnect_max_s)
        self._pacer = Pacer() if config.paced else None
        self._cap = FpsCap(config.fps_cap) if config.fps_cap else None
        self._random = random.Random()
        self._thread = threading.Thread(
            target=self._run, name=f"facewatch-stream-{stream_id}", daemon=False
        )

    # -- control, from any thread ---------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    @property
    def paused(self) -> bool:
        return self._paused

    def set_paused(self, paused: bool) -> None:
        with self._control:
            self._paused = paused
            self._control.notify_all()

    def wake(self) -> None:
        """Cut a reconnect delay short: the source has something new (a WebRTC peer)."""
        with self._control:
            self._woken = True
            self._control.notify_all()

    def release(self, seq: int) -> None:
        """The consumer is done with frame ``seq`` (frees its place in the window)."""
        self._handoff.release(seq)

    def stop(self) -> None:
        """Ask the thread to finish soon; it discards whatever it has not handed over."""
        with self._stats.lock:
            # Under the stats lock: once this returns the thread writes no more state.
            self._stop.set()
        with self._control:
            self._control.notify_all()
        self._handoff.close()
        source = self._source
        if source is not None:
            source.interrupt()

    # -- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._serve()
        except HandoffClosed:
            logger.debug(
                "stream %s: hand-off closed (stopped, or the loop is gone)", self.stream_id
            )
        except Exception:  # a bug here must not kill the thread silently
            logger.exception("stream %s: unexpected error, stopping", self.stream_id)
            self._set_state("ended")
        finally:
            if self._on_exit is not None:
                self._on_exit()

    def _serve(self) -> None:
        config = self.config
        failed = False  # the last connection failed: this one is a reconnect
        self._set_state("starting")
        while not self._stopping():
            error: Exception | None = None
            source = self._make_source()
            self._source = source
            frames = 0
            try:
                if self._stop.is_set():  # stop() may have missed this source
                    return
                source.open()
                if self._stop.is_set():
                    return
                self._backoff.opened(time.monotonic())
                self._set_state("running")
                if failed:
                    logger.info("stream %s: reconnected to %s", self.stream_id, self._url)
                outcome, frames = self._pump(source)
                if outcome == "stopped":
                    return
            except StreamError as exc:
                error = exc
            except HandoffClosed:
                raise
            except Exception as exc:  # a bug or an unforeseen library error: retry, loudly
                logger.exception("stream %s: unexpected error", self.stream_id)
                error = StreamError(f"{self._url}: {type(exc).__name__}: {exc}")
            finally:
                self._source = None
                source.close()
            with self._stats.lock:
                if self._stop.is_set():
                    return
                self._timeline.clock.new_segment()
            if error is None:
                if not config.endless:
                    logger.info("stream %s: end of %s", self.stream_id, self._url)
                    self._set_state("ended")
                    return
                if config.loop and frames > 0:
                    failed = False
                    continue  # start the file over: not a failure
                error = StreamError(
                    f"{self._url}: no frames" if config.is_file else f"{self._url}: end of stream"
                )
            if not config.endless:
                logger.error("stream %s: %s", self.stream_id, error)
                self._record_error(str(error))
                self._set_state("ended")
                return
            failed = True
            self._reconnect_after(error)

    def _reconnect_after(self, error: Exception) -> None:
        delay = self._backoff.failed(time.monotonic(), self._random.random())
        self._record_error(str(error))
        logger.warning("stream %s: %s; reconnecting in %.2f s", self.stream_id, error, delay)
        with self._stats.lock:
            if self._stop.is_set():
                return
            self._stats.state = "reconnecting"
            self._stats.reconnects += 1
        self._sleep(delay, wakeable=True)

    def _pump(self, source: FrameSource) -> tuple[_Outcome, int]:
        """Read and hand over frames until the end of the input or a stop."""
        errors_in_a_row = 0
        frames = 0
        while not self._stopping():
            if self.config.lossless and not self._wait_unpaused():
                break
            try:
                raw = source.read()
            except DecodeError as exc:
                errors_in_a_row += 1
                self._stats.drop("decode_error")
                if errors_in_a_row >= MAX_DECODE_ERRORS_IN_A_ROW:
                    raise StreamError(f"{errors_in_a_row} bad packets in a row: {exc}") from None
                if errors_in_a_row == 1:
                    logger.warning("stream %s: %s (skipped)", self.stream_id, exc)
                continue
            if raw is None:
                return ("stopped", frames) if self._stop.is_set() else ("eof", frames)
            errors_in_a_row = 0
            frames += 1
            self._handle(raw)
        return "stopped", frames

    def _wait_unpaused(self) -> bool:
        """A paused lossless source waits rather than dropping its frames; False: stopped."""
        with self._control:
            while self._paused and not self._stopping():
                self._control.wait(_POLL_S)
        return not self._stopping()

    def _handle(self, raw: RawFrame) -> None:
        """Number, stamp, pace and filter one decoded frame, then hand it over."""
        stats = self._stats
        with stats.lock:
            if self._stop.is_set():  # a stopped worker must not touch the shared timeline
                return
            pts_s = self._timeline.clock(raw.pts_s)
        if self._pacer is not None:
            delay = self._pacer.wait_s(pts_s, time.monotonic())
            if delay > 0 and self._sleep(delay):
                return
        # Stamped after pacing: a paced file's frame is "captured" when it is due.
        decoded_at = time.monotonic()
        captured_at = time.time()
        with stats.lock:
            if self._stop.is_set():
                return
            seq = self._timeline.next_seq + raw.skipped
            self._timeline.next_seq = seq + 1
            stats.frames_decoded += raw.skipped + 1
            for _ in range(raw.skipped + 1):
                stats.input_rate.add(decoded_at)
            if raw.skipped:
                stats.dropped["queue_full"] += raw.skipped
            stats.resolution_wh = (int(raw.image.shape[1]), int(raw.image.shape[0]))
            if self._paused:
                stats.dropped["paused"] += 1
                return
            if self._cap is not None and not self._cap.admit(pts_s):
                stats.dropped["fps_cap"] += 1
                return
        frame = Frame(
            stream_id=self.stream_id,
            seq=seq,
            pts_s=pts_s,
            captured_at=captured_at,
            decoded_at=decoded_at,
            image=raw.image,
        )
        if self._handoff.put(frame, wait=self.config.lossless, stopped=self._stopping) is not None:
            stats.drop("queue_full")

    def _stopping(self) -> bool:
        """Stop asked for, or the program is exiting without having closed its streams."""
        if not self._stop.is_set() and not threading.main_thread().is_alive():
            # Non-daemon threads keep a process alive: never let a forgotten stream do that.
            logger.warning("stream %s: main thread gone, stopping", self.stream_id)
            self._stop.set()
        return self._stop.is_set()

    def _sleep(self, seconds: float, *, wakeable: bool = False) -> bool:
        """Wait ``seconds`` unless stopping first (True) or, if ``wakeable``, woken (False)."""
        deadline = time.monotonic() + seconds
        with self._control:
            while not self._stopping():
                if wakeable and self._woken:
                    self._woken = False
                    return False
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._control.wait(min(remaining, _POLL_S))
        return True

    def _set_state(self, state: StreamState) -> None:
        with self._stats.lock:
            if not self._stop.is_set():
                self._stats.state = state

    def _record_error(self, message: str) -> None:
        with self._stats.lock:
            if not self._stop.is_set():
                self._stats.last_error = message
                self._stats.last_error_at = time.time()
