"""Camera faults, with real sources on loopback: each is survived or reported clearly, and the
healthy stream beside it keeps flowing.

The faulty sources (:mod:`fault_servers`) serve MPEG-TS made at test time from the shared clips,
spoiled the way bad links and cameras spoil them. Checked here:

* damaged and truncated packets in the middle of a stream (MPEG-TS over HTTP, and RTP from a
  real RTSP server through a relay that spoils them): the frames the decoder could not decode
  or had to patch up are counted as ``decode_error`` and skipped, and the stream reads on
  without reconnecting;
* a source that sends only garbage (HTTP, not HTTP, RTSP): a clear "cannot open" error, retried;
* a source whose video stops while other data (garbage, audio) goes on: noticed within the read
  timeout instead of hanging, reported, retried, and removable;
* sources that never answer (accept and stay silent, or never accept): the open times out, the
  error says so, retries go on, and removing the stream leaves no thread behind;
* a camera that changes resolution mid-stream (file and HTTP): frames of each size come
  through, and the pipeline finds the faces at every size, boxed in that frame's pixels;
* a file source that is an image (named like a video) or a playlist: refused at open, while a
  video container under another name is read.

The healthy stream is a looping clip paced in real time; it must deliver frames during every
fault window and stay running without an error. Waits are bounded only to catch hangs; no
speed is asserted.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import av
import numpy as np
import pytest
from fault_servers import (
    Behaviour,
    FaultServer,
    HttpBody,
    RawBytes,
    RtspDamager,
    Silence,
    audio_only_ts,
    black_hole,
    damage_ts,
    garbage,
    make_ts_clip,
    synced_garbage,
    truncate_ts,
)
from hamilton import HAMILTON
from PIL import Image
from rtsp_server import RtspServer
from rtsp_server import rtsp_server_factory as rtsp_server_factory  # the fixture

from facewatch.config import EngineSettings, load_settings
from facewatch.errors import StreamOpenError
from facewatch.pipeline.runner import Pipeline, fitted_detection_size
from facewatch.pipeline.types import Frame, LiveFrame
from facewatch.recognizer.engine import FaceEngine
from facewatch.stream import Stream, StreamConfig, StreamManager
from facewatch.stream.av_source import AvSource
from facewatch.watchlist.service import Watchlist

pytestmark = pytest.mark.timeout(120)

THANKS = "videos/intel_asl_thanks.mkv"  # 640x480, 30 fps, 51 frames: the healthy stream
SMALL, LARGE = (640, 360), (1280, 720)
#: The camera that changes resolution: 8 frames at each size in turn.
SWITCH_FRAMES = 8
SWITCH_SIZES = [SMALL] * SWITCH_FRAMES + [LARGE] * SWITCH_FRAMES + [SMALL] * SWITCH_FRAMES
#: Generous limits for sources that work: only the faults may time out.
PATIENT = {"open_timeout_s": 10.0, "read_timeout_s": 5.0}
#: Short limits for sources that fail, retried quickly.
IMPATIENT = {
    "open_timeout_s": 1.0,
    "read_timeout_s": 1.0,
    "reconnect_initial_s": 0.05,
    "reconnect_max_s": 0.2,
}
#: Bounds on waits; they only catch hangs.
DEADLINE_S = 30.0


# -- helpers ----------------------------------------------------------------------------------


class Sink:
    """Counts the frames of every stream and their sizes (never their pixels), and reports
    each one processed, as the pipeline does."""

    def __init__(self) -> None:
        self.sizes: dict[str, list[tuple[int, int]]] = defaultdict(list)
        self.manager: StreamManager | None = None

    def __call__(self, frame: Frame) -> None:
        self.sizes[frame.stream_id].append(frame.resolution_wh)
        assert self.manager is not None
        self.manager.get(frame.stream_id).note_processed(frame)

    def count(self, stream_id: str) -> int:
        return len(self.sizes[stream_id])


async def eventually(
    predicate: Callable[[], bool], explain: Callable[[], object], timeout_s: float = DEADLINE_S
) -> None:
    """Wait until ``predicate()`` holds; fail with ``explain()`` after ``timeout_s``."""
    try:
        async with asyncio.timeout(timeout_s):
            while not predicate():  # noqa: ASYNC110 (counters of other threads: no event)
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"not within {timeout_s:g} s: {explain()}")


def stream_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("facewatch-stream-")]


def runs(sizes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Consecutive frame sizes with repeats folded: [a, a, b, a] -> [a, b, a]."""
    return [size for size, _ in itertools.groupby(sizes)]


def switched_and_back(sizes: list[tuple[int, int]]) -> bool:
    """Frames went from SMALL to LARGE and back to SMALL."""
    return any(sizes[i : i + 3] == [SMALL, LARGE, SMALL] for i in range(len(sizes)))


class Healthy:
    """The healthy stream: a looping clip paced in real time, which every fault must leave be."""

    def __init__(self, stream: Stream, sink: Sink) -> None:
        self.stream = stream
        self._sink = sink
        self._mark = 0

    async def started(self) -> Healthy:
        await eventually(lambda: self.frames > 0, self.stream.status)
        return self

    @property
    def frames(self) -> int:
        return self._sink.count(self.stream.id)

    def mark(self) -> None:
        """The fault starts now."""
        self._mark = self.frames

    def check(self) -> None:
        """It delivered frames since :meth:`mark` and is running, untouched by the fault."""
        status = self.stream.status()
        assert self.frames > self._mark, ("the healthy stream stalled", self._mark, status)
        assert status.state == "running" and status.reconnects == 0, status
        assert status.last_error is None and "decode_error" not in status.dropped, status


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    yield Sink()


@pytest.fixture
async def manager(sink: Sink) -> AsyncIterator[StreamManager]:
    """A manager delivering to ``sink``; closed after the test, which must leave no thread."""
    manager = StreamManager(sink)
    sink.manager = manager
    try:
        yield manager
    finally:
        await manager.close(grace_s=5.0)
        assert stream_threads() == []


@pytest.fixture
async def healthy(faces_dir: Path, manager: StreamManager, sink: Sink) -> Healthy:
    stream = await manager.add(StreamConfig(url=str(faces_dir / THANKS), loop=True), "healthy")
    return await Healthy(stream, sink).started()


@pytest.fixture
def servers() -> Iterator[Callable[[Behaviour], FaultServer]]:
    """Start :class:`FaultServer` s; all are closed at teardown."""
    with ExitStack() as stack:

        def start(behaviour: Behaviour) -> FaultServer:
            server = FaultServer(behaviour)
            stack.callback(server.close)
            return server

        yield start


@pytest.fixture(scope="module")
def clip(faces_dir: Path) -> bytes:
    """45 frames of the Hamilton clip (faces on stage) as MPEG-TS, 640x360, a key frame every 15."""
    return make_ts_clip(faces_dir / HAMILTON, [SMALL], 45)


@pytest.fixture(scope="module")
def clip_with_audio(faces_dir: Path) -> bytes:
    """The same 45 frames with as much silent AAC beside them."""
    return make_ts_clip(faces_dir / HAMILTON, [SMALL], 45, audio=True)


@pytest.fixture(scope="module")
def switching_clip(faces_dir: Path) -> bytes:
    """8 frames at 640x360, the next 8 upscaled to 1280x720, the next 8 at 640x360 again."""
    return make_ts_clip(faces_dir / HAMILTON, [SMALL, LARGE, SMALL], SWITCH_FRAMES)


# -- damaged and garbage streams --------------------------------------------------------------


@pytest.mark.parametrize("spoil", [damage_ts, truncate_ts], ids=["overwritten", "truncated"])
async def test_damaged_packets_are_counted_and_skipped_and_the_stream_reads_on(
    spoil: Callable[..., bytes],
    clip: bytes,
    manager: StreamManager,
    sink: Sink,
    healthy: Healthy,
    servers: Callable[[Behaviour], FaultServer],
) -> None:
    # The damaged clip first, then the clean clip over and over on the same connection.
    server = servers(HttpBody(spoil(clip, seed=7), then=clip))
    healthy.mark()
    cam = await manager.add(StreamConfig(url=server.url("http"), **PATIENT), "cam")
    await eventually(lambda: cam.status().dropped.get("decode_error", 0) > 0, cam.status)
    after_damage = sink.count("cam")
    await eventually(lambda: sink.count("cam") >= after_damage + 30, cam.status)

    status = cam.status()
    assert status.state == "running" and status.reconnects == 0, status
    assert status.last_error is None and server.connections == 1, status  # not fatal
    assert status.resolution_wh == SMALL and set(sink.sizes["cam"]) == {SMALL}
    healthy.check()


async def test_damaged_rtsp_packets_are_counted_and_skipped_and_the_camera_reads_on(
    faces_dir: Path,
    manager: StreamManager,
    sink: Sink,
    healthy: Healthy,
    rtsp_server_factory: Callable[[dict[str, Path]], RtspServer],
) -> None:
    server = await asyncio.to_thread(rtsp_server_factory, {"cam": faces_dir / THANKS})
    damager = RtspDamager(server.port, seed=5)
    try:
        cam = await manager.add(StreamConfig(url=damager.url("cam"), **PATIENT), "cam")
        await eventually(lambda: sink.count("cam") >= 10, cam.status)
        healthy.mark()
        damager.damage(20)
        await eventually(lambda: cam.status().dropped.get("decode_error", 0) > 0, cam.status)
        after_damage = sink.count("cam")
        await eventually(lambda: sink.count("cam") >= after_damage + 30, cam.status)
        status = cam.status()
        assert damager.spoiled == 20
        assert status.state == "running" and status.reconnects == 0, status
        assert status.last_error is None, status  # not fatal: nothing to reconnect for
        healthy.check()
    finally:
        damager.close()


#: Sources that send nothing but garbage, endlessly, and what the error says of each: an HTTP
#: body no demuxer knows; no HTTP at all (read as endless header lines until the open times
#: out); no RTSP at all.
GARBAGE = {
    "http-body": ("http", HttpBody(b"", then=garbage(256 * 1024, seed=1)), "invalid data"),
    "not-http": ("http", RawBytes(garbage(4096, seed=2)), "timed out"),
    "rtsp": ("rtsp", RawBytes(garbage(4096, seed=3)), "invalid data"),
}


async def test_garbage_sources_fail_to_open_clearly_and_are_retried(
    manager: StreamManager, healthy: Healthy, servers: Callable[[Behaviour], FaultServer]
) -> None:
    healthy.mark()
    streams: list[tuple[Stream, FaultServer, str]] = []
    for name, (scheme, behaviour, says) in GARBAGE.items():
        server = servers(behaviour)
        config = StreamConfig(url=server.url(scheme), **IMPATIENT)
        streams.append((await manager.add(config, name), server, says))
    await eventually(
        lambda: all(s.status().reconnects >= 3 for s, _, _ in streams),
        lambda: [s.status() for s, _, _ in streams],
    )
    for stream, server, says in streams:
        status = stream.status()
        assert status.state == "reconnecting" and status.frames_decoded == 0, status
        assert status.last_error is not None, status
        assert status.last_error.startswith(f"cannot open {stream.config.url}: "), status
        assert says in status.last_error.lower(), status
        assert server.connections >= 3, (server.connections, status)  # retried, each anew
    healthy.check()


# -- video that stops while data goes on --------------------------------------------------------


@pytest.mark.parametrize("tail", ["synced-garbage", "audio-only"])
async def test_video_that_stops_while_data_flows_is_noticed_and_retried(
    tail: str,
    clip_with_audio: bytes,
    manager: StreamManager,
    sink: Sink,
    healthy: Healthy,
    servers: Callable[[Behaviour], FaultServer],
) -> None:
    """Transport-stream packets keep coming, but none of the video: a camera whose encoder
    hung while its audio goes on, or a link that delivers noise in valid packets."""
    after = (
        synced_garbage(2000, seed=4) if tail == "synced-garbage" else audio_only_ts(2.0, first_s=1)
    )
    server = servers(HttpBody(clip_with_audio, then=after))
    healthy.mark()
    config = StreamConfig(url=server.url("http"), **{**IMPATIENT, "open_timeout_s": 10.0})
    cam = await manager.add(config, "cam")
    await eventually(lambda: cam.status().reconnects >= 2, cam.status)

    status = cam.status()
    assert status.frames_decoded > 0 and sink.count("cam") > 0, status
    assert status.last_error is not None and "no video for 1 s" in status.last_error, status
    assert server.connections >= 2, server.connections
    healthy.check()
    async with asyncio.timeout(DEADLINE_S):
        await manager.remove("cam")
    assert stream_threads() == ["facewatch-stream-healthy"]


# -- sources that never answer ------------------------------------------------------------------


async def test_sources_that_never_answer_time_out_and_are_retried(
    manager: StreamManager, healthy: Healthy, servers: Callable[[Behaviour], FaultServer]
) -> None:
    silent = servers(Silence())
    with black_hole() as hole:
        urls = {
            "silent-http": silent.url("http"),
            "silent-rtsp": silent.url("rtsp"),
            "unaccepted-http": hole.url("http"),
            "unaccepted-rtsp": hole.url("rtsp"),
        }
        healthy.mark()
        streams = [
            await manager.add(StreamConfig(url=url, **IMPATIENT), name)
            for name, url in urls.items()
        ]
        await eventually(
            lambda: all(s.status().reconnects >= 2 for s in streams),
            lambda: [s.status() for s in streams],
        )
        for stream in streams:
            status = stream.status()
            assert status.state == "reconnecting" and status.frames_decoded == 0, status
            assert status.last_error is not None, status
            assert status.last_error.startswith(f"cannot open {urls[stream.id]}"), status
            assert "timed out" in status.last_error.lower(), status
        assert silent.connections >= 4  # both silent streams tried again and again
        healthy.check()

        # Each is removed while blocked in an open that waits for an answer: the open ends at
        # its timeout, so the removal waits for its thread, which is gone afterwards.
        for stream in streams:
            async with asyncio.timeout(DEADLINE_S):
                await manager.remove(stream.id)
            assert stream.status().state == "stopped"
            assert f"facewatch-stream-{stream.id}" not in stream_threads()
        assert stream_threads() == ["facewatch-stream-healthy"]
        healthy.check()


# -- a camera that changes resolution ---------------------------------------------------------


async def test_resolution_changes_in_a_file_come_through_frame_by_frame(
    switching_clip: bytes, tmp_path: Path, manager: StreamManager, sink: Sink, healthy: Healthy
) -> None:
    path = tmp_path / "switching.ts"
    path.write_bytes(switching_clip)
    healthy.mark()
    cam = await manager.add(StreamConfig(url=str(path)), "cam")  # unpaced: every frame
    await eventually(lambda: cam.status().state == "ended", cam.status)
    status = cam.status()
    assert sink.sizes["cam"] == SWITCH_SIZES, runs(sink.sizes["cam"])
    assert status.dropped == {} and status.last_error is None, status
    assert status.resolution_wh == SMALL, status
    healthy.check()


async def test_resolution_changes_over_http_come_through(
    switching_clip: bytes,
    manager: StreamManager,
    sink: Sink,
    healthy: Healthy,
    servers: Callable[[Behaviour], FaultServer],
) -> None:
    server = servers(HttpBody(switching_clip, then=switching_clip))  # S L S S L S ...
    healthy.mark()
    cam = await manager.add(StreamConfig(url=server.url("http"), **PATIENT), "cam")
    # Live: frames are dropped while the consumer is behind, a whole segment now and then.
    await eventually(
        lambda: switched_and_back(runs(sink.sizes["cam"])), lambda: runs(sink.sizes["cam"])
    )
    assert set(sink.sizes["cam"]) == {SMALL, LARGE}
    status = cam.status()
    assert status.state == "running" and status.reconnects == 0, status
    assert "decode_error" not in status.dropped and status.last_error is None, status
    healthy.check()


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two x1, y1, x2, y2 boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, float(w)) * max(0.0, float(h))
    union = float((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])) - inter
    return inter / union if union > 0 else 0.0


@pytest.mark.timeout(180)
async def test_pipeline_finds_faces_at_each_resolution_in_frame_pixels(
    switching_clip: bytes,
    faces_dir: Path,
    tmp_path: Path,
    engine: FaceEngine,
    engine_settings: EngineSettings,
) -> None:
    """Detection input is fitted per frame: after each switch the faces are found again, and
    their boxes are where the faces are in that frame's own pixels."""
    path = tmp_path / "switching.ts"
    path.write_bytes(switching_clip)
    settings = load_settings(
        data_dir=tmp_path / "data",
        engine=engine_settings.model_dump(),
        watchlist={"snapshot_interval_s": 0},
        pipeline={"snapshots": False},
    )
    # Where the faces are: the detector on the source frames, at the input the pipeline fits
    # to 16:9 frames of either size; scaled below to each frame's size.
    with av.open(str(faces_dir / HAMILTON)) as source:
        originals = [
            frame.to_ndarray(format="bgr24")
            for _, frame in zip(range(len(SWITCH_SIZES)), source.decode(video=0), strict=False)
        ]
    fitted = fitted_detection_size(SMALL, engine.settings.detection_size)
    assert fitted == fitted_detection_size(LARGE, engine.settings.detection_size)
    reference, _ = await asyncio.to_thread(engine.detect_aligned, originals, fitted)

    seen: list[LiveFrame] = []
    with Watchlist.open(settings, engine) as watchlist:
        async with Pipeline(settings, engine, watchlist) as pipeline:
            watch = pipeline.watch_frames("cam", maxsize=len(SWITCH_SIZES))

            async def collect() -> None:
                async for live in watch:
                    seen.append(live)

            collector = asyncio.create_task(collect())
            stream = await pipeline.add_stream(StreamConfig(url=str(path)), "cam")
            await eventually(
                lambda: len(seen) == len(SWITCH_SIZES) or stream.status().last_error is not None,
                pipeline.summary,
                timeout_s=120,
            )
            status = stream.status()
        await collector  # the pipeline closed the watch

    assert status.frames_processed == len(SWITCH_SIZES) and status.dropped == {}, status
    assert [live.image.shape[1::-1] for live in seen] == SWITCH_SIZES
    # Tracked faces that are where the detector puts a face, per segment. A small face near
    # the detection threshold may be found in one image and not in its re-encoded copy, so
    # a tracked face without a counterpart is allowed; one outside its frame is not.
    where_expected = [0, 0, 0]
    for index, live in enumerate(seen):
        width, height = live.image.shape[1], live.image.shape[0]
        expected = reference[index].xyxy * (width / SMALL[0])
        for face in live.faces:
            x1, y1, x2, y2 = face.bbox
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height, (index, face)
            best = max((iou(np.array(face.bbox), box) for box in expected), default=0.0)
            where_expected[index // SWITCH_FRAMES] += best >= 0.5
    # Found at 640x360, at 1280x720 after the switch and at 640x360 again after the next.
    assert all(where_expected), where_expected


# -- file sources that are not video ----------------------------------------------------------


def image_bytes(format: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(buffer, format=format)
    return buffer.getvalue()


#: Files FFmpeg reads as "video" if every demuxer is tried: an image as a one-frame video
#: (named as a video here), a playlist as the clips it names (clip.ts, next to it).
NOT_A_VIDEO_CONTAINER = {
    "photo.mp4": image_bytes("JPEG"),
    "drawing.mkv": image_bytes("PNG"),
    "playlist.m3u8": b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:1.5,\nclip.ts\n#EXT-X-ENDLIST\n",
}


@pytest.mark.parametrize("name", NOT_A_VIDEO_CONTAINER)
async def test_a_file_source_that_is_not_a_video_container_is_refused_at_open(
    name: str, clip: bytes, tmp_path: Path, manager: StreamManager, sink: Sink
) -> None:
    (tmp_path / "clip.ts").write_bytes(clip)
    path = tmp_path / name
    path.write_bytes(NOT_A_VIDEO_CONTAINER[name])
    with av.open(str(path)) as anything_goes:  # FFmpeg trying every demuxer finds video in it
        assert anything_goes.streams.video
    with pytest.raises(StreamOpenError) as refused:
        AvSource(StreamConfig(url=str(path))).open()
    assert refused.value.url == str(path)
    assert "not a video file: its format is none of the accepted" in refused.value.reason
    assert "mpegts" in refused.value.reason

    stream = await manager.add(StreamConfig(url=str(path)), "file")
    await eventually(lambda: stream.status().state == "ended", stream.status)
    status = stream.status()
    assert status.last_error == str(refused.value) and sink.count("file") == 0, status


async def test_a_video_container_under_another_name_is_read(
    clip: bytes, tmp_path: Path, manager: StreamManager, sink: Sink
) -> None:
    """The container is told by the content, not the name: a transport stream named .mp4 is
    an accepted container all the same, and the list is the one streams are vetted with."""
    path = tmp_path / "camera.mp4"
    path.write_bytes(clip)
    stream = await manager.add(StreamConfig(url=str(path)), "file")
    await eventually(lambda: stream.status().state == "ended", stream.status)
    assert sink.count("file") == 45 and stream.status().last_error is None, stream.status()
