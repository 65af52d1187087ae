"""Live view out: a stream's processed frames as WebRTC video, and their faces as metadata.

Video. :meth:`LiveViews.open` answers a browser's SDP offer from a new ``RTCPeerConnection``
(host ICE candidates only: no STUN or TURN server unless some are configured) that sends one
:class:`LiveVideoTrack`. The track reads ``Pipeline.watch_frames(stream, maxsize=1)``: frames
that went through detection and tracking, only the newest kept, so a viewer whose encoder or
network is slow skips frames and never slows the pipeline. It sends at most ``fps`` frames a
second.

Metadata. :meth:`LiveViews.stream_metadata` sends, on a WebSocket, one message per processed
frame (:func:`frame_message`) from a watch of its own that holds the newest two: a client that
reads slowly gets the latest frames, never a growing backlog.

Matching boxes to the frame on screen. Video and metadata travel separately and arrive with
different delays, so the page must not simply draw the newest metadata. Each video frame is
stamped with its capture time on the 90 kHz RTP clock, ``pts = floor(captured_at * 90000)``
(:func:`rtp_ticks`); aiortc's sender adds a random 32-bit origin to it and sends it as the RTP
timestamp, which Chrome hands to the page for every displayed frame
(``video.requestVideoFrameCallback`` → ``metadata.rtpTimestamp``). Each metadata message carries
the same number for its frame (``rtp_ticks``, modulo 2**32). The page learns the unknown origin
by voting: every pair (displayed frame, recent metadata) proposes ``rtpTimestamp - rtp_ticks``;
the true origin is proposed again by nearly every displayed frame, a wrong one only when two
frame intervals coincide to 1/90000 s. Once the origin is known, each displayed frame gets the
faces of the metadata with exactly its timestamp, or else of the nearest earlier frame at most
0.5 s before it, or none. Capture times, not the stream's own ``pts_s``, are used because they
only grow: a looping file's ``pts_s`` starts over, and the RTP clock must not go back.
``static/js/overlay.js`` is the page's side.

The registry keeps every peer: one closes when its client goes (connection failed or closed),
when its stream is removed or the pipeline closes (the watch ends), and at shutdown
(:meth:`LiveViews.close_all`). Each stream has at most ``max_viewers`` peers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from av.video.frame import VideoFrame
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from facewatch.errors import FacewatchError
from facewatch.pipeline.taps import FrameWatch
from facewatch.pipeline.types import LiveFrame
from facewatch.stream.webrtc import CLOSE_TIMEOUT_S, NEGOTIATE_TIMEOUT_S, default_peer_connection
from facewatch.web.errors import ApiError

if TYPE_CHECKING:
    from facewatch.pipeline.runner import Pipeline
    from facewatch.web.services import Services

log = logging.getLogger(__name__)

#: The RTP clock of video, ticks per second.
RTP_CLOCK_HZ = 90_000
RTP_TIME_BASE = Fraction(1, RTP_CLOCK_HZ)
#: Peers one stream may have at once; one more offer is refused with 429.
MAX_VIEWERS_PER_STREAM = 8
#: Metadata of frames a WebSocket client may be behind by; older ones are dropped.
METADATA_BACKLOG = 2
#: With no frame to send for this long, a ping tells the client (and us) the socket is alive.
PING_INTERVAL_S = 15.0
#: Longest time one WebSocket send may take before the client is given up as stuck.
SEND_TIMEOUT_S = 10.0
#: Where :meth:`LiveViews.of` keeps the registry in ``Services.extras``.
EXTRAS_KEY = "live_views"


def rtp_ticks(captured_at: float) -> int:
    """A frame's capture time (UNIX seconds) on the 90 kHz video clock, not wrapped."""
    return int(captured_at * RTP_CLOCK_HZ)


def frame_message(frame: LiveFrame) -> dict[str, Any]:
    """The metadata WebSocket message of one processed frame.

    ``bbox`` is x1, y1, x2, y2 in pixels of the ``width`` x ``height`` frame; ``rtp_ticks`` is
    the frame's timestamp on the live video's RTP clock before the sender's random origin, modulo
    2**32 (see the module docs).
    """
    height, width = frame.image.shape[:2]
    return {
        "type": "frame",
        "seq": frame.seq,
        "pts_s": frame.pts_s,
        "captured_at": frame.captured_at,
        "rtp_ticks": rtp_ticks(frame.captured_at) % 2**32,
        "width": int(width),
        "height": int(height),
        "faces": [
            {
                "track": face.track,
                "bbox": [round(v, 1) for v in face.bbox],
                "person_id": face.person_id,
                "person": face.person,
                "similarity": None if face.similarity is None else round(face.similarity, 4),
            }
            for face in frame.faces
        ],
    }


class LiveVideoTrack(MediaStreamTrack):
    """A video track of a stream's processed frames, at most ``fps`` a second.

    Each frame's pts is :func:`rtp_ticks` of its capture time (time base 1/90000), made to
    grow by at least one tick should the wall clock step back.

    Args:
        watch: the stream's processed frames; the track ends when the watch does.
        fps: most frames per second sent.
    """

    kind = "video"

    def __init__(self, watch: FrameWatch, fps: float) -> None:
        super().__init__()
        self._watch = watch
        self._interval_s = 1.0 / fps
        self._next_at = 0.0
        self._last_pts = -1
        self.sent = 0

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        delay = self._next_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        frame = await self._watch.get()
        if frame is None:
            self.stop()
            raise MediaStreamError
        self._next_at = time.monotonic() + self._interval_s
        # One copy into an AVFrame (about a millisecond for 1080p); the encoder converts it to
        # YUV on aiortc's worker thread.
        video = VideoFrame.from_ndarray(frame.image, format="bgr24")
        pts = max(rtp_ticks(frame.captured_at), self._last_pts + 1)
        video.pts, video.time_base = pts, RTP_TIME_BASE
        self._last_pts = pts
        self.sent += 1
        return video

    def stop(self) -> None:
        super().stop()
        self._watch.close()


class _Viewer:
    """One peer connection sending one stream."""

    def __init__(self, stream_id: str, pc: RTCPeerConnection, track: LiveVideoTrack) -> None:
        self.stream_id = stream_id
        self.pc = pc
        self.track = track
        self.closed = False
        self.done = asyncio.Event()


class LiveViews:
    """The live views of one pipeline: WebRTC peers sending streams, and metadata sockets.

    Args:
        pipeline: whose streams are shown.
        fps: most frames per second sent to one viewer.
        max_viewers: most peers per stream.
        pc_factory: makes each peer connection; default: no ICE servers (host candidates).
    """

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        fps: float,
        max_viewers: int = MAX_VIEWERS_PER_STREAM,
        pc_factory: Callable[[], RTCPeerConnection] = default_peer_connection,
    ) -> None:
        self._pipeline = pipeline
        self._fps = fps
        self.max_viewers = max_viewers
        self._pc_factory = pc_factory
        self._viewers: dict[str, set[_Viewer]] = {}
        self._closing_tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._shutdown = asyncio.Event()
        self._sockets_open: set[asyncio.Event] = set()  # one per metadata socket: set when done

    @classmethod
    def of(cls, services: Services) -> LiveViews:
        """The server's registry, made on first use and kept in ``services.extras``."""
        views = services.extras.get(EXTRAS_KEY)
        if views is None:
            views = services.extras[EXTRAS_KEY] = cls(
                services.pipeline, fps=services.settings.server.live_fps
            )
        assert isinstance(views, LiveViews)
        return views

    def viewers(self, stream_id: str) -> int:
        """Peers of a stream now, negotiating ones included."""
        return len(self._viewers.get(stream_id, ()))

    async def open(self, stream_id: str, offer: RTCSessionDescription) -> RTCSessionDescription:
        """Answer a viewer's offer with a peer that sends the stream's processed frames.

        Raises:
            ApiError: 404 no such stream, 422 an offer that receives no video, 429 the stream
                has ``max_viewers`` peers already, 503 shutting down, 504 negotiation took
                longer than ``NEGOTIATE_TIMEOUT_S``.
        """
        if self._closed:
            raise ApiError(503, "shutting_down", "the server is shutting down")
        self._check_stream(stream_id)
        if self.viewers(stream_id) >= self.max_viewers:
            raise ApiError(
                429,
                "too_many_viewers",
                f"stream {stream_id!r} has {self.max_viewers} live viewers already",
                limit=self.max_viewers,
            )
        try:
            watch = self._pipeline.watch_frames(stream_id, maxsize=1)
        except FacewatchError as exc:
            raise ApiError(503, "shutting_down", str(exc)) from None
        viewer = _Viewer(stream_id, self._pc_factory(), LiveVideoTrack(watch, self._fps))
        self._viewers.setdefault(stream_id, set()).add(viewer)
        try:
            answer = await self._negotiate(viewer, offer)
        except TimeoutError:
            await self._close(viewer)
            raise ApiError(504, "negotiation_timeout", "WebRTC negotiation took too long") from None
        except BaseException:
            await self._close(viewer)
            raise
        log.info("stream %s: live viewer connected (%d)", stream_id, self.viewers(stream_id))
        return answer

    async def close_all(self) -> None:
        """Close every peer and end every metadata socket (code 1001); idempotent.

        Waits (bounded) until the sockets are closed: the server calls this before uvicorn
        closes the connections that are left (with 1012, "restart").
        """
        self._closed = True
        self._shutdown.set()
        viewers = [viewer for group in self._viewers.values() for viewer in group]
        sockets = [finished.wait() for finished in self._sockets_open]
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S + CLOSE_TIMEOUT_S):
                await asyncio.gather(
                    *(self._close(viewer) for viewer in viewers), *self._closing_tasks, *sockets
                )
        except TimeoutError:
            log.warning("the live views did not all close in time")

    async def stream_metadata(self, websocket: WebSocket, stream_id: str) -> None:
        """Send the faces of each processed frame of a stream to an accepted WebSocket.

        First ``{"type": "hello", "stream", "rtp_clock_hz"}``, then :func:`frame_message` per
        frame, ``{"type": "ping"}`` after :data:`PING_INTERVAL_S` without one, and
        ``{"type": "end"}`` when the stream is removed (closed with 1000). A client reading too
        slowly skips frames; one that takes :data:`SEND_TIMEOUT_S` to take a message is closed
        (1013); at shutdown every socket is closed with 1001.
        """
        try:
            self._check_stream(stream_id)
            if self._closed:
                raise ApiError(503, "shutting_down", "the server is shutting down")
            watch = self._pipeline.watch_frames(stream_id, maxsize=METADATA_BACKLOG)
        except (ApiError, FacewatchError) as exc:
            error = (
                {"code": exc.code, "message": exc.message}
                if isinstance(exc, ApiError)
                else {"code": "shutting_down", "message": str(exc)}
            )
            await websocket.send_json({"type": "error", "error": error})
            await websocket.close(4404 if error["code"] == "stream_not_found" else 1013)
            return
        finished = asyncio.Event()
        self._sockets_open.add(finished)
        try:
            try:
                code = await self._pump_metadata(websocket, stream_id, watch)
            finally:
                watch.close()
            if code is not None and websocket.application_state == WebSocketState.CONNECTED:
                try:
                    await websocket.close(code)
                except (RuntimeError, OSError):
                    pass  # the client went at the same moment
        finally:
            self._sockets_open.discard(finished)
            finished.set()

    async def _pump_metadata(
        self, websocket: WebSocket, stream_id: str, watch: FrameWatch
    ) -> int | None:
        """Run the socket until the stream ends (1000), shutdown (1001), a stuck client (1013)
        or a disconnect (None: nothing left to close)."""

        async def send(message: dict[str, Any]) -> None:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                await websocket.send_json(message)

        async def pump() -> int:
            await send({"type": "hello", "stream": stream_id, "rtp_clock_hz": RTP_CLOCK_HZ})
            while True:
                try:
                    async with asyncio.timeout(PING_INTERVAL_S):
                        frame = await watch.get()
                except TimeoutError:
                    await send({"type": "ping"})
                    continue
                if frame is None:
                    await send({"type": "end", "stream": stream_id})
                    return 1000
                await send(frame_message(frame))

        async def listen() -> None:
            while True:  # nothing is expected from the client; this notices it leaving
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return

        pumping = asyncio.create_task(pump())
        listening = asyncio.create_task(listen())
        shutdown = asyncio.create_task(self._shutdown.wait())
        tasks = {pumping, listening, shutdown}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if shutdown in done:
            return 1001
        if listening in done:
            return None
        try:
            return pumping.result()
        except TimeoutError:
            log.info("stream %s: metadata client too slow; closing its socket", stream_id)
            return 1013
        except (WebSocketDisconnect, RuntimeError, OSError):
            return None  # it went while we were sending

    # -- internals ---------------------------------------------------------------------

    def _check_stream(self, stream_id: str) -> None:
        try:
            self._pipeline.streams.get(stream_id)
        except KeyError:
            raise ApiError(
                404, "stream_not_found", f"no stream {stream_id!r}", stream=stream_id
            ) from None

    async def _negotiate(
        self, viewer: _Viewer, offer: RTCSessionDescription
    ) -> RTCSessionDescription:
        pc = viewer.pc

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                self._close_soon(viewer)

        # The watch ends with its stream (removed) or the pipeline: the peer has nothing to send.
        viewer.track.on("ended", lambda: self._close_soon(viewer))

        async with asyncio.timeout(NEGOTIATE_TIMEOUT_S):
            try:
                await pc.setRemoteDescription(offer)
            except Exception as exc:  # aiortc's SDP parser raises many kinds; all mean bad SDP
                raise ApiError(422, "bad_offer", f"the SDP offer cannot be used: {exc}") from None
            if not any(t.kind == "video" for t in pc.getTransceivers()):
                raise ApiError(422, "bad_offer", "the offer receives no video")
            sender = pc.addTrack(viewer.track)
            for transceiver in pc.getTransceivers():
                if transceiver.sender is not sender:
                    transceiver.direction = "inactive"  # audio, extra video: nothing to send
            await pc.setLocalDescription(await pc.createAnswer())
        description: RTCSessionDescription = pc.localDescription
        return description

    def _close_soon(self, viewer: _Viewer) -> None:
        """Close a viewer from an aiortc event handler (which cannot await)."""
        if viewer.closed:
            return
        task = asyncio.ensure_future(self._close(viewer))
        self._closing_tasks.add(task)
        task.add_done_callback(self._closing_tasks.discard)

    async def _close(self, viewer: _Viewer) -> None:
        if viewer.closed:
            async with asyncio.timeout(CLOSE_TIMEOUT_S + 1.0):
                await viewer.done.wait()
            return
        viewer.closed = True
        try:
            group = self._viewers.get(viewer.stream_id)
            if group is not None:
                group.discard(viewer)
                if not group:
                    del self._viewers[viewer.stream_id]
            viewer.track.stop()
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await viewer.pc.close()
            except TimeoutError:
                log.warning(
                    "stream %s: a live viewer's peer did not close in time", viewer.stream_id
                )
            log.info("stream %s: live viewer closed", viewer.stream_id)
        finally:
            viewer.done.set()
