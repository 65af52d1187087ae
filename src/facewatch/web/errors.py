"""Errors as HTTP responses: one JSON shape, the right status code, never a traceback.

Every error body is ``{"error": {"code": "...", "message": "...", ...details}}``
(:class:`ErrorOut` in the API description).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from facewatch.errors import (
    ConfigError,
    EnrollmentRejected,
    FacewatchError,
    ImageError,
    ImageTooLargeError,
    ModelError,
    NoFaceError,
    PersonNotFoundError,
    StoreError,
    StreamError,
    StreamOpenError,
)

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error a route raises on purpose: status, a short code and a message for people."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def error_body(code: str, message: str, **details: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **details}}


class ErrorDetail(BaseModel):
    """What went wrong: a short code for programs, a message for people, maybe details."""

    model_config = ConfigDict(extra="allow")
    code: str = Field(min_length=1, examples=["invalid_request"])
    message: str = Field(min_length=1)


class ErrorOut(BaseModel):
    """Every error response."""

    error: ErrorDetail


#: What each error status means, as the API description says it.
ERROR_STATUSES: dict[int, str] = {
    400: "The request is malformed.",
    401: "No valid credentials (missing, unknown, revoked or expired).",
    403: "The role is too low, or a cross-site request with the session cookie.",
    404: "What the path names does not exist.",
    409: "Conflicts with the current state.",
    413: "The body, an image or the number of images is above its limit.",
    415: "The body's content type is not accepted.",
    422: "Invalid input: error.message says which part and why.",
    429: "Too many: failed logins (see Retry-After), or viewers of one stream.",
    503: "The store (or another part the request needs) is unavailable; try again.",
    504: "A negotiation with the client's peer took too long.",
    507: "The data directory is full.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each status answered with :class:`ErrorOut`."""
    return {
        status: {"model": ErrorOut, "description": ERROR_STATUSES[status]} for status in statuses
    }


def _status_of(exc: FacewatchError) -> tuple[int, str, dict[str, Any]]:
    """HTTP status, code and details for each kind of facewatch error (most specific first)."""
    if isinstance(exc, ImageTooLargeError):
        return 413, "image_too_large", {"pixels": exc.pixels, "limit": exc.limit}
    if isinstance(exc, ImageError):
        return 422, "bad_image", {}
    if isinstance(exc, NoFaceError):
        return 422, "no_face", {"index": exc.index}
    if isinstance(exc, PersonNotFoundError):
        return 404, "person_not_found", {}
    if isinstance(exc, EnrollmentRejected):
        rejected = [
            {"image": source, "reason": reason, "detail": detail}
            for source, reason, detail in exc.rejected
        ]
        return 422, "enrollment_rejected", {"rejected": rejected}
    if isinstance(exc, StoreError):
        return 503, "store_unavailable", {}
    if isinstance(exc, StreamOpenError):
        return 422, "stream_open_failed", {"reason": exc.reason}
    if isinstance(exc, StreamError):
        return 422, "stream_error", {}
    if isinstance(exc, ConfigError):
        return 422, "invalid_setting", {"key": exc.key}
    if isinstance(exc, ModelError):
        return 503, "model_error", {}
    return 400, "refused", {}


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse(error_body(exc.code, exc.message, **exc.details), status_code=exc.status)


async def _facewatch_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FacewatchError)
    status, code, details = _status_of(exc)
    if status >= 500:
        log.warning("%s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(error_body(code, str(exc), **details), status_code=status)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.__cause__, UnicodeDecodeError):
        # FastAPI reading a JSON body that is not UTF-8: malformed JSON, as everywhere else (and
        # like any other body problem, nobody's business but the route's callers).
        refused = await caller_refused(request)
        if refused is not None:
            return refused
        return JSONResponse(
            error_body("invalid_json", "the request body is not UTF-8 text"), status_code=422
        )
    code = {
        401: "unauthenticated",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        413: "payload_too_large",
        429: "rate_limited",
    }
    return JSONResponse(
        error_body(code.get(exc.status_code, "http_error"), str(exc.detail)),
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


def minimum_role(dependant: Any) -> Any:
    """The role a route's ``require(...)`` dependency asks for, None for a public route."""
    for sub in getattr(dependant, "dependencies", ()):
        role = getattr(sub.call, "minimum_role", None) or minimum_role(sub)
        if role is not None:
            return role
    return None


async def caller_refused(request: Request) -> JSONResponse | None:
    """401/403 for a request whose body was refused before its credentials were checked.

    FastAPI reads and parses a JSON body before it runs dependencies, so without this a stranger
    sending malformed, non-UTF-8 or oversized JSON would learn about the route's body instead of
    being refused.
    """
    route = request.scope.get("route")
    minimum = minimum_role(getattr(route, "dependant", None))
    if minimum is None:
        return None
    from facewatch.web.auth import optional_principal

    principal = await optional_principal(request)
    if principal is None:
        return JSONResponse(
            error_body("unauthenticated", "credentials are missing, unknown or expired"),
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    if principal.role < minimum:
        message = (
            f"this needs the {minimum} role or higher; {principal.username} is {principal.role}"
        )
        return JSONResponse(error_body("forbidden", message), status_code=403)
    return None


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    refused = await caller_refused(request)
    if refused is not None:
        return refused
    problems = [
        {
            "where": ".".join(str(part) for part in error.get("loc", ())),
            "problem": error.get("msg", "invalid"),
        }
        for error in exc.errors()
    ]
    summary = "; ".join(f"{p['where']}: {p['problem']}" for p in problems[:5])
    return JSONResponse(
        error_body("invalid_request", f"invalid request: {summary}", problems=problems),
        status_code=422,
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s failed", request.method, request.url.path)
    return JSONResponse(
        error_body("internal_error", "internal error; the server log has the details"),
        status_code=500,
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(FacewatchError, _facewatch_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
