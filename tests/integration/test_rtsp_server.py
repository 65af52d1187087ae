"""The loopback RTSP server that stream tests read, checked with a real client (PyAV, RTSP/TCP)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path

import av
import pytest
from av.container import InputContainer
from rtsp_server import RtspServer, _describe, rtsp_available
from rtsp_server import rtsp_server_factory as rtsp_server_factory  # the fixture

pytestmark = pytest.mark.timeout(180)

ServerFactory = Callable[[dict[str, Path]], RtspServer]
HAMILTON = "videos/fr_short_hamilton_clip.mp4"  # 640x360, 29.97 fps, 275 frames, has audio
THANKS = "videos/intel_asl_thanks.mkv"  # 640x480, 30 fps, 1.7 s, 51 frames
#: Open (which waits for a key frame: up to one loop of a clip) and read timeouts.
TIMEOUT_S = (20.0, 10.0)


@pytest.fixture(scope="module")
def clips(read_csv: Callable[[str], list[dict[str, str]]]) -> dict[str, dict[str, str]]:
    """videos/videos.csv rows by path: width, height, fps, frames, ..."""
    return {row["path"]: row for row in read_csv("videos/videos.csv")}


def open_stream(url: str) -> InputContainer:
    return av.open(url, options={"rtsp_transport": "tcp"}, timeout=TIMEOUT_S)


def take(container: InputContainer, count: int) -> list[av.VideoFrame]:
    """The first ``count`` decoded frames (fewer if the stream ends)."""
    frames: list[av.VideoFrame] = []
    for frame in container.decode(video=0):
        frames.append(frame)
        if len(frames) == count:
            break
    return frames


def frames_until_end(container: InputContainer, limit: int) -> int:
    """How many frames decode before the stream ends or a read fails (at most ``limit``)."""
    count = 0
    try:
        for _ in container.decode(video=0):
            count += 1
            if count == limit:
                break
    except av.error.FFmpegError:
        pass  # a reset connection or a read timeout ends it too
    return count


def size_of(row: dict[str, str]) -> tuple[int, int]:
    return int(row["width"]), int(row["height"])


def test_client_decodes_the_clip_at_its_frame_rate(
    rtsp_server_factory: ServerFactory, faces_dir: Path, clips: dict[str, dict[str, str]]
) -> None:
    server = rtsp_server_factory({"hamilton": faces_dir / HAMILTON})
    fps = float(clips[HAMILTON]["fps"])
    count = 60  # 2 s of the clip

    started = time.monotonic()
    with open_stream(server.url("hamilton")) as container:
        frames = take(container, count)
    elapsed = time.monotonic() - started

    assert len(frames) == count
    assert {(frame.width, frame.height) for frame in frames} == {size_of(clips[HAMILTON])}
    # Paced, not a flood: frames leave the server no faster than the clip plays, apart from what
    # it queued before the client's PLAY (half a second at most). A lower bound: slow machines pass.
    assert elapsed >= count / fps * 0.5


def test_stream_loops_past_the_end_of_the_clip(
    rtsp_server_factory: ServerFactory, faces_dir: Path, clips: dict[str, dict[str, str]]
) -> None:
    server = rtsp_server_factory({"thanks": faces_dir / THANKS})
    in_file = int(clips[THANKS]["frames"])

    with open_stream(server.url("thanks")) as container:
        frames = take(container, in_file + 40)

    assert len(frames) == in_file + 40
    times = [frame.time for frame in frames]
    assert all(later > earlier for earlier, later in pairwise(times)), times


def test_kill_ends_the_stream_and_restart_serves_the_same_url(
    rtsp_server_factory: ServerFactory, faces_dir: Path, clips: dict[str, dict[str, str]]
) -> None:
    server = rtsp_server_factory({"cam": faces_dir / THANKS})
    url = server.url("cam")
    with open_stream(url) as container:
        assert len(take(container, 5)) == 5
        server.kill()
        # What was in flight may still decode; then the stream ends or the read fails.
        assert frames_until_end(container, limit=100) < 100

    server.restart()

    assert server.url("cam") == url
    with open_stream(url) as container:
        frames = take(container, 5)
    assert [(frame.width, frame.height) for frame in frames] == [size_of(clips[THANKS])] * 5


def test_mounts_and_clients_at_once(
    rtsp_server_factory: ServerFactory, faces_dir: Path, clips: dict[str, dict[str, str]]
) -> None:
    server = rtsp_server_factory({"hamilton": faces_dir / HAMILTON, "thanks": faces_dir / THANKS})
    # Two clients share the hamilton mount while a third reads the other one.
    readers = {"hamilton-1": HAMILTON, "hamilton-2": HAMILTON, "thanks": THANKS}

    def read(reader: str) -> list[tuple[int, int]]:
        with open_stream(server.url(reader.split("-")[0])) as container:
            return [(frame.width, frame.height) for frame in take(container, 10)]

    with ThreadPoolExecutor(len(readers)) as pool:
        sizes = dict(zip(readers, pool.map(read, readers), strict=True))

    assert sizes == {reader: [size_of(clips[clip])] * 10 for reader, clip in readers.items()}


def test_clients_may_come_right_after_one_another(
    rtsp_server_factory: ServerFactory, faces_dir: Path
) -> None:
    server = rtsp_server_factory({"cam": faces_dir / THANKS})
    # Each DESCRIBE makes a media that its closing connection then tears down; the next client
    # must not see that (a shared media answers some of these with 503 Service Unavailable).
    statuses = [_describe(server.port, "cam", timeout=10) for _ in range(30)]

    assert statuses == [200] * 30


def test_stop_is_idempotent_and_frees_the_port(faces_dir: Path) -> None:
    if (reason := rtsp_available()) is not None:
        pytest.skip(reason)
    with RtspServer({"cam": faces_dir / THANKS}) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5):
            pass
    server.stop()

    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
