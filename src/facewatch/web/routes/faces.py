"""Faces: detect, embed, verify and query (role viewer), one image or a batch per request.

Single-image endpoints decode and run the engine in one worker thread. Batch endpoints decode
their images in parallel threads, then send every decodable image through the engine in one
call (one detection batch, one embedding call for all their faces); an image that cannot be
decoded gets its error in its place of ``results`` and the others are answered.

Images come as multipart files (``file``; ``files`` repeated for batches; ``file_a`` and
``file_b`` for verify) or as JSON base64 strings (``image``; ``images``; ``image_a`` and
``image_b``; ``pairs`` of them for verify batches). See :mod:`facewatch.web.uploads` for the
limits.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Request

from facewatch.errors import ImageError
from facewatch.images import BGRImage
from facewatch.pipeline.types import Faces
from facewatch.recognizer.engine import FaceEngine
from facewatch.watchlist.service import Identification, Watchlist
from facewatch.web import schemas
from facewatch.web.auth import Role, require
from facewatch.web.errors import ApiError
from facewatch.web.services import Services, get_services
from facewatch.web.uploads import (
    Decoded,
    UploadedImage,
    decode_all,
    decode_one,
    from_base64,
    image_error_body,
    read_upload,
)

router = APIRouter(tags=["faces"], dependencies=[Depends(require(Role.viewer))])
ServicesDep = Annotated[Services, Depends(get_services)]


def _schema(fmt: str, *, many: bool) -> dict[str, Any]:
    one = {"type": "string", "format": fmt}
    return {"type": "array", "items": one} if many else one


def _image_body(description: str, *, many: bool, multipart: str, json: str) -> dict[str, Any]:
    """OpenAPI description of a body the route reads itself (it is streamed, not a parameter)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {multipart: _schema("binary", many=many)},
                    }
                },
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {json: _schema("byte", many=many)},
                    }
                },
            },
            "description": description,
        }
    }


SINGLE = _image_body("One image.", many=False, multipart="file", json="image")
BATCH = _image_body("Several images.", many=True, multipart="files", json="images")
VERIFY = {
    "requestBody": {
        "required": True,
        "description": "Two images: multipart file_a and file_b, or JSON image_a and image_b.",
        "content": {
            "multipart/form-data": {"schema": {"type": "object"}},
            "application/json": {"schema": {"type": "object"}},
        },
    }
}
VERIFY_BATCH = {
    "requestBody": {
        "required": True,
        "description": 'JSON {"pairs": [{"image_a": b64, "image_b": b64}, ...]}, or multipart '
        "file_a and file_b repeated (the i-th of each make pair i).",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "multipart/form-data": {"schema": {"type": "object"}},
        },
    }
}


# --- helpers ------------------------------------------------------------------------------------


def face_record(faces: Faces, i: int, *, with_embedding: bool) -> dict[str, Any]:
    """One face as JSON: the CLI's own record, so ``facewatch detect`` and the API agree."""
    return faces.record(i, with_embedding=with_embedding)


def _limits(services: Services) -> tuple[int, int, int]:
    server = services.settings.server
    max_pixels = services.engine.settings.max_image_pixels
    return server.max_upload_bytes, server.max_batch_images, max_pixels


async def _one_image(request: Request, services: Services) -> UploadedImage:
    limit, _, _ = _limits(services)
    upload = await read_upload(request, image_fields=("file", "image"), limit=limit, max_images=1)
    return upload.one("file", "image")


async def _batch(request: Request, services: Services) -> list[Decoded]:
    limit, most, max_pixels = _limits(services)
    upload = await read_upload(
        request, image_fields=("files", "images"), limit=limit, max_images=most
    )
    items = upload.take("files" if upload.kind == "multipart" else "images")
    if not items:
        key = "files" if upload.kind == "multipart" else "images"
        raise ApiError(422, "missing_image", f"no image given in {key!r}", field=key)
    return await decode_all(items, max_pixels)


def _detection(image: BGRImage, faces: Faces, *, with_embedding: bool) -> dict[str, Any]:
    height, width = image.shape[:2]
    return {
        "width": int(width),
        "height": int(height),
        "faces": [face_record(faces, i, with_embedding=with_embedding) for i in range(len(faces))],
    }


def _candidate(entry: dict[str, Any]) -> schemas.Candidate:
    return schemas.Candidate(
        person_id=entry["person_id"],
        name=entry["person"],
        similarity=entry["similarity"],
        face_id=entry.get("face_id"),
    )


def _query(image: BGRImage, found: Sequence[Identification], threshold: float) -> dict[str, Any]:
    """Who each face is: ``Identification`` (the CLI's ``identify`` record) in the API's words."""
    height, width = image.shape[:2]
    faces = []
    for face in found:
        candidates = [_candidate(c) for c in face.candidates]
        match = next((c for c in candidates if c.person_id == face.person_id), None)
        faces.append(
            schemas.IdentifiedFace(
                bbox=face.bbox, score=face.score, match=match, candidates=candidates
            )
        )
    return {"width": int(width), "height": int(height), "threshold": threshold, "faces": faces}


def _failed(index: int, error: ImageError) -> schemas.FailedItem:
    return schemas.FailedItem(index=index, error=schemas.ItemError(**image_error_body(error)))


def _usable(decoded: Sequence[Decoded]) -> tuple[list[int], list[BGRImage]]:
    positions = [i for i, item in enumerate(decoded) if item.image is not None]
    return positions, [decoded[i].image for i in positions]  # type: ignore[misc]


def _identify(watchlist: Watchlist, images: Sequence[BGRImage]) -> list[list[Identification]]:
    faces = watchlist.engine.embed(images)
    return watchlist.identify_faces(faces, [""] * len(images))


# --- single images ------------------------------------------------------------------------------


# Each single-image request takes one worker thread for all its blocking work (decoding,
# inference, the index and store), so it costs one hand-off from the event loop and back.


def _detect_one(
    engine: FaceEngine, item: UploadedImage, max_pixels: int, *, with_embedding: bool
) -> dict[str, Any]:
    image = decode_one(item, max_pixels)
    run = engine.embed if with_embedding else engine.detect
    return _detection(image, run([image])[0], with_embedding=with_embedding)


def _verify_two(
    engine: FaceEngine, items: Sequence[UploadedImage], max_pixels: int
) -> schemas.Verification:
    image_a, image_b = (decode_one(item, max_pixels) for item in items)
    result = engine.verify(image_a, image_b)
    return schemas.Verification(
        same=result.same, similarity=round(result.similarity, 6), threshold=result.threshold
    )


def _query_one(watchlist: Watchlist, item: UploadedImage, max_pixels: int) -> dict[str, Any]:
    image = decode_one(item, max_pixels)
    return _query(image, _identify(watchlist, [image])[0], watchlist.threshold)


@router.post("/api/faces/detect", response_model=schemas.Detection, openapi_extra=SINGLE)
async def detect(request: Request, services: ServicesDep) -> Any:
    """Faces of one image: boxes, five landmarks, scores and quality figures."""
    item = await _one_image(request, services)
    max_pixels = _limits(services)[2]
    return await asyncio.to_thread(
        _detect_one, services.engine, item, max_pixels, with_embedding=False
    )


@router.post("/api/faces/embed", response_model=schemas.Embedding, openapi_extra=SINGLE)
async def embed(request: Request, services: ServicesDep) -> Any:
    """Like detect, each face with its embedding."""
    item = await _one_image(request, services)
    max_pixels = _limits(services)[2]
    return await asyncio.to_thread(
        _detect_one, services.engine, item, max_pixels, with_embedding=True
    )


@router.post("/api/faces/verify", response_model=schemas.Verification, openapi_extra=VERIFY)
async def verify(request: Request, services: ServicesDep) -> Any:
    """Whether the largest faces of two images are the same person (422 when one has none)."""
    limit, _, max_pixels = _limits(services)
    fields = ("file_a", "file_b", "image_a", "image_b")
    upload = await read_upload(request, image_fields=fields, limit=limit, max_images=2)
    items = [upload.one("file_a", "image_a"), upload.one("file_b", "image_b")]
    return await asyncio.to_thread(_verify_two, services.engine, items, max_pixels)


@router.post("/api/faces/query", response_model=schemas.Query, openapi_extra=SINGLE)
async def query(request: Request, services: ServicesDep) -> Any:
    """Who each face of one image is: the best person at the threshold and the top candidates."""
    item = await _one_image(request, services)
    max_pixels = _limits(services)[2]
    return await asyncio.to_thread(_query_one, services.watchlist, item, max_pixels)


# --- batches ------------------------------------------------------------------------------------


# Batches decode in parallel threads, then one worker thread runs the engine on every image
# and builds the answer (thousands of rounded floats are not work for the event loop).


def _detect_all(
    engine: FaceEngine, decoded: Sequence[Decoded], *, with_embedding: bool
) -> list[Any]:
    positions, images = _usable(decoded)
    run = engine.embed if with_embedding else engine.detect
    by_position = dict(zip(positions, run(images) if images else [], strict=True))
    results: list[Any] = []
    for index, item in enumerate(decoded):
        if item.error is not None:
            results.append(_failed(index, item.error))
            continue
        assert item.image is not None
        detection = _detection(item.image, by_position[index], with_embedding=with_embedding)
        results.append({"index": index, **detection})
    return results


def _query_all(watchlist: Watchlist, decoded: Sequence[Decoded]) -> list[Any]:
    positions, images = _usable(decoded)
    found = _identify(watchlist, images) if images else []
    by_position = dict(zip(positions, found, strict=True))
    results: list[Any] = []
    for index, item in enumerate(decoded):
        if item.error is not None:
            results.append(_failed(index, item.error))
            continue
        assert item.image is not None
        answer = _query(item.image, by_position[index], watchlist.threshold)
        results.append({"index": index, **answer})
    return results


def _verify_all(engine: FaceEngine, decoded: Sequence[Decoded]) -> list[Any]:
    """Pair i is images 2i and 2i+1 of ``decoded``."""
    positions, images = _usable(decoded)
    by_position = dict(zip(positions, engine.embed(images) if images else [], strict=True))
    threshold = engine.match_threshold
    results: list[Any] = []
    for index in range(len(decoded) // 2):
        a, b = decoded[2 * index], decoded[2 * index + 1]
        broken = a.error or b.error
        if broken is not None:
            results.append(_failed(index, broken))
            continue
        faces_a, faces_b = by_position[2 * index], by_position[2 * index + 1]
        missing = [label for label, f in (("first", faces_a), ("second", faces_b)) if not len(f)]
        if missing:
            message = f"no face found in the {missing[0]} image"
            error = schemas.ItemError(code="no_face", message=message)
            results.append(schemas.FailedItem(index=index, error=error))
            continue
        similarity = float(np.dot(_largest(faces_a), _largest(faces_b)))
        results.append(
            schemas.VerificationItem(
                index=index,
                same=similarity >= threshold,
                similarity=round(similarity, 6),
                threshold=threshold,
            )
        )
    return results


@router.post("/api/faces/detect/batch", response_model=schemas.DetectionBatch, openapi_extra=BATCH)
async def detect_batch(request: Request, services: ServicesDep) -> Any:
    """Detect in every image of the batch in one engine call; errors per image."""
    decoded = await _batch(request, services)
    run = functools.partial(_detect_all, services.engine, decoded, with_embedding=False)
    return {"results": await asyncio.to_thread(run)}


@router.post("/api/faces/embed/batch", response_model=schemas.EmbeddingBatch, openapi_extra=BATCH)
async def embed_batch(request: Request, services: ServicesDep) -> Any:
    """Detect and embed every image of the batch (one embedding call); errors per image."""
    decoded = await _batch(request, services)
    run = functools.partial(_detect_all, services.engine, decoded, with_embedding=True)
    return {"results": await asyncio.to_thread(run)}


@router.post("/api/faces/query/batch", response_model=schemas.QueryBatch, openapi_extra=BATCH)
async def query_batch(request: Request, services: ServicesDep) -> Any:
    """Identify every face of every image (one engine call, one index search); errors per image."""
    decoded = await _batch(request, services)
    return {"results": await asyncio.to_thread(_query_all, services.watchlist, decoded)}


def _pairs(images: dict[str, list[UploadedImage]]) -> list[tuple[UploadedImage, UploadedImage]]:
    first, second = images.get("file_a", []), images.get("file_b", [])
    if len(first) != len(second):
        raise ApiError(
            422,
            "unpaired_images",
            f"{len(first)} file_a and {len(second)} file_b: give them in pairs",
        )
    return list(zip(first, second, strict=True))


@router.post(
    "/api/faces/verify/batch",
    response_model=schemas.VerificationBatch,
    openapi_extra=VERIFY_BATCH,
)
async def verify_batch(request: Request, services: ServicesDep) -> Any:
    """Verify every pair: all images through one engine call; errors per pair."""
    limit, most, max_pixels = _limits(services)
    upload = await read_upload(
        request, image_fields=("file_a", "file_b"), limit=limit, max_images=most
    )
    if upload.kind == "multipart":
        pairs = _pairs(upload.images)
    else:
        pairs = _json_pairs(upload.values)
        if 2 * len(pairs) > most:
            raise ApiError(
                413,
                "too_many_images",
                f"{2 * len(pairs)} images in one request; at most {most} are accepted",
                limit=most,
            )
    if not pairs:
        raise ApiError(422, "missing_image", "no pair of images given", field="pairs")
    decoded = await decode_all([image for pair in pairs for image in pair], max_pixels)
    return {"results": await asyncio.to_thread(_verify_all, services.engine, decoded)}


def _largest(faces: Faces) -> Any:
    assert faces.embedding is not None
    return faces.embedding[faces.largest()]


def _json_pairs(values: dict[str, Any]) -> list[tuple[UploadedImage, UploadedImage]]:
    raw = values.get("pairs")
    unknown = sorted(set(values) - {"pairs"})
    if unknown:
        raise ApiError(422, "invalid_request", f"unknown keys {unknown}: send {{'pairs': [...]}}")
    if not isinstance(raw, list):
        raise ApiError(
            422,
            "invalid_request",
            'expected {"pairs": [{"image_a": base64, "image_b": base64}, ...]}',
            field="pairs",
        )
    pairs = []
    for position, pair in enumerate(raw):
        if not isinstance(pair, dict) or set(pair) != {"image_a", "image_b"}:
            raise ApiError(
                422,
                "invalid_request",
                f"pairs[{position}] must be an object with image_a and image_b",
                field=f"pairs[{position}]",
            )
        pairs.append(
            (
                from_base64("image_a", f"pairs[{position}].image_a", pair["image_a"]),
                from_base64("image_b", f"pairs[{position}].image_b", pair["image_b"]),
            )
        )
    return pairs
