"""Streams at run time: add, pause, resume, update and remove them while frames flow.

Each started stream has one decode thread of its own (:mod:`~facewatch.stream.worker`), never
the event loop and never the default executor, where a few blocked network reads would starve
everyone else. Frames reach the ``sink`` on the event loop, one pending hand-off per stream at
most (:mod:`~facewatch.stream.handoff`): live streams and paced files drop the oldest frame
when the consumer is behind (counted "queue_full"); unpaced files wait for it instead, so every
frame of a clip is seen. Given ``max_in_flight``, an unpaced file also waits while that many
of its frames are unfinished (handed over and neither :meth:`Stream.note_processed` nor
:meth:`Stream.release` called), which carries the back-pressure through the consumer's queues.

Pausing stops handing frames over but, for live sources and paced files, keeps decoding (each
frame counted as dropped "paused"), so the connection stays up and resuming is instant. A
paused unpaced file simply waits where it is.

Stopping (``remove``, ``update``, ``close``) sets the thread's stop flag and interrupts its
source; the thread finishes between two packets. A network call that is blocked in FFmpeg
returns at the latest after the stream's open or read timeout, so joins are bounded by a grace
period and a thread that outlives it is logged by name (it still ends on its own).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections.abc import Callable

from facewatch.errors import StreamOpenError
from facewatch.pipeline.types import Frame
from facewatch.stream.av_source import AvSource
from facewatch.stream.config import StreamConfig
from facewatch.stream.push import PushFeed, PushSource
from facewatch.stream.source import FrameSource
from facewatch.stream.status import StreamState, StreamStats, StreamStatus
from facewatch.stream.urls import file_path, redact_url
from facewatch.stream.worker import Timeline, Worker

logger = logging.getLogger(__name__)

FrameSink = Callable[[Frame], None]
"""Takes each frame handed over, on the event loop thread; must not block."""

#: How long a restart (update) or removal waits for the old decode thread, in seconds.
STOP_GRACE_S = 5.0

_STREAM_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def slugify(name: str) -> str:
    """A stream id made from a human name: ``"Front Door #2"`` -> ``"front-door-2"``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:64].strip("-")


def check_source(config: StreamConfig) -> None:
    """Refuse a file source whose file does not exist (live sources are tried when started).

    Raises:
        StreamOpenError: naming the missing path.
    """
    if config.kind == "file":
        path = file_path(config.url)
        if not path.is_file():
            raise StreamOpenError(redact_url(config.url), f"no such file: {path}")


class Stream:
    """One stream of a :class:`StreamManager`: its settings, status and decode thread.

    The pipeline reports back on the event loop: :meth:`note_processed` for each frame it is
    done with, :meth:`count_dropped` and :meth:`release` for each frame it drops.
    """

    def __init__(
        self,
        stream_id: str,
        config: StreamConfig,
        *,
        sink: FrameSink,
        loop: asyncio.AbstractEventLoop,
        on_change: Callable[[], None],
        max_in_flight: int | None = None,
    ) -> None:
        self.id = stream_id
        self._max_in_flight = max_in_flight
        self._config = config
        self._sink = sink
        self._loop = loop
        self._on_change = on_change
        self._stats = StreamStats()
        self._timeline = Timeline()
        self._feed: PushFeed | None = None
        if config.kind == "webrtc":
            self._make_feed()
        self._paused = not config.enabled
        self._stopped = False
        self._worker: Worker | None = None
        self._worker_done: asyncio.Event | None = None
        self._lock = asyncio.Lock()  # one start/stop/restart at a time

    @property
    def config(self) -> StreamConfig:
        """The current settings (``enabled`` follows pause and resume)."""
        return self._config

    @property
    def name(self) -> str:
        return self._config.name or self.id

    @property
    def live(self) -> bool:
        """Frames come at the source's pace and the oldest are dropped when the consumer is
        behind (cameras, WebRTC, paced files); False for unpaced files, which wait."""
        return self._config.live

    @property
    def feed(self) -> PushFeed | None:
        """Where a WebRTC peer pushes frames (url ``"webrtc"``); None for other streams."""
        return self._feed

    @property
    def state(self) -> StreamState:
        """``status().state`` without the cost of a whole snapshot: the pipeline asks for it
        while it forms every batch."""
        with self._stats.lock:
            state = self._stats.state
        if self._paused and not self._stopped and state not in ("ended", "stopped"):
            return "paused"
        return state

    def status(self) -> StreamStatus:
        """A snapshot of the stream's state and counters (cheap; any thread)."""
        return self._stats.snapshot(
            stream_id=self.id,
            name=self.name,
            url=redact_url(self._config.url),
            paused=self._paused and not self._stopped,
        )

    def note_processed(self, frame: Frame) -> None:
        """The pipeline is done with ``frame`` (on the event loop): counts it and its lag."""
        self._stats.processed(frame.decoded_at)
        self.release(frame)

    def release(self, frame: Frame) -> None:
        """The pipeline holds ``frame`` no longer (dropped it; processing calls this too).

        Only matters with the manager's ``max_in_flight``: it frees the frame's place.
        """
        worker = self._worker
        if worker is not None:
            worker.release(frame.seq)

    def count_dropped(self, reason: str, n: int = 1) -> None:
        """The pipeline dropped ``n`` frames of this stream for ``reason`` (e.g. queue_full)."""
        self._stats.drop(reason, n)

    def __repr__(self) -> str:
        return f"<Stream {self.id} {redact_url(self._config.url)} {self._stats.state}>"

    # -- run time, on the event loop, for the manager ------------------------------------

    def _make_feed(self) -> None:
        feed = self._feed = PushFeed()

        def peer_attached() -> None:
            # A stream waiting out a reconnect delay for a peer should take this one now.
            worker = self._worker
            if worker is not None:
                worker.wake()

        feed.on_connect = peer_attached

    def _start(self) -> None:
        config = self._config
        feed = self._feed

        def make_source() -> FrameSource:
            if config.kind == "webrtc":
                assert feed is not None
                return PushSource(
                    feed,
                    open_timeout_s=config.open_timeout_s,
                    read_timeout_s=config.read_timeout_s,
                )
            return AvSource(config)

        done = asyncio.Event()

        def on_exit() -> None:  # on the decode thread, its last act
            try:
                self._loop.call_soon_threadsafe(self._worker_exited, done)
            except RuntimeError:  # the loop is closed: nobody is waiting
                pass

        with self._stats.lock:
            self._stats.state = "starting"
        worker = Worker(
            stream_id=self.id,
            config=config,
            make_source=make_source,
            stats=self._stats,
            timeline=self._timeline,
            loop=self._loop,
            deliver=self._deliver,
            paused=self._paused,
            window=self._max_in_flight if config.lossless else None,
            on_exit=on_exit,
        )
        self._worker, self._worker_done = worker, done
        worker.start()

    def _worker_exited(self, done: asyncio.Event) -> None:
        done.set()
        self._on_change()

    def _deliver(self, frame: Frame) -> None:
        if not self._stopped:
            self._sink(frame)

    async def _stop_worker(self, grace_s: float) -> bool:
        """Stop the decode thread; True when it finished within ``grace_s`` seconds."""
        worker, done = self._worker, self._worker_done
        self._worker = self._worker_done = None
        if worker is None or done is None:
            return True
        worker.stop()
        try:
            async with asyncio.timeout(grace_s):
                await done.wait()
                # `done` is set by the thread's last statement: it is about to return.
                while worker.thread.is_alive():  # noqa: ASYNC110 (no event for a thread's end)
                    await asyncio.sleep(0.001)
        except TimeoutError:
            logger.warning(
                "stream %s: thread %s still blocked in its source after %.1f s; it ends "
                "by itself within the open/read timeout",
                self.id,
                worker.thread.name,
                grace_s,
            )
            return False
        return True

    def _set_paused(self, paused: bool) -> None:
        self._paused = paused
        self._config = self._config.model_copy(update={"enabled": not paused})
        if self._worker is not None:
            self._worker.set_paused(paused)

    async def _pause(self) -> None:
        async with self._lock:
            self._set_paused(True)

    async def _resume(self) -> None:
        async with self._lock:
            self._set_paused(False)
            if self._worker is None and not self._stopped:
                self._start()

    async def _restart(self, config: StreamConfig, grace_s: float) -> None:
        async with self._lock:
            await self._stop_worker(grace_s)
            self._config = config
            self._paused = not config.enabled
            if config.kind == "webrtc" and self._feed is None:
                self._make_feed()
            with self._stats.lock:
                self._stats.state = "starting"
            if config.enabled and not self._stopped:
                self._start()

    async def _shutdown(self, grace_s: float) -> bool:
        self._stopped = True
        async with self._lock:
            finished = await self._stop_worker(grace_s)
            with self._stats.lock:
                if self._stats.state != "ended":  # a file that was read to its end stays so
                    self._stats.state = "stopped"
            return finished


class StreamManager:
    """The streams of one pipeline.

    Args:
        sink: takes every frame handed over, on the event loop; must not block.
        loop: the event loop frames are delivered on; default: the running loop when the
            first stream is added.
        max_in_flight: for unpaced files, how many frames may be handed over and not yet
            processed or released (see :meth:`Stream.release`) before decoding waits. None:
            decoding waits only until the sink has taken the previous frame.
    """

    def __init__(
        self,
        sink: FrameSink,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        max_in_flight: int | None = None,
    ) -> None:
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._sink = sink
        self._max_in_flight = max_in_flight
        self._loop = loop
        self._streams: dict[str, Stream] = {}
        self._numbers = itertools.count(1)
        self._closed = False
        self._close_done: asyncio.Event | None = None
        self._changed: asyncio.Event | None = None

    async def add(self, config: StreamConfig, stream_id: str | None = None) -> Stream:
        """Add a stream and start it (unless ``config.enabled`` is False).

        Args:
            config: its settings.
            stream_id: its id; default: the slug of its name, else ``stream-N``.

        Raises:
            ValueError: a bad or duplicate id.
            StreamOpenError: a file source whose file does not exist.
            RuntimeError: the manager is closed.
        """
        if self._closed:
            raise RuntimeError("the stream manager is closed")
        loop = self._bind_loop()
        check_source(config)
        stream_id = self._new_id(config, stream_id)
        stream = Stream(
            stream_id,
            config,
            sink=self._sink,
            loop=loop,
            on_change=self._notify,
            max_in_flight=self._max_in_flight,
        )
        self._streams[stream_id] = stream
        if config.enabled:
            stream._start()
        logger.info(
            "stream %s added: %s%s",
            stream_id,
            redact_url(config.url),
            "" if config.enabled else " (paused)",
        )
        self._notify()
        return stream

    async def remove(self, stream_id: str, *, grace_s: float = STOP_GRACE_S) -> None:
        """Stop a stream and forget it. Raises KeyError for an unknown id."""
        stream = self._streams.pop(stream_id)
        await stream._shutdown(grace_s)
        logger.info("stream %s removed", stream_id)
        self._notify()

    async def pause(self, stream_id: str) -> None:
        """Stop handing the stream's frames over (see the module docs). KeyError: unknown."""
        await self.get(stream_id)._pause()

    async def resume(self, stream_id: str) -> None:
        """Hand frames over again, starting the stream if it never was. KeyError: unknown."""
        await self.get(stream_id)._resume()

    async def update(
        self, stream_id: str, config: StreamConfig, *, grace_s: float = STOP_GRACE_S
    ) -> Stream:
        """Restart a stream with new settings; it keeps its id, counters and timeline.

        Raises:
            KeyError: an unknown id.
            StreamOpenError: a file source whose file does not exist (the old settings stay).
        """
        stream = self.get(stream_id)
        check_source(config)
        await stream._restart(config, grace_s)
        logger.info("stream %s updated: %s", stream_id, redact_url(config.url))
        self._notify()
        return stream

    def get(self, stream_id: str) -> Stream:
        """The stream with this id. Raises KeyError."""
        return self._streams[stream_id]

    def list(self) -> list[Stream]:
        """All streams, in the order they were added."""
        return list(self._streams.values())

    def all_ended(self) -> bool:
        """True when there is at least one stream and every stream has ended.

        Live streams and looping files never end, so while one is present this is False.
        """
        streams = self._streams.values()
        return bool(streams) and all(s.status().state == "ended" for s in streams)

    async def wait_all_ended(self) -> None:
        """Wait until :meth:`all_ended` (or the manager is closed).

        This waits as long as the files take to play: bound it with ``asyncio.timeout``.
        """
        changed = self._changed_event()
        while not self.all_ended() and not self._closed:
            changed.clear()
            await changed.wait()

    async def close(self, grace_s: float = 5.0) -> None:
        """Stop every stream and join their threads within ``grace_s`` seconds in all.

        Idempotent: a second call waits for the first to finish. Streams stay listed, in the
        state "stopped" (or "ended" for files read to the end), so their final counters can
        be read.
        """
        if self._closed:
            if self._close_done is not None:
                async with asyncio.timeout(grace_s + 1.0):
                    await self._close_done.wait()
            return
        self._closed = True
        self._close_done = asyncio.Event()
        try:
            finished = await asyncio.gather(
                *(stream._shutdown(grace_s) for stream in self._streams.values())
            )
            if not all(finished):
                logger.warning(
                    "%d stream thread(s) outlived the grace period", finished.count(False)
                )
        finally:
            self._close_done.set()
            self._notify()

    # -- internals ---------------------------------------------------------------------

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def _new_id(self, config: StreamConfig, stream_id: str | None) -> str:
        if stream_id is None and config.name:
            stream_id = slugify(config.name) or None
        if stream_id is None:
            stream_id = next(
                f"stream-{n}" for n in self._numbers if f"stream-{n}" not in self._streams
            )
        if not _STREAM_ID.fullmatch(stream_id):
            raise ValueError(
                f"bad stream id {stream_id!r}: use 1-64 letters, digits, '.', '_' or '-'"
            )
        if stream_id in self._streams:
            raise ValueError(f"a stream with id {stream_id!r} already exists")
        return stream_id

    def _changed_event(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
