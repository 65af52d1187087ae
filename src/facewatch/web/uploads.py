"""Reading uploaded images: bounded bodies, multipart or JSON base64, decoded by content.

A request body is refused with 413 before it is read whole: at once when its Content-Length is
above ``server.max_upload_bytes``, else as soon as the bytes streamed in pass it (chunked
bodies). Multipart files are parsed while they stream (spooled to disk past 1 MiB each), JSON
bodies are read into memory up to the same limit.

Images are recognised by their first bytes, never by file name or declared content type, and
only formats whose size Pillow reads from the header before decoding are accepted (JPEG, PNG,
WebP, BMP, TIFF, GIF): the pixel limit (``engine.max_image_pixels``) is checked against that
declared size, so a decompression bomb is refused before a pixel is decoded. A request's images
together get a budget of :data:`REQUEST_PIXEL_FACTOR` times that limit, so a batch of
near-limit images cannot make one request hold gigabytes of pixels.

Problems with one image (not an image, bad base64, too large) are kept with that image as an
:class:`~facewatch.errors.ImageError`, so a batch can answer them per image; problems with the
request itself (too big, wrong content type, malformed JSON or multipart, too many images) raise
:class:`~facewatch.web.errors.ApiError`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import re
import warnings
from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError
from PIL import Image
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from facewatch.errors import ImageError, ImageTooLargeError
from facewatch.images import BGRImage, decode_image
from facewatch.web.errors import ApiError

#: Formats accepted, as Pillow names them; each declares its size in a header Pillow reads
#: without decoding pixels (checked for each in tests/unit/web/test_uploads.py).
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
ACCEPTED_TEXT = "JPEG, PNG, WebP, BMP, TIFF or GIF"
#: The pixels all images of one request may hold together, in multiples of the per-image limit.
REQUEST_PIXEL_FACTOR = 4
#: Form fields (not files) a multipart request may carry.
MAX_FORM_FIELDS = 32
_DATA_URL = re.compile(r"^data:[\w.+-]+/[\w.+-]+(?:;[\w.+-]+=[\w.+-]+)*;base64,", re.IGNORECASE)
_BMP_HEADER_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class UploadedImage:
    """One image of a request, not yet decoded.

    Attributes:
        field: the form field or JSON key it came in (``file``, ``files``, ``image_a``, ...).
        source: what messages call it: the file name, else ``<field>[<position>]``.
        data: its bytes (empty when ``problem`` is set).
        problem: why these bytes cannot be an image before even looking (bad base64).
    """

    field: str
    source: str
    data: bytes
    problem: str | None = None


@dataclass(slots=True)
class Upload:
    """What a request carried: images by field, in order, and the other fields.

    ``values`` holds form fields as strings (multipart) or JSON values as they were sent.
    """

    images: dict[str, list[UploadedImage]] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    kind: str = "json"

    def count(self) -> int:
        return sum(len(items) for items in self.images.values())

    def take(self, name: str) -> list[UploadedImage]:
        return self.images.get(name, [])

    def one(self, name: str, json_name: str | None = None) -> UploadedImage:
        """The single image of a field (``json_name`` in JSON bodies); 422 if none or several."""
        key = name if self.kind == "multipart" else (json_name or name)
        items = self.images.get(key, [])
        if len(items) != 1:
            how = f"one file in the form field {key!r}"
            if self.kind == "json":
                how = f"one base64 string under the JSON key {key!r}"
            found = "none" if not items else f"{len(items)}"
            raise ApiError(422, "missing_image", f"expected {how}, got {found}", field=key)
        return items[0]


# --- reading the body ---------------------------------------------------------------------------


def too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        "payload_too_large",
        f"request body is larger than the limit of {limit} bytes",
        limit=limit,
    )


def check_declared_length(request: Request, limit: int) -> None:
    """Refuse at once a body whose Content-Length is above ``limit`` (413)."""
    declared = request.headers.get("content-length")
    if declared is None:
        return
    try:
        length = int(declared)
    except ValueError:
        raise ApiError(400, "bad_request", "Content-Length is not a number") from None
    if length > limit:
        raise too_large(limit)


async def capped_stream(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
    """The body's chunks, raising 413 as soon as more than ``limit`` bytes have come."""
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise too_large(limit)
        if chunk:
            yield chunk


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, at most ``limit`` bytes (413 beyond)."""
    check_declared_length(request, limit)
    return b"".join([chunk async for chunk in capped_stream(request, limit)])


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """A JSON object body, at most ``limit`` bytes; 422 saying where it is malformed."""
    raw = await read_body(request, limit)
    if not raw.strip():
        raise ApiError(422, "invalid_json", "the request body is empty; a JSON object is expected")
    try:
        value = json.loads(raw)
    except UnicodeDecodeError:
        raise ApiError(422, "invalid_json", "the request body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ApiError(
            422,
            "invalid_json",
            f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
            line=exc.lineno,
            column=exc.colno,
        ) from None
    if not isinstance(value, dict):
        raise ApiError(422, "invalid_json", "the JSON body must be an object")
    return value


async def read_model(request: Request, model: type[M], limit: int) -> M:
    """A JSON body validated as ``model``, read with the same limit and errors as uploads.

    Routes read their body here rather than through a FastAPI body parameter, which would read
    it whole before any limit applies.

    Raises:
        ApiError: 413, 415 or 422 as :func:`read_json`.
        RequestValidationError: the body does not fit ``model`` (422 naming each field).
    """
    kind = media_type(request)
    if not is_json(kind):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"content type {kind or 'none'!r} is not accepted: send application/json",
        )
    return validate_body(model, await read_json(request, limit))


def validate_body(model: type[M], values: dict[str, Any]) -> M:
    """``values`` as ``model``; a mismatch is a 422 naming each field, as FastAPI's own."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        ) from None


def json_body_doc(model: type[BaseModel], description: str = "") -> dict[str, Any]:
    """``openapi_extra`` describing a JSON body read by :func:`read_model`."""
    return {
        "requestBody": {
            "required": True,
            "description": description or (model.__doc__ or "").strip().splitlines()[0],
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def is_json(kind: str) -> bool:
    return kind == "application/json" or kind.endswith("+json")


async def read_upload(
    request: Request,
    *,
    image_fields: Iterable[str],
    limit: int,
    max_images: int,
) -> Upload:
    """The images (and other fields) of a multipart or JSON request.

    Args:
        image_fields: form fields / JSON keys that hold images (a JSON key holds one base64
            string or a list of them; ``data:image/...;base64,`` prefixes are accepted).
        limit: largest body in bytes (413 beyond, before the body is read whole).
        max_images: most images the request may carry (413 beyond).

    Raises:
        ApiError: 413 body too large or too many images, 415 a content type other than
            multipart/form-data or JSON, 422 malformed body or an image field of the wrong kind.
    """
    fields = set(image_fields)
    kind = media_type(request)
    if kind == "multipart/form-data":
        upload = await _read_multipart(request, fields, limit, max_images)
    elif is_json(kind):
        upload = _from_json(await read_json(request, limit), fields)
    else:
        shown = kind or "none"
        raise ApiError(
            415,
            "unsupported_media_type",
            f"content type {shown!r} is not accepted: send multipart/form-data with image files "
            f"or application/json with base64 images (fields: {', '.join(sorted(fields))})",
        )
    if upload.count() > max_images:
        raise too_many_images(upload.count(), max_images)
    return upload


def too_many_images(count: int | None, limit: int) -> ApiError:
    shown = f"{count} images" if count is not None else "more images"
    return ApiError(
        413,
        "too_many_images",
        f"{shown} in one request; at most {limit} are accepted",
        limit=limit,
    )


async def _read_multipart(
    request: Request, fields: set[str], limit: int, max_images: int
) -> Upload:
    check_declared_length(request, limit)
    parser = _MultiPartParser(
        request.headers,
        capped_stream(request, limit),
        max_files=max_images,
        max_fields=MAX_FORM_FIELDS,
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        if str(exc).startswith("Too many files"):
            raise too_many_images(None, max_images) from None
        raise ApiError(422, "invalid_multipart", f"malformed multipart body: {exc}") from None
    if not parser.ended:
        await form.close()
        parser.close_unfinished()
        raise ApiError(
            422,
            "invalid_multipart",
            "malformed multipart body: it ends before its closing boundary (a truncated upload?)",
        )
    upload = Upload(kind="multipart")
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if name not in fields:
                    raise ApiError(
                        422,
                        "unexpected_file",
                        f"unexpected file in form field {name!r}; images go in "
                        f"{', '.join(repr(f) for f in sorted(fields))}",
                        field=name,
                    )
                items = upload.images.setdefault(name, [])
                data = await value.read()
                source = value.filename or f"{name}[{len(items)}]"
                items.append(UploadedImage(name, source, data))
            elif name in fields:
                raise ApiError(
                    422,
                    "missing_image",
                    f"form field {name!r} must be a file upload, not text",
                    field=name,
                )
            else:
                upload.values[name] = value
    finally:
        await form.close()
    return upload


class _MultiPartParser(MultiPartParser):
    """Starlette's parser, told whether the body reached its closing boundary.

    Starlette accepts a body that stops in the middle of a part: the parts before it come back
    as a whole form, and the cut one is dropped with its temporary file left open.
    """

    ended = False

    def on_end(self) -> None:
        self.ended = True

    def close_unfinished(self) -> None:
        """Close the temporary file of a part the body cut off (the form's are closed with it)."""
        for file in self._files_to_close_on_error:
            file.close()


def _from_json(body: dict[str, Any], fields: set[str]) -> Upload:
    upload = Upload(kind="json")
    for name, value in body.items():
        if name not in fields:
            upload.values[name] = value
            continue
        strings = value if isinstance(value, list) else [value]
        items = upload.images.setdefault(name, [])
        for position, text in enumerate(strings):
            source = f"{name}[{position}]" if isinstance(value, list) else name
            items.append(from_base64(name, source, text))
    return upload


def from_base64(name: str, source: str, text: Any) -> UploadedImage:
    """An upload from a base64 string (a ``data:`` URL prefix is accepted); bad base64 is kept
    as the image's ``problem``."""
    if not isinstance(text, str):
        return UploadedImage(name, source, b"", "expected a base64 string")
    stripped = _DATA_URL.sub("", text.strip(), count=1)
    try:
        data = base64.b64decode("".join(stripped.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        return UploadedImage(name, source, b"", f"not valid base64 ({exc})")
    return UploadedImage(name, source, data)


# --- looking at and decoding images -------------------------------------------------------------


def sniff_format(data: bytes) -> str | None:
    """The image format the bytes start like (a Pillow format name), or None."""
    head = data[:32]
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if (
        head[:2] == b"BM"
        and len(head) >= 18
        and int.from_bytes(head[14:18], "little") in (_BMP_HEADER_SIZES)
    ):
        return "BMP"
    return None


def declared_pixels(item: UploadedImage) -> int:
    """Width x height the image declares in its header (no pixel is decoded).

    Raises:
        ImageError: not an accepted image format, or a header Pillow cannot read.
    """
    if item.problem is not None:
        raise ImageError(item.problem, source=item.source)
    if not item.data:
        raise ImageError("empty file", source=item.source)
    fmt = sniff_format(item.data)
    if fmt is None:
        raise ImageError(f"not an image (expected {ACCEPTED_TEXT} content)", source=item.source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(item.data), formats=[fmt]) as img:
                width, height = img.size
        except Image.DecompressionBombError as exc:
            # Pillow's own guard fired inside open(); its message holds the declared size.
            declared = re.search(r"\((\d+) pixels\)", str(exc))
            return int(declared.group(1)) if declared else 1 << 62
        except Exception as exc:  # Pillow raises many kinds for a broken header
            raise ImageError(f"corrupt {fmt} header ({exc})", source=item.source) from None
    return int(width) * int(height)


@dataclass(frozen=True, slots=True)
class Decoded:
    """An uploaded image decoded, or why it could not be."""

    item: UploadedImage
    image: BGRImage | None
    error: ImageError | None


def decode_one(item: UploadedImage, max_pixels: int) -> BGRImage:
    """Decode one upload (format sniffed, pixel limit checked before decoding).

    Raises:
        ImageError: not an accepted image, corrupt, or too large (ImageTooLargeError).
    """
    pixels = declared_pixels(item)
    if pixels > max_pixels:
        raise ImageTooLargeError(pixels, max_pixels, source=item.source)
    return decode_image(item.data, max_pixels=max_pixels, source=item.source)


def screen(items: Sequence[UploadedImage], max_pixels: int) -> dict[int, ImageError]:
    """Why each unusable upload cannot be decoded, by position, from its header alone.

    The request's images share a budget of ``REQUEST_PIXEL_FACTOR * max_pixels`` pixels, taken
    in order from their declared sizes: an image past it is refused (ImageTooLargeError) so that
    one request never holds more than that many decoded pixels.
    """
    budget = REQUEST_PIXEL_FACTOR * max_pixels
    errors: dict[int, ImageError] = {}
    spent = 0
    for position, item in enumerate(items):
        try:
            pixels = declared_pixels(item)
        except ImageError as exc:
            errors[position] = exc
            continue
        if pixels > max_pixels:
            errors[position] = ImageTooLargeError(pixels, max_pixels, source=item.source)
        elif spent + pixels > budget:
            errors[position] = ImageTooLargeError(
                spent + pixels, budget, source=f"{item.source} (all images of the request)"
            )
        else:
            spent += pixels
    return errors


async def decode_all(items: Sequence[UploadedImage], max_pixels: int) -> list[Decoded]:
    """Decode every upload in parallel worker threads; failures are kept per image.

    Each is screened first (:func:`screen`): format, pixel limit, the request's pixel budget.
    """
    errors = screen(items, max_pixels)

    async def decode(position: int, item: UploadedImage) -> Decoded:
        if position in errors:
            return Decoded(item, None, errors[position])
        try:
            image = await asyncio.to_thread(
                decode_image, item.data, max_pixels=max_pixels, source=item.source
            )
        except ImageError as exc:
            return Decoded(item, None, exc)
        return Decoded(item, image, None)

    return list(await asyncio.gather(*(decode(i, item) for i, item in enumerate(items))))


def image_error_body(exc: ImageError) -> dict[str, Any]:
    """``{"code", "message", ...}`` for an image that could not be used (per-image errors)."""
    if isinstance(exc, ImageTooLargeError):
        return {
            "code": "image_too_large",
            "message": str(exc),
            "pixels": exc.pixels,
            "limit": exc.limit,
        }
    return {"code": "bad_image", "message": str(exc)}
