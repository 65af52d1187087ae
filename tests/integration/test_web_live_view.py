"""The live view, webcam publishing and the pages, over a real uvicorn on 127.0.0.1 (port 0).

The app holds only the routes under test (``routes/live.py``, ``routes/pages.py``) and serves a
real :class:`Pipeline` (offline pack on the CPU, lin_manuel_miranda and alex_lacamoire enrolled)
and real accounts in the watchlist's SQLite store. The browser's side is played by aiortc peers
and a WebSocket client. The clip is the part of ``fr_short_hamilton_clip.mp4`` where
lin_manuel_miranda faces the camera (frames 90-209).

ICE runs on 127.0.0.1 only: aioice skips loopback when it gathers host candidates, so the
``loopback_ice`` fixture makes it return ``["127.0.0.1"]`` (see ``test_webrtc_ingest.py``).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aioice.ice
import av
import httpx
import numpy as np
import pytest
import uvicorn
import websockets
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import MediaStreamError
from av.video.frame import VideoFrame
from fastapi import FastAPI
from numpy.typing import NDArray

from facewatch.config import EngineSettings, Settings, load_settings
from facewatch.pipeline.runner import Pipeline
from facewatch.pipeline.taps import FrameWatch
from facewatch.pipeline.types import LiveFrame
from facewatch.recognizer.engine import FaceEngine
from facewatch.stream.config import StreamConfig
from facewatch.watchlist.service import Photo, Watchlist
from facewatch.web.accounts import Accounts
from facewatch.web.auth import Role
from facewatch.web.errors import install_error_handlers
from facewatch.web.live_view import EXTRAS_KEY, LiveVideoTrack, LiveViews, frame_message
from facewatch.web.publish import EXTRAS_KEY as PUBLISHER_KEY
from facewatch.web.publish import WebcamPublisher
from facewatch.web.routes import live, pages

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

HAMILTON = "videos/fr_short_hamilton_clip.mp4"
LIN = "lin_manuel_miranda"
PERFORMERS = (LIN, "alex_lacamoire")
#: Frames of the clip where lin_manuel_miranda faces the camera, 640x360.
SEGMENT = range(90, 210)
PASSWORD = "correct horse battery staple"
WRAP = 2**32


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Gather ICE host candidates on 127.0.0.1 and nowhere else."""

    def loopback_only(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return ["127.0.0.1"]

    monkeypatch.setattr(aioice.ice, "get_host_addresses", loopback_only)


@pytest.fixture(scope="module")
def clip_images(faces_dir: Path) -> list[NDArray[np.uint8]]:
    """The segment of the clip, (360, 640, 3) BGR."""
    with av.open(str(faces_dir / HAMILTON)) as container:
        images = [
            frame.to_ndarray(format="bgr24")
            for index, frame in enumerate(container.decode(video=0))
            if index in SEGMENT
        ]
    return images


@pytest.fixture(scope="module")
def clip_file(
    clip_images: list[NDArray[np.uint8]], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The segment as an MP4 file, for a looping file stream."""
    path = tmp_path_factory.mktemp("live-clip") / "lin.mp4"
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=30)
        video.width, video.height, video.pix_fmt = 640, 360, "yuv420p"
        video.bit_rate = 4_000_000
        for image in clip_images:
            container.mux(video.encode(VideoFrame.from_ndarray(image, format="bgr24")))
        container.mux(video.encode(None))
    return path


@dataclass
class Prepared:
    settings: Settings
    tokens: dict[str, str]
    names: dict[int, str]


@pytest.fixture(scope="module")
def prepared(
    tmp_path_factory: pytest.TempPathFactory,
    engine_settings: EngineSettings,
    engine: FaceEngine,
    faces_dir: Path,
) -> Prepared:
    """A data directory with the performers enrolled and a user (and API key) per role."""
    settings = load_settings(
        data_dir=tmp_path_factory.mktemp("live-data"),
        engine=engine_settings.model_dump(),
        watchlist={"snapshot_interval_s": 0},
        server={"live_fps": 10},
    )
    names, tokens = {}, {}
    with Watchlist.open(settings, engine) as watchlist:
        for name in PERFORMERS:
            folder = faces_dir / "identities" / name
            photos = [Photo(str(p), p.read_bytes()) for p in sorted(folder.iterdir())]
            names[watchlist.enroll({"name": name}, photos, largest=True).person.id] = name
        accounts = Accounts(watchlist.store, settings.auth)
        for role in Role:
            user = accounts.create_user(f"live-{role}", PASSWORD, role)
            tokens[str(role)] = accounts.issue(user.id, "api_key", name="tests")
    return Prepared(settings, tokens, names)


@dataclass
class Served:
    """A running app: its address, services and an HTTP client per role."""

    url: str
    services: Any
    pipeline: Pipeline
    tokens: dict[str, str]
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://")

    def client(self, role: str | None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        client = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=60)
        self.clients.append(client)
        return client

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


def our_threads() -> set[threading.Thread]:
    # The loop's default executor (asyncio_N: aiortc encodes there) belongs to the loop.
    return {t for t in threading.enumerate() if not t.name.startswith("asyncio_")}


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """uvicorn on 127.0.0.1:<port 0> in this event loop; yields its base URL."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(30):
        while not server.started:  # noqa: ASYNC110 (uvicorn offers no event for it)
            await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        async with asyncio.timeout(30):
            await task


@pytest.fixture
async def served(
    prepared: Prepared, engine: FaceEngine, loopback_ice: None
) -> AsyncIterator[Served]:
    """The app on a fresh pipeline; afterwards every peer, stream, thread and task is gone."""
    threads_before = our_threads()
    tasks_before = asyncio.all_tasks()
    settings = prepared.settings
    with Watchlist.open(settings, engine) as watchlist:
        pipeline = Pipeline(settings, engine, watchlist)
        await pipeline.start()
        services = SimpleNamespace(
            settings=settings,
            pipeline=pipeline,
            accounts=Accounts(watchlist.store, settings.auth),
            extras={},
        )
        app = FastAPI()
        install_error_handlers(app)
        app.include_router(live.router)
        app.include_router(pages.router)
        app.state.services = services
        try:
            async with serving(app) as url:
                ready = Served(url, services, pipeline, prepared.tokens)
                try:
                    yield ready
                finally:
                    for client in ready.clients:
                        await client.aclose()
                    # What the server does at shutdown, before closing the pipeline.
                    for key in (PUBLISHER_KEY, EXTRAS_KEY):
                        part = services.extras.pop(key, None)
                        if part is not None:
                            await part.close_all()
        finally:
            await pipeline.close()
    assert {t.name for t in our_threads() - threads_before} == set()
    await no_tasks_left(tasks_before)


async def no_tasks_left(before: set[asyncio.Task[Any]]) -> None:
    for _ in range(100):  # aiortc's tasks finish a few loop turns after close()
        left = asyncio.all_tasks() - before - {asyncio.current_task()}
        if not left:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"tasks left behind: {left}")


async def eventually(predicate: Callable[[], bool], timeout_s: float = 60.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 (the state belongs to peers and threads)
            await asyncio.sleep(0.02)


# --- peers playing the browser ----------------------------------------------------------------


class ClipTrack(VideoStreamTrack):
    """A webcam that shows the clip, looped, at aiortc's 30 frames/s."""

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


class Viewer:
    """A peer that receives a stream's live video, as the live view page does."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTransceiver("video", direction="recvonly")
        self.frames: list[VideoFrame] = []
        self.ended = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._reader = asyncio.ensure_future(self._read(track))

    async def offer(self) -> dict[str, str]:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return {"sdp": self.pc.localDescription.sdp, "type": "offer"}

    async def answer(self, body: dict[str, str]) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(body["sdp"], body["type"]))

    async def _read(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                assert isinstance(frame, VideoFrame)
                self.frames.append(frame)
        except MediaStreamError:
            self.ended.set()

    async def close(self) -> None:
        await self.pc.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


async def watch(served: Served, stream_id: str, role: str = "viewer") -> Viewer:
    viewer = Viewer()
    response = await served.client(role).post(
        f"/api/streams/{stream_id}/webrtc", json=await viewer.offer()
    )
    assert response.status_code == 200, response.text
    await viewer.answer(response.json())
    return viewer


class Metadata:
    """A client of ``/ws/live/{stream}`` that keeps every message."""

    def __init__(self, served: Served, stream_id: str, role: str = "viewer") -> None:
        self.url = f"{served.ws_url}/ws/live/{stream_id}"
        self.headers = served.headers(role)
        self.messages: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()

    async def __aenter__(self) -> Metadata:
        self._task = asyncio.create_task(self._run())
        async with asyncio.timeout(30):
            await self._connected.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        async with websockets.connect(self.url, additional_headers=self.headers) as socket:
            self._connected.set()
            try:
                async for raw in socket:
                    self.messages.append(json.loads(raw))
            finally:
                self.close_code = socket.close_code

    @property
    def frames(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == "frame"]

    async def closed(self) -> int | None:
        assert self._task is not None
        async with asyncio.timeout(30):
            await asyncio.gather(self._task, return_exceptions=True)
        return self.close_code


def matched_to_metadata(frames: list[VideoFrame], messages: list[dict[str, Any]]) -> int:
    """How many received frames carry the timestamp of a metadata message, under one origin.

    The receiver counts pts from its first RTP timestamp, so pts and ``rtp_ticks`` differ by an
    unknown constant: the one most pairs agree on, as the page finds it by voting. aiortc's
    decoder passes pts through its codec's time base, which may round it by one tick (a browser
    reads the RTP timestamp itself), so a tick either way counts as agreeing.
    """
    ticks = [m["rtp_ticks"] for m in messages]
    votes = Counter((frame.pts - t) % WRAP for frame in frames for t in ticks)

    def support(origin: int) -> int:
        return sum(votes[(origin + d) % WRAP] for d in (-1, 0, 1))

    origin = max(votes, key=support)
    known = set(ticks)
    return sum(
        any((frame.pts - origin + d) % WRAP in known for d in (-1, 0, 1)) for frame in frames
    )


# --- the live view ----------------------------------------------------------------------------


async def test_live_video_and_its_faces_share_frame_times(
    served: Served, clip_file: Path, prepared: Prepared
) -> None:
    await served.pipeline.add_stream(StreamConfig(url=str(clip_file), name="Stage", loop=True))
    async with Metadata(served, "stage") as metadata:
        viewer = await watch(served, "stage")
        await eventually(lambda: len(viewer.frames) >= 30)
        await eventually(
            lambda: any(f["person"] == LIN for m in metadata.frames for f in m["faces"])
        )
        frames, messages = list(viewer.frames), list(metadata.frames)
        await viewer.close()

    assert metadata.messages[0] == {"type": "hello", "stream": "stage", "rtp_clock_hz": 90000}
    assert {(f.width, f.height) for f in frames} == {(640, 360)}
    # Every frame sent is a processed frame whose metadata went out with the same timestamp.
    matched = matched_to_metadata(frames, messages)
    assert matched >= 0.75 * len(frames), (matched, len(frames))
    for message in messages:
        assert (message["width"], message["height"]) == (640, 360)
        assert message["rtp_ticks"] == int(message["captured_at"] * 90000) % WRAP
        for face in message["faces"]:
            x1, y1, x2, y2 = face["bbox"]
            assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 360
            if face["person"] is not None:
                assert prepared.names[face["person_id"]] == face["person"]
                assert face["similarity"] > 0.3
    named = [m for m in messages if any(f["person"] == LIN for f in m["faces"])]
    assert named, "lin_manuel_miranda was never named in the metadata"
    seqs = [m["seq"] for m in messages]
    assert seqs == sorted(set(seqs))


async def test_viewers_are_refused_with_clear_errors(served: Served, clip_file: Path) -> None:
    served.services.extras[EXTRAS_KEY] = LiveViews(served.pipeline, fps=5, max_viewers=1)
    await served.pipeline.add_stream(StreamConfig(url=str(clip_file), name="door", loop=True))
    viewer = await watch(served, "door")
    extra = Viewer()
    try:
        offer = await extra.offer()
        viewers = served.client("viewer")
        response = await viewers.post("/api/streams/door/webrtc", json=offer)
        assert response.status_code == 429
        assert response.json()["error"]["code"] == "too_many_viewers"

        response = await viewers.post("/api/streams/nowhere/webrtc", json=offer)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "stream_not_found"

        response = await viewers.post("/api/streams/door/webrtc", json={"sdp": "v=0", "x": 1})
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "invalid_request"

        await viewer.close()  # the viewer's slot is free again once its peer is gone
        await eventually(lambda: served.services.extras[EXTRAS_KEY].viewers("door") == 0)
        sender = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        sender.createDataChannel("chat")
        await sender.setLocalDescription(await sender.createOffer())
        response = await viewers.post(
            "/api/streams/door/webrtc",
            json={"sdp": sender.localDescription.sdp, "type": "offer"},
        )
        await sender.close()
        assert response.status_code == 422
        assert response.json()["error"] == {
            "code": "bad_offer",
            "message": "the offer receives no video",
        }

        response = await served.client(None).post("/api/streams/door/webrtc", json=offer)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
    finally:
        await extra.close()
        await viewer.close()
    assert served.services.extras[EXTRAS_KEY].viewers("door") == 0


async def test_removing_a_stream_ends_its_viewers_and_metadata(
    served: Served, clip_file: Path
) -> None:
    await served.pipeline.add_stream(StreamConfig(url=str(clip_file), name="hall", loop=True))
    views = LiveViews.of(served.services)
    async with Metadata(served, "hall") as metadata:
        viewer = await watch(served, "hall")
        await eventually(lambda: len(viewer.frames) >= 3 and len(metadata.frames) >= 3)
        assert views.viewers("hall") == 1
        await served.pipeline.remove_stream("hall")
        assert await metadata.closed() == 1000
        await eventually(viewer.ended.is_set)
        await eventually(lambda: views.viewers("hall") == 0)
        assert metadata.messages[-1] == {"type": "end", "stream": "hall"}
        await viewer.close()

    async with Metadata(served, "hall") as gone:  # no such stream any more
        assert await gone.closed() == 4404
        assert gone.messages == [
            {"type": "error", "error": {"code": "stream_not_found", "message": "no stream 'hall'"}}
        ]


async def test_metadata_socket_needs_a_viewer(served: Served) -> None:
    url = f"{served.ws_url}/ws/live/anything"
    for headers in ({}, {"Authorization": "Bearer fwk_not-a-real-key"}):
        async with websockets.connect(url, additional_headers=headers) as socket:
            with pytest.raises(websockets.ConnectionClosed):
                await socket.recv()
            assert socket.close_code == 1008


async def test_shutdown_closes_viewers_and_sockets(served: Served, clip_file: Path) -> None:
    await served.pipeline.add_stream(StreamConfig(url=str(clip_file), name="yard", loop=True))
    views = LiveViews.of(served.services)
    async with Metadata(served, "yard") as metadata:
        viewer = await watch(served, "yard")
        await eventually(lambda: len(viewer.frames) >= 3)
        await views.close_all()
        assert await metadata.closed() == 1001
        await eventually(viewer.ended.is_set)
        assert views.viewers("yard") == 0
        late = Viewer()
        try:
            response = await served.client("viewer").post(
                "/api/streams/yard/webrtc", json=await late.offer()
            )
        finally:
            await late.close()
        assert response.status_code == 503
        await viewer.close()
        await views.close_all()  # idempotent


# --- publishing a webcam ---------------------------------------------------------------------


async def test_a_published_webcam_becomes_a_stream_while_connected(
    served: Served, clip_images: list[NDArray[np.uint8]]
) -> None:
    pipeline = served.pipeline
    sender = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    sender.addTrack(ClipTrack(clip_images))
    await sender.setLocalDescription(await sender.createOffer())
    offer = {"sdp": sender.localDescription.sdp, "type": "offer", "name": "Desk cam"}
    watch_ = None
    try:
        response = await served.client("operator").post("/api/publish", json=offer)
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["type"] == "answer" and body["stream"] == {"id": "desk-cam", "name": "Desk cam"}
        stream = pipeline.streams.get("desk-cam")
        assert stream.config.kind == "webrtc" and stream.live
        watch_ = pipeline.watch_frames("desk-cam")
        await sender.setRemoteDescription(RTCSessionDescription(body["sdp"], body["type"]))

        async with asyncio.timeout(60):
            async for frame in watch_:
                assert frame.image.shape == (360, 640, 3)
                if any(face.person == LIN for face in frame.faces):
                    break
        publisher = WebcamPublisher.of(served.services)
        assert publisher.published == ["desk-cam"]

        # The same name again is a conflict; a viewer may not publish.
        response = await served.client("operator").post("/api/publish", json=offer)
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "stream_exists"
        response = await served.client("viewer").post("/api/publish", json=offer)
        assert response.status_code == 403
        response = await served.client("operator").post("/api/publish", json={**offer, "name": " "})
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "invalid_name"
    finally:
        await sender.close()
        if watch_ is not None:
            watch_.close()
    # The browser went: its stream goes too.
    await eventually(lambda: not any(s.id == "desk-cam" for s in pipeline.streams.list()))
    assert WebcamPublisher.of(served.services).published == []


async def test_removing_a_published_stream_closes_its_peer(
    served: Served, clip_images: list[NDArray[np.uint8]]
) -> None:
    sender = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    sender.addTrack(ClipTrack(clip_images))
    await sender.setLocalDescription(await sender.createOffer())
    offer = {"sdp": sender.localDescription.sdp, "type": "offer", "name": "porch"}
    try:
        response = await served.client("operator").post("/api/publish", json=offer)
        assert response.status_code == 201, response.text
        await sender.setRemoteDescription(
            RTCSessionDescription(response.json()["sdp"], response.json()["type"])
        )
        stream = served.pipeline.streams.get("porch")
        await eventually(lambda: stream.status().frames_decoded >= 3)
        await served.pipeline.remove_stream("porch")
        await eventually(lambda: sender.connectionState in ("closed", "failed"))
        assert WebcamPublisher.of(served.services).published == []
    finally:
        await sender.close()


# --- pages ------------------------------------------------------------------------------------


PAGES = ["/", "/live/stage", "/publish", "/people", "/events"]
STATIC = Path(pages.__file__).parents[1] / "static"


@pytest.mark.parametrize("path", [*PAGES, "/live/stage?from=alerts"])
async def test_pages_send_strangers_to_the_login_page(served: Served, path: str) -> None:
    response = await served.client(None).get(path)
    assert response.status_code == 303
    location = httpx.URL(response.headers["location"])
    assert location.path == "/login" and location.params["next"] == path
    assert "<html" not in response.text


@pytest.mark.parametrize("path", PAGES)
async def test_pages_are_served_to_their_roles(served: Served, path: str) -> None:
    response = await served.client("operator").get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    text = response.text
    assert 'data-user="live-operator"' in text and 'data-role="operator"' in text
    script = text.split('<script type="module" src="/static/')[1].split('"')[0]
    assert (STATIC / script).is_file()


async def test_viewers_may_not_open_the_publish_page(served: Served) -> None:
    response = await served.client("viewer").get("/publish")
    assert response.status_code == 403
    assert "operator" in response.text and response.headers["content-type"].startswith("text/")
    assert (await served.client("viewer").get("/people")).status_code == 200


async def test_page_text_is_escaped(served: Served) -> None:
    response = await served.client("viewer").get("/live/%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E")
    assert response.status_code == 200
    assert "<img src=x" not in response.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in response.text


def test_scripts_import_only_modules_that_exist() -> None:
    assert (STATIC / "css" / "app.css").is_file()
    scripts = list((STATIC / "js").glob("*.js"))
    assert len(scripts) >= 5
    for script in scripts:
        for imported in script.read_text().split('from "./')[1:]:
            assert (STATIC / "js" / imported.split('"')[0]).is_file(), (script.name, imported)


# --- the page's frame clock (static/js/overlay.js), pure logic run by Node ---------------------

CLOCK_SCRIPT = """
import { FrameClock } from "%(overlay)s";
const WRAP = 2 ** 32;
const cases = JSON.parse(process.argv[1]);
const results = [];
for (const c of cases) {
  const clock = new FrameClock();
  const seen = [];
  for (const [kind, value] of c.events) {
    if (kind === "message") clock.addMessage({ rtp_ticks: value, faces: [] });
    else {
      const found = clock.frameShown(value);
      seen.push(found ? [found.message.rtp_ticks, found.exact] : null);
    }
  }
  results.push({ origin: clock.origin, seen });
}
console.log(JSON.stringify(results));
"""


def run_clock(cases: list[list[tuple[str, int]]]) -> list[dict[str, Any]]:
    import shutil
    import subprocess

    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed: the page's frame clock cannot be run")
    overlay = (STATIC / "js" / "overlay.js").as_uri()
    done = subprocess.run(
        [
            node,
            "--input-type=module",
            "-e",
            CLOCK_SCRIPT % {"overlay": overlay},
            "--",
            json.dumps([{"events": events} for events in cases]),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results: list[dict[str, Any]] = json.loads(done.stdout)
    return results


def capture_ticks(count: int, start: int, seed: int) -> list[int]:
    """Frame times on the 90 kHz clock, mod 2**32: about 30 fps with the jitter of real capture."""
    rng = np.random.default_rng(seed)
    steps = 3000 + rng.integers(-40, 40, count)
    return [int(v) % WRAP for v in start + np.cumsum(steps)]


ORIGIN = 3_000_000_000


def test_the_frame_clock_draws_each_frame_with_its_own_metadata() -> None:
    ticks = capture_ticks(40, WRAP - 30 * 3000, seed=1)  # the RTP clock wraps halfway
    shown = ticks[::2]  # the video sends every other processed frame
    in_order, frame_first, rounded = [], [], []
    for i, t in enumerate(ticks):
        in_order.append(("message", t))
        frame_first.append(("message", t))
        if t in shown:
            in_order.append(("frame", (ORIGIN + t) % WRAP))
            # The frame is shown before its own metadata arrives (only the older ones are in).
            frame_first.insert(len(frame_first) - 1, ("frame", (ORIGIN + t) % WRAP))
        rounded.append(("message", t))
        if t in shown:  # a decoder that rounds some timestamps up by a tick
            rounded.append(("frame", (ORIGIN + t + i % 3 // 2) % WRAP))
    exact, late, off_by_one = run_clock([in_order, frame_first, rounded])

    assert exact["origin"] == ORIGIN
    # Until the origin is known nothing is drawn; from then on each frame gets its own metadata.
    learning = exact["seen"].index(next(s for s in exact["seen"] if s is not None))
    assert 1 <= learning <= 4
    assert exact["seen"][learning:] == [[t, True] for t in shown[learning:]]
    assert late["origin"] == ORIGIN
    # Shown before its metadata came, a frame gets the newest earlier one, marked not exact.
    assert all(
        s is None or (s[0] != t and not s[1]) for s, t in zip(late["seen"], shown, strict=True)
    )
    assert any(s is not None for s in late["seen"])
    assert abs(off_by_one["origin"] - ORIGIN) <= 1
    learning = off_by_one["seen"].index(next(s for s in off_by_one["seen"] if s is not None))
    assert 1 <= learning <= 4
    assert off_by_one["seen"][learning:] == [[t, True] for t in shown[learning:]]


def test_the_frame_clock_never_draws_metadata_older_than_half_a_second() -> None:
    ticks = capture_ticks(30, 1_000_000, seed=2)
    events: list[tuple[str, int]] = []
    for t in ticks:
        events += [("message", t), ("frame", ORIGIN + t)]
    gap_start = ticks[-1]
    # The metadata stops (a dropped socket); frames keep coming for a second.
    later = [gap_start + step * 3000 for step in range(1, 31)]
    events += [("frame", ORIGIN + t) for t in later]
    (result,) = run_clock([events])
    assert result["origin"] == ORIGIN
    for t, seen in zip(later, result["seen"][len(ticks) :], strict=True):
        if t - gap_start <= 45_000:
            assert seen == [gap_start, False]
        else:
            assert seen is None


# --- the video track, fed by hand ---------------------------------------------------------------


def live_frame(seq: int, captured_at: float) -> LiveFrame:
    image = np.full((36, 64, 3), seq, np.uint8)
    return LiveFrame("cam", seq, seq / 30, captured_at, image, ())


async def test_video_frames_carry_their_capture_time_on_the_rtp_clock() -> None:
    closed: list[FrameWatch] = []
    watch = FrameWatch("cam", 1, closed.append)
    track = LiveVideoTrack(watch, fps=60)
    captured = [1_700_000_000.25, 1_700_000_000.5, 1_700_000_000.4]  # the clock steps back
    sent = []
    for seq, at in enumerate(captured):
        watch.offer(live_frame(seq, at))
        sent.append(await track.recv())
    assert [frame.time_base for frame in sent] == [Fraction(1, 90_000)] * 3
    first, second = int(captured[0] * 90_000), int(captured[1] * 90_000)
    assert [frame.pts for frame in sent] == [first, second, second + 1]
    assert [frame_message(live_frame(0, at))["rtp_ticks"] for at in captured[:2]] == [
        first % WRAP,
        second % WRAP,
    ]
    assert [int(frame.to_ndarray(format="bgr24")[0, 0, 0]) for frame in sent] == [0, 1, 2]

    # Only the newest frame is sent when the viewer is behind.
    for seq in range(3, 6):
        watch.offer(live_frame(seq, 1_700_000_001 + seq))
    assert int((await track.recv()).to_ndarray(format="bgr24")[0, 0, 0]) == 5
    assert watch.dropped == 2

    # The watch ends (stream removed): so does the track; stopping it closes the watch.
    watch.close()
    with pytest.raises(MediaStreamError):
        await track.recv()
    assert track.readyState == "ended" and closed == [watch]
