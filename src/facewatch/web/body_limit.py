"""A size limit for the bodies FastAPI reads itself (routes with a pydantic body parameter).

FastAPI reads such a body whole, with no limit, before it runs the route's guards. Routes
declared with :func:`limited_body_route` as their router's ``route_class`` read it through
:func:`~facewatch.web.uploads.read_body` first: 413 with the error shape at once when the
declared Content-Length is above the limit, or as soon as a chunked body passes it (a caller
without the route's credentials gets 401/403 instead, as for any other body). Routes that
read their body themselves (uploads, stream settings) apply their own limit and are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive

from facewatch.web.errors import ApiError, caller_refused
from facewatch.web.uploads import read_body


def limited_body_route(limit: int) -> type[APIRoute]:
    """An ``APIRoute`` class whose pydantic body is at most ``limit`` bytes."""

    class LimitedBodyRoute(APIRoute):
        max_body_bytes = limit

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()
            if self.body_field is None:
                return handler

            async def bounded_handler(request: Request) -> Response:
                try:
                    body = await read_body(request, limit)
                except ApiError:
                    # A stranger is refused as such, whatever the size of what they sent.
                    refused = await caller_refused(request)
                    if refused is not None:
                        return refused
                    raise
                return await handler(Request(request.scope, _replay(body, request.receive)))

            return bounded_handler

    LimitedBodyRoute.__name__ = f"LimitedBodyRoute{limit}"
    return LimitedBodyRoute


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands over ``body`` once, then what the client sends next."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
