"""Routes: first-run setup, login and logout, the caller's own account and API keys, and users.

- ``GET /api/setup/status``, ``POST /api/setup``: create the first admin, only while no user
  exists (public).
- ``POST /api/auth/login`` (public, throttled), ``POST /api/auth/logout``, ``GET /api/auth/me``,
  ``PUT /api/auth/password``, ``GET|POST /api/auth/keys``, ``DELETE /api/auth/keys/{id}``.
- ``GET|POST /api/users``, ``PATCH|DELETE /api/users/{id}``: admins only.
- ``GET /login``, ``GET /setup``: the two pages a browser sees before it has a session.

A login sets the session cookie for the browser UI and also returns a bearer token for programs.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path as FilePath
from typing import Annotated, ParamSpec, TypeVar

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from facewatch.config import AuthSettings
from facewatch.web.accounts import (
    MAX_PASSWORD_LENGTH,
    AccountError,
    Accounts,
    CredentialRecord,
    InvalidCredentials,
    UserRecord,
)
from facewatch.web.auth import SESSION_COOKIE, CredentialKind, Principal, Role, require
from facewatch.web.body_limit import limited_body_route
from facewatch.web.errors import ApiError, error_body, error_responses
from facewatch.web.ratelimit import LoginThrottle
from facewatch.web.services import get_services

STATIC = FilePath(__file__).resolve().parents[1] / "static"
#: Responses that carry a secret must not be kept by a cache.
NO_STORE = {"Cache-Control": "no-store"}

P = ParamSpec("P")
T = TypeVar("T")

#: Account bodies are a few short strings; a body above this is refused before it is read whole.
BODY_LIMIT = 64 * 1024

router = APIRouter(route_class=limited_body_route(BODY_LIMIT))


# --- models -------------------------------------------------------------------------------------


class Body(BaseModel):
    """A request body: unknown keys are refused, not ignored."""

    model_config = ConfigDict(extra="forbid")


class LoginRequest(Body):
    username: str = Field(min_length=1, max_length=64, examples=["alice"])
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)


class SetupRequest(Body):
    username: str = Field(
        min_length=1,
        max_length=64,
        description="1 to 64 letters (a-z), digits or . _ - @; kept lower-case.",
        examples=["admin"],
    )
    password: str = Field(
        max_length=MAX_PASSWORD_LENGTH,
        description="Its minimum length is the setting auth.min_password_length.",
    )


class NewUser(SetupRequest):
    role: Role = Field(Role.viewer, description="viewer < operator < admin.")


class UserPatch(Body):
    role: Role | None = None
    disabled: bool | None = Field(None, description="A disabled user's credentials end at once.")
    password: str | None = Field(
        None,
        max_length=MAX_PASSWORD_LENGTH,
        description="A new password; ends the user's sessions and tokens (API keys stay).",
    )


class PasswordChange(Body):
    current: str = Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)
    new: str = Field(max_length=MAX_PASSWORD_LENGTH)


class NewKey(Body):
    name: str = Field(min_length=1, max_length=100, examples=["camera-sync"])


class UserOut(BaseModel):
    id: int
    username: str
    role: Role
    disabled: bool
    created_at: datetime
    last_login_at: datetime | None

    @classmethod
    def of(cls, user: UserRecord) -> UserOut:
        return cls.model_validate(user.as_dict())


class CredentialOut(BaseModel):
    """A credential without its secret; ``prefix`` is its first characters."""

    id: int
    kind: CredentialKind
    name: str | None
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, credential: CredentialRecord) -> CredentialOut:
        return cls.model_validate(credential.as_dict())


class NewKeyOut(CredentialOut):
    secret: str = Field(description="The API key, shown this once: send it as a Bearer token.")


class LoginOut(BaseModel):
    token: str = Field(description="A bearer token for programs (the browser uses the cookie).")
    expires_at: datetime = Field(description="When the token ends.")
    user: UserOut


class MeOut(UserOut):
    credential: CredentialOut = Field(description="The credential this request presented.")


class SetupStatus(BaseModel):
    needed: bool = Field(description="True while no user exists: POST /api/setup creates one.")


class PasswordChanged(BaseModel):
    revoked: int = Field(description="Other sessions and tokens of the user that were ended.")


#: Ids are 64-bit integers in every store: a larger number is refused (422) before the store is
#: asked about it (SQLite cannot even take it).
MAX_ID = 2**63 - 1
UserId = Annotated[int, Path(ge=1, le=MAX_ID, description="The user's id.")]
KeyId = Annotated[int, Path(ge=1, le=MAX_ID, description="The API key's id.")]

Viewer = Annotated[Principal, Depends(require(Role.viewer))]
Admin = Annotated[Principal, Depends(require(Role.admin))]


# --- helpers ------------------------------------------------------------------------------------


def _accounts(request: Request) -> Accounts:
    accounts: Accounts = get_services(request).accounts
    return accounts


AccountsDep = Annotated[Accounts, Depends(_accounts)]


async def _call(func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run an :class:`Accounts` method on a thread; its refusals become API errors."""
    try:
        return await run_in_threadpool(func, *args, **kwargs)
    except AccountError as exc:
        raise ApiError(exc.status, exc.code, exc.message, **exc.details) from None


def _throttle(request: Request, settings: AuthSettings) -> LoginThrottle:
    # One per app, made on first use (the event loop runs this without a switch in between).
    throttle: LoginThrottle | None = getattr(request.app.state, "login_throttle", None)
    if throttle is None:
        throttle = LoginThrottle(settings.login_attempts, settings.login_window_s)
        request.app.state.login_throttle = throttle
    return throttle


def _address(request: Request) -> str | None:
    return request.client.host if request.client else None


def _rate_limited(wait_s: int) -> JSONResponse:
    return JSONResponse(
        error_body(
            "rate_limited",
            f"too many failed logins; try again in {wait_s} s",
            retry_after_s=wait_s,
        ),
        status_code=429,
        headers={"Retry-After": str(wait_s)},
    )


async def _throttled(
    request: Request, username: str, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs
) -> T | JSONResponse:
    """``func`` (a password check) under the login throttle: a 429 response when refused.

    The attempt counts as failed from the start, so guesses sent in parallel all count; only
    a wrong password keeps it counted.
    """
    accounts = _accounts(request)
    throttle = _throttle(request, accounts.settings)
    address = _address(request)
    wait = throttle.attempt(username, address)
    if wait is not None:
        return _rate_limited(wait)
    try:
        result = await _call(func, *args, **kwargs)
    except ApiError as exc:
        if exc.code != InvalidCredentials.code:
            throttle.cancel(username, address)
        raise
    except BaseException:
        throttle.cancel(username, address)
        raise
    throttle.succeeded(username, address)
    return result


async def _log_in(accounts: Accounts, user: UserRecord, response: Response) -> LoginOut:
    session = await _call(accounts.issue, user.id, CredentialKind.session)
    token = await _call(accounts.issue_credential, user.id, CredentialKind.token)
    response.set_cookie(
        SESSION_COOKIE,
        session,
        httponly=True,
        samesite="strict",
        secure=accounts.settings.cookie_secure,
        path="/",
    )
    response.headers.update(NO_STORE)
    assert token.credential.expires_at is not None  # tokens always expire
    return LoginOut(
        token=token.secret, expires_at=token.credential.expires_at, user=UserOut.of(user)
    )


# --- setup and login ----------------------------------------------------------------------------


@router.get(
    "/api/setup/status",
    tags=["auth"],
    summary="Is the first admin still to be created",
    responses=error_responses(503),
)
async def setup_status(accounts: AccountsDep) -> SetupStatus:
    return SetupStatus(needed=not await _call(accounts.has_users))


@router.post(
    "/api/setup",
    tags=["auth"],
    status_code=201,
    summary="Create the first admin and log them in",
    description="Only while no user exists (409 afterwards). Sets the session cookie.",
    responses=error_responses(409, 503),
)
async def setup(body: SetupRequest, response: Response, accounts: AccountsDep) -> LoginOut:
    user = await _call(accounts.create_first_admin, body.username, body.password)
    return await _log_in(accounts, user, response)


@router.post(
    "/api/auth/login",
    tags=["auth"],
    response_model=LoginOut,
    summary="Log in with a user name and password",
    description=(
        "Sets the session cookie (HttpOnly, SameSite=Strict) for the browser and returns a "
        "bearer token for programs. Failed logins are limited per user name and per address."
    ),
    responses=error_responses(401, 429, 503),
)
async def login(
    body: LoginRequest, request: Request, response: Response, accounts: AccountsDep
) -> LoginOut | JSONResponse:
    user = await _throttled(
        request, body.username, accounts.authenticate, body.username, body.password
    )
    if isinstance(user, JSONResponse):
        return user
    return await _log_in(accounts, user, response)


@router.post(
    "/api/auth/logout",
    tags=["auth"],
    status_code=204,
    summary="End the presented credential and clear the session cookie",
)
async def logout(request: Request, principal: Viewer, accounts: AccountsDep) -> Response:
    await _call(accounts.revoke, principal.credential_id)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        await _call(accounts.revoke_secret, cookie)
    response = Response(status_code=204)
    response.delete_cookie(
        SESSION_COOKIE,
        path="/",
        httponly=True,
        samesite="strict",
        secure=accounts.settings.cookie_secure,
    )
    return response


# --- the caller's own account -------------------------------------------------------------------


@router.get("/api/auth/me", tags=["auth"], summary="The caller")
async def me(principal: Viewer, accounts: AccountsDep) -> MeOut:
    user = await _call(accounts.get_user, principal.user_id)
    credential = await _call(accounts.get_credential, principal.credential_id)
    return MeOut(**UserOut.of(user).model_dump(), credential=CredentialOut.of(credential))


@router.put(
    "/api/auth/password",
    tags=["auth"],
    summary="Change the caller's password",
    description="Ends the caller's other sessions and tokens; API keys stay.",
    response_model=PasswordChanged,
    responses=error_responses(429),
)
async def change_password(
    body: PasswordChange, request: Request, principal: Viewer, accounts: AccountsDep
) -> PasswordChanged | JSONResponse:
    # A stolen session must not become a way to guess the password: same throttle as login.
    revoked = await _throttled(
        request,
        principal.username,
        accounts.change_password,
        principal.user_id,
        body.current,
        body.new,
        keep_credential_id=principal.credential_id,
    )
    if isinstance(revoked, JSONResponse):
        return revoked
    return PasswordChanged(revoked=revoked)


@router.get("/api/auth/keys", tags=["auth"], summary="The caller's API keys")
async def list_keys(principal: Viewer, accounts: AccountsDep) -> list[CredentialOut]:
    keys = await _call(accounts.list_credentials, principal.user_id, kind=CredentialKind.api_key)
    return [CredentialOut.of(key) for key in keys]


@router.post(
    "/api/auth/keys",
    tags=["auth"],
    status_code=201,
    summary="Create an API key (its secret is shown once)",
)
async def create_key(
    body: NewKey, response: Response, principal: Viewer, accounts: AccountsDep
) -> NewKeyOut:
    issued = await _call(
        accounts.issue_credential, principal.user_id, CredentialKind.api_key, name=body.name
    )
    response.headers.update(NO_STORE)
    return NewKeyOut(**CredentialOut.of(issued.credential).model_dump(), secret=issued.secret)


@router.delete(
    "/api/auth/keys/{key_id}",
    tags=["auth"],
    status_code=204,
    summary="Revoke one of the caller's API keys",
)
async def revoke_key(key_id: KeyId, principal: Viewer, accounts: AccountsDep) -> Response:
    await _call(accounts.revoke, key_id, user_id=principal.user_id, kind=CredentialKind.api_key)
    return Response(status_code=204)


# --- users (admins) -----------------------------------------------------------------------------


@router.get("/api/users", tags=["users"], summary="Every user")
async def list_users(principal: Admin, accounts: AccountsDep) -> list[UserOut]:
    return [UserOut.of(user) for user in await _call(accounts.list_users)]


@router.post(
    "/api/users",
    tags=["users"],
    status_code=201,
    summary="Create a user",
    responses=error_responses(409),
)
async def create_user(body: NewUser, principal: Admin, accounts: AccountsDep) -> UserOut:
    user = await _call(accounts.create_user, body.username, body.password, body.role)
    return UserOut.of(user)


@router.patch(
    "/api/users/{user_id}",
    tags=["users"],
    summary="Change a user's role, disable or enable them, or set their password",
    description="The last enabled admin can be neither disabled nor demoted (409).",
    responses=error_responses(409),
)
async def update_user(
    user_id: UserId, body: UserPatch, principal: Admin, accounts: AccountsDep
) -> UserOut:
    user = await _call(
        accounts.update_user,
        user_id,
        role=body.role,
        disabled=body.disabled,
        password=body.password,
    )
    return UserOut.of(user)


@router.delete(
    "/api/users/{user_id}",
    tags=["users"],
    status_code=204,
    summary="Delete a user and end all their credentials",
    description="The last enabled admin cannot be deleted (409).",
    responses=error_responses(409),
)
async def delete_user(user_id: UserId, principal: Admin, accounts: AccountsDep) -> Response:
    await _call(accounts.delete_user, user_id)
    return Response(status_code=204)


# --- pages --------------------------------------------------------------------------------------


@router.get("/login", include_in_schema=False)
async def login_page(request: Request, accounts: AccountsDep) -> Response:
    if not await _call(accounts.has_users):
        return RedirectResponse("/setup", status_code=303)
    return FileResponse(STATIC / "login.html", media_type="text/html")


@router.get("/setup", include_in_schema=False)
async def setup_page(request: Request, accounts: AccountsDep) -> Response:
    if await _call(accounts.has_users):
        target = "/login" + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(target, status_code=303)
    return FileResponse(STATIC / "setup.html", media_type="text/html")
