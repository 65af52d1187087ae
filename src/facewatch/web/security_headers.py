"""Security headers on every HTTP response, and a content security policy on the UI's pages.

Every response gets ``X-Content-Type-Options: nosniff`` (a JSON error or a snapshot is never
run as a script or a page), ``Referrer-Policy: same-origin`` (page URLs, which name streams,
never leave for another site) and ``X-Frame-Options: DENY`` (no other site frames a page to
trick a click). HTML pages also get :data:`PAGE_POLICY`: scripts and styles from this server
only (the pages load one module from ``/static/js`` and nothing from a CDN), no plugins, no
``<base>``, forms posted here only, and never inside a frame. The API's own documentation pages
(``/docs``, ``/redoc``) load Swagger UI and ReDoc from their CDN, so they keep the first three
headers only. A header the route set itself is left as it is.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
#: The UI's pages: their scripts, styles, images (snapshots, photos) and video come from here;
#: ``'self'`` covers the page's WebSockets too (ws: and wss: of this host). The login and setup
#: pages carry a small inline stylesheet, hence ``'unsafe-inline'`` for styles (never scripts).
PAGE_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)


class SecurityHeaders:
    """ASGI middleware adding :data:`HEADERS` to every response and :data:`PAGE_POLICY` to HTML.

    Args:
        app: the application.
        without_policy: paths whose HTML keeps no content security policy (the API docs).
    """

    def __init__(self, app: ASGIApp, without_policy: Iterable[str] = ()) -> None:
        self.app = app
        self.without_policy = frozenset(without_policy)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        page_policy = scope.get("path") not in self.without_policy

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
                if page_policy and headers.get("content-type", "").startswith("text/html"):
                    headers.setdefault("Content-Security-Policy", PAGE_POLICY)
            await send(message)

        await self.app(scope, receive, send_with_headers)
