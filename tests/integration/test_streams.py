"""Streams on real sources: files, a dead camera, corrupt data, run-time control, shutdown.

Frames come from the shared clips (decoded by PyAV on the streams' own threads) and reach a
sink on the event loop that keeps them and reports them processed, as the pipeline does.
Timing is only ever checked from below (a paced file cannot be faster than its frame rate).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from rtsp_server import RtspServer
from rtsp_server import rtsp_server_factory as rtsp_server_factory  # the fixture

from facewatch.errors import StreamOpenError
from facewatch.pipeline.types import Frame
from facewatch.stream import StreamConfig, StreamManager

pytestmark = pytest.mark.timeout(120)

THANKS = "videos/intel_asl_thanks.mkv"  # 640x480, 30 fps, 51 frames, 1.7 s
FIVE = "videos/faceapi_test_video_5frames.mp4"  # 820x460, 23.976 fps, 5 frames, 0.21 s
DAMAGED = "videos/intel_head-pose-face-detection-female.mp4"  # 23 frames
DEAD_RTSP = "rtsp://viewer:hunter2@127.0.0.1:9/none"  # nothing listens on port 9
#: Reconnect quickly in tests.
FAST_RETRY = {"reconnect_initial_s": 0.05, "reconnect_max_s": 0.2}


class Sink:
    """Keeps every frame per stream and reports it processed, like the pipeline."""

    def __init__(self) -> None:
        self.frames: dict[str, list[Frame]] = defaultdict(list)
        self.manager: StreamManager | None = None
        self.threads: set[str] = set()

    def __call__(self, frame: Frame) -> None:
        self.threads.add(threading.current_thread().name)
        self.frames[frame.stream_id].append(frame)
        assert self.manager is not None
        self.manager.get(frame.stream_id).note_processed(frame)

    def count(self, stream_id: str) -> int:
        return len(self.frames[stream_id])


async def eventually(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Wait until ``predicate()`` holds; fail after ``timeout_s``."""
    async with asyncio.timeout(timeout_s):
        while True:  # polls: the state belongs to other threads, no event to wait on
            if predicate():
                return
            await asyncio.sleep(0.02)


def stream_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("facewatch-stream-")]


def new_threads(before: set[threading.Thread]) -> list[str]:
    """Threads started since ``before``, but for the event loop's own executor (to_thread)."""
    return [
        t.name
        for t in threading.enumerate()
        if t not in before and not t.name.startswith("asyncio_")
    ]


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    yield Sink()


@pytest.fixture
async def manager(sink: Sink) -> AsyncIterator[StreamManager]:
    """A manager delivering to ``sink``; closed after the test, which must leave no thread."""
    before = set(threading.enumerate())
    manager = StreamManager(sink)
    sink.manager = manager
    try:
        yield manager
    finally:
        await manager.close(grace_s=5.0)
        assert new_threads(before) == []


def assert_monotonic(frames: list[Frame]) -> None:
    seqs = [f.seq for f in frames]
    pts = [f.pts_s for f in frames]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert all(b >= a for a, b in zip(pts, pts[1:], strict=False))


async def test_file_delivers_every_frame(
    faces_dir: Path, manager: StreamManager, sink: Sink
) -> None:
    stream = await manager.add(StreamConfig(url=str(faces_dir / THANKS)))
    assert not stream.live
    async with asyncio.timeout(20):
        await manager.wait_all_ended()
    frames = sink.frames[stream.id]
    assert [f.seq for f in frames] == list(range(51))
    assert_monotonic(frames)
    assert frames[-1].pts_s == pytest.approx(50 / 30, abs=0.01)
    assert all(f.image.shape == (480, 640, 3) and f.stream_id == stream.id for f in frames)
    assert all(f.decoded_at <= time.monotonic() and f.captured_at > 1e9 for f in frames)
    status = stream.status()
    assert status.state == "ended" and manager.all_ended()
    assert (status.frames_decoded, status.frames_processed, status.dropped) == (51, 51, {})
    assert status.resolution_wh == (640, 480) and status.reconnects == 0
    assert status.lag_s is not None and status.last_error is None
    assert sink.threads == {"MainThread"}  # the sink runs on the event loop's thread
    await eventually(lambda: stream_threads() == [], 2.0)  # the thread ends with the file


async def test_slow_consumer_gets_every_frame_of_a_file(faces_dir: Path) -> None:
    """With ``max_in_flight`` the decoder waits for frames the consumer has not finished."""
    done: list[int] = []
    queue: asyncio.Queue[Frame] = asyncio.Queue()
    manager = StreamManager(queue.put_nowait, max_in_flight=3)

    async def consume() -> None:
        while True:
            frame = await queue.get()
            assert queue.qsize() <= 2  # never more than the window waits
            await asyncio.sleep(0.002)  # slower than decoding
            done.append(frame.seq)
            manager.get(frame.stream_id).note_processed(frame)

    consumer = asyncio.ensure_future(consume())
    try:
        stream = await manager.add(StreamConfig(url=str(faces_dir / THANKS)))
        async with asyncio.timeout(20):
            await manager.wait_all_ended()
            await eventually(lambda: len(done) == 51)
        assert done == list(range(51)) and stream.status().dropped == {}
    finally:
        consumer.cancel()
        await manager.close()


@pytest.mark.slow
async def test_looping_realtime_file_keeps_going(
    faces_dir: Path, manager: StreamManager, sink: Sink
) -> None:
    stream = await manager.add(StreamConfig(url=str(faces_dir / FIVE), loop=True))
    assert stream.config.paced and stream.live
    started = time.monotonic()
    await eventually(lambda: sink.count(stream.id) >= 16)
    elapsed = time.monotonic() - started
    frames = sink.frames[stream.id]
    assert_monotonic(frames)
    assert frames[15].pts_s - frames[0].pts_s > 3 * 0.2  # three loops of a 0.2 s clip
    # Paced at 23.976 frames/s: 15 intervals take at least ~0.6 s (a loose lower bound).
    assert elapsed >= 0.8 * 15 / 23.976
    status = stream.status()
    assert status.state == "running" and not manager.all_ended()
    assert status.reconnects == 0 and status.last_error is None


@pytest.mark.slow
async def test_dead_camera_reconnects_while_a_file_keeps_flowing(
    faces_dir: Path, manager: StreamManager, sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="facewatch.stream")
    dead = await manager.add(StreamConfig(url=DEAD_RTSP, name="Dead cam", **FAST_RETRY))
    clip = await manager.add(StreamConfig(url=str(faces_dir / THANKS), loop=True))
    assert dead.id == "dead-cam"
    await eventually(lambda: dead.status().reconnects >= 3 and sink.count(clip.id) >= 5)
    first = dead.status()
    flowing = sink.count(clip.id)
    await eventually(lambda: dead.status().reconnects > first.reconnects + 1)
    await eventually(lambda: sink.count(clip.id) > flowing + 5)
    status = dead.status()
    assert status.state == "reconnecting" and status.frames_decoded == 0
    assert status.last_error is not None and "refused" in status.last_error.lower()
    assert status.last_error_at is not None and status.last_error_at >= first.last_error_at  # type: ignore[operator]
    # Credentials never show in the status, the errors or the logs.
    assert status.url == "rtsp://***@127.0.0.1:9/none"
    assert "hunter2" not in status.last_error and "hunter2" not in caplog.text
    assert clip.status().state == "running" and not manager.all_ended()


async def test_corrupt_file_ends_with_an_error(
    tmp_path: Path, manager: StreamManager, sink: Sink
) -> None:
    garbage = tmp_path / "x.mp4"
    garbage.write_bytes(bytes(range(256)) * 64)
    stream = await manager.add(StreamConfig(url=str(garbage)))
    async with asyncio.timeout(10):
        await manager.wait_all_ended()
    status = stream.status()
    assert status.state == "ended" and status.frames_decoded == 0
    assert status.last_error is not None and "x.mp4" in status.last_error
    assert "invalid data" in status.last_error.lower()
    assert sink.count(stream.id) == 0


async def test_a_damaged_frame_is_counted_and_skipped(
    faces_dir: Path, tmp_path: Path, manager: StreamManager, sink: Sink
) -> None:
    data = bytearray((faces_dir / DAMAGED).read_bytes())
    middle = len(data) // 2
    data[middle : middle + 2000] = bytes((i * 7 + 13) % 256 for i in range(2000))
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    stream = await manager.add(StreamConfig(url=str(damaged)))
    async with asyncio.timeout(10):
        await manager.wait_all_ended()
    status = stream.status()
    assert status.dropped.get("decode_error", 0) >= 1
    assert 15 <= sink.count(stream.id) < 23  # the file has 23 frames
    assert status.state == "ended" and status.last_error is None  # not fatal
    assert_monotonic(sink.frames[stream.id])


async def test_corrupt_looping_file_is_retried(tmp_path: Path, manager: StreamManager) -> None:
    garbage = tmp_path / "x.mp4"
    garbage.write_bytes(b"\x00garbage" * 1000)
    stream = await manager.add(StreamConfig(url=str(garbage), loop=True, **FAST_RETRY))
    await eventually(lambda: stream.status().reconnects >= 2)
    assert stream.status().state == "reconnecting" and not manager.all_ended()


async def test_add_refuses_missing_files_and_bad_ids(
    tmp_path: Path, faces_dir: Path, manager: StreamManager
) -> None:
    missing = tmp_path / "nowhere.mp4"
    with pytest.raises(StreamOpenError) as caught:
        await manager.add(StreamConfig(url=str(missing)))
    assert str(missing) in str(caught.value) and caught.value.url == str(missing)
    with pytest.raises(StreamOpenError):
        await manager.add(StreamConfig(url=missing.as_uri()))
    clip = str(faces_dir / THANKS)
    disabled = {"url": clip, "enabled": False}
    first = await manager.add(StreamConfig.model_validate(disabled))
    second = await manager.add(StreamConfig.model_validate(disabled))
    named = await manager.add(StreamConfig.model_validate({**disabled, "name": "Front Door #2"}))
    assert [first.id, second.id, named.id] == ["stream-1", "stream-2", "front-door-2"]
    assert named.status().name == "Front Door #2"
    with pytest.raises(ValueError, match="already exists"):
        await manager.add(StreamConfig.model_validate(disabled), "stream-1")
    with pytest.raises(ValueError, match="bad stream id"):
        await manager.add(StreamConfig.model_validate(disabled), "no spaces/slashes")
    with pytest.raises(KeyError):
        manager.get("nope")
    with pytest.raises(KeyError):
        await manager.remove("nope")
    assert [s.id for s in manager.list()] == ["stream-1", "stream-2", "front-door-2"]


@pytest.mark.slow
async def test_pause_resume_update_remove_at_run_time(
    faces_dir: Path, manager: StreamManager, sink: Sink
) -> None:
    clip = StreamConfig(url=str(faces_dir / THANKS), loop=True, name="clip")
    stream = await manager.add(clip)
    await eventually(lambda: sink.count("clip") >= 5)

    await manager.pause("clip")
    assert stream.status().state == "paused" and not stream.config.enabled
    await asyncio.sleep(0.1)  # a frame already handed over may still arrive
    held = sink.count("clip")
    await eventually(lambda: stream.status().dropped.get("paused", 0) >= 5)
    assert sink.count("clip") == held  # decoding goes on, nothing is handed over

    await manager.resume("clip")
    await eventually(lambda: sink.count("clip") >= held + 5)
    assert stream.status().state == "running" and stream.config.enabled

    before = stream.status()
    updated = await manager.update("clip", clip.model_copy(update={"fps_cap": 5.0}))
    assert updated is stream and manager.get("clip") is stream
    await eventually(lambda: stream.status().dropped.get("fps_cap", 0) >= 5)
    after = stream.status()
    assert after.frames_decoded > before.frames_decoded  # counters carry over
    assert after.state == "running" and stream.config.fps_cap == 5.0
    assert_monotonic(sink.frames["clip"])  # numbering and time go on across the restart

    await manager.remove("clip")
    assert stream.status().state == "stopped" and stream_threads() == []
    with pytest.raises(KeyError):
        manager.get("clip")
    gone = sink.count("clip")
    await asyncio.sleep(0.1)
    assert sink.count("clip") == gone


async def test_disabled_stream_starts_on_resume(
    faces_dir: Path, manager: StreamManager, sink: Sink
) -> None:
    stream = await manager.add(StreamConfig(url=str(faces_dir / FIVE), enabled=False))
    assert stream.status().state == "paused" and stream_threads() == []
    await asyncio.sleep(0.05)
    assert sink.count(stream.id) == 0 and not manager.all_ended()
    await manager.resume(stream.id)
    async with asyncio.timeout(10):
        await manager.wait_all_ended()
    assert sink.count(stream.id) == 5 and stream.status().state == "ended"


async def test_paused_unpaced_file_waits_instead_of_dropping(
    faces_dir: Path, manager: StreamManager, sink: Sink
) -> None:
    """An unpaced file keeps every frame: paused, it stops decoding rather than dropping."""
    stream = await manager.add(StreamConfig(url=str(faces_dir / THANKS)))
    await manager.pause(stream.id)
    await asyncio.sleep(0.2)
    decoded = stream.status().frames_decoded
    assert decoded < 51
    await asyncio.sleep(0.2)
    assert stream.status().frames_decoded == decoded
    await manager.resume(stream.id)
    async with asyncio.timeout(10):
        await manager.wait_all_ended()
    assert [f.seq for f in sink.frames[stream.id]] == list(range(51))
    assert stream.status().dropped == {}


async def test_update_to_a_new_source_and_back(
    faces_dir: Path, tmp_path: Path, manager: StreamManager, sink: Sink
) -> None:
    stream = await manager.add(StreamConfig(url=DEAD_RTSP, **FAST_RETRY), "cam")
    await eventually(lambda: stream.status().reconnects >= 1)
    with pytest.raises(StreamOpenError):  # refused up front; the old settings stay
        await manager.update("cam", StreamConfig(url=str(tmp_path / "none.mp4")))
    assert stream.config.url == DEAD_RTSP
    await manager.update("cam", StreamConfig(url=str(faces_dir / FIVE)))
    async with asyncio.timeout(10):
        await manager.wait_all_ended()
    assert sink.count("cam") == 5
    status = stream.status()
    assert status.state == "ended" and status.reconnects >= 1  # counters carried over


async def test_close_stops_everything_and_leaves_no_thread(faces_dir: Path) -> None:
    before = set(threading.enumerate())
    taken: list[Frame] = []  # never reported processed: the unpaced file's window stays full
    manager = StreamManager(taken.append, max_in_flight=1)
    await manager.add(StreamConfig(url=DEAD_RTSP, **FAST_RETRY))
    await manager.add(StreamConfig(url=str(faces_dir / THANKS), loop=True))
    await manager.add(StreamConfig(url=str(faces_dir / THANKS)))  # waits for the consumer
    await manager.add(StreamConfig(url=str(faces_dir / FIVE), enabled=False))
    await manager.add(StreamConfig(url="webrtc"))  # waits for a peer that never comes
    await asyncio.sleep(0.3)
    assert len(stream_threads()) == 4
    started = time.monotonic()
    await asyncio.gather(manager.close(), manager.close())  # idempotent, also concurrently
    await manager.close()
    assert time.monotonic() - started < 5.0  # nothing was blocked long enough to need grace
    assert new_threads(before) == []
    assert {s.status().state for s in manager.list()} == {"stopped"}
    with pytest.raises(RuntimeError):
        await manager.add(StreamConfig(url=DEAD_RTSP))
    async with asyncio.timeout(1):
        await manager.wait_all_ended()  # returns once closed


@pytest.mark.slow
async def test_http_source_delivers_and_reconnects_at_its_end(
    faces_dir: Path, manager: StreamManager, sink: Sink
) -> None:
    """HTTP counts as live: a clip served over HTTP is read, then read again after its end."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(faces_dir / "videos"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    serving = threading.Thread(target=server.serve_forever, name="test-http")
    serving.start()
    try:
        port = server.server_address[1]
        url = f"http://viewer:hunter2@127.0.0.1:{port}/{Path(THANKS).name}"
        stream = await manager.add(StreamConfig(url=url, **FAST_RETRY))
        await eventually(lambda: stream.status().reconnects >= 1 and sink.count(stream.id) >= 60)
        status = stream.status()
        assert status.resolution_wh == (640, 480) and status.url.startswith("http://***@")
        assert "end of stream" in (status.last_error or "")
        assert_monotonic(sink.frames[stream.id])  # pts go on across the reconnect
        await manager.remove(stream.id)
    finally:
        server.shutdown()
        server.server_close()
        serving.join(5)


# -- against a real RTSP server -----------------------------------------------------------

#: Opening waits for a key frame (up to one loop of the served clip).
RTSP_CONFIG = {"open_timeout_s": 10.0, "read_timeout_s": 3.0, **FAST_RETRY}


@pytest.mark.slow
async def test_rtsp_stream_delivers_frames(
    faces_dir: Path,
    manager: StreamManager,
    sink: Sink,
    rtsp_server_factory: Callable[[dict[str, Path]], RtspServer],
) -> None:
    server = await asyncio.to_thread(rtsp_server_factory, {"cam": faces_dir / THANKS})
    stream = await manager.add(StreamConfig(url=server.url("cam"), **RTSP_CONFIG))
    assert stream.live
    await eventually(lambda: sink.count(stream.id) >= 20, timeout_s=20)
    frames = sink.frames[stream.id]
    assert_monotonic(frames)
    assert frames[0].image.shape == (480, 640, 3)
    status = stream.status()
    assert status.state == "running" and status.resolution_wh == (640, 480)
    assert status.input_fps > 0


@pytest.mark.slow
async def test_rtsp_stream_reconnects_after_the_server_restarts(
    faces_dir: Path,
    manager: StreamManager,
    sink: Sink,
    rtsp_server_factory: Callable[[dict[str, Path]], RtspServer],
) -> None:
    server = await asyncio.to_thread(rtsp_server_factory, {"cam": faces_dir / THANKS})
    cam = await manager.add(StreamConfig(url=server.url("cam"), **RTSP_CONFIG), "cam")
    clip = await manager.add(StreamConfig(url=str(faces_dir / FIVE), loop=True), "clip")
    await eventually(lambda: sink.count("cam") >= 10, timeout_s=20)

    await asyncio.to_thread(server.kill)
    await eventually(lambda: cam.status().reconnects >= 1, timeout_s=10)
    assert cam.status().state == "reconnecting" and cam.status().last_error is not None
    during = sink.count("clip")
    await eventually(lambda: sink.count("clip") >= during + 5)  # the other stream flows on
    before_restart = sink.count("cam")

    await asyncio.to_thread(server.restart)
    await eventually(lambda: sink.count("cam") >= before_restart + 10, timeout_s=20)
    status = cam.status()
    assert status.state == "running" and status.reconnects >= 1
    assert_monotonic(sink.frames["cam"])  # pts continue across the reconnect
    assert clip.status().state == "running"
