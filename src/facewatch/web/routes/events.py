"""Routes: the event history and the snapshot JPEGs (role viewer).

``GET /api/events`` pages events newest first (``next_cursor`` continues), ``GET
/api/events/{alert_id}`` is one event, and ``GET /api/snapshots/{path}`` serves a snapshot JPEG
from ``<data dir>/snapshots`` and nothing else.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response

from facewatch.web.auth import Role, require
from facewatch.web.errors import ApiError
from facewatch.web.event_filters import MAX_PAGE, InvalidEventQuery, resolve_snapshot
from facewatch.web.services import Services, get_services

router = APIRouter(tags=["events"], dependencies=[Depends(require(Role.viewer))])

ServicesDep = Annotated[Services, Depends(get_services)]
#: Snapshots never change once written: browsers may keep them.
SNAPSHOT_CACHE = "private, max-age=86400, immutable"
#: A frame snapshot larger than this is not one of ours.
MAX_SNAPSHOT_BYTES = 64 * 1024 * 1024


@router.get(
    "/api/events",
    summary="Events, newest first",
    response_description='{"items": [alert, ...], "next_cursor": str | null}',
)
async def list_events(
    services: ServicesDep,
    stream: Annotated[str | None, Query(description="Stream ids, comma-separated.")] = None,
    person_id: Annotated[str | None, Query(description="Person ids, comma-separated.")] = None,
    type: Annotated[
        str | None, Query(description="Alert types, comma-separated: match,update,ended,unknown.")
    ] = None,
    since: Annotated[
        str | None, Query(description="From this time on (ISO-8601 or UNIX seconds).")
    ] = None,
    until: Annotated[
        str | None, Query(description="Before this time (ISO-8601 or UNIX seconds).")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Events per page.")] = 50,
    cursor: Annotated[
        str | None, Query(description="next_cursor of the previous page.", max_length=128)
    ] = None,
) -> dict[str, Any]:
    """Each item is the alert as published, with ``snapshot_url`` and ``frame_snapshot_url``."""
    try:
        page = await asyncio.to_thread(
            services.events.query,
            stream=stream,
            person_id=person_id,
            type=type,
            since=since,
            until=until,
            limit=limit,
            cursor=cursor,
        )
    except InvalidEventQuery as exc:
        raise _invalid(exc) from None
    return page.as_dict()


@router.get("/api/events/{alert_id}", summary="One event")
async def get_event(alert_id: str, services: ServicesDep) -> dict[str, Any]:
    event = await asyncio.to_thread(services.events.get, alert_id.lower())
    if event is None:
        raise ApiError(
            404, "event_not_found", f"no event {alert_id[:48]!r}", alert_id=alert_id[:48]
        )
    return event


@router.get(
    "/api/snapshots/{path:path}",
    summary="A snapshot JPEG",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
)
async def get_snapshot(path: str, services: ServicesDep) -> Response:
    """``path`` as an alert's ``snapshot`` names it, with or without the ``snapshots/`` folder."""
    data_dir: Path = services.events.data_dir
    content = await asyncio.to_thread(_read_snapshot, data_dir, path)
    if content is None:
        raise ApiError(404, "snapshot_not_found", "no such snapshot")
    return Response(content, media_type="image/jpeg", headers={"Cache-Control": SNAPSHOT_CACHE})


def _read_snapshot(data_dir: Path, path: str) -> bytes | None:
    """The file's bytes when it is a snapshot file under the snapshots folder, else None."""
    target = resolve_snapshot(data_dir, path)
    if target is None:
        return None
    try:
        # O_NOFOLLOW: a link put in place of the checked file since is refused, not followed.
        descriptor = os.open(target, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(descriptor, "rb") as handle:
        content = handle.read(MAX_SNAPSHOT_BYTES + 1)
    return content if len(content) <= MAX_SNAPSHOT_BYTES else None


def _invalid(exc: InvalidEventQuery) -> ApiError:
    return ApiError(422, "invalid_query", str(exc), parameter=exc.parameter)
