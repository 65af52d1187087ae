"""The API description, with the errors each operation may answer.

FastAPI describes an operation's success and, when it has parameters, a 422 in a shape this
server never sends. The errors that follow from what a route *is* are described here, from the
route itself, so that a route is described truthfully the day it lands:

- a guard (``require``): 401; 403 when it asks for more than the viewer role; 503, since
  credentials live in the store;
- path parameters: 404 (nothing has that id) and 422;
- query parameters or a body: 422;
- a body the route reads itself (described in its ``openapi_extra``): 413 and 415;
- a pydantic body under a size limit (:mod:`facewatch.web.body_limit`): 413.

Every error is described by :class:`~facewatch.web.errors.ErrorOut`. Statuses particular to one
route (409, 429, ...) are given by the route itself (``responses=``) and kept as they are.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from facewatch.web.auth import Role
from facewatch.web.errors import ERROR_STATUSES, ErrorOut, minimum_role

ERROR_REF = "#/components/schemas/ErrorOut"
#: FastAPI's own 422 schema, replaced by ErrorOut: the app answers every 422 in the error shape.
FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")


def install_error_descriptions(app: FastAPI) -> None:
    """Make ``app.openapi()`` describe each operation's errors (see the module docstring)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            describe_errors(generate(), app.routes)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def describe_errors(spec: dict[str, Any], routes: list[BaseRoute]) -> None:
    """Add to ``spec`` (in place) the errors each route of ``routes`` may answer."""
    _add_error_schema(spec)
    for path, route in _api_routes(routes):
        operations = spec.get("paths", {}).get(path, {})
        for method in route.methods or ():
            operation = operations.get(method.lower())
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            for status in sorted(error_statuses(route)):
                answer = responses.get(str(status))
                if answer is None or _is_fastapi_validation(answer):
                    responses[str(status)] = {
                        "description": ERROR_STATUSES[status],
                        "content": {"application/json": {"schema": {"$ref": ERROR_REF}}},
                    }
    _drop_unused_validation_schemas(spec)


def error_statuses(route: APIRoute) -> set[int]:
    """The error statuses a route may answer because of what it is."""
    statuses: set[int] = set()
    role = minimum_role(route.dependant)
    if role is not None:
        statuses |= {401, 503}
        if Role(role) > Role.viewer:
            statuses.add(403)
    if route.dependant.path_params:
        statuses |= {404, 422}
    if route.dependant.query_params or route.body_field is not None:
        statuses.add(422)
    if "requestBody" in (route.openapi_extra or {}):
        statuses |= {413, 415, 422}
    if route.body_field is not None and getattr(route, "max_body_bytes", None) is not None:
        statuses.add(413)
    return statuses


def _api_routes(routes: list[BaseRoute]) -> list[tuple[str, APIRoute]]:
    """(path as the description writes it, route) of each described API route."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI before included routers kept their own table
        pairs = [(getattr(r, "path_format", ""), r) for r in routes]
    else:
        pairs = [(c.path_format or "", c.original_route) for c in iter_route_contexts(routes)]
    return [
        (path, route)
        for path, route in pairs
        if isinstance(route, APIRoute) and route.include_in_schema
    ]


def _add_error_schema(spec: dict[str, Any]) -> None:
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schema = ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in schema.pop("$defs", {}).items():
        schemas.setdefault(name, definition)
    schemas.setdefault("ErrorOut", schema)


def _is_fastapi_validation(answer: dict[str, Any]) -> bool:
    schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
    return bool(schema.get("$ref", "").endswith(f"/{FASTAPI_VALIDATION[0]}"))


def _drop_unused_validation_schemas(spec: dict[str, Any]) -> None:
    schemas = spec.get("components", {}).get("schemas", {})
    for name in FASTAPI_VALIDATION:
        if name not in schemas:
            continue
        others = {key: value for key, value in schemas.items() if key not in FASTAPI_VALIDATION}
        used = json.dumps([spec.get("paths", {}), others])
        if f"/{name}" + '"' not in used:
            del schemas[name]
