"""Publishing a browser's webcam: its WebRTC video becomes a new live stream of the pipeline.

:meth:`WebcamPublisher.publish` adds a stream with url ``"webrtc"`` under the name asked for,
answers the browser's offer from a new ``RTCPeerConnection`` (host ICE candidates only) and
pushes the first received video track into the stream's
:class:`~facewatch.stream.push.PushFeed`, as :mod:`facewatch.stream.webrtc` does. Unlike that
ingest, it adds and removes the stream through the pipeline, so that removing it also ends its
tracks (and their alerts) and drops its queued frames.

A published stream lives as long as its peer: when the connection fails or closes, or the
track ends, the stream is removed. When the stream is removed first (``DELETE
/api/streams/{id}``), the peer is closed. At shutdown :meth:`WebcamPublisher.close_all` closes
every peer and removes its stream.

aiortc decodes on its own thread and queues decoded frames for ``track.recv()`` without bound,
so the reader takes them as fast as they come; the feed keeps only the newest.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from av.video.frame import VideoFrame
from pydantic import ValidationError

from facewatch.errors import FacewatchError
from facewatch.stream.config import StreamConfig
from facewatch.stream.manager import Stream
from facewatch.stream.push import PushFeed
from facewatch.stream.urls import WEBRTC_URL
from facewatch.stream.webrtc import CLOSE_TIMEOUT_S, NEGOTIATE_TIMEOUT_S, default_peer_connection
from facewatch.web.errors import ApiError

if TYPE_CHECKING:
    from facewatch.pipeline.runner import Pipeline
    from facewatch.web.services import Services

log = logging.getLogger(__name__)

#: Where :meth:`WebcamPublisher.of` keeps the publisher in ``Services.extras``.
EXTRAS_KEY = "webcam_publisher"
#: Longest time removing a published stream may take when its peer goes, seconds.
REMOVE_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Publication:
    """An accepted offer: the stream made for it and the SDP answer for the browser."""

    stream: Stream
    answer: RTCSessionDescription


class _Peer:
    """One publishing browser: its connection, its stream and the task reading its video."""

    def __init__(self, pc: RTCPeerConnection, stream: Stream, feed: PushFeed) -> None:
        self.pc = pc
        self.stream = stream
        self.feed = feed
        self.track: MediaStreamTrack | None = None
        self.reader: asyncio.Task[None] | None = None
        self.closed = False
        self.done = asyncio.Event()


class WebcamPublisher:
    """Turns browsers' webcams into streams of ``pipeline``.

    Args:
        pipeline: where the streams are added.
        pc_factory: makes each peer connection; default: no ICE servers (host candidates).
    """

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        pc_factory: Callable[[], RTCPeerConnection] = default_peer_connection,
    ) -> None:
        self._pipeline = pipeline
        self._pc_factory = pc_factory
        self._peers: dict[str, _Peer] = {}  # by stream id
        self._closing_tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @classmethod
    def of(cls, services: Services) -> WebcamPublisher:
        """The server's publisher, made on first use and kept in ``services.extras``."""
        publisher = services.extras.get(EXTRAS_KEY)
        if publisher is None:
            publisher = services.extras[EXTRAS_KEY] = cls(services.pipeline)
        assert isinstance(publisher, WebcamPublisher)
        return publisher

    @property
    def published(self) -> list[str]:
        """Ids of the streams fed by a browser now."""
        return list(self._peers)

    async def publish(self, offer: RTCSessionDescription, name: str) -> Publication:
        """Add a live stream named ``name`` fed by the video of ``offer``.

        Raises:
            ApiError: 409 a stream with that id exists, 422 a bad name or an offer that sends
                no video, 503 shutting down, 504 negotiation took too long.
        """
        if self._closed:
            raise ApiError(503, "shutting_down", "the server is shutting down")
        try:
            config = StreamConfig(url=WEBRTC_URL, name=name)
        except ValidationError as exc:
            problem = exc.errors()[0].get("msg", "invalid") if exc.errors() else "invalid"
            raise ApiError(422, "invalid_name", f"stream name: {problem}") from None
        try:
            stream = await self._pipeline.add_stream(config)
        except ValueError as exc:
            raise ApiError(409, "stream_exists", str(exc), name=name) from None
        except FacewatchError as exc:
            raise ApiError(503, "shutting_down", str(exc)) from None
        feed = stream.feed
        assert feed is not None  # a "webrtc" stream always has one
        peer = _Peer(self._pc_factory(), stream, feed)
        self._peers[stream.id] = peer
        try:
            answer = await self._negotiate(peer, offer)
        except TimeoutError:
            await self._close(peer)
            raise ApiError(504, "negotiation_timeout", "WebRTC negotiation took too long") from None
        except BaseException:
            await self._close(peer)
            raise
        log.info("stream %s: published from a browser", stream.id)
        return Publication(stream, answer)

    async def close_all(self) -> None:
        """Close every publishing peer and remove its stream; idempotent."""
        self._closed = True
        peers = list(self._peers.values())
        await asyncio.gather(*(self._close(peer) for peer in peers), *self._closing_tasks)

    # -- internals ---------------------------------------------------------------------

    async def _negotiate(self, peer: _Peer, offer: RTCSessionDescription) -> RTCSessionDescription:
        pc = peer.pc

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video" and peer.track is None:
                peer.track = track
                peer.reader = asyncio.ensure_future(self._read(peer, track))

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                self._close_soon(peer)

        async with asyncio.timeout(NEGOTIATE_TIMEOUT_S):
            try:
                await pc.setRemoteDescription(offer)
            except Exception as exc:  # aiortc's SDP parser raises many kinds; all mean bad SDP
                raise ApiError(422, "bad_offer", f"the SDP offer cannot be used: {exc}") from None
            if peer.track is None:
                raise ApiError(422, "bad_offer", "the offer sends no video")
            for transceiver in pc.getTransceivers():
                if transceiver.receiver.track is not peer.track:
                    transceiver.direction = "inactive"  # audio, extra video: never read
            await pc.setLocalDescription(await pc.createAnswer())
        description: RTCSessionDescription = pc.localDescription
        return description

    async def _read(self, peer: _Peer, track: MediaStreamTrack) -> None:
        """Take frames as fast as aiortc decodes them; the feed keeps only the newest."""
        peer.feed.connect(peer)
        reason = "the publishing browser went away"
        try:
            while True:
                frame = await track.recv()
                if not self._current(peer):
                    reason = "the stream was removed"
                    break
                if isinstance(frame, VideoFrame):
                    peer.feed.push(peer, frame)
        except MediaStreamError:
            reason = "the browser's video track ended"
        finally:
            peer.feed.disconnect(peer, reason)
        self._close_soon(peer)

    def _current(self, peer: _Peer) -> bool:
        """Whether the peer's stream is still in the pipeline (not removed by someone else)."""
        try:
            return self._pipeline.streams.get(peer.stream.id) is peer.stream
        except KeyError:
            return False

    def _close_soon(self, peer: _Peer) -> None:
        """Close a peer from an aiortc event handler or its reader (which cannot await it)."""
        if peer.closed:
            return
        task = asyncio.ensure_future(self._close(peer))
        self._closing_tasks.add(task)
        task.add_done_callback(self._closing_tasks.discard)

    async def _close(self, peer: _Peer) -> None:
        if peer.closed:
            async with asyncio.timeout(CLOSE_TIMEOUT_S + REMOVE_TIMEOUT_S + 1.0):
                await peer.done.wait()
            return
        peer.closed = True
        stream_id = peer.stream.id
        try:
            if self._peers.get(stream_id) is peer:
                del self._peers[stream_id]
            reader = peer.reader
            if reader is not None and reader is not asyncio.current_task():
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await peer.pc.close()
            except TimeoutError:
                log.warning("stream %s: a publishing peer did not close in time", stream_id)
            if self._current(peer):
                try:
                    async with asyncio.timeout(REMOVE_TIMEOUT_S):
                        await self._pipeline.remove_stream(stream_id)
                except KeyError:
                    pass  # removed meanwhile
                except Exception:  # a pipeline shutting down may refuse; the stream goes with it
                    log.warning("stream %s: not removed after its publisher left", stream_id)
            log.info("stream %s: publisher closed", stream_id)
        finally:
            peer.done.set()
