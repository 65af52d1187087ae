"""Attacks on a real server, and what it does about them (docs/security.md records each).

One server (uvicorn on port 0, its own data directory) with a short login window and a small
upload limit, attacked over HTTP and WebSockets the way a hostile client would:

- path traversal on snapshot serving: encodings, absolute paths, links placed in the snapshot
  folder that lead out of it, things that are not files;
- file stream sources that are not videos outside the data directory: ``file://`` and relative
  paths, ``/proc``, ``/sys``, ``/dev``, links, the data directory, a FIFO, playlists, other
  FFmpeg protocols;
- bodies above their limit (declared, chunked, many small parts) on JSON routes too, and image
  bombs (GIF, WebP and BMP headers declaring huge sizes, a deflate bomb in a PNG's IDAT, zTXt
  and iCCP bombs; tests/e2e/test_api_faces.py and tests/unit/web/test_uploads.py have the rest);
- WebSockets: malformed, binary, deeply nested and huge messages, floods of filter changes,
  stale credentials, and the session cookie sent from a page of another origin;
- the session cookie sent cross-origin to HTTP routes that change something;
- login guessing in parallel, per user and per address;
- the headers every response and page carries, and CORS closed by default.

Requests that must reach the server unnormalised (``..``, ``%2f``) are written on a raw socket.
"""

from __future__ import annotations

import base64
import concurrent.futures
import http.client
import json
import os
import re
import socket
import struct
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest
from live_server import PASSWORD, LiveServer, server_settings, serving
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from facewatch.config import ENV_PREFIX
from facewatch.web.auth import SESSION_COOKIE

LOGIN_ATTEMPTS = 3
LOGIN_WINDOW_S = 4.0
UPLOAD_LIMIT = 4 * 1024 * 1024
FOREIGN = "https://attacker.example"
#: Another loopback address, so that the login guessing here does not throttle other tests.
GUESSER = "127.0.0.2"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[LiveServer]:
    """This module's own server (not the session's): its settings are part of the attacks, and
    the attacks leave traces (streams, keys, throttled names) no other test should meet."""
    saved = {name: os.environ.pop(name) for name in list(os.environ) if name.startswith(ENV_PREFIX)}
    try:
        settings = server_settings(
            tmp_path_factory.mktemp("secured-data"),
            model_cache,
            auth={"login_attempts": LOGIN_ATTEMPTS, "login_window_s": LOGIN_WINDOW_S},
            server={"max_upload_bytes": UPLOAD_LIMIT},
        )
        with serving(settings) as live:
            yield live
    finally:
        os.environ.update(saved)


@pytest.fixture(scope="module")
def viewer(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client("viewer") as client:
        yield client


@pytest.fixture(scope="module")
def operator(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client("operator") as client:
        yield client


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text[:500]
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] and error["message"]
    return error


def raw_request(
    server: LiveServer, method: str, target: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    """One request written as given (no normalisation of the target): status, headers, body."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        connection.putrequest(method, target, skip_accept_encoding=True)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            connection.putheader(name, value)
        connection.endheaders(body or None)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def session_cookie(server: LiveServer, role: str) -> str:
    """A session of the role's test user, issued as a login would (logins are throttled here)."""
    accounts = server.services.accounts
    secret: str = accounts.issue(accounts.find_user(f"test-{role}").id, "session")
    return secret


# --- snapshots ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def snapshot_folder(server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Today's folder of a camera, with one real snapshot and traps; returns its path part."""
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    data_dir = server.data_dir
    folder = data_dir / "snapshots" / day / "door"
    folder.mkdir(parents=True)
    (folder / "1-face.jpg").write_bytes(b"\xff\xd8\xff\xe0 a snapshot")
    (data_dir / "private-face.jpg").write_bytes(b"\xff\xd8\xff\xe0 beside the folder")
    outside = tmp_path_factory.mktemp("outside")
    (outside / "elsewhere.jpg").write_bytes(b"\xff\xd8\xff\xe0 elsewhere")
    (folder / "out-face.jpg").symlink_to(outside / "elsewhere.jpg")
    (folder / "passwd.jpg").symlink_to("/etc/passwd")
    (folder / "up").symlink_to(data_dir)  # a folder link back up to the data directory
    (folder / "self.jpg").symlink_to(folder / "self.jpg")  # a loop
    os.mkfifo(folder / "pipe-face.jpg")  # reading it would block forever
    (folder / "folder.jpg").mkdir()
    with (folder / "huge-face.jpg").open("wb") as sparse:  # 65 MiB, above any snapshot
        sparse.truncate(65 * 1024 * 1024)
    return f"{day}/door"


def test_a_snapshot_is_served_from_its_folder(
    server: LiveServer, snapshot_folder: str, viewer: httpx.Client
) -> None:
    served = viewer.get(f"/api/snapshots/{snapshot_folder}/1-face.jpg")
    assert served.status_code == 200 and served.content == b"\xff\xd8\xff\xe0 a snapshot"
    assert served.headers["content-type"] == "image/jpeg"
    assert served.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    "target",
    [
        "{day}/door/out-face.jpg",  # a link to a file outside
        "{day}/door/passwd.jpg",  # a link to a system file
        "{day}/door/up/private-face.jpg",  # through a folder link back to the data directory
        "{day}/door/self.jpg",  # a loop of links
        "{day}/door/pipe-face.jpg",  # a FIFO
        "{day}/door/folder.jpg",  # a folder
        "{day}/door/huge-face.jpg",  # larger than any snapshot
        "..%2fprivate-face.jpg",
        "%2e%2e/private-face.jpg",
        "%252e%252e%252fprivate-face.jpg",  # double-encoded
        "%c0%ae%c0%ae/private-face.jpg",  # overlong UTF-8 dots
        "%ef%bc%8e%ef%bc%8e/private-face.jpg",  # full-width dots
        "..%5cprivate-face.jpg",  # backslash
        "{day}/door/1-face.jpg%00.png",
        "{day}/door/1-face.jpg;/../../private-face.jpg",
        "%2fetc%2fpasswd",
        "/etc/passwd",
        "/proc/self/environ",
        "snapshots/../private-face.jpg",
        "a/" * 2000 + "x.jpg",  # longer than any snapshot path
    ],
)
def test_snapshot_paths_never_lead_out_of_the_snapshots_folder(
    server: LiveServer, snapshot_folder: str, target: str
) -> None:
    day = snapshot_folder.split("/")[0]
    path = "/api/snapshots/" + target.replace("{day}", day)
    status, _, body = raw_request(
        server, "GET", path, {"Authorization": f"Bearer {server.token('viewer')}"}
    )
    assert status == 404, (path, body[:200])
    assert json.loads(body)["error"]["code"] in ("snapshot_not_found", "not_found")
    assert b"elsewhere" not in body and b"root:" not in body and b"beside" not in body


# --- file stream sources ------------------------------------------------------------------------


def write_clip(path: Path) -> Path:
    """A real eight-frame MP4 (64x64): a file every rule lets through, but for where it is."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("mpeg4", rate=8)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        for shade in range(8):
            pixels = np.full((64, 64, 3), shade * 30, np.uint8)
            out.mux(video.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        out.mux(video.encode(None))
    return path


@pytest.fixture(scope="module")
def sources(server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Files to point streams at: a good clip, and each way of reaching what must stay shut."""
    outside = tmp_path_factory.mktemp("sources")
    clip = write_clip(outside / "clip.mp4")
    private = write_clip(server.data_dir / "private.mp4")
    (outside / "into-data.mp4").symlink_to(private)
    (outside / "into-proc.mp4").symlink_to("/proc/self/environ")
    (outside / "data-dir").symlink_to(server.data_dir)
    os.mkfifo(outside / "pipe.mp4")
    (outside / "folder.mp4").mkdir()
    (outside / "list.mp4").write_text("ffconcat version 1.0\nfile /etc/passwd\n")
    (outside / "playlist.mp4").write_text(
        f"#EXTM3U\n#EXTINF:1,\nfile://{private}\n#EXT-X-ENDLIST\n"
    )
    (outside / "text.mp4").write_text("not a video\n")
    return {"outside": outside, "clip": clip, "private": private}


def refused_sources(sources: dict[str, Path], data_dir: Path) -> list[tuple[str, str]]:
    outside = sources["outside"]
    return [
        ("file:///etc/passwd", "not a video file"),
        ("/etc/shadow", "not a video file"),
        ("../../etc/passwd", "absolute path"),
        ("clip.mp4", "absolute path"),
        ("subfile,,start,0,end,0,,:/etc/passwd", "absolute path"),  # FFmpeg would see a protocol
        (f"file://{outside.name}/clip.mp4", "absolute path"),  # file://host/... is relative
        ("/proc/self/environ", "/proc"),
        ("/proc/self/fd/0", "/proc"),
        ("/sys/kernel/notes", "/sys"),
        ("/dev/zero", "/dev"),
        ("/dev/stdin", "/dev"),
        (str(sources["private"]), "data directory"),
        (f"file://{sources['private']}", "data directory"),
        (str(data_dir), "data directory"),
        (str(data_dir / "facewatch.db"), "data directory"),
        (str(outside / "into-data.mp4"), "data directory"),
        (str(outside / "data-dir" / "private.mp4"), "data directory"),
        (f"{outside}/folder.mp4/../data-dir/private.mp4", "data directory"),
        (f"file://{outside}/%2e%2e/{outside.name}/into-data.mp4", "data directory"),
        (str(outside / "into-proc.mp4"), "/proc"),
        (str(outside / "pipe.mp4"), "not a regular file"),
        (str(outside / "folder.mp4"), "not a regular file"),
        (str(outside / "missing.mp4"), "no such file"),
        (str(outside / "list.mp4"), "not a video file"),
        (str(outside / "playlist.mp4"), "not a video file"),
        (str(outside / "text.mp4"), "not a video file"),
    ]


OTHER_PROTOCOLS = [
    "concat:/etc/passwd|/etc/hosts",
    "pipe:0",
    "data:video/mp4;base64,AAAA",
    "tcp://127.0.0.1:5432",
    "udp://127.0.0.1:9",
    "unix:/run/postgresql/.s.PGSQL.5432",
    "ftp://127.0.0.1/clip.mp4",
    "gopher://127.0.0.1/",
]


def test_file_sources_other_than_videos_outside_the_data_dir_are_refused(
    server: LiveServer, operator: httpx.Client, sources: dict[str, Path]
) -> None:
    before = operator.get("/api/streams").json()["items"]
    for url, reason in refused_sources(sources, server.data_dir):
        response = operator.post("/api/streams", json={"url": url, "enabled": False})
        error = error_of(response, 422)
        assert error["code"] == "stream_open_failed", (url, error)
        assert reason in error["message"], (url, error["message"])
        assert "root:" not in response.text, url
    for url in OTHER_PROTOCOLS:
        error = error_of(operator.post("/api/streams", json={"url": url, "enabled": False}), 422)
        assert error["code"] == "invalid_request" and "unsupported scheme" in error["message"]
    assert operator.get("/api/streams").json()["items"] == before


def test_a_file_stream_cannot_be_moved_where_a_new_one_could_not_go(
    server: LiveServer, operator: httpx.Client, sources: dict[str, Path]
) -> None:
    added = operator.post(
        "/api/streams", json={"url": str(sources["clip"]), "id": "moved", "enabled": False}
    )
    assert added.status_code == 201, added.text
    try:
        for url, reason in refused_sources(sources, server.data_dir)[:12]:
            error = error_of(operator.patch("/api/streams/moved", json={"url": url}), 422)
            assert reason in error["message"], (url, error["message"])
        assert operator.get("/api/streams/moved").json()["url"] == str(sources["clip"])
        registry = server.data_dir / "streams.json"  # camera passwords live there: owner only
        assert registry.stat().st_mode & 0o077 == 0
        saved = json.loads(registry.read_text())
        assert [s["config"]["url"] for s in saved["streams"]] == [str(sources["clip"])]
    finally:
        assert operator.delete("/api/streams/moved").status_code == 200


# --- bodies above their limit -------------------------------------------------------------------


def declared_only(server: LiveServer, target: str, length: int, headers: dict[str, str]) -> bytes:
    """The head of the answer to a request that declares ``length`` bytes and sends none."""
    head = f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    head += f"Content-Length: {length}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(head.encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("target", "role", "expected"),
    [
        ("/api/auth/login", None, b"HTTP/1.1 413"),  # public: the size is all it may judge
        ("/api/setup", None, b"HTTP/1.1 413"),
        ("/api/auth/keys", "viewer", b"HTTP/1.1 413"),
        ("/api/users", "admin", b"HTTP/1.1 413"),
        ("/api/users", None, b"HTTP/1.1 401"),  # strangers are refused as such
        ("/api/users", "viewer", b"HTTP/1.1 403"),
        ("/api/publish", "operator", b"HTTP/1.1 413"),
        ("/api/streams", "operator", b"HTTP/1.1 413"),
        ("/api/people", "operator", b"HTTP/1.1 413"),
    ],
)
def test_a_declared_body_above_the_limit_is_refused_without_reading_it(
    server: LiveServer, target: str, role: str | None, expected: bytes
) -> None:
    headers = dict(JSON)
    if role:
        headers["Authorization"] = f"Bearer {server.token(role)}"
    answer = declared_only(server, target, UPLOAD_LIMIT * 100, headers)
    assert answer.startswith(expected), answer[:300]
    body = answer.split(b"\r\n\r\n", 1)[1]
    if body:
        assert b'"error"' in body


def endless(chunk: bytes, count: int) -> Iterator[bytes]:
    """A body sent chunked, without a Content-Length."""
    for _ in range(count):
        yield chunk


@pytest.mark.parametrize(
    ("target", "role"),
    [("/api/auth/login", None), ("/api/auth/keys", "viewer"), ("/api/streams/x/webrtc", "viewer")],
)
def test_a_chunked_json_body_is_cut_off_at_its_limit(
    server: LiveServer, target: str, role: str | None
) -> None:
    headers = dict(JSON)
    if role:
        headers["Authorization"] = f"Bearer {server.token(role)}"
    # 64 MiB offered; the route takes at most a few hundred KiB of it.
    content = endless(b'{"sdp": "' + b"v" * (1 << 20), 64)
    response = httpx.post(f"{server.url}{target}", content=content, headers=headers, timeout=60)
    error = error_of(response, 413)
    assert error["code"] == "payload_too_large" and error["limit"] < UPLOAD_LIMIT


def multipart(parts: list[tuple[str, str | None, bytes]]) -> tuple[bytes, dict[str, str]]:
    boundary = "facewatchsecurity"
    chunks = []
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        chunks.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode())
        chunks.append(data + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_many_small_parts_are_refused_before_they_pile_up(viewer: httpx.Client) -> None:
    fields, headers = multipart([(f"f{i}", None, b"x") for i in range(20_000)])
    error = error_of(viewer.post("/api/faces/detect", content=fields, headers=headers), 422)
    assert error["code"] == "invalid_multipart" and "fields" in error["message"].lower()
    files, headers = multipart([("files", f"{i}.jpg", b"x") for i in range(20_000)])
    error = error_of(viewer.post("/api/faces/detect/batch", content=files, headers=headers), 413)
    assert error["code"] == "too_many_images"
    header = b"x" * (2 * 1024 * 1024)
    body = b'--b\r\nContent-Disposition: form-data; name="' + header + b'"\r\n\r\nx\r\n--b--\r\n'
    response = viewer.post(
        "/api/faces/detect",
        content=body,
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert 400 <= response.status_code < 500, response.text[:300]
    assert response.json()["error"]["message"]


# --- image bombs --------------------------------------------------------------------------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, idat: bytes, extra: bytes = b"") -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + extra
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def zeros_deflated(groups: int) -> tuple[bytes, int]:
    """A zlib stream of ``1 + 258 * (1 + 8 * groups)`` zero bytes, and that size.

    Written by hand rather than by zlib (which would take seconds to compress them): one block
    of fixed Huffman codes, a literal 0, then matches of length 258 at distance 1, whose codes
    (13 bits each) repeat every 8 matches (13 bytes).
    """
    bits: list[int] = []

    def put(value: int, count: int) -> None:  # Huffman codes go most significant bit first
        bits.extend((value >> i) & 1 for i in range(count - 1, -1, -1))

    def take() -> bytes:
        assert len(bits) % 8 == 0
        packed = bytes(sum(bits[i + j] << j for j in range(8)) for i in range(0, len(bits), 8))
        bits.clear()
        return packed

    def match() -> None:
        put(0b11000101, 8)  # length 258 (symbol 285)
        put(0, 5)  # distance 1

    bits.extend([1, 1, 0])  # the last block, fixed codes (type 01, least significant bit first)
    put(0x30, 8)  # literal 0
    match()
    head = take()
    for _ in range(8):
        match()
    group = take()
    put(0, 7)  # end of block
    bits.extend([0] * (-len(bits) % 8))
    size = 1 + 258 * (1 + 8 * groups)
    adler = ((size % 65521) << 16) | 1
    return b"\x78\x01" + head + group * groups + take() + struct.pack(">I", adler), size


def gif_header_only(width: int, height: int) -> bytes:
    screen_descriptor = struct.pack("<HHBBB", width, height, 0, 0, 0)
    image_descriptor = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0)
    return b"GIF89a" + screen_descriptor + image_descriptor + b"\x02\x02\x4c\x01\x00;"


def webp_header_only(width: int, height: int) -> bytes:
    canvas = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + b"VP8X" + struct.pack("<I", 10) + b"\x00" * 4 + canvas
    return b"RIFF" + struct.pack("<I", len(body)) + body


def bmp_header_only(width: int, height: int) -> bytes:
    dib = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + dib


def peak_rss_kib() -> int:
    """The peak resident memory of this process (the server runs in it) since the last reset."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1))  # type: ignore[union-attr]


def reset_peak_rss() -> int:
    Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak to the current size
    return peak_rss_kib()


@pytest.mark.parametrize(
    ("name", "data", "pixels"),
    [
        ("gif", gif_header_only(65_535, 65_535), 65_535 * 65_535),
        ("webp", webp_header_only(16_384, 16_384), 16_384 * 16_384),
        ("bmp", bmp_header_only(100_000, 100_000), 100_000 * 100_000),
    ],
)
def test_a_bomb_declaring_a_huge_size_is_refused_before_decoding(
    viewer: httpx.Client, name: str, data: bytes, pixels: int
) -> None:
    sent_json = viewer.post("/api/faces/detect", json={"image": base64.b64encode(data).decode()})
    sent_file = viewer.post("/api/faces/embed", files={"file": (f"bomb.{name}", data)})
    for response in (sent_json, sent_file):
        error = error_of(response, 413)
        assert error["code"] == "image_too_large" and error["pixels"] == pixels


def test_a_deflate_bomb_inside_a_small_png_decodes_only_what_the_image_needs(
    viewer: httpx.Client,
) -> None:
    bomb, inflated = zeros_deflated(groups=130_000)  # 1.7 MB that inflate to 268 MB
    assert len(bomb) < UPLOAD_LIMIT // 2 and inflated > 250_000_000
    before = reset_peak_rss()
    response = viewer.post("/api/faces/detect", files={"file": ("bomb.png", png(64, 64, bomb))})
    assert response.status_code == 200, response.text
    assert response.json() == {"width": 64, "height": 64, "faces": []}
    grown_mib = (peak_rss_kib() - before) / 1024
    assert grown_mib < 128, f"decoding the bomb took {grown_mib:.0f} MiB more"


@pytest.mark.parametrize("chunk", [b"zTXt", b"iCCP"])
def test_a_compressed_metadata_bomb_is_refused(viewer: httpx.Client, chunk: bytes) -> None:
    bomb, _ = zeros_deflated(groups=130_000)
    pixels = zlib.compress(bytes(64 * (1 + 64 * 3)))
    image = png(64, 64, pixels, png_chunk(chunk, b"name\x00\x00" + bomb))
    before = reset_peak_rss()
    error = error_of(viewer.post("/api/faces/detect", files={"file": ("bomb.png", image)}), 422)
    assert error["code"] == "bad_image" and "too large" in error["message"]
    grown_mib = (peak_rss_kib() - before) / 1024
    assert grown_mib < 128, f"reading the bomb took {grown_mib:.0f} MiB more"


# --- WebSockets ---------------------------------------------------------------------------------


def open_socket(
    server: LiveServer, path: str, *, origin: str | None = None, **headers: str
) -> ClientConnection:
    return connect(
        f"{server.ws_url}{path}",
        origin=origin,  # type: ignore[arg-type]
        additional_headers=headers,
        open_timeout=30,
        close_timeout=10,
        max_size=None,
    )


def receive(socket_: ClientConnection) -> dict[str, Any]:
    """The next message that is not a ping (60 s at most)."""
    deadline = time.monotonic() + 60
    while True:
        message: dict[str, Any] = json.loads(socket_.recv(timeout=deadline - time.monotonic()))
        if message["type"] != "ping":
            return message


def close_code(socket_: ClientConnection) -> int:
    """Read until the server closes (60 s at most); its close code."""
    deadline = time.monotonic() + 60
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            socket_.recv(timeout=max(0.0, deadline - time.monotonic()))
    assert closed.value.rcvd is not None, "closed without a close frame"
    return closed.value.rcvd.code


BAD_MESSAGES = [
    ("{not json", "malformed_message"),
    ("[1, 2, 3]", "malformed_message"),
    ("[" * 30_000 + "]" * 30_000, "malformed_message"),  # nested too deep for the parser
    ('{"type": "subscribe"}', "unknown_message"),
    ('{"type": ["ping"]}', "unknown_message"),
    ('{"filters": [1]}', "invalid_filters"),
    ('{"filters": {"camera": "door"}}', "invalid_filters"),
    ('{"filters": {"type": "sighting"}}', "invalid_filters"),
    ('{"filters": {"person": 1.5}}', "invalid_filters"),
    ('{"filters": {"person": true}}', "invalid_filters"),
    ('{"filters": {"person": 1e400}}', "invalid_filters"),
    ('{"filters": {"stream": {"door": 1}}}', "invalid_filters"),
    (json.dumps({"filters": {"stream": ",".join(f"s{n}" for n in range(101))}}), "invalid_filters"),
]


def test_the_alert_socket_answers_bad_messages_and_stays_usable(server: LiveServer) -> None:
    with open_socket(server, "/ws/alerts", Authorization=f"Bearer {server.token('viewer')}") as ws:
        assert receive(ws)["type"] == "hello"
        for text, code in BAD_MESSAGES:
            ws.send(text)
            answer = receive(ws)
            assert answer["type"] == "error" and answer["error"]["code"] == code, (
                text[:40],
                answer,
            )
            assert answer["error"]["message"]
        ws.send(b'{"type": "ping"}')  # binary frames are not messages
        answer = receive(ws)
        assert answer["error"]["code"] == "binary_message"
        ws.send('{"type": "ping"}')
        assert receive(ws) == {"type": "pong"}


def test_a_flood_of_filter_changes_is_answered_in_order(server: LiveServer) -> None:
    with open_socket(server, "/ws/alerts", Authorization=f"Bearer {server.token('viewer')}") as ws:
        assert receive(ws)["type"] == "hello"
        for n in range(1000):
            ws.send(json.dumps({"filters": {"stream": f"cam-{n}", "type": "match"}}))
        ws.send('{"type": "ping"}')
        answers = []
        while (answer := receive(ws))["type"] != "pong":
            answers.append(answer)
        assert [a["filters"]["stream"] for a in answers] == [[f"cam-{n}"] for n in range(1000)]


@pytest.fixture(scope="module")
def paused_stream(operator: httpx.Client, sources: dict[str, Path]) -> Iterator[str]:
    """A stream that exists (for /ws/live) but decodes nothing."""
    added = operator.post(
        "/api/streams", json={"url": str(sources["clip"]), "id": "quiet", "enabled": False}
    )
    assert added.status_code == 201, added.text
    yield "quiet"
    operator.delete("/api/streams/quiet")


def test_huge_messages_close_the_socket_and_leave_the_server_be(
    server: LiveServer, paused_stream: str
) -> None:
    auth = {"Authorization": f"Bearer {server.token('viewer')}"}
    with open_socket(server, "/ws/alerts", **auth) as ws:
        assert receive(ws)["type"] == "hello"
        ws.send("x" * (64 * 1024 + 1))  # the alert socket's own limit
        assert close_code(ws) == 1009
    with open_socket(server, f"/ws/live/{paused_stream}", **auth) as ws:
        assert receive(ws)["type"] == "hello"
        for text in ("{not json", "[" * 10_000, '{"type": "subscribe"}'):
            ws.send(text)  # the live socket expects nothing and ignores what comes
        ws.send(b"\x00" * 4096)
        with pytest.raises(TimeoutError):
            ws.recv(timeout=1)  # still open, still quiet
        ws.send(b"\x00" * (17 * 1024 * 1024))  # above the WebSocket server's 16 MiB
        assert close_code(ws) == 1009
    with open_socket(server, "/ws/alerts", **auth) as ws:  # and the next client is served
        assert receive(ws)["type"] == "hello"


def refused(server: LiveServer, path: str, **kwargs: Any) -> bool:
    """Whether the handshake is refused: a 401/403, or a close with 1008 before any message."""
    try:
        with open_socket(server, path, **kwargs) as ws:
            ws.recv(timeout=60)
            return False  # a message: it was let in
    except InvalidStatus as exc:
        return exc.response.status_code in (401, 403)
    except ConnectionClosed as exc:
        return exc.rcvd is not None and exc.rcvd.code == 1008


def test_websockets_refuse_credentials_that_stand_for_no_one(
    server: LiveServer, paused_stream: str
) -> None:
    accounts = server.services.accounts
    viewer_id = accounts.find_user("test-viewer").id
    expired = accounts.issue(viewer_id, "token", ttl_s=0.001)
    revoked = accounts.issue_credential(viewer_id, "api_key", name="revoked")
    accounts.revoke(revoked.credential.id)
    gone = accounts.create_user("gone-viewer", PASSWORD, "viewer")
    of_the_gone = accounts.issue(gone.id, "api_key", name="gone")
    accounts.delete_user(gone.id)
    time.sleep(0.01)
    for path in ("/ws/alerts", f"/ws/live/{paused_stream}"):
        for secret in (expired, revoked.secret, of_the_gone, "x" * 8000):
            assert refused(server, f"{path}?token={secret}"), (path, secret[:12])
            assert refused(server, path, Authorization=f"Bearer {secret}"), (path, secret[:12])


def test_a_websocket_opened_with_the_cookie_from_another_origin_is_refused(
    server: LiveServer, paused_stream: str
) -> None:
    cookie = {"Cookie": f"{SESSION_COOKIE}={session_cookie(server, 'viewer')}"}
    own = f"http://127.0.0.1:{server.port}"
    for path in ("/ws/alerts", f"/ws/live/{paused_stream}"):
        for origin in (FOREIGN, "null", f"http://127.0.0.1:{server.port + 1}", "http://localhost"):
            assert refused(server, path, origin=origin, **cookie), (path, origin)
        with open_socket(server, path, origin=own, **cookie) as ws:
            assert receive(ws)["type"] == "hello"
        with open_socket(server, path, **cookie) as ws:  # no Origin: not a browser
            assert receive(ws)["type"] == "hello"
        # A bearer credential is no ambient authority: a page of another site has to be given it.
        token = {"Authorization": f"Bearer {server.token('viewer')}"}
        with open_socket(server, path, origin=FOREIGN, **token) as ws:
            assert receive(ws)["type"] == "hello"


# --- the session cookie and cross-origin requests -----------------------------------------------


def test_the_cookie_changes_nothing_when_sent_from_another_origin(server: LiveServer) -> None:
    cookie = {"Cookie": f"{SESSION_COOKIE}={session_cookie(server, 'viewer')}"}
    own = f"http://127.0.0.1:{server.port}"
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for origin in (FOREIGN, "null", f"http://127.0.0.1:{server.port + 1}"):
            headers = {**cookie, "Origin": origin}
            error = error_of(
                client.post("/api/auth/keys", json={"name": "x"}, headers=headers), 403
            )
            assert "cross-origin" in error["message"]
            # Nor can a malformed body make it say more about the route.
            malformed = client.post("/api/auth/keys", content=b"{", headers={**headers, **JSON})
            assert malformed.status_code == 401
            assert client.get("/api/auth/me", headers=headers).status_code == 200  # reads pass
        created = client.post(
            "/api/auth/keys", json={"name": "x"}, headers={**cookie, "Origin": own}
        )
        assert created.status_code == 201, created.text
        plain = client.post("/api/auth/keys", json={"name": "y"}, headers=cookie)
        assert plain.status_code == 201, plain.text
        bearer = {"Authorization": f"Bearer {server.token('viewer')}", "Origin": FOREIGN}
        assert client.post("/api/auth/keys", json={"name": "z"}, headers=bearer).status_code == 201


def test_cors_is_closed_by_default(server: LiveServer) -> None:
    preflight = httpx.options(
        f"{server.url}/api/people",
        headers={
            "Origin": FOREIGN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
        timeout=60,
    )
    assert "access-control-allow-origin" not in preflight.headers
    assert preflight.status_code in (401, 405)
    answered = httpx.get(
        f"{server.url}/api/auth/me",
        headers={"Origin": FOREIGN, "Authorization": f"Bearer {server.token('viewer')}"},
        timeout=60,
    )
    assert answered.status_code == 200
    assert not any(name.startswith("access-control-") for name in answered.headers)


def test_every_response_carries_the_security_headers(server: LiveServer) -> None:
    cookie = {SESSION_COOKIE: session_cookie(server, "viewer")}
    with httpx.Client(base_url=server.url, timeout=60, cookies=cookie) as client:
        answers = {
            path: client.get(path)
            for path in ("/", "/events", "/login", "/api/auth/me", "/api/nowhere", "/docs")
        }
        answers["/static/js/api.js"] = client.get("/static/js/api.js")
    for path, response in answers.items():
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert response.headers["referrer-policy"] == "same-origin", path
        assert response.headers["x-frame-options"] == "DENY", path
    for path in ("/", "/events"):
        assert answers[path].status_code == 200
    for path in ("/", "/events", "/login"):
        policy = answers[path].headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy, path
        assert "unsafe-eval" not in policy and "'unsafe-inline'" not in policy.split("style-src")[0]
    assert "content-security-policy" not in answers["/docs"].headers  # Swagger UI's CDN
    assert "content-security-policy" not in answers["/api/auth/me"].headers


# --- login guessing ------------------------------------------------------------------------------


def guess(server: LiveServer, username: str, password: str) -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=GUESSER)
    with httpx.Client(base_url=server.url, transport=transport, timeout=60) as client:
        return client.post("/api/auth/login", json={"username": username, "password": password})


def test_login_guessing_is_throttled_per_user_and_per_address(server: LiveServer) -> None:
    server.services.accounts.create_user("guessed", PASSWORD, "viewer")
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        wrong = list(pool.map(lambda n: guess(server, "guessed", f"guess {n}"), range(12)))
    statuses = sorted(response.status_code for response in wrong)
    # Each attempt counts before its password is checked: parallel guesses get no extra tries.
    assert statuses == [401] * LOGIN_ATTEMPTS + [429] * (12 - LOGIN_ATTEMPTS), statuses
    for response in wrong:
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) >= 1
            assert error_of(response, 429)["code"] == "rate_limited"

    right = guess(server, "guessed", PASSWORD)
    error = error_of(right, 429)  # the right password too, while throttled
    assert SESSION_COOKIE not in right.headers.get("set-cookie", "")
    assert error["retry_after_s"] == int(right.headers["retry-after"])
    other = guess(server, "test-viewer", PASSWORD)
    assert other.status_code == 429  # the address is throttled, whoever it names
    with httpx.Client(base_url=server.url, timeout=60) as elsewhere:  # other addresses are not
        answer = elsewhere.post(
            "/api/auth/login", json={"username": "test-operator", "password": PASSWORD}
        )
        assert answer.status_code == 200, answer.text

    time.sleep(int(right.headers["retry-after"]))
    deadline = time.monotonic() + 60  # generous: only catches a throttle that never lifts
    while (admitted := guess(server, "guessed", PASSWORD)).status_code == 429:
        assert time.monotonic() < deadline, admitted.text
        time.sleep(0.5)
    assert admitted.status_code == 200, admitted.text
    set_cookie = admitted.headers["set-cookie"]
    assert SESSION_COOKIE in set_cookie and "HttpOnly" in set_cookie
    assert "SameSite=strict" in set_cookie or "SameSite=Strict" in set_cookie
    assert "Path=/" in set_cookie and "Domain" not in set_cookie
    assert admitted.headers["cache-control"] == "no-store"
