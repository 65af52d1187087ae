"""Reading uploads: body limits before reading, content sniffing, bombs, base64, batch budgets.

Requests are real Starlette requests fed by an in-memory ``receive``: no server, no sockets.
"""

from __future__ import annotations

import base64
import io
import struct
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image
from starlette.requests import Request

from facewatch.errors import ImageError, ImageTooLargeError
from facewatch.web.errors import ApiError
from facewatch.web.uploads import (
    REQUEST_PIXEL_FACTOR,
    UploadedImage,
    decode_all,
    decode_one,
    from_base64,
    read_json,
    read_upload,
    screen,
    sniff_format,
)
from tests_support import png_header_only

LIMIT = 10_000
MAX_PIXELS = 1_000_000


# --- builders -----------------------------------------------------------------------------------


def encoded(fmt: str, size: tuple[int, int] = (64, 48), mode: str = "RGB") -> bytes:
    """A small real image in ``fmt`` (a Pillow format name)."""
    rng = np.random.default_rng(7)
    channels = {"RGB": 3, "RGBA": 4}[mode]
    pixels = rng.integers(0, 255, (size[1], size[0], channels), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode).save(buffer, fmt)
    return buffer.getvalue()


def gif_header_only(width: int, height: int) -> bytes:
    screen_descriptor = struct.pack("<HHBBB", width, height, 0, 0, 0)
    image_descriptor = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0)
    return b"GIF89a" + screen_descriptor + image_descriptor + b"\x02\x02\x4c\x01\x00;"


def bmp_header_only(width: int, height: int) -> bytes:
    dib = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + dib


def tiff_header_only(width: int, height: int) -> bytes:
    long, short = 4, 3
    entries = [
        (256, long, width),
        (257, long, height),
        (258, short, 8),
        (259, short, 1),
        (262, short, 1),
        (273, long, 8),
        (277, short, 1),
        (278, long, height),
        (279, long, (width * height) & 0xFFFFFFFF),
    ]
    packed = b"".join(
        struct.pack("<HHII", tag, kind, 1, value)
        if kind == long
        else struct.pack("<HHIHH", tag, kind, 1, value, 0)
        for tag, kind, value in entries
    )
    ifd = struct.pack("<H", len(entries)) + packed + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd


def jpeg_header_only(width: int, height: int) -> bytes:
    start_of_frame = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + start_of_frame + b"\xff\xd9"


def webp_header_only(width: int, height: int) -> bytes:
    canvas = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    chunk = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00" + canvas
    body = b"WEBP" + chunk
    return b"RIFF" + struct.pack("<I", len(body)) + body


def request(
    body: bytes | list[bytes],
    content_type: str | None,
    *,
    content_length: int | None = None,
    declare_length: bool = True,
) -> tuple[Request, list[int]]:
    """A request whose body comes in the given chunks; the list counts ``receive`` calls."""
    chunks = body if isinstance(body, list) else [body]
    calls = [0]
    headers = []
    if content_type is not None:
        headers.append((b"content-type", content_type.encode()))
    if declare_length:
        length = sum(len(c) for c in chunks) if content_length is None else content_length
        headers.append((b"content-length", str(length).encode()))

    async def receive() -> dict[str, object]:
        calls[0] += 1
        index = calls[0] - 1
        if index >= len(chunks):
            return {"type": "http.disconnect"}
        return {
            "type": "http.request",
            "body": chunks[index],
            "more_body": index < len(chunks) - 1,
        }

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers, "query_string": b""}
    return Request(scope, receive), calls


def multipart(files: list[tuple[str, str, bytes]], fields: dict[str, str] | None = None) -> bytes:
    boundary = "facewatchboundary"
    parts = []
    for name, value in (fields or {}).items():
        disposition = f'Content-Disposition: form-data; name="{name}"'
        parts.append(f"--{boundary}\r\n{disposition}\r\n\r\n{value}\r\n".encode())
    for name, filename, data in files:
        head = (
            f"--{boundary}\r\nContent-Disposition: form-data; "
            f'name="{name}"; filename="{filename}"\r\nContent-Type: image/jpeg\r\n\r\n'
        ).encode()
        parts.append(head + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


MULTIPART = "multipart/form-data; boundary=facewatchboundary"


# --- sniffing and bombs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (encoded("JPEG"), "JPEG"),
        (encoded("PNG"), "PNG"),
        (encoded("WEBP"), "WEBP"),
        (encoded("BMP"), "BMP"),
        (encoded("TIFF"), "TIFF"),
        (encoded("GIF"), "GIF"),
        (b"%PDF-1.7\n", None),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", None),
        (b"%!PS-Adobe-3.0 EPSF-3.0", None),  # EPS: Pillow would hand it to Ghostscript
        (b"P6\n64 48\n255\n", None),  # PPM: an image, but not one we accept
        (b"BMxx", None),  # "BM" without a known header size
        (b"", None),
    ],
)
def test_formats_are_recognised_by_their_first_bytes(data: bytes, expected: str | None) -> None:
    assert sniff_format(data) == expected


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"])
def test_every_accepted_format_decodes_whatever_its_name_says(fmt: str) -> None:
    item = UploadedImage("file", "photo.txt", encoded(fmt, (64, 48)))
    image = decode_one(item, MAX_PIXELS)
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8


@pytest.mark.parametrize(
    ("fmt", "bomb"),
    [
        ("PNG", png_header_only(60_000, 60_000)),
        ("GIF", gif_header_only(65_535, 65_535)),
        ("BMP", bmp_header_only(30_000, 30_000)),
        ("TIFF", tiff_header_only(60_000, 60_000)),
        ("JPEG", jpeg_header_only(65_000, 65_000)),
        ("WEBP", webp_header_only(16_000, 16_000)),
    ],
)
def test_a_bomb_of_every_accepted_format_is_refused_from_its_header(fmt: str, bomb: bytes) -> None:
    assert sniff_format(bomb) == fmt
    with pytest.raises(ImageTooLargeError) as raised:
        decode_one(UploadedImage("file", f"bomb.{fmt.lower()}", bomb), MAX_PIXELS)
    assert raised.value.pixels > MAX_PIXELS
    assert raised.value.limit == MAX_PIXELS


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"just some text, not a picture", "not an image"),
        (b"", "empty"),
        (encoded("JPEG")[:40], "corrupt"),
    ],
)
def test_data_that_is_no_usable_image_says_why(data: bytes, words: str) -> None:
    with pytest.raises(ImageError) as raised:
        decode_one(UploadedImage("file", "upload.jpg", data), MAX_PIXELS)
    assert words in str(raised.value)
    assert not isinstance(raised.value, ImageTooLargeError)


# --- base64 -------------------------------------------------------------------------------------


def test_base64_with_or_without_a_data_url_prefix_gives_the_same_bytes() -> None:
    data = encoded("PNG")
    plain = base64.b64encode(data).decode()
    wrapped = "\n".join(plain[i : i + 60] for i in range(0, len(plain), 60))
    for text in (plain, f"data:image/png;base64,{plain}", wrapped):
        item = from_base64("image", "image", text)
        assert item.problem is None and item.data == data


@pytest.mark.parametrize("value", ["not*base64!", 12, None, "abc"])
def test_bad_base64_is_kept_as_that_image_s_problem(value: object) -> None:
    item = from_base64("images", "images[3]", value)
    assert item.problem is not None and item.data == b""
    with pytest.raises(ImageError, match=r"images\[3\]"):
        decode_one(item, MAX_PIXELS)


# --- request pixel budget -----------------------------------------------------------------------


def test_images_past_the_request_pixel_budget_are_refused_each_in_its_place() -> None:
    # 1000x1000 = the per-image limit: REQUEST_PIXEL_FACTOR of them fit, the next ones do not.
    big = png_header_only(1000, 1000)
    count = REQUEST_PIXEL_FACTOR + 2
    items = [UploadedImage("files", f"{i}.png", big) for i in range(count)]
    items.insert(1, UploadedImage("files", "text.png", b"hello"))
    errors = screen(items, MAX_PIXELS)
    assert isinstance(errors[1], ImageError) and not isinstance(errors[1], ImageTooLargeError)
    over = sorted(position for position, error in errors.items() if position != 1)
    assert over == [count - 1, count]
    assert all(isinstance(errors[p], ImageTooLargeError) for p in over)
    assert "all images of the request" in str(errors[count])


async def test_decode_all_keeps_good_images_beside_the_bad_ones() -> None:
    items = [
        UploadedImage("files", "a.jpg", encoded("JPEG", (40, 30))),
        UploadedImage("files", "b.jpg", b"corrupt"),
        from_base64("images", "images[2]", "%%%"),
        UploadedImage("files", "d.png", encoded("PNG", (20, 10))),
    ]
    decoded = await decode_all(items, MAX_PIXELS)
    assert [d.image is not None for d in decoded] == [True, False, False, True]
    assert decoded[0].image is not None and decoded[0].image.shape == (30, 40, 3)
    assert decoded[3].image is not None and decoded[3].image.shape == (10, 20, 3)
    assert "b.jpg" in str(decoded[1].error) and "base64" in str(decoded[2].error)


# --- reading bodies -----------------------------------------------------------------------------


async def test_a_declared_length_above_the_limit_is_refused_before_reading() -> None:
    req, calls = request(b"x" * 10, "application/json", content_length=LIMIT + 1)
    with pytest.raises(ApiError) as raised:
        await read_json(req, LIMIT)
    assert raised.value.status == 413 and raised.value.code == "payload_too_large"
    assert calls[0] == 0  # not one chunk was received


async def test_a_chunked_body_is_cut_off_as_soon_as_it_passes_the_limit() -> None:
    body = multipart([("files", "big.jpg", encoded("BMP", (120, 110)))])  # about 40 kB
    chunks = [body[i : i + 4000] for i in range(0, len(body), 4000)]
    req, calls = request(chunks, MULTIPART, declare_length=False)
    with pytest.raises(ApiError) as raised:
        await read_upload(req, image_fields=("files",), limit=LIMIT, max_images=4)
    assert raised.value.status == 413
    assert calls[0] == 3  # 12 kB read: the chunk that passed 10 kB was the last


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b'{"image": "abc",}', "line 1 column 17"),
        (b'{\n  "image": \n}', "line 3 column 1"),
    ],
)
async def test_malformed_json_is_422_saying_where(body: bytes, where: str) -> None:
    req, _ = request(body, "application/json")
    with pytest.raises(ApiError) as raised:
        await read_upload(req, image_fields=("image",), limit=LIMIT, max_images=1)
    assert raised.value.status == 422 and raised.value.code == "invalid_json"
    assert where in raised.value.message


@pytest.mark.parametrize(
    ("body", "message"),
    [(b"", "empty"), (b"[1, 2]", "must be an object"), (b'{"a": "\xff"}', "UTF-8")],
)
async def test_json_that_is_not_an_object_is_422(body: bytes, message: str) -> None:
    req, _ = request(body, "application/json")
    with pytest.raises(ApiError, match=message) as raised:
        await read_json(req, LIMIT)
    assert raised.value.status == 422


@pytest.mark.parametrize("content_type", ["text/plain", "image/jpeg", None])
async def test_other_content_types_are_415_naming_what_is_accepted(
    content_type: str | None,
) -> None:
    req, _ = request(encoded("JPEG"), content_type)
    with pytest.raises(ApiError) as raised:
        await read_upload(req, image_fields=("file",), limit=100_000, max_images=1)
    assert raised.value.status == 415
    assert "multipart/form-data" in raised.value.message
    assert "application/json" in raised.value.message


async def test_multipart_files_and_fields_are_sorted_out_by_name() -> None:
    photo = encoded("JPEG")
    body = multipart(
        [("photos", "a.jpg", photo), ("photos", "", photo)], {"name": "Ada", "age": "36"}
    )
    req, _ = request(body, MULTIPART)
    upload = await read_upload(req, image_fields=("photos",), limit=100_000, max_images=4)
    assert upload.kind == "multipart"
    assert [item.source for item in upload.take("photos")] == ["a.jpg", "photos[1]"]
    assert all(item.data == photo for item in upload.take("photos"))
    assert upload.values == {"name": "Ada", "age": "36"}


@pytest.mark.parametrize(
    ("make", "content_type", "status", "code"),
    [
        (
            lambda p: multipart([("files", f"{i}.jpg", p) for i in range(5)]),
            MULTIPART,
            413,
            "too_many_images",
        ),
        (lambda p: multipart([("other", "a.jpg", p)]), MULTIPART, 422, "unexpected_file"),
        (lambda p: multipart([], {"files": "not a file"}), MULTIPART, 422, "missing_image"),
        (
            lambda p: multipart([("files", "a.jpg", p)]),
            "multipart/form-data",
            422,
            "invalid_multipart",
        ),
    ],
)
async def test_multipart_problems_have_their_own_status_and_code(
    make: Callable[[bytes], bytes], content_type: str, status: int, code: str
) -> None:
    req, _ = request(make(encoded("JPEG", (8, 8))), content_type)
    with pytest.raises(ApiError) as raised:
        await read_upload(req, image_fields=("files",), limit=100_000, max_images=4)
    assert (raised.value.status, raised.value.code) == (status, code)


async def test_json_images_come_one_or_many_per_key() -> None:
    png = base64.b64encode(encoded("PNG")).decode()
    body = f'{{"images": ["{png}", "{png}"], "image_a": "{png}", "largest": true}}'.encode()
    req, _ = request(body, "application/json")
    upload = await read_upload(req, image_fields=("images", "image_a"), limit=100_000, max_images=3)
    assert [item.source for item in upload.take("images")] == ["images[0]", "images[1]"]
    assert upload.one("image_a").source == "image_a"
    assert upload.values == {"largest": True}
    with pytest.raises(ApiError) as raised:
        upload.one("image_b")
    assert raised.value.code == "missing_image" and "image_b" in raised.value.message


async def test_too_many_json_images_are_413() -> None:
    png = base64.b64encode(encoded("PNG", (4, 4))).decode()
    body = ('{"images": [' + ", ".join([f'"{png}"'] * 5) + "]}").encode()
    req, _ = request(body, "application/json")
    with pytest.raises(ApiError) as raised:
        await read_upload(req, image_fields=("images",), limit=100_000, max_images=4)
    assert (raised.value.status, raised.value.code) == (413, "too_many_images")


def test_the_png_bomb_builder_declares_what_it_says() -> None:
    # The bomb tests above mean something only if the headers are read as intended.
    header = png_header_only(1234, 567)
    assert struct.unpack(">II", header[16:24]) == (1234, 567)
    assert zlib.decompress(header[41:49]) == b""
