"""WebRTC ingest: a peer (a browser) sends its camera, and the video feeds a stream.

:meth:`WebRTCIngest.accept_offer` takes the peer's SDP offer, answers it from a new
``RTCPeerConnection`` with no STUN or TURN server (the peers reach each other directly, as on
a LAN), and attaches the first received video track to a stream whose url is ``"webrtc"``.

aiortc receives and decodes on its own thread and queues decoded frames for ``track.recv()``
without bound, so a reader task on the event loop takes them as fast as they come and leaves
only the newest in the stream's :class:`~facewatch.stream.push.PushFeed`; the stream's own
thread converts it to BGR, off the loop. Audio and extra video tracks are answered
"inactive": nobody would read them, and their queues would grow.

A stream the ingest created lives as long as its peer: when the connection fails or closes,
or the track ends, the stream is removed. A stream added beforehand (``stream_id`` of a stream
with url ``"webrtc"``) outlives its peers: it reconnects (waits) until the next offer for it.
When a stream is removed by someone else, its peer is closed.

Streams are added and removed through the callables given (by default the stream manager's
own): the pipeline passes its ``add_stream`` / ``remove_stream``, so that a peer going away
also ends the tracks of its stream and drops its queued frames.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from av.video.frame import VideoFrame

from facewatch.errors import OfferError
from facewatch.stream.config import StreamConfig
from facewatch.stream.manager import Stream, StreamManager
from facewatch.stream.push import PushFeed
from facewatch.stream.urls import WEBRTC_URL

logger = logging.getLogger(__name__)

#: Longest time to apply an offer and produce the answer (ICE gathering included), seconds.
NEGOTIATE_TIMEOUT_S = 10.0
#: Longest time to close one peer connection, seconds.
CLOSE_TIMEOUT_S = 5.0
#: Longest time removing a peer's stream may take when the peer goes, seconds.
REMOVE_TIMEOUT_S = 10.0

AddStream = Callable[[StreamConfig, str | None], Awaitable[Stream]]
RemoveStream = Callable[[str], Awaitable[None]]


def default_peer_connection() -> RTCPeerConnection:
    """A peer connection with no ICE servers: host candidates only, nothing leaves the LAN."""
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


@dataclass(frozen=True, slots=True)
class WebRTCSession:
    """An accepted offer.

    Attributes:
        stream: the stream the peer's video feeds.
        answer: the SDP answer to send back to the peer.
    """

    stream: Stream
    answer: RTCSessionDescription


class _Peer:
    """One peer connection and the task reading its video track."""

    def __init__(self, pc: RTCPeerConnection, stream: Stream, owns_stream: bool) -> None:
        self.pc = pc
        self.stream = stream
        feed = stream.feed
        assert feed is not None  # streams with url "webrtc" always have one
        self.feed: PushFeed = feed
        self.owns_stream = owns_stream
        self.track: MediaStreamTrack | None = None
        self.reader: asyncio.Task[None] | None = None
        self.closed = False
        self.done = asyncio.Event()


class WebRTCIngest:
    """Answers WebRTC offers and feeds each peer's video to a stream of ``manager``.

    Args:
        manager: where the streams live.
        add_stream: adds a stream; default ``manager.add``.
        remove_stream: removes a stream; default ``manager.remove``.
        pc_factory: makes the peer connection for each offer; default: no ICE servers.
    """

    def __init__(
        self,
        manager: StreamManager,
        *,
        add_stream: AddStream | None = None,
        remove_stream: RemoveStream | None = None,
        pc_factory: Callable[[], RTCPeerConnection] = default_peer_connection,
    ) -> None:
        self._manager = manager
        self._add_stream = add_stream or manager.add
        self._remove_stream = remove_stream or manager.remove
        self._pc_factory = pc_factory
        self._peers: dict[str, _Peer] = {}  # by stream id: one peer per stream
        self._closing: set[asyncio.Task[None]] = set()  # closes started by aiortc events
        self._closed = False

    @property
    def stream_ids(self) -> list[str]:
        """Ids of the streams a peer feeds now."""
        return list(self._peers)

    @property
    def closed(self) -> bool:
        return self._closed

    async def accept_offer(
        self,
        offer: RTCSessionDescription,
        *,
        stream_id: str | None = None,
        config: StreamConfig | None = None,
    ) -> WebRTCSession:
        """Answer ``offer`` and feed its video to a stream.

        Args:
            offer: the peer's SDP offer (type "offer"), with its ICE candidates.
            stream_id: an existing stream with url "webrtc" to feed (its previous peer is
                closed), or the id of the stream to create; default: a new stream.
            config: settings of the stream to create; default ``StreamConfig(url="webrtc")``.

        Raises:
            OfferError: not an offer, SDP that cannot be read, or no video in it.
            ValueError: a stream that is not "webrtc", or a new stream whose id is taken.
            TimeoutError: negotiation took longer than ``NEGOTIATE_TIMEOUT_S``.
            RuntimeError: the ingest is closed.
        """
        if self._closed:
            raise RuntimeError("the WebRTC ingest is closed")
        if offer.type != "offer":
            raise OfferError(f"expected an SDP offer, got {offer.type!r}")
        stream, owns_stream = await self._stream_for(stream_id, config)
        previous = self._peers.pop(stream.id, None)
        if previous is not None:
            await self._close_peer(previous)
        peer = _Peer(self._pc_factory(), stream, owns_stream)
        self._peers[stream.id] = peer
        try:
            answer = await self._negotiate(peer, offer)
        except BaseException:
            await self._close_peer(peer)
            raise
        logger.info("stream %s: WebRTC peer accepted", stream.id)
        return WebRTCSession(stream=stream, answer=answer)

    async def close(self) -> None:
        """Close every peer connection (and remove the streams made for them); idempotent."""
        self._closed = True
        peers = list(self._peers.values())
        await asyncio.gather(*(self._close_peer(peer) for peer in peers), *self._closing)

    # -- internals ---------------------------------------------------------------------

    async def _stream_for(
        self, stream_id: str | None, config: StreamConfig | None
    ) -> tuple[Stream, bool]:
        if stream_id is not None:
            try:
                stream = self._manager.get(stream_id)
            except KeyError:
                pass
            else:
                if stream.config.url != WEBRTC_URL:
                    raise ValueError(f"stream {stream_id!r} is not a WebRTC stream")
                return stream, False
        config = config or StreamConfig(url=WEBRTC_URL)
        if config.url != WEBRTC_URL:
            raise ValueError(f"a WebRTC stream needs url {WEBRTC_URL!r}, got {config.url!r}")
        return await self._add_stream(config, stream_id), True

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
                raise OfferError(f"the SDP offer cannot be used: {exc}") from None
            if peer.track is None:
                raise OfferError("the offer sends no video")
            for transceiver in pc.getTransceivers():
                if transceiver.receiver.track is not peer.track:
                    transceiver.direction = "inactive"  # audio, extra video: never read
            await pc.setLocalDescription(await pc.createAnswer())
        description: RTCSessionDescription = pc.localDescription
        return description

    async def _read(self, peer: _Peer, track: MediaStreamTrack) -> None:
        """Take frames as fast as aiortc makes them; the feed keeps only the newest."""
        peer.feed.connect(peer)
        reason = "WebRTC peer closed"
        try:
            while True:
                frame = await track.recv()
                if not self._current(peer):
                    reason = "the stream was removed"
                    break
                if isinstance(frame, VideoFrame):
                    peer.feed.push(peer, frame)
        except MediaStreamError:
            reason = "WebRTC track ended"
        finally:
            peer.feed.disconnect(peer, reason)
        self._close_soon(peer)

    def _current(self, peer: _Peer) -> bool:
        """Whether the peer's stream is still there (not removed by someone else)."""
        try:
            return self._manager.get(peer.stream.id) is peer.stream
        except KeyError:
            return False

    def _close_soon(self, peer: _Peer) -> None:
        """Close a peer from an aiortc event handler or its reader (which cannot await it)."""
        if peer.closed:
            return
        task = asyncio.ensure_future(self._close_peer(peer))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_peer(self, peer: _Peer) -> None:
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
                logger.warning("stream %s: WebRTC peer did not close in time", stream_id)
            if peer.owns_stream and self._current(peer):
                try:
                    async with asyncio.timeout(REMOVE_TIMEOUT_S):
                        await self._remove_stream(stream_id)
                except KeyError:
                    pass  # removed meanwhile
                except Exception:  # a pipeline shutting down may refuse; the stream goes with it
                    logger.warning("stream %s: not removed after its peer left", stream_id)
            logger.info("stream %s: WebRTC peer closed", stream_id)
        finally:
            peer.done.set()
