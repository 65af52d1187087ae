"""The web UI in a real browser: log in, publish a webcam, watch it recognised live.

Headless Chromium (Debian's, /usr/bin/chromium) driven by Playwright against the session's test
server. Its fake camera plays a Y4M clip made at test time from the part of
``fr_short_hamilton_clip.mp4`` where lin_manuel_miranda faces the camera; he is enrolled through
the API first. The test logs in through the login page, publishes the camera on ``/publish``,
opens the stream's live view in a second tab and checks that the video plays, that a box named
lin_manuel_miranda is drawn over it (the canvas's ``data-names`` and non-empty pixels) and that
his alert shows in the feed with its snapshot. A screenshot of the live view is saved under
``test-artifacts/``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import aioice.ice
import av
import pytest
from live_server import PASSWORD, LiveServer
from playwright.sync_api import Browser, Page, expect, sync_playwright

from facewatch.web.live_view import LiveViews

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
HAMILTON = "videos/fr_short_hamilton_clip.mp4"
PERSON = "lin_manuel_miranda"
#: Frames of the clip where lin_manuel_miranda faces the camera; every other one, at 15 fps.
SEGMENT = range(90, 210, 2)
WAIT_MS = 90_000


@pytest.fixture(scope="module")
def camera_clip(faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The segment as Y4M (640x360, yuv420p, 15 fps), what Chromium's fake camera reads."""
    path = tmp_path_factory.mktemp("camera") / "lin.y4m"
    with (
        av.open(str(faces_dir / HAMILTON)) as source,
        av.open(str(path), "w", "yuv4mpegpipe") as out,
    ):
        video = out.add_stream("rawvideo", rate=15)
        video.width, video.height, video.pix_fmt = 640, 360, "yuv420p"
        for index, frame in enumerate(source.decode(video=0)):
            if index in SEGMENT:
                out.mux(video.encode(frame.reformat(640, 360, "yuv420p")))
        out.mux(video.encode(None))
    return path


@pytest.fixture(scope="module")
def loopback_ice() -> Iterator[None]:
    """The server (in this process) offers ICE candidates on 127.0.0.1 only.

    aioice skips loopback when it gathers host candidates, so a machine whose only interface
    is ``lo`` would offer none; Chromium reaches 127.0.0.1 with
    ``--allow-loopback-in-peer-connection``.
    """

    def loopback_only(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return ["127.0.0.1"]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(aioice.ice, "get_host_addresses", loopback_only)
        yield


@pytest.fixture(scope="module")
def browser(camera_clip: Path, loopback_ice: None) -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream",
                f"--use-file-for-fake-video-capture={camera_clip}",
                "--allow-loopback-in-peer-connection",
            ],
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def enrolled(server: LiveServer, faces_dir: Path) -> int:
    """lin_manuel_miranda, enrolled through the API from his photos; his person id."""
    photos = sorted((faces_dir / "identities" / PERSON).iterdir())
    files = [("photos", (p.name, p.read_bytes(), "image/jpeg")) for p in photos]
    with server.client("operator") as client:
        response = client.post("/api/people", data={"name": PERSON}, files=files)
    assert response.status_code == 201, response.text
    person_id: int = response.json()["person"]["id"]
    return person_id


def log_in(page: Page, server: LiveServer, path: str) -> None:
    """Open ``path``, get sent to the login page, log in, and land back on ``path``."""
    page.goto(f"{server.url}{path}")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.fill("#username", "test-operator")
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    expect(page).to_have_url(f"{server.url}{path}")


def wait_until(page: Page, predicate: Callable[[], bool], timeout_s: float = 30) -> None:
    """Poll the server's state (from this thread) until ``predicate``; fail after the timeout."""
    for _ in range(int(timeout_s * 10)):
        if predicate():
            return
        page.wait_for_timeout(100)
    assert predicate()


def test_a_published_webcam_is_recognised_live(
    browser: Browser, server: LiveServer, enrolled: int
) -> None:
    stream_name = f"browser cam {uuid.uuid4().hex[:6]}"
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    try:
        publisher = context.new_page()
        publisher.on("pageerror", lambda error: errors.append(str(error)))
        log_in(publisher, server, "/publish")
        publisher.fill('#publish-form input[name="name"]', stream_name)
        publisher.click("#publish-start")
        expect(publisher.locator("#publish-live")).to_be_visible(timeout=WAIT_MS)
        stream_id = publisher.locator("#publish-live").get_attribute("data-stream")
        assert stream_id and stream_id.startswith("browser-cam-")
        with server.client("viewer") as client:
            stream = client.get(f"/api/streams/{stream_id}").json()
        assert stream["kind"] == "webrtc" and stream["name"] == stream_name

        viewer = context.new_page()  # same context: the session cookie is shared
        viewer.on("pageerror", lambda error: errors.append(str(error)))
        viewer.goto(f"{server.url}/live/{stream_id}")
        expect(viewer.locator("#user-name")).to_have_text("test-operator")

        # The video plays: frames of the published camera, at its size, time moving on.
        viewer.wait_for_function(
            """() => {
                const v = document.getElementById("video");
                return v.readyState >= 2 && v.videoWidth === 640 && v.videoHeight === 360
                    && v.currentTime > 0.5 && !v.paused;
            }""",
            timeout=WAIT_MS,
        )
        # A box named after him is drawn, from the metadata of the very frame on screen
        # ("exact": its RTP timestamp matched, see static/js/overlay.js).
        viewer.wait_for_function(
            """(name) => {
                const canvas = document.getElementById("overlay");
                const names = JSON.parse(canvas.dataset.names || "[]");
                if (!names.includes(name) || canvas.dataset.synced !== "exact") return false;
                const pixels = canvas.getContext("2d")
                    .getImageData(0, 0, canvas.width, canvas.height).data;
                let drawn = 0;
                for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) drawn++;
                return drawn > 100;
            }""",
            arg=PERSON,
            timeout=WAIT_MS,
        )
        expect(viewer.locator(f'#overlay-faces li[data-person="{PERSON}"]')).to_have_count(1)

        # His alert is in the feed, with a face snapshot that loads.
        alert = viewer.locator(f'#alerts li[data-person="{PERSON}"][data-type="match"]').first
        expect(alert).to_be_visible(timeout=WAIT_MS)
        expect(alert).to_contain_text(stream_id)
        snapshot = alert.locator("img")
        expect(snapshot).to_have_attribute("src", re.compile(r"/api/snapshots/"))
        viewer.wait_for_function(
            "(img) => img.complete && img.naturalWidth > 0",
            arg=snapshot.element_handle(),
            timeout=WAIT_MS,
        )
        ARTIFACTS.mkdir(exist_ok=True)
        viewer.screenshot(path=str(ARTIFACTS / "browser-live-view.png"))
        # The other pages show the same state, read through the API.
        pages = context.new_page()
        pages.on("pageerror", lambda error: errors.append(str(error)))
        pages.goto(f"{server.url}/")
        expect(pages.locator(f'#streams tr[data-stream="{stream_id}"]')).to_contain_text(
            "running", timeout=WAIT_MS
        )
        pages.screenshot(path=str(ARTIFACTS / "browser-streams.png"))
        pages.goto(f"{server.url}/events")
        pages.fill('#event-filters input[name="stream"]', stream_id)
        pages.select_option('#event-filters select[name="type"]', "match")
        pages.click('#event-filters button[type="submit"]')
        event = pages.locator('#events tbody tr[data-type="match"]').first
        expect(event).to_contain_text(PERSON, timeout=WAIT_MS)
        expect(pages.locator('#events tbody tr:not([data-type="match"])')).to_have_count(0)
        pages.screenshot(path=str(ARTIFACTS / "browser-events.png"))
        pages.goto(f"{server.url}/people")
        pages.fill('#people-search input[name="search"]', PERSON)
        pages.click('#people-search button[type="submit"]')
        person = pages.locator(f'#people tbody tr[data-id="{enrolled}"]')
        expect(person).to_contain_text(PERSON, timeout=WAIT_MS)
        person.locator("button").click()
        photo = pages.locator("#person-dialog .photos img").first
        expect(photo).to_be_visible(timeout=WAIT_MS)
        pages.wait_for_function(
            "(img) => img.complete && img.naturalWidth > 0", arg=photo.element_handle()
        )
        pages.screenshot(path=str(ARTIFACTS / "browser-people.png"))
        pages.close()

        views = LiveViews.of(server.services)
        assert views.viewers(stream_id) == 2  # this tab, and the publish page's own view
        viewer.close()  # the tab goes: so does its peer on the server
        wait_until(publisher, lambda: views.viewers(stream_id) == 1)

        # Stopping the camera removes the stream.
        publisher.click("#publish-stop")
        expect(publisher.locator("#publish-live")).to_be_hidden()
        with server.client("viewer") as client:
            wait_until(
                publisher, lambda: client.get(f"/api/streams/{stream_id}").status_code == 404
            )
        wait_until(publisher, lambda: views.viewers(stream_id) == 0)
    finally:
        context.close()
    assert errors == []
