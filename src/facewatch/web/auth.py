"""Who is calling: roles, the principal a credential stands for, and the route guards.

Credentials come as the session cookie ``facewatch_session`` (the browser UI) or as
``Authorization: Bearer <secret>`` (tokens from a login, API keys); WebSockets may also pass
``?token=<secret>``, since browsers cannot set headers on them. Every route needs credentials
except :data:`PUBLIC_ROUTES`::

    principal: Principal = Depends(require(Role.operator))

No, unknown, revoked or expired credentials answer 401 (with ``WWW-Authenticate: Bearer``); a
role below the one asked for answers 403.

The session cookie is ambient: a browser sends it with whatever a page of another site makes it
send. SameSite=Strict keeps it from other *sites*, but not from other origins of the same site
(``other.example.com``, another port). So a request authenticated by the cookie must come from
this server's own pages when it can change something: a WebSocket handshake, or an HTTP method
other than GET, HEAD and OPTIONS, whose ``Origin`` is another origin (or ``null``) is refused
(403; WebSockets close with 1008). The origin is this server's own (the ``Host`` it was asked
for) or one of ``server.cors_origins``. Requests without an ``Origin`` (programs, not browsers)
and bearer credentials, which no page holds without being given them, are not concerned.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated
from urllib.parse import quote, urlsplit

from fastapi import Request, Security
from fastapi.exceptions import HTTPException
from fastapi.responses import RedirectResponse
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket

if TYPE_CHECKING:
    from facewatch.web.accounts import Accounts

log = logging.getLogger(__name__)

SESSION_COOKIE = "facewatch_session"
#: Methods that change nothing: the cookie is accepted with them from any origin.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

#: Path templates (and the ``/static`` mount) that answer without credentials.
PUBLIC_ROUTES: frozenset[str] = frozenset(
    {
        "/health/live",
        "/health/ready",
        "/login",
        "/setup",
        "/api/setup",
        "/api/setup/status",
        "/api/auth/login",
        "/openapi.json",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/static",
    }
)


class Role(StrEnum):
    """What a user may do; each role may do everything the ones below it may.

    ``viewer`` reads everything and may detect, embed, verify and query; ``operator`` also
    changes the watchlist and the streams; ``admin`` also manages users and may reset the
    watchlist. Roles compare by rank (``Role.viewer < Role.admin``), not alphabetically.
    """

    viewer = "viewer"
    operator = "operator"
    admin = "admin"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def __lt__(self, other: str) -> bool:
        return self.rank < Role(other).rank

    def __le__(self, other: str) -> bool:
        return self.rank <= Role(other).rank

    def __gt__(self, other: str) -> bool:
        return self.rank > Role(other).rank

    def __ge__(self, other: str) -> bool:
        return self.rank >= Role(other).rank


_RANKS = {Role.viewer: 0, Role.operator: 1, Role.admin: 2}


class CredentialKind(StrEnum):
    """A UI session (cookie, slides while used), a bearer token (expires) or an API key."""

    session = "session"
    token = "token"
    api_key = "api_key"


@dataclass(frozen=True, slots=True)
class Principal:
    """The user a request acts for, and the credential it presented."""

    user_id: int
    username: str
    role: Role
    credential_id: int
    kind: CredentialKind


_bearer = HTTPBearer(
    scheme_name="bearer",
    description="A token from POST /api/auth/login, or an API key.",
    auto_error=False,
)
_session_cookie = APIKeyCookie(
    name=SESSION_COOKIE,
    scheme_name="session",
    description="The browser UI's session, set by POST /api/auth/login.",
    auto_error=False,
)


def require(minimum: Role) -> Callable[..., Awaitable[Principal]]:
    """A FastAPI dependency: the caller's :class:`Principal`, at least ``minimum``.

    Raises:
        HTTPException: 401 without valid credentials, 403 when the role is too low.
        StoreError: the accounts' database cannot be reached (answered 503).
    """

    async def dependency(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
        session: Annotated[str | None, Security(_session_cookie)],
    ) -> Principal:
        principal = await _principal_of_request(request, bearer, session)
        if principal.role < minimum:
            raise HTTPException(
                403,
                f"this needs the {minimum} role or higher; "
                f"{principal.username} is {principal.role}",
            )
        return principal

    dependency.__name__ = f"require_{minimum}"
    # Read by the validation-error handler, which must refuse a stranger before judging a body.
    dependency.minimum_role = minimum  # type: ignore[attr-defined]
    return dependency


async def _principal_of_request(
    request: Request, bearer: HTTPAuthorizationCredentials | None, session: str | None
) -> Principal:
    # Several guards on one request (router and route) resolve the credential once.
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    secret = bearer.credentials if bearer is not None else session
    if not secret:
        raise _unauthenticated("authentication required: log in, or send Authorization: Bearer")
    if bearer is None and not _cookie_allowed(request):
        raise HTTPException(403, _CROSS_ORIGIN)
    principal = await _resolve(request, secret)
    if principal is None:
        raise _unauthenticated("the credentials are invalid, revoked or expired: log in again")
    request.state.principal = principal
    return principal


def _unauthenticated(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


async def _resolve(connection: HTTPConnection, secret: str) -> Principal | None:
    accounts: Accounts = connection.app.state.services.accounts
    return await run_in_threadpool(accounts.resolve, secret)


_CROSS_ORIGIN = (
    "cross-origin request refused: the session cookie is accepted only from this server's own "
    "pages; send Authorization: Bearer with an API key instead"
)


def same_origin(connection: HTTPConnection) -> bool:
    """Whether the request's ``Origin`` is this server's (or one the settings allow).

    True without an ``Origin`` header: browsers always send one where it matters (WebSocket
    handshakes, cross-origin requests and methods that change something), programs do not.
    """
    origin = connection.headers.get("origin")
    if origin is None:
        return True
    settings = getattr(connection.app.state, "settings", None)
    if settings is not None and origin in settings.server.cors_origins:
        return True
    parts = urlsplit(origin)
    host = connection.headers.get("host", "")
    if parts.scheme not in ("http", "https") or not host:
        return False
    return _without_default_port(parts.netloc) == _without_default_port(host)


def _without_default_port(netloc: str) -> str:
    # Browsers leave the default port out; a proxy or a client may write it in the Host header.
    netloc = netloc.lower()
    for port in (":80", ":443"):
        netloc = netloc.removesuffix(port)
    return netloc


def _only_cookie(connection: HTTPConnection) -> bool:
    """Whether the session cookie is the only credential presented (so it is the one used)."""
    return len(presented_secrets(connection)) == 1 and bool(connection.cookies.get(SESSION_COOKIE))


def _cookie_allowed(connection: HTTPConnection) -> bool:
    """Whether a request may act with the session cookie (see the module docstring)."""
    method = connection.scope.get("method", "GET")
    if connection.scope["type"] == "http" and method in SAFE_METHODS:
        return True
    if same_origin(connection):
        return True
    log.warning(
        "refused %s %s authenticated by the session cookie from Origin %s (this server is %s); "
        "behind a proxy, pass the Host header on or list the origin in server.cors_origins",
        "WebSocket" if connection.scope["type"] == "websocket" else method,
        connection.url.path,
        connection.headers.get("origin", "")[:100],
        connection.headers.get("host", "?")[:100],
    )
    return False


def presented_secrets(connection: HTTPConnection) -> list[str]:
    """The secrets a request or WebSocket carries, in the order they are tried.

    ``Authorization: Bearer`` first, then ``?token=`` (WebSockets only), then the session cookie.
    """
    found = []
    scheme, _, value = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        found.append(value.strip())
    if connection.scope["type"] == "websocket" and connection.query_params.get("token"):
        found.append(connection.query_params["token"])
    if connection.cookies.get(SESSION_COOKIE):
        found.append(connection.cookies[SESSION_COOKIE])
    return found


async def authenticate_websocket(websocket: WebSocket, minimum: Role) -> Principal | None:
    """The principal of a WebSocket handshake, or None when it must be refused (close 1008).

    The first credential found decides (bearer header, ``?token=``, session cookie): a bad
    one is not rescued by another. The cookie is refused from a page of another origin.

    Raises:
        StoreError: the accounts' database cannot be reached.
    """
    secrets = presented_secrets(websocket)
    if not secrets:
        return None
    if _only_cookie(websocket) and not _cookie_allowed(websocket):
        return None
    principal = await _resolve(websocket, secrets[0])
    if principal is None or principal.role < minimum:
        return None
    return principal


async def optional_principal(request: Request) -> Principal | None:
    """The caller's principal, or None without valid credentials (for pages that redirect)."""
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    secrets = presented_secrets(request)
    if not secrets:
        return None
    if _only_cookie(request) and not _cookie_allowed(request):
        return None
    principal = await _resolve(request, secrets[0])
    if principal is not None:
        request.state.principal = principal
    return principal


def safe_next(target: str | None) -> str:
    """``target`` when it is a path on this site, else ``/`` (no open redirects)."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    # Browsers read "/\\host" as "//host" and drop tabs and newlines before parsing.
    if any(char == "\\" or ord(char) < 0x20 or ord(char) == 0x7F for char in target):
        return "/"
    return target


def login_redirect(request: Request) -> RedirectResponse:
    """A 303 to ``/login?next=<the page asked for>``, for HTML pages that got no principal."""
    # The path as sent (still percent-encoded), so that it comes back unchanged.
    raw_path = request.scope.get("raw_path")
    path = raw_path.decode("latin-1") if raw_path else request.url.path
    asked = path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(safe_next(asked), safe='')}", status_code=303)
