"""WebRTC ingest: a browser-like aiortc peer sends a clip to WebRTCIngest, in one process.

ICE runs on 127.0.0.1 only, with no STUN or TURN server. aioice gathers host candidates from
``aioice.ice.get_host_addresses``, which skips loopback and has no option for it (aiortc only
lets one choose ICE servers and the transport policy), so the ``loopback_ice`` fixture replaces
that function for the test with one that returns ``["127.0.0.1"]``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import aioice.ice
import av
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from av.video.frame import VideoFrame
from numpy.typing import NDArray

from facewatch.errors import OfferError
from facewatch.pipeline.types import Frame
from facewatch.stream import StreamConfig, StreamManager
from facewatch.stream.webrtc import WebRTCIngest

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

CLIP = "videos/dlib_elon-musk-smoke.mp4"  # 480x272, 20 fps


@pytest.fixture
def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Gather ICE host candidates on 127.0.0.1 and nowhere else."""

    def loopback_only(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return ["127.0.0.1"]

    monkeypatch.setattr(aioice.ice, "get_host_addresses", loopback_only)


@pytest.fixture(scope="module")
def clip_images(faces_dir: Path) -> list[NDArray[np.uint8]]:
    """The first frames of a shared clip, (272, 480, 3) BGR."""
    with av.open(str(faces_dir / CLIP)) as container:
        images = []
        for frame in container.decode(video=0):
            images.append(frame.to_ndarray(format="bgr24"))
            if len(images) == 10:
                break
    return images


class ClipTrack(VideoStreamTrack):
    """A camera that shows a clip, looped, at aiortc's 30 frames/s."""

    def __init__(self, images: list[NDArray[np.uint8]]) -> None:
        super().__init__()
        self._images = images
        self._sent = 0

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        image = self._images[self._sent % len(self._images)]
        self._sent += 1
        frame = VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts, frame.time_base = pts, Fraction(time_base)
        return frame


async def eventually(predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
    async with asyncio.timeout(timeout_s):
        while True:  # polls: the state belongs to other threads, no event to wait on
            if predicate():
                return
            await asyncio.sleep(0.02)


def candidate_hosts(description: RTCSessionDescription) -> set[str]:
    """The address of every ICE candidate in an SDP."""
    return {
        line.split()[4] for line in description.sdp.splitlines() if line.startswith("a=candidate:")
    }


def our_threads() -> set[threading.Thread]:
    # The loop's default executor (asyncio_N: aiortc encodes there) belongs to the loop.
    return {t for t in threading.enumerate() if not t.name.startswith("asyncio_")}


@pytest.fixture
def leaks() -> Iterator[None]:
    """The test must leave no thread behind (tasks are checked inside each test)."""
    before = our_threads()
    yield
    assert {t.name for t in our_threads() - before} == set()


def new_sender(images: list[NDArray[np.uint8]]) -> RTCPeerConnection:
    sender = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    sender.addTrack(ClipTrack(images))
    return sender


async def offer_of(sender: RTCPeerConnection) -> RTCSessionDescription:
    await sender.setLocalDescription(await sender.createOffer())
    return sender.localDescription


async def no_tasks_left(before: set[asyncio.Task[object]]) -> None:
    for _ in range(50):  # aiortc's tasks finish a few loop turns after close()
        left = asyncio.all_tasks() - before - {asyncio.current_task()}
        if not left:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"tasks left behind: {left}")


async def test_peer_video_reaches_the_sink(
    loopback_ice: None, leaks: None, clip_images: list[NDArray[np.uint8]]
) -> None:
    tasks_before = asyncio.all_tasks()
    frames: list[Frame] = []
    manager = StreamManager(frames.append)
    ingest = WebRTCIngest(manager)
    sender = new_sender(clip_images)
    try:
        offer = await offer_of(sender)
        assert candidate_hosts(offer) == {"127.0.0.1"}
        session = await ingest.accept_offer(offer, config=StreamConfig(url="webrtc", name="Webcam"))
        assert session.answer.type == "answer" and candidate_hosts(session.answer) == {"127.0.0.1"}
        stream = session.stream
        assert stream.id == "webcam" and manager.get("webcam") is stream and stream.live
        await sender.setRemoteDescription(session.answer)

        await eventually(lambda: len(frames) >= 15)
        assert {f.image.shape for f in frames} == {(272, 480, 3)}
        assert {f.stream_id for f in frames} == {"webcam"}
        seqs, pts = [f.seq for f in frames], [f.pts_s for f in frames]
        assert seqs == sorted(set(seqs)) and pts == sorted(pts)
        status = stream.status()
        assert status.state == "running" and status.resolution_wh == (480, 272)
        assert status.url == "webrtc" and status.frames_decoded >= 15
    finally:
        await sender.close()
        await ingest.close()
        await ingest.close()  # idempotent
        await manager.close()
    assert manager.list() == []  # the ingest removed the stream it made
    await no_tasks_left(tasks_before)


async def test_an_existing_stream_outlives_its_peers(
    loopback_ice: None, leaks: None, clip_images: list[NDArray[np.uint8]]
) -> None:
    tasks_before = asyncio.all_tasks()
    frames: list[Frame] = []
    manager = StreamManager(frames.append)
    ingest = WebRTCIngest(manager)
    stream = await manager.add(StreamConfig(url="webrtc", open_timeout_s=0.5), "door")
    senders = []
    try:
        for round_ in range(2):  # a browser that reloads the page offers again
            sender = new_sender(clip_images)
            senders.append(sender)
            session = await ingest.accept_offer(await offer_of(sender), stream_id="door")
            assert session.stream is stream
            await sender.setRemoteDescription(session.answer)
            await eventually(lambda n=round_: len(frames) >= 5 * (n + 1))
            await sender.close()
        await ingest.close()
        assert manager.get("door") is stream  # added by hand: kept, waiting for a peer
        await eventually(lambda: stream.status().state == "reconnecting")
        assert "WebRTC" in (stream.status().last_error or "")
        seqs = [f.seq for f in frames]
        assert seqs == sorted(set(seqs))
    finally:
        for sender in senders:
            await sender.close()
        await ingest.close()
        await manager.close()
    await no_tasks_left(tasks_before)


async def test_offers_without_video_are_refused(loopback_ice: None, leaks: None) -> None:
    manager = StreamManager(lambda frame: None)
    ingest = WebRTCIngest(manager)
    sender = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    sender.createDataChannel("chat")
    try:
        with pytest.raises(OfferError, match="no video"):
            await ingest.accept_offer(await offer_of(sender))
        assert manager.list() == []  # the stream made for it is gone again
        with pytest.raises(OfferError, match="offer"):
            await ingest.accept_offer(RTCSessionDescription(sdp="", type="answer"))
        await manager.add(StreamConfig(url="rtsp://127.0.0.1:9/x", enabled=False), "cam")
        with pytest.raises(ValueError, match="not a WebRTC stream"):
            await ingest.accept_offer(await offer_of(sender), stream_id="cam")
    finally:
        await sender.close()
        await ingest.close()
        await manager.close()
