"""Fuzzing upload parsing (``facewatch.web.uploads``) with hypothesis, at the function level.

Bodies are multipart (well formed with odd names, files and field counts, or damaged, or
arbitrary bytes under a multipart content type), JSON (any JSON value, base64 that is valid,
broken or not a string, data URLs), arbitrary content types and lying Content-Length headers,
delivered in arbitrary chunks. Each request is read into an :class:`Upload` that respects the
limits, or refused with an :class:`ApiError` of a 4xx status with a code and a message; every
image of an upload then decodes or has an :class:`ImageError`. Nothing else may be raised.

Requests are real Starlette requests fed by an in-memory ``receive``: no server, no sockets.
Examples are derandomized and bounded so that runs are deterministic and quick.
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from starlette.requests import Request

from facewatch.errors import ImageError
from facewatch.web.errors import ApiError
from facewatch.web.uploads import (
    MAX_FORM_FIELDS,
    Upload,
    decode_all,
    from_base64,
    read_upload,
)

LIMIT = 64 * 1024
MAX_IMAGES = 4
MAX_PIXELS = 100_000
FIELDS = ("files", "image")
REQUEST_STATUSES = {400, 413, 415, 422}


def fuzz(examples: int) -> settings:
    """Deterministic, bounded hypothesis settings with no example database on disk."""
    return settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def small_image(fmt: str) -> bytes:
    pixels = np.random.default_rng(5).integers(0, 255, (12, 16, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


IMAGES = [small_image(fmt) for fmt in ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")]


# --- requests and the outcome every one must have -----------------------------------------------


def request(chunks: list[bytes], content_type: str | None, content_length: str | None) -> Request:
    """A POST whose body arrives in ``chunks``; headers exactly as given (None: absent)."""
    headers = []
    if content_type is not None:
        headers.append((b"content-type", content_type.encode("latin-1")))
    if content_length is not None:
        headers.append((b"content-length", content_length.encode("latin-1")))
    pending = list(chunks)

    async def receive() -> dict[str, Any]:
        if not pending:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": pending.pop(0), "more_body": bool(pending)}

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers, "query_string": b""}
    return Request(scope, receive)


async def read_or_refuse(
    body: bytes, content_type: str | None, *, cuts: list[int] | None = None, length: Any = True
) -> Upload | None:
    """Read ``body`` as an upload and check the outcome; the upload, or None when refused.

    Args:
        cuts: where the body is split into chunks (positions, any order).
        length: the Content-Length header: True for the real one, None for none, or a string.
    """
    points = sorted({min(max(cut, 0), len(body)) for cut in cuts or []})
    chunks = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    declared = str(len(body)) if length is True else length
    try:
        upload = await read_upload(
            request(chunks, content_type, declared),
            image_fields=FIELDS,
            limit=LIMIT,
            max_images=MAX_IMAGES,
        )
    except ApiError as exc:
        assert exc.status in REQUEST_STATUSES, exc.status
        assert exc.code and exc.message.strip()
        return None
    assert upload.kind in ("multipart", "json")
    assert upload.count() <= MAX_IMAGES
    items = [item for name in FIELDS for item in upload.take(name)]
    assert set(upload.images) <= set(FIELDS)
    assert len(items) == upload.count()
    for item in items:
        assert isinstance(item.data, bytes) and item.source
        assert item.problem is None or item.data == b""
    for decoded in await decode_all(items, MAX_PIXELS):
        assert (decoded.image is None) != (decoded.error is None)
        if decoded.error is not None:
            assert isinstance(decoded.error, ImageError) and str(decoded.error).strip()
        else:
            assert decoded.image is not None and decoded.image.ndim == 3
    return upload


# --- multipart ----------------------------------------------------------------------------------

#: Printable header text; names and file names may hold quotes, semicolons and the like.
HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=24)
BOUNDARY = "fuzzboundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
CLOSING = f"--{BOUNDARY}--\r\n".encode()


def form_part(name: str, data: bytes, filename: str | None = None) -> bytes:
    """One well-formed part: a file when ``filename`` is given, else a field."""
    disposition = f'Content-Disposition: form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    return f"--{BOUNDARY}\r\n{disposition}\r\n\r\n".encode() + data + b"\r\n"


@st.composite
def parts(draw: st.DrawFn) -> bytes:
    """One multipart part: a file or a field, under a usual or an odd name and headers."""
    name = draw(st.one_of(st.sampled_from([*FIELDS, "name", "largest"]), HEADER_TEXT))
    filename = draw(st.one_of(st.none(), HEADER_TEXT))
    data = draw(st.one_of(st.sampled_from(IMAGES), st.binary(max_size=256)))
    disposition = f'Content-Disposition: form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    lines = [draw(st.sampled_from([disposition, "Content-Disposition: form-data", "X: y"]))]
    if draw(st.booleans()):
        lines.append(f"Content-Type: {draw(HEADER_TEXT)}")
    head = "\r\n".join(lines).encode("latin-1")
    return f"--{BOUNDARY}\r\n".encode() + head + b"\r\n\r\n" + data + b"\r\n"


@st.composite
def damaged(draw: st.DrawFn, body: bytes) -> bytes:
    """``body`` with a few bytes replaced, inserted or deleted."""
    data = bytearray(body)
    for _ in range(draw(st.integers(0, 3))):
        where = draw(st.integers(0, max(len(data) - 1, 0)))
        chunk = draw(st.binary(min_size=1, max_size=6))
        action = draw(st.sampled_from(["set", "insert", "delete"]))
        if action == "set":
            data[where : where + len(chunk)] = chunk
        elif action == "insert":
            data[where:where] = chunk
        else:
            del data[where : where + len(chunk)]
    return bytes(data)


@st.composite
def multipart_bodies(draw: st.DrawFn) -> bytes:
    body = b"".join(draw(st.lists(parts(), max_size=MAX_FORM_FIELDS + 8)))
    if draw(st.booleans()):
        body += CLOSING
    return draw(damaged(body))


@fuzz(150)
@given(body=multipart_bodies(), cuts=st.lists(st.integers(0, LIMIT), max_size=4))
async def test_multipart_bodies(body: bytes, cuts: list[int]) -> None:
    await read_or_refuse(body, MULTIPART, cuts=cuts)


@fuzz(80)
@given(
    body=st.binary(max_size=1024),
    content_type=st.one_of(
        st.just("multipart/form-data"),
        st.builds(lambda b: f"multipart/form-data; boundary={b}", HEADER_TEXT),
        st.builds(lambda p: f"multipart/form-data;{p}", HEADER_TEXT),
    ),
)
async def test_arbitrary_bytes_as_multipart(body: bytes, content_type: str) -> None:
    await read_or_refuse(body, content_type)


async def test_too_many_files_or_fields_are_refused() -> None:
    files = b"".join(form_part("files", IMAGES[1], f"{i}.png") for i in range(MAX_IMAGES + 1))
    fields = b"".join(form_part(f"f{i}", b"v") for i in range(MAX_FORM_FIELDS + 1))
    for body in (files, fields):
        assert await read_or_refuse(body + CLOSING, MULTIPART) is None


# --- JSON and base64 ----------------------------------------------------------------------------

JSON_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=40)
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
BASE64_TEXT = st.one_of(
    st.builds(lambda data: base64.b64encode(data).decode(), st.sampled_from(IMAGES)),
    st.builds(lambda data: base64.b64encode(data).decode(), st.binary(max_size=200)),
    st.builds(
        lambda kind, data: f"data:image/{kind};base64,{base64.b64encode(data).decode()}",
        st.text(max_size=8),
        st.sampled_from(IMAGES),
    ),
    st.text(max_size=80),
    st.text(alphabet="ABCDEFabcdef0123456789+/=\n -_", max_size=80),
)
IMAGE_VALUES = st.one_of(
    BASE64_TEXT, st.lists(st.one_of(BASE64_TEXT, JSON_VALUES), max_size=6), JSON_VALUES
)


@fuzz(150)
@given(
    body=st.dictionaries(
        st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), IMAGE_VALUES, max_size=5
    ),
    cuts=st.lists(st.integers(0, LIMIT), max_size=3),
)
async def test_json_bodies(body: dict[str, Any], cuts: list[int]) -> None:
    await read_or_refuse(json.dumps(body).encode(), "application/json", cuts=cuts)


@fuzz(80)
@given(
    body=st.one_of(
        st.binary(max_size=512), st.builds(lambda v: json.dumps(v).encode(), JSON_VALUES)
    )
)
async def test_any_bytes_as_json(body: bytes) -> None:
    await read_or_refuse(body, "application/json")


@fuzz(150)
@given(text=st.one_of(BASE64_TEXT, JSON_VALUES))
def test_base64_is_decoded_or_kept_as_the_image_s_problem(text: Any) -> None:
    item = from_base64("image", "image", text)
    if item.problem is not None:
        assert item.data == b"" and item.problem.strip()
    else:
        assert isinstance(text, str) and isinstance(item.data, bytes)


# --- content types, lengths and sizes -----------------------------------------------------------


@fuzz(80)
@given(
    content_type=st.one_of(st.none(), HEADER_TEXT),
    body=st.one_of(st.just(b'{"image": ""}'), st.binary(max_size=64)),
)
async def test_any_content_type(content_type: str | None, body: bytes) -> None:
    await read_or_refuse(body, content_type)


@fuzz(60)
@given(
    length=st.one_of(
        st.none(),
        st.integers(-(2**70), 2**70).map(str),
        HEADER_TEXT,
    ),
    json_body=st.booleans(),
)
async def test_any_content_length_header(length: str | None, json_body: bool) -> None:
    image = base64.b64encode(IMAGES[0]).decode()
    if json_body:
        body, kind = json.dumps({"image": image}).encode(), "application/json"
    else:
        body, kind = form_part("image", IMAGES[0], "a.jpg") + CLOSING, MULTIPART
    await read_or_refuse(body, kind, length=length)


@fuzz(40)
@given(
    size=st.integers(LIMIT - 64, 4 * LIMIT),
    cuts=st.lists(st.integers(0, 4 * LIMIT), max_size=5),
    declare=st.booleans(),
)
async def test_bodies_around_the_limit(size: int, cuts: list[int], declare: bool) -> None:
    # One huge field: a base64 string, or a form field, padded to ``size`` bytes.
    padding = "A" * size
    for body, kind in (
        (json.dumps({"name": padding}).encode(), "application/json"),
        (form_part("name", padding.encode()) + CLOSING, MULTIPART),
    ):
        upload = await read_or_refuse(body, kind, cuts=cuts, length=True if declare else None)
        assert (upload is None) == (len(body) > LIMIT)


async def test_a_body_cut_inside_a_file_part_is_refused_and_leaves_no_file_open() -> None:
    whole = form_part("files", IMAGES[1], "a.png") + CLOSING
    for cut in (len(whole) - 4, len(whole) // 2):
        with pytest.raises(ApiError) as raised:
            await read_upload(
                request([whole[:cut]], MULTIPART, str(cut)),
                image_fields=FIELDS,
                limit=LIMIT,
                max_images=MAX_IMAGES,
            )
        assert (raised.value.status, raised.value.code) == (422, "invalid_multipart")
        assert "closing boundary" in raised.value.message
    # Whole, the same body is read (filterwarnings=error turns an unclosed file into a failure).
    assert await read_or_refuse(whole, MULTIPART) is not None
