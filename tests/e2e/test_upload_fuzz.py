"""Fuzzing the upload endpoints of a real server with hypothesis.

``POST /api/faces/detect``, ``/api/faces/detect/batch`` and ``/api/people`` get multipart forms
(odd field and file names, many files, real face photos re-encoded in every accepted format with
bytes changed or cut, arbitrary bytes), JSON bodies (base64 that is valid, damaged or not a
string), raw bodies under arbitrary content types. No answer may be a 5xx; every 4xx has the
error shape with a code and a message; the server answers normally afterwards. Persons the run
enrolls are removed at the end.

Examples are derandomized and few (each request may run the models): the function-level fuzzing
of the same parsers is in tests/unit/web/test_uploads_fuzz.py and tests/unit/test_images_fuzz.py.
"""

from __future__ import annotations

import base64
import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from live_server import LiveServer
from PIL import Image

FACE = "identities/barack_obama/1.jpg"
DETECT, BATCH, PEOPLE = "/api/faces/detect", "/api/faces/detect/batch", "/api/people"
#: Fields each endpoint reads images from (multipart, JSON), and some it does not.
IMAGE_FIELDS = {
    DETECT: ("file", "image"),
    BATCH: ("files", "images"),
    PEOPLE: ("photos", "photos"),
}
#: How many files a multipart request carries (a single-image endpoint takes one).
FILE_COUNTS = {DETECT: [1, 1, 1, 2], BATCH: [1, 2, 3, 6], PEOPLE: [1, 1, 2, 3]}
OTHER_FIELDS = ("name", "largest", "age", "attributes", "file_a", "", 'na"me', "x" * 300)
NAME_PREFIX = f"upload-fuzz-{uuid.uuid4().hex[:8]}"
STATUSES = {200, 201, 400, 413, 415, 422}

FUZZ = settings(
    max_examples=25,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)


@pytest.fixture(scope="module")
def admin(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client("admin") as client:
        yield client
        # Remove whoever the fuzzing enrolled.
        found = client.get("/api/people", params={"search": NAME_PREFIX, "per_page": 100})
        for person in found.json()["items"]:
            client.delete(f"/api/people/{person['id']}")


@pytest.fixture(scope="module")
def photos(faces_dir: Path) -> list[bytes]:
    """A real face photo, made small, in every accepted format."""
    with Image.open(faces_dir / FACE) as source:
        face = source.convert("RGB")
        face.thumbnail((256, 256))
    encoded = []
    for fmt in ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"):
        buffer = io.BytesIO()
        face.save(buffer, fmt)
        encoded.append(buffer.getvalue())
    return encoded


@st.composite
def image_bytes(draw: st.DrawFn, photos: list[bytes]) -> bytes:
    """A photo as it is, with a few bytes changed, cut short, or arbitrary bytes."""
    kind = draw(st.sampled_from(["photo", "photo", "changed", "cut", "arbitrary"]))
    if kind == "arbitrary":
        return draw(st.binary(max_size=512))
    data = bytearray(draw(st.sampled_from(photos)))
    if kind == "changed":
        for _ in range(draw(st.integers(1, 4))):
            where = draw(st.one_of(st.integers(0, 64), st.integers(0, len(data) - 1)))
            data[where] = draw(st.integers(0, 255))
    elif kind == "cut":
        data = data[: draw(st.integers(0, len(data) - 1))]
    return bytes(data)


TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=40)


@st.composite
def requests(draw: st.DrawFn, photos: list[bytes], path: str) -> dict[str, Any]:
    """The keyword arguments of an ``httpx.Client.post`` to ``path``."""
    form_field, json_field = IMAGE_FIELDS[path]
    name = f"{NAME_PREFIX}-{draw(TEXT)}"
    # Most requests are meant to get through to the images; some are wrong on the outside.
    kind = draw(st.sampled_from(["multipart", "multipart", "json", "json", "raw"]))
    usually = st.sampled_from([True, True, True, False])
    named = path == PEOPLE and draw(usually)
    odd_fields = st.dictionaries(st.sampled_from(OTHER_FIELDS), TEXT, min_size=1)
    extra = draw(st.sampled_from([{}, {}, {}, draw(odd_fields)]))
    if kind == "multipart":
        count = draw(st.sampled_from(FILE_COUNTS[path]))
        only_image_fields = draw(usually)
        fields_for_files = st.sampled_from(
            [form_field] if only_image_fields else [form_field, *OTHER_FIELDS]
        )
        files = [
            (draw(fields_for_files), (draw(TEXT), draw(image_bytes(photos)), draw(TEXT)))
            for _ in range(count)
        ]
        fields = dict(extra)
        if named:
            fields["name"] = name
        return {"files": files, "data": fields}
    if kind == "json":
        images = st.builds(lambda b: base64.b64encode(b).decode(), image_bytes(photos))
        value = draw(
            st.one_of(
                images,
                st.lists(images, min_size=1, max_size=5),
                st.lists(images, max_size=5),
                TEXT,
                st.none(),
                st.integers(),
                st.lists(st.one_of(TEXT, st.integers(), st.none()), max_size=3),
            )
        )
        body: dict[str, Any] = {json_field: value}
        if path == PEOPLE:
            body |= extra
            if named:
                body["name"] = name
        return {"json": body}
    content_type = draw(
        st.one_of(
            st.sampled_from(
                [
                    "multipart/form-data; boundary=fuzz",
                    "multipart/form-data",
                    "application/json",
                    "image/jpeg",
                    "text/plain",
                    "application/x-www-form-urlencoded",
                ]
            ),
            st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
        )
    )
    return {"content": draw(image_bytes(photos)), "headers": {"content-type": content_type}}


def check_answer(response: httpx.Response, path: str) -> None:
    assert response.status_code in STATUSES, (response.status_code, response.text)
    body = response.json()
    if response.status_code >= 400:
        error = body["error"]
        assert isinstance(error["code"], str) and error["code"]
        assert isinstance(error["message"], str) and error["message"].strip()
    elif path == DETECT:
        assert isinstance(body["faces"], list) and body["width"] >= 1
    elif path == BATCH:
        assert isinstance(body["results"], list)
    else:
        assert body["person"]["name"].startswith(NAME_PREFIX)


def usual_requests(photos: list[bytes], path: str) -> list[dict[str, Any]]:
    """A well-formed multipart and JSON request with the photo, tried before the generated ones."""
    form_field, json_field = IMAGE_FIELDS[path]
    name = {"name": f"{NAME_PREFIX}-usual"} if path == PEOPLE else {}
    as_json = base64.b64encode(photos[1]).decode()
    return [
        {"files": [(form_field, ("face.jpg", photos[0], "image/jpeg"))], "data": name},
        {"json": {json_field: as_json if path == DETECT else [as_json]} | name},
    ]


@pytest.mark.parametrize("path", [DETECT, BATCH, PEOPLE])
def test_upload_endpoints_answer_every_request_with_a_result_or_a_clear_4xx(
    admin: httpx.Client, photos: list[bytes], path: str
) -> None:
    successes = []

    @FUZZ
    @given(arguments=requests(photos, path))
    def fuzz(arguments: dict[str, Any]) -> None:
        response = admin.post(path, **arguments)
        check_answer(response, path)
        successes.append(response.is_success)

    for usual in usual_requests(photos, path):
        fuzz = example(arguments=usual)(fuzz)
    fuzz()

    assert successes[:2] == [True, True]  # the usual requests, tried first, got through
    assert admin.get("/health/live").status_code == 200
    answer = admin.post(DETECT, files={"file": ("face.jpg", photos[0], "image/jpeg")})
    assert answer.status_code == 200 and len(answer.json()["faces"]) == 1
