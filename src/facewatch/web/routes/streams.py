"""Streams: list and read them (viewer); add, change, pause, resume and delete them (operator).

Every change goes to the pipeline's stream manager first, then to ``streams.json``
(:mod:`facewatch.web.stream_registry`), so the configured streams come back after a restart.
URLs are shown with their credentials replaced by ``***`` everywhere, and a PATCH that sends
back such a masked URL keeps the real one. File sources must pass
:func:`~facewatch.web.stream_registry.vet_file_source` (see its module for the rule).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request

from facewatch.stream.config import StreamConfig
from facewatch.stream.manager import Stream
from facewatch.stream.urls import redact_url
from facewatch.web import schemas
from facewatch.web.auth import Role, require
from facewatch.web.errors import ApiError, error_responses
from facewatch.web.services import Services, get_services
from facewatch.web.stream_registry import (
    REGISTRY_FILE,
    persisted,
    registry_of,
    save_streams,
    vet_file_source,
)
from facewatch.web.uploads import (
    is_json,
    json_body_doc,
    media_type,
    read_json,
    read_model,
    validate_body,
)

router = APIRouter(tags=["streams"])
ServicesDep = Annotated[Services, Depends(get_services)]
StreamId = Annotated[str, Path(min_length=1, max_length=64, description="The stream's id.")]
VIEWER = [Depends(require(Role.viewer))]
OPERATOR = [Depends(require(Role.operator))]
#: Stream settings are small; a body above this is refused before it is read whole.
SETTINGS_LIMIT = 64 * 1024
#: Status fields the stream object already carries at its top level.
_TOP_LEVEL = ("id", "name", "url", "state")

PATCH_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "Any settings of POST /api/streams but the id; the stream restarts with "
        "them (changing only `enabled` pauses or resumes it instead).",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}


def describe(stream: Stream) -> schemas.Stream:
    """A stream as the API shows it: settings and status, credentials masked."""
    status = stream.status().as_dict()
    config = stream.config.model_dump(mode="json")
    config["url"] = redact_url(stream.config.url)
    return schemas.Stream(
        id=stream.id,
        name=status["name"],
        url=status["url"],
        kind=stream.config.kind,
        state=status["state"],
        persisted=persisted(stream),
        config=config,
        status={key: value for key, value in status.items() if key not in _TOP_LEVEL},
    )


def _stream(services: Services, stream_id: str) -> Stream:
    try:
        return services.pipeline.streams.get(stream_id)
    except KeyError:
        raise ApiError(404, "stream_not_found", f"no stream {stream_id!r}") from None


async def _vet(services: Services, config: StreamConfig) -> None:
    await asyncio.to_thread(vet_file_source, config, services.settings.data_dir)


@router.get("/api/streams", response_model=schemas.Streams, dependencies=VIEWER)
async def list_streams(services: ServicesDep) -> Any:
    """Every stream, in the order they were added."""
    return schemas.Streams(items=[describe(s) for s in services.pipeline.streams.list()])


@router.post(
    "/api/streams",
    status_code=201,
    response_model=schemas.Stream,
    dependencies=OPERATOR,
    openapi_extra=json_body_doc(schemas.StreamCreate),
    responses=error_responses(409, 503, 507),
)
async def add_stream(request: Request, services: ServicesDep) -> Any:
    """Add a stream and start it (unless ``enabled`` is false); 409 when the id is taken."""
    body = await read_model(request, schemas.StreamCreate, SETTINGS_LIMIT)
    config = StreamConfig.model_validate(body.model_dump(exclude={"id"}, exclude_unset=True))
    await _vet(services, config)
    try:
        stream = await services.pipeline.add_stream(config, body.id)
    except ValueError as exc:
        if "already exists" in str(exc):
            raise ApiError(409, "stream_exists", str(exc)) from None
        raise ApiError(422, "invalid_stream_id", str(exc), field="id") from None
    registry_of(services).forget(stream.id)  # a stream of that id that could not be restored
    try:
        await save_streams(services)
    except ApiError as exc:
        # A new stream that would vanish at the next restart is not added at all.
        await services.pipeline.remove_stream(stream.id)
        reason = exc.details.get("reason", exc.message)
        raise ApiError(
            exc.status,
            exc.code,
            f"stream not added: {REGISTRY_FILE} could not be written ({reason}); free space "
            "in the data directory and add it again.",
            reason=reason,
        ) from None
    return describe(stream)


@router.get("/api/streams/{stream_id}", response_model=schemas.Stream, dependencies=VIEWER)
async def get_stream(stream_id: StreamId, services: ServicesDep) -> Any:
    """One stream's settings and status."""
    return describe(_stream(services, stream_id))


@router.patch(
    "/api/streams/{stream_id}",
    response_model=schemas.Stream,
    dependencies=OPERATOR,
    openapi_extra=PATCH_DOC,
    responses=error_responses(503, 507),
)
async def update_stream(stream_id: StreamId, request: Request, services: ServicesDep) -> Any:
    """Change a stream's settings: it restarts with them, keeping its id and counters."""
    stream = _stream(services, stream_id)
    kind = media_type(request)
    if not is_json(kind):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"content type {kind or 'none'!r} is not accepted: send application/json",
        )
    changes = await read_json(request, SETTINGS_LIMIT)
    if "id" in changes:
        raise ApiError(422, "invalid_request", "a stream's id cannot change", field="id")
    current = stream.config
    if changes.get("url") == redact_url(current.url):
        changes["url"] = current.url  # the masked URL sent back unchanged
    config = validate_body(StreamConfig, {**current.model_dump(exclude_unset=True), **changes})
    if set(changes) <= {"enabled"}:
        if config.enabled:
            await services.pipeline.streams.resume(stream_id)
        else:
            await services.pipeline.streams.pause(stream_id)
    else:
        await _vet(services, config)
        try:
            await services.pipeline.streams.update(stream_id, config)
        except KeyError:
            raise ApiError(404, "stream_not_found", f"no stream {stream_id!r}") from None
    await save_streams(services)
    return describe(_stream(services, stream_id))


@router.post(
    "/api/streams/{stream_id}/pause",
    response_model=schemas.Stream,
    dependencies=OPERATOR,
    responses=error_responses(503, 507),
)
async def pause_stream(stream_id: StreamId, services: ServicesDep) -> Any:
    """Stop handing the stream's frames to the pipeline (a live source stays connected)."""
    _stream(services, stream_id)
    await services.pipeline.streams.pause(stream_id)
    await save_streams(services)
    return describe(_stream(services, stream_id))


@router.post(
    "/api/streams/{stream_id}/resume",
    response_model=schemas.Stream,
    dependencies=OPERATOR,
    responses=error_responses(503, 507),
)
async def resume_stream(stream_id: StreamId, services: ServicesDep) -> Any:
    """Hand the stream's frames over again (starting it if it never was)."""
    _stream(services, stream_id)
    await services.pipeline.streams.resume(stream_id)
    await save_streams(services)
    return describe(_stream(services, stream_id))


@router.delete(
    "/api/streams/{stream_id}",
    response_model=schemas.StreamDeleted,
    dependencies=OPERATOR,
    responses=error_responses(503, 507),
)
async def delete_stream(stream_id: StreamId, services: ServicesDep) -> Any:
    """Stop a stream and forget it (also one saved that could not be restored)."""
    try:
        await services.pipeline.remove_stream(stream_id)
    except KeyError:
        if not registry_of(services).forget(stream_id):
            raise ApiError(404, "stream_not_found", f"no stream {stream_id!r}") from None
    await save_streams(services)
    return schemas.StreamDeleted(id=stream_id, deleted=True)
