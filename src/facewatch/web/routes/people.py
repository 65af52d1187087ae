"""People and the watchlist: persons, their face photos, status and reset.

Reading needs the viewer role, changing the watchlist the operator role, a reset the admin role.
Enrollment takes photos as multipart ``photos`` files (with the details as form fields) or as a
JSON object with base64 ``photos``; refused photos come back with their reasons (the watchlist's
own, plus ``not_an_image`` for uploads that are not an accepted image format); accepted faces
that are blurry or turned away come back in ``warnings``. Store calls run in worker threads.

While the database cannot be reached, every call is refused with 503 ``store_unavailable`` and
nothing is retried on the server: an enrollment cut off by the outage may or may not have been
committed, so only the client, which can look, should try again. A photo that cannot be kept
because the data directory is full is 507 ``insufficient_storage`` (503
``photo_storage_unavailable`` for other disk errors); nobody is enrolled then.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import FileResponse
from pydantic import Field

from facewatch.errors import EnrollmentRejected, WatchlistError
from facewatch.watchlist.enrollment import Reason
from facewatch.watchlist.service import (
    Enrollment,
    Photo,
    PhotoStorageError,
    Rejection,
    Watchlist,
)
from facewatch.watchlist.store import FaceRecord, PersonRecord
from facewatch.web import schemas
from facewatch.web.auth import Role, require
from facewatch.web.errors import ApiError, error_responses
from facewatch.web.services import Services, get_services
from facewatch.web.uploads import (
    Upload,
    UploadedImage,
    json_body_doc,
    read_model,
    read_upload,
    screen,
    sniff_format,
    validate_body,
)

router = APIRouter(tags=["people"])
ServicesDep = Annotated[Services, Depends(get_services)]
#: Ids are 64-bit in every store; a bigger number is refused before it reaches the database.
MAX_ID = 2**63 - 1
PersonId = Annotated[int, Path(ge=1, le=MAX_ID, description="The person's id.")]
FaceId = Annotated[int, Path(ge=1, le=MAX_ID, description="The face's id.")]
VIEWER = [Depends(require(Role.viewer))]
OPERATOR = [Depends(require(Role.operator))]
ADMIN = [Depends(require(Role.admin))]
#: Small JSON bodies (details, confirmations) are refused above this many bytes.
DETAILS_LIMIT = 256 * 1024
_MEDIA_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "GIF": "image/gif",
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


class NewPerson(schemas.PersonDetails):
    """A person to enroll: details, photos (base64) and whether to keep the largest face."""

    name: str = Field(min_length=1, max_length=200)
    photos: list[str] = Field(default_factory=list, description="Base64 photos.")
    largest: bool = Field(False, description="Keep the largest face of photos with several.")


ENROLL_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "multipart: fields name, age, gender, address, attributes (a JSON "
        "object as text), largest, and one or more `photos` files; or the JSON below.",
        "content": {
            "application/json": {"schema": NewPerson.model_json_schema()},
            "multipart/form-data": {"schema": {"type": "object"}},
        },
    }
}
PHOTOS_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": 'multipart `photos` files (and `largest`), or JSON {"photos": [base64], '
        '"largest": false}.',
        "content": {
            "multipart/form-data": {"schema": {"type": "object"}},
            "application/json": {"schema": {"type": "object"}},
        },
    }
}


# --- serialisation ------------------------------------------------------------------------------


def _person(record: PersonRecord) -> schemas.Person:
    return schemas.Person.model_validate(record.as_dict())


def _face(record: FaceRecord) -> schemas.Face:
    return schemas.Face.model_validate(
        {**record.as_dict(), "image_url": f"/api/faces/{record.id}/image"}
    )


def _enrollment(result: Enrollment, refused: list[Rejection]) -> schemas.Enrollment:
    return schemas.Enrollment(
        person=_person(result.person),
        accepted=[_face(face) for face in result.accepted],
        warnings=[schemas.EnrollmentWarning(**w.as_dict()) for w in result.warnings],
        rejected=[schemas.Rejected(**r.as_dict()) for r in refused],
    )


# --- enrollment input ---------------------------------------------------------------------------


async def _photos_and_values(request: Request, services: Services) -> Upload:
    server = services.settings.server
    upload = await read_upload(
        request,
        image_fields=("photos",),
        limit=server.max_upload_bytes,
        max_images=server.max_batch_images,
    )
    if not upload.take("photos"):
        how = "`photos` files" if upload.kind == "multipart" else 'base64 strings in "photos"'
        raise ApiError(422, "missing_image", f"no photo given: send {how}", field="photos")
    return upload


def _form_values(values: dict[str, Any]) -> dict[str, Any]:
    """Form fields (all text) as the JSON types the details have."""
    out: dict[str, Any] = {}
    for key, raw in values.items():
        text = raw.strip() if isinstance(raw, str) else raw
        if key in ("age", "gender", "address") and text == "":
            out[key] = None
        elif key == "age":
            out[key] = text  # pydantic turns digits into an int and names the field otherwise
        elif key == "attributes":
            try:
                out[key] = json.loads(text) if text else None
            except json.JSONDecodeError as exc:
                raise ApiError(
                    422,
                    "invalid_request",
                    f"attributes: not a JSON object ({exc.msg})",
                    field="attributes",
                ) from None
        elif key == "largest":
            if str(text).lower() not in _TRUE | _FALSE:
                raise ApiError(422, "invalid_request", "largest: expected true or false")
            out[key] = str(text).lower() in _TRUE
        else:
            out[key] = text
    return out


def _prescreen(
    items: list[UploadedImage], max_pixels: int
) -> tuple[list[tuple[int, Photo]], list[tuple[int, Rejection]]]:
    """Photos that may be images, and refusals for those that cannot (format, size, base64)."""
    errors = screen(items, max_pixels)
    usable = [(i, Photo(item.source, item.data)) for i, item in enumerate(items) if i not in errors]
    refused = [
        (i, Rejection(items[i].source, Reason.NOT_AN_IMAGE, str(error)))
        for i, error in errors.items()
    ]
    return usable, refused


def _in_order(
    usable: list[tuple[int, Photo]],
    refused_early: list[tuple[int, Rejection]],
    refused_later: list[Rejection],
) -> list[Rejection]:
    """Every refusal in the order the photos were sent.

    The watchlist reports its refusals in the order of the photos it was given, so each is
    matched to the next photo of the same name.
    """
    placed = list(refused_early)
    cursor = 0
    for rejection in refused_later:
        while cursor < len(usable) and usable[cursor][1].source != rejection.source:
            cursor += 1
        position = usable[cursor][0] if cursor < len(usable) else len(usable) + len(placed)
        placed.append((position, rejection))
        cursor += 1
    return [rejection for _, rejection in sorted(placed, key=lambda pair: pair[0])]


def _enroll_in_thread(
    watchlist: Watchlist,
    person_id: int | None,
    details: dict[str, Any],
    usable: list[tuple[int, Photo]],
    refused: list[tuple[int, Rejection]],
    largest: bool,
) -> tuple[Enrollment, list[Rejection]]:
    photos = [photo for _, photo in usable]
    try:
        if not photos:
            raise EnrollmentRejected([])
        if person_id is None:
            result = watchlist.enroll(details, photos, largest=largest)
        else:
            result = watchlist.add_photos(person_id, photos, largest=largest)
    except EnrollmentRejected as exc:
        later = [Rejection(s, Reason(r), d) for s, r, d in exc.rejected]
        every = _in_order(usable, refused, later)
        raise EnrollmentRejected([(r.source, r.reason.value, r.detail) for r in every]) from None
    return result, _in_order(usable, refused, result.rejected)


def _refused_input(exc: WatchlistError) -> ApiError:
    """A watchlist refusal of the request's details (not found and the like are left alone)."""
    return ApiError(422, "invalid_person", str(exc))


async def _enroll(
    services: Services,
    person_id: int | None,
    details: dict[str, Any],
    usable: list[tuple[int, Photo]],
    refused: list[tuple[int, Rejection]],
    largest: bool,
) -> tuple[Enrollment, list[Rejection]]:
    """Enroll on a worker thread; a photo the data directory cannot hold is 507 (or 503)."""
    try:
        return await asyncio.to_thread(
            _enroll_in_thread, services.watchlist, person_id, details, usable, refused, largest
        )
    except PhotoStorageError as exc:
        if exc.no_space:
            raise ApiError(
                507,
                "insufficient_storage",
                f"the data directory is full: {exc}; free space and send it again",
            ) from None
        raise ApiError(503, "photo_storage_unavailable", str(exc)) from None


# --- people -------------------------------------------------------------------------------------


@router.get("/api/people", response_model=schemas.PeoplePage, dependencies=VIEWER)
async def list_people(
    services: ServicesDep,
    search: Annotated[
        str | None, Query(max_length=200, description="Part of a name or an address.")
    ] = None,
    gender: Annotated[str | None, Query(max_length=32)] = None,
    min_age: Annotated[int | None, Query(ge=0, le=150)] = None,
    max_age: Annotated[int | None, Query(ge=0, le=150)] = None,
    page: Annotated[int, Query(ge=1, le=10**9)] = 1,
    per_page: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Any:
    """Persons matching every filter given, by id, one page at a time."""
    found = await asyncio.to_thread(
        services.watchlist.search_persons,
        text=search or None,
        gender=gender or None,
        min_age=min_age,
        max_age=max_age,
        offset=(page - 1) * per_page,
        limit=per_page,
    )
    return schemas.PeoplePage(
        items=[_person(p) for p in found.items], total=found.total, page=page, per_page=per_page
    )


@router.post(
    "/api/people",
    status_code=201,
    response_model=schemas.Enrollment,
    dependencies=OPERATOR,
    openapi_extra=ENROLL_DOC,
    responses=error_responses(503, 507),
)
async def enroll(request: Request, services: ServicesDep) -> Any:
    """Enroll a new person from their photos: 201 when at least one photo was accepted, 422
    ``enrollment_rejected`` with every photo's reason otherwise (no person is created)."""
    upload = await _photos_and_values(request, services)
    values = upload.values if upload.kind == "json" else _form_values(upload.values)
    new = validate_body(NewPerson, {**values, "photos": []})
    details = new.model_dump(exclude={"photos", "largest"}, exclude_none=True)
    details.setdefault("attributes", {})
    usable, refused = _prescreen(upload.take("photos"), services.engine.settings.max_image_pixels)
    try:
        result, rejected = await _enroll(services, None, details, usable, refused, new.largest)
    except WatchlistError as exc:
        if type(exc) is WatchlistError:
            raise _refused_input(exc) from None
        raise
    return _enrollment(result, rejected)


@router.get("/api/people/{person_id}", response_model=schemas.Person, dependencies=VIEWER)
async def get_person(person_id: PersonId, services: ServicesDep) -> Any:
    """One person (404 ``person_not_found`` when there is none with that id)."""
    return _person(await asyncio.to_thread(services.watchlist.store.get_person, person_id))


@router.patch(
    "/api/people/{person_id}",
    response_model=schemas.Person,
    dependencies=OPERATOR,
    openapi_extra=json_body_doc(schemas.PersonDetails, "The details to change; null clears."),
)
async def update_person(person_id: PersonId, request: Request, services: ServicesDep) -> Any:
    """Change a person's details (only the keys sent; ``null`` clears age, gender, address)."""
    changes = await read_model(request, schemas.PersonDetails, DETAILS_LIMIT)
    update = changes.model_dump(exclude_unset=True)
    if "name" in update and update["name"] is None:
        raise ApiError(422, "invalid_person", "name cannot be removed", field="name")
    if not update:
        raise ApiError(422, "invalid_person", "nothing to change: send at least one detail")
    try:
        record = await asyncio.to_thread(services.watchlist.update_person, person_id, update)
    except WatchlistError as exc:
        if type(exc) is WatchlistError:
            raise _refused_input(exc) from None
        raise
    return _person(record)


@router.delete(
    "/api/people/{person_id}", response_model=schemas.PersonDeleted, dependencies=OPERATOR
)
async def delete_person(person_id: PersonId, services: ServicesDep) -> Any:
    """Forget a person and every template of theirs, and the photos no other person uses."""

    def forget() -> tuple[PersonRecord, int]:
        person = services.watchlist.store.get_person(person_id)
        return person, services.watchlist.forget(person_id)

    person, removed = await asyncio.to_thread(forget)
    return schemas.PersonDeleted(person=_person(person), faces_removed=removed)


# --- faces of a person --------------------------------------------------------------------------


@router.get("/api/people/{person_id}/faces", response_model=schemas.Faces, dependencies=VIEWER)
async def list_faces(person_id: PersonId, services: ServicesDep) -> Any:
    """A person's face templates, oldest first."""
    faces = await asyncio.to_thread(services.watchlist.store.faces_of, person_id)
    return schemas.Faces(items=[_face(face) for face in faces])


@router.post(
    "/api/people/{person_id}/faces",
    status_code=201,
    response_model=schemas.Enrollment,
    dependencies=OPERATOR,
    openapi_extra=PHOTOS_DOC,
    responses=error_responses(503, 507),
)
async def add_faces(person_id: PersonId, request: Request, services: ServicesDep) -> Any:
    """More photos of a person; refused ones come back with reasons (422 when all are)."""
    await asyncio.to_thread(services.watchlist.store.get_person, person_id)  # 404 first
    upload = await _photos_and_values(request, services)
    values = upload.values if upload.kind == "json" else _form_values(upload.values)
    unknown = sorted(set(values) - {"largest"})
    if unknown:
        raise ApiError(422, "invalid_request", f"unknown fields {unknown}: send photos, largest")
    largest = values.get("largest", False)
    if not isinstance(largest, bool):
        raise ApiError(422, "invalid_request", "largest: expected true or false")
    usable, refused = _prescreen(upload.take("photos"), services.engine.settings.max_image_pixels)
    result, rejected = await _enroll(services, person_id, {}, usable, refused, largest)
    return _enrollment(result, rejected)


def _face_of(watchlist: Watchlist, face_id: int) -> FaceRecord:
    try:
        return watchlist.store.get_face(face_id)
    except WatchlistError as exc:
        if type(exc) is WatchlistError:
            raise ApiError(404, "face_not_found", f"no face {face_id} in the watchlist") from None
        raise


@router.delete(
    "/api/people/{person_id}/faces/{face_id}",
    response_model=schemas.FaceDeleted,
    dependencies=OPERATOR,
)
async def remove_face(person_id: PersonId, face_id: FaceId, services: ServicesDep) -> Any:
    """Remove one template of a person (404 when the face is not theirs), and its photo when
    no other face uses it."""

    def remove() -> PersonRecord:
        watchlist = services.watchlist
        watchlist.store.get_person(person_id)
        face = _face_of(watchlist, face_id)
        if face.person_id != person_id:
            raise ApiError(404, "face_not_found", f"person {person_id} has no face {face_id}")
        watchlist.remove_face(face_id)
        return watchlist.store.get_person(person_id)

    person = await asyncio.to_thread(remove)
    return schemas.FaceDeleted(person=_person(person), face_id=face_id)


@router.get(
    "/api/faces/{face_id}/image",
    response_class=FileResponse,
    dependencies=VIEWER,
    responses={200: {"content": {"image/jpeg": {}, "image/png": {}}}},
)
async def face_image(face_id: FaceId, services: ServicesDep) -> FileResponse:
    """The photo a face template was enrolled from, as it was uploaded."""
    face = await asyncio.to_thread(_face_of, services.watchlist, face_id)
    root = (services.watchlist.data_dir / "faces").resolve()
    path = (services.watchlist.data_dir / face.image_path).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise ApiError(404, "photo_missing", f"the photo of face {face_id} is not in the data dir")
    kind = sniff_format(await asyncio.to_thread(_head, path))
    return FileResponse(
        path,
        media_type=_MEDIA_TYPES.get(kind or "", "application/octet-stream"),
        headers={"Cache-Control": "private, max-age=86400, immutable"},
    )


def _head(path: FilePath) -> bytes:
    with path.open("rb") as handle:
        return handle.read(32)


# --- the watchlist ------------------------------------------------------------------------------


@router.get("/api/watchlist/status", response_model=schemas.WatchlistStatus, dependencies=VIEWER)
async def watchlist_status(services: ServicesDep) -> dict[str, Any]:
    """Store and index: counts, backend, device, versions, and the match threshold in effect:
    its source (fixed, calibrated, pack), the target FPIR, the watchlist's size and the FPIR
    expected at that size (``facewatch status``)."""
    return await asyncio.to_thread(services.watchlist.status)


@router.post(
    "/api/watchlist/reset",
    response_model=schemas.ResetDone,
    dependencies=ADMIN,
    openapi_extra=json_body_doc(schemas.ResetRequest, 'Deletes every person: {"confirm": true}.'),
)
async def reset_watchlist(request: Request, services: ServicesDep) -> Any:
    """Delete every person and template (admin; needs ``{"confirm": true}``)."""
    body = await read_model(request, schemas.ResetRequest, DETAILS_LIMIT)
    if body.confirm is not True:
        raise ApiError(
            422,
            "confirmation_required",
            'reset deletes every person: send {"confirm": true} to do it',
        )
    removed = await asyncio.to_thread(services.watchlist.reset, confirm=True)
    return schemas.ResetDone(reset=True, faces_removed=removed)
