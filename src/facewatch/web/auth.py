"""Who is calling: roles, the principal a credential stands for, and the route guards.

Credentials come as the session cookie ``facewatch_session`` (the browser UI) or as
``Authorization: Bearer <secret>`` (tokens from a login, API keys); WebSockets may also pass
``?token=<secret>``, since browsers cannot set headers on them. Every route needs credentials
except :data:`PUBLIC_ROUTES`::

    principal: Principal = Depends(require(Role.operator))

No, unknown, revoked or expired credentials answer 401 (with ``WWW-Authenticate: Bearer``); a
role below the one asked for answers 403.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated
from urllib.parse import quote

from fastapi import Request, Security
from fastapi.exceptions import HTTPException
from fastapi.responses import RedirectResponse
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket

if TYPE_CHECKING:
    from facewatch.web.accounts import Accounts

SESSION_COOKIE = "facewatch_session"

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
    one is not rescued by another.

    Raises:
        StoreError: the accounts' database cannot be reached.
    """
    secrets = presented_secrets(websocket)
    if not secrets:
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
