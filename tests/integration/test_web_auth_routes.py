"""The auth routes through a real app (the auth router with the error handlers) on SQLite.

Requests go through httpx's ASGI transport, which keeps cookies like a browser would; login
throttling runs on a clock the test moves.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from http.cookies import SimpleCookie
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote, unquote

import httpx
import pytest
import uvicorn
from argon2 import PasswordHasher
from fastapi import FastAPI, Request, Response, WebSocket
from fastapi.responses import PlainTextResponse
from fastapi.routing import iter_route_contexts
from fastapi.staticfiles import StaticFiles
from starlette.routing import Mount

from facewatch.config import Settings, load_settings
from facewatch.watchlist.store import Store
from facewatch.web.accounts import Accounts
from facewatch.web.auth import (
    PUBLIC_ROUTES,
    SESSION_COOKIE,
    Role,
    authenticate_websocket,
    login_redirect,
    optional_principal,
    safe_next,
)
from facewatch.web.errors import install_error_handlers
from facewatch.web.ratelimit import LoginThrottle
from facewatch.web.routes.auth import STATIC, router

PASSWORD = "correct horse battery staple"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Server:
    """The app, its accounts, and a way to make users and clients."""

    def __init__(self, app: FastAPI, accounts: Accounts, clock: FakeClock) -> None:
        self.app = app
        self.accounts = accounts
        self.clock = clock

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://testserver",
            headers=headers,
        )

    def user(self, name: str, role: Role) -> str:
        """A new user with that role; returns an API key of theirs."""
        user = self.accounts.create_user(name, PASSWORD, role)
        return self.accounts.issue(user.id, "api_key", name="tests")


def make_server(tmp_path: Path, **auth: object) -> tuple[Server, Store]:
    settings: Settings = load_settings(
        data_dir=tmp_path, auth={"login_attempts": 3, "login_window_s": 60, **auth}
    )
    store = Store(settings.database_url)
    accounts = Accounts(
        store, settings.auth, hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(router)
    app.state.services = SimpleNamespace(accounts=accounts, settings=settings)
    clock = FakeClock()
    app.state.login_throttle = LoginThrottle(3, 60, clock=clock)
    return Server(app, accounts, clock), store


@pytest.fixture
def server(tmp_path: Path, isolated_settings: None) -> Iterator[Server]:
    served, store = make_server(tmp_path)
    yield served
    store.close()


@pytest.fixture
async def anonymous(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with server.client() as client:
        yield client


def set_cookie(response: httpx.Response) -> SimpleCookie:
    cookie: SimpleCookie = SimpleCookie()
    for header in response.headers.get_list("set-cookie"):
        cookie.load(header)
    return cookie


def error_of(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, object] = body["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str)
    return error


async def test_setup_creates_the_first_admin_once_and_logs_them_in(
    server: Server, anonymous: httpx.AsyncClient
) -> None:
    assert (await anonymous.get("/api/setup/status")).json() == {"needed": True}
    login_page = await anonymous.get("/login?next=/people")
    assert (login_page.status_code, login_page.headers["location"]) == (303, "/setup")
    setup_page = await anonymous.get("/setup")
    assert setup_page.status_code == 200 and 'id="setup-form"' in setup_page.text

    weak = await anonymous.post("/api/setup", json={"username": "root", "password": "short"})
    assert weak.status_code == 422
    assert error_of(weak)["code"] == "weak_password"
    assert "at least 10 characters" in str(error_of(weak)["message"])
    bad_name = await anonymous.post("/api/setup", json={"username": "a b", "password": PASSWORD})
    assert (bad_name.status_code, error_of(bad_name)["code"]) == (422, "invalid_username")

    created = await anonymous.post("/api/setup", json={"username": "Root", "password": PASSWORD})
    assert created.status_code == 201
    body = created.json()
    assert body["user"]["username"] == "root" and body["user"]["role"] == "admin"
    assert body["token"].startswith("fwt_") and body["expires_at"]
    assert created.headers["cache-control"] == "no-store"
    assert SESSION_COOKIE in set_cookie(created)

    me = await anonymous.get("/api/auth/me")  # the cookie the setup set
    assert me.status_code == 200 and me.json()["username"] == "root"
    assert me.json()["credential"]["kind"] == "session"

    assert (await anonymous.get("/api/setup/status")).json() == {"needed": False}
    again = await anonymous.post("/api/setup", json={"username": "evil", "password": PASSWORD})
    assert (again.status_code, error_of(again)["code"]) == (409, "setup_done")
    assert [u.username for u in server.accounts.list_users()] == ["root"]
    setup_page = await anonymous.get("/setup?next=/people")
    assert (setup_page.status_code, setup_page.headers["location"]) == (
        303,
        "/login?next=/people",
    )
    login_page = await anonymous.get("/login")
    assert login_page.status_code == 200 and 'id="login-form"' in login_page.text
    assert login_page.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize("secure", [False, True])
async def test_login_sets_an_http_only_strict_session_cookie(
    tmp_path: Path, isolated_settings: None, secure: bool
) -> None:
    served, store = make_server(tmp_path, cookie_secure=secure)
    try:
        served.user("alice", Role.viewer)
        async with served.client() as client:
            response = await client.post(
                "/api/auth/login", json={"username": "alice", "password": PASSWORD}
            )
        assert response.status_code == 200
        morsel = set_cookie(response)[SESSION_COOKIE]
        assert morsel.value.startswith("fws_")
        assert morsel["httponly"] is True
        assert morsel["samesite"].lower() == "strict"
        assert morsel["path"] == "/"
        assert bool(morsel["secure"]) is secure
        assert morsel["max-age"] == ""  # ends with the browser; the server ends it when idle
        body = response.json()
        assert body["user"]["username"] == "alice" and body["user"]["last_login_at"]
        assert body["token"] != morsel.value
    finally:
        store.close()


async def test_cookie_and_bearer_both_identify_the_caller(
    server: Server, anonymous: httpx.AsyncClient
) -> None:
    server.user("alice", Role.operator)
    login = await anonymous.post(
        "/api/auth/login", json={"username": "ALICE", "password": PASSWORD}
    )
    token = login.json()["token"]

    by_cookie = await anonymous.get("/api/auth/me")
    anonymous.cookies.clear()
    async with server.client(token) as bearer_client:
        by_bearer = await bearer_client.get("/api/auth/me")
    for response, kind in ((by_cookie, "session"), (by_bearer, "token")):
        assert response.status_code == 200
        me = response.json()
        assert (me["username"], me["role"], me["credential"]["kind"]) == ("alice", "operator", kind)
        assert "secret" not in me["credential"]

    nobody = await anonymous.get("/api/auth/me")
    assert nobody.status_code == 401
    assert nobody.headers["www-authenticate"] == "Bearer"
    assert error_of(nobody)["code"] == "unauthenticated"
    for header in ("Bearer fwt_not_a_token", "Bearer " + token + "x", "Basic YWxpY2U6eA=="):
        refused = await anonymous.get("/api/auth/me", headers={"Authorization": header})
        assert refused.status_code == 401, header
    forged = await anonymous.get("/api/auth/me", headers={"Cookie": f"{SESSION_COOKIE}=fws_forged"})
    assert forged.status_code == 401


async def test_admin_routes_refuse_lower_roles(server: Server) -> None:
    for name, role in (("vera", Role.viewer), ("otto", Role.operator)):
        async with server.client(server.user(name, role)) as client:
            for method, path, body in (
                ("GET", "/api/users", None),
                ("POST", "/api/users", {"username": "x", "password": PASSWORD}),
                ("PATCH", "/api/users/1", {"role": "admin"}),
                ("DELETE", "/api/users/1", None),
            ):
                response = await client.request(method, path, json=body)
                assert response.status_code == 403, (name, method, path)
                assert error_of(response)["code"] == "forbidden"
                assert "admin" in str(error_of(response)["message"])
    async with server.client(server.user("ada", Role.admin)) as admin:
        listed = await admin.get("/api/users")
    assert listed.status_code == 200
    assert [u["username"] for u in listed.json()] == ["vera", "otto", "ada"]


async def test_every_route_but_the_public_ones_needs_credentials(
    server: Server, anonymous: httpx.AsyncClient
) -> None:
    server.user("root", Role.admin)
    checked = 0
    # FastAPI keeps included routers whole in app.routes; this walks the routes inside them.
    for route in iter_route_contexts(server.app.routes):
        if isinstance(route.original_route, Mount) or route.path in PUBLIC_ROUTES:
            continue
        assert route.path is not None and route.methods, route
        path = route.path.replace("{key_id}", "1").replace("{user_id}", "1")
        for method in route.methods:
            response = await anonymous.request(method, path, json={})
            assert response.status_code == 401, (method, route.path)
            checked += 1
    assert checked == 10  # logout, me, password, keys x3, users x4
    for path in ("/api/setup/status", "/login"):
        assert (await anonymous.get(path)).status_code == 200


async def test_repeated_failed_logins_are_refused_with_retry_after(
    server: Server, anonymous: httpx.AsyncClient
) -> None:
    server.user("alice", Role.viewer)
    for _ in range(3):
        wrong = await anonymous.post(
            "/api/auth/login", json={"username": "alice", "password": "not the password"}
        )
        assert wrong.status_code == 401
        assert error_of(wrong) == {
            "code": "invalid_credentials",
            "message": "wrong user name or password",
        }
    server.clock.now += 10

    # Even the right password is refused now, before it is checked.
    refused = await anonymous.post(
        "/api/auth/login", json={"username": "alice", "password": PASSWORD}
    )
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "50"
    error = error_of(refused)
    assert error["code"] == "rate_limited" and error["retry_after_s"] == 50
    assert "try again in 50 s" in str(error["message"])
    assert SESSION_COOKIE not in set_cookie(refused)

    server.clock.now += 50
    allowed = await anonymous.post(
        "/api/auth/login", json={"username": "alice", "password": PASSWORD}
    )
    assert allowed.status_code == 200


async def test_unknown_names_from_one_address_are_throttled_too(
    server: Server, anonymous: httpx.AsyncClient
) -> None:
    server.user("alice", Role.viewer)
    statuses = [
        (
            await anonymous.post(
                "/api/auth/login", json={"username": f"guess{i}", "password": PASSWORD}
            )
        ).status_code
        for i in range(4)
    ]
    assert statuses == [401, 401, 401, 429]


async def test_a_wrong_current_password_counts_as_a_failed_login(server: Server) -> None:
    async with server.client(server.user("alice", Role.viewer)) as client:
        statuses = []
        for _ in range(4):
            response = await client.put(
                "/api/auth/password", json={"current": "wrong password", "new": "x" * 12}
            )
            statuses.append(response.status_code)
    assert statuses == [401, 401, 401, 429]


@pytest.mark.parametrize(
    ("content", "content_type", "where"),
    [
        (b'{"username": "alice", "password":', "application/json", "JSON decode error"),
        (b"[1, 2]", "application/json", "valid dictionary"),
        (b'{"username": "alice"}', "application/json", "body.password: Field required"),
        (b'{"username": "", "password": "x"}', "application/json", "body.username"),
        (
            b'{"username": "a", "password": "x", "remember": true}',
            "application/json",
            "body.remember",
        ),
        (b'{"username": 5, "password": "x"}', "application/json", "body.username"),
        (b"username=alice&password=x", "application/x-www-form-urlencoded", "body"),
    ],
)
async def test_malformed_requests_get_a_clear_422(
    anonymous: httpx.AsyncClient, content: bytes, content_type: str, where: str
) -> None:
    response = await anonymous.post(
        "/api/auth/login", content=content, headers={"Content-Type": content_type}
    )
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_request"
    assert str(error["message"]).startswith("invalid request: ")
    assert where in str(error["message"])


async def test_api_key_lifecycle(server: Server, anonymous: httpx.AsyncClient) -> None:
    server.accounts.create_user("alice", PASSWORD, Role.viewer)
    bob_key = server.user("bob", Role.viewer)
    login = await anonymous.post(
        "/api/auth/login", json={"username": "alice", "password": PASSWORD}
    )
    assert login.status_code == 200

    created = await anonymous.post("/api/auth/keys", json={"name": "camera sync"})
    assert created.status_code == 201
    key = created.json()
    assert key["secret"].startswith("fwk_") and key["prefix"] == key["secret"][:12]
    assert (key["kind"], key["name"], key["expires_at"]) == ("api_key", "camera sync", None)
    assert created.headers["cache-control"] == "no-store"

    listed = await anonymous.get("/api/auth/keys")
    assert [k["id"] for k in listed.json()] == [key["id"]]  # the login's session is no key
    assert all("secret" not in k for k in listed.json())

    async with server.client(key["secret"]) as by_key:
        me = await by_key.get("/api/auth/me")
        assert me.json()["credential"]["kind"] == "api_key"
        assert me.json()["credential"]["id"] == key["id"]

        async with server.client(bob_key) as bob:
            stolen = await bob.delete(f"/api/auth/keys/{key['id']}")
        assert (stolen.status_code, error_of(stolen)["code"]) == (404, "credential_not_found")
        session_id = (await anonymous.get("/api/auth/me")).json()["credential"]["id"]
        not_a_key = await anonymous.delete(f"/api/auth/keys/{session_id}")
        assert not_a_key.status_code == 404
        assert (await by_key.get("/api/auth/me")).status_code == 200

        revoked = await anonymous.delete(f"/api/auth/keys/{key['id']}")
        assert revoked.status_code == 204
        assert (await by_key.get("/api/auth/me")).status_code == 401
    assert (await anonymous.get("/api/auth/keys")).json() == []

    for bad in ({}, {"name": ""}, {"name": "x" * 101}):
        assert (await anonymous.post("/api/auth/keys", json=bad)).status_code == 422


async def test_logout_ends_the_session_and_clears_the_cookie(
    server: Server, anonymous: httpx.AsyncClient
) -> None:
    server.user("alice", Role.viewer)
    login = await anonymous.post(
        "/api/auth/login", json={"username": "alice", "password": PASSWORD}
    )
    session = anonymous.cookies[SESSION_COOKIE]
    token = login.json()["token"]

    out = await anonymous.post("/api/auth/logout")
    assert out.status_code == 204
    cleared = set_cookie(out)[SESSION_COOKIE]
    assert cleared.value == "" and cleared["max-age"] == "0"
    assert (await anonymous.get("/api/auth/me")).status_code == 401
    replayed = await anonymous.get(
        "/api/auth/me", headers={"Cookie": f"{SESSION_COOKIE}={session}"}
    )
    assert replayed.status_code == 401

    # The login's bearer token is a credential of its own: it ends with its own logout.
    async with server.client(token) as bearer:
        assert (await bearer.get("/api/auth/me")).status_code == 200
        assert (await bearer.post("/api/auth/logout")).status_code == 204
        assert (await bearer.get("/api/auth/me")).status_code == 401


async def test_changing_the_password_keeps_this_session_and_ends_the_others(
    server: Server,
) -> None:
    server.user("alice", Role.viewer)
    async with server.client() as here, server.client() as elsewhere:
        for client in (here, elsewhere):
            login = await client.post(
                "/api/auth/login", json={"username": "alice", "password": PASSWORD}
            )
            assert login.status_code == 200
        short = await here.put("/api/auth/password", json={"current": PASSWORD, "new": "short"})
        assert (short.status_code, error_of(short)["code"]) == (422, "weak_password")

        changed = await here.put(
            "/api/auth/password", json={"current": PASSWORD, "new": "a new long password"}
        )
        assert changed.status_code == 200
        assert changed.json() == {"revoked": 3}  # the other session and both logins' tokens
        assert (await here.get("/api/auth/me")).status_code == 200
        assert (await elsewhere.get("/api/auth/me")).status_code == 401
        old = await elsewhere.post(
            "/api/auth/login", json={"username": "alice", "password": PASSWORD}
        )
        assert old.status_code == 401
        new = await elsewhere.post(
            "/api/auth/login", json={"username": "alice", "password": "a new long password"}
        )
        assert new.status_code == 200


async def test_admins_manage_users(server: Server) -> None:
    admin_key = server.user("root", Role.admin)
    async with server.client(admin_key) as admin:
        created = await admin.post(
            "/api/users", json={"username": "Otto", "password": PASSWORD, "role": "operator"}
        )
        assert created.status_code == 201
        otto = created.json()
        assert (otto["username"], otto["role"], otto["disabled"]) == ("otto", "operator", False)
        default = await admin.post("/api/users", json={"username": "vera", "password": PASSWORD})
        assert default.json()["role"] == "viewer"

        taken = await admin.post("/api/users", json={"username": "OTTO", "password": PASSWORD})
        assert (taken.status_code, error_of(taken)["code"]) == (409, "username_taken")
        bad_role = await admin.post(
            "/api/users", json={"username": "x", "password": PASSWORD, "role": "root"}
        )
        assert bad_role.status_code == 422 and "body.role" in str(error_of(bad_role)["message"])

        async with server.client() as otto_client:
            login = await otto_client.post(
                "/api/auth/login", json={"username": "otto", "password": PASSWORD}
            )
            assert login.status_code == 200
            promoted = await admin.patch(f"/api/users/{otto['id']}", json={"role": "admin"})
            assert promoted.json()["role"] == "admin"
            assert (await otto_client.get("/api/users")).status_code == 200

            disabled = await admin.patch(f"/api/users/{otto['id']}", json={"disabled": True})
            assert disabled.json()["disabled"] is True
            assert (await otto_client.get("/api/auth/me")).status_code == 401
            relogin = await otto_client.post(
                "/api/auth/login", json={"username": "otto", "password": PASSWORD}
            )
            assert relogin.status_code == 401

        root_id = server.accounts.find_user("root").id
        last = await admin.patch(f"/api/users/{root_id}", json={"role": "viewer"})
        assert (last.status_code, error_of(last)["code"]) == (409, "last_admin")
        last = await admin.delete(f"/api/users/{root_id}")
        assert (last.status_code, error_of(last)["code"]) == (409, "last_admin")

        reset = await admin.patch(
            f"/api/users/{otto['id']}", json={"disabled": False, "password": "reset by root!"}
        )
        assert reset.status_code == 200
        assert (await admin.delete(f"/api/users/{otto['id']}")).status_code == 204
        gone = await admin.delete(f"/api/users/{otto['id']}")
        assert (gone.status_code, error_of(gone)["code"]) == (404, "user_not_found")
        missing = await admin.patch("/api/users/999", json={"role": "viewer"})
        assert missing.status_code == 404
        not_an_id = await admin.patch("/api/users/abc", json={"role": "viewer"})
        assert not_an_id.status_code == 422
        users = await admin.get("/api/users")
    assert [u["username"] for u in users.json()] == ["root", "vera"]


async def test_the_api_is_documented(server: Server, anonymous: httpx.AsyncClient) -> None:
    schema = server.app.openapi()
    assert {"bearer", "session"} <= set(schema["components"]["securitySchemes"])
    paths = schema["paths"]
    for path in (
        "/api/setup",
        "/api/setup/status",
        "/api/auth/login",
        "/api/auth/logout",
        "/api/auth/me",
        "/api/auth/password",
        "/api/auth/keys",
        "/api/auth/keys/{key_id}",
        "/api/users",
        "/api/users/{user_id}",
    ):
        assert path in paths, path
    assert "/login" not in paths and "/setup" not in paths
    login = paths["/api/auth/login"]["post"]
    assert "429" in login["responses"] and "requestBody" in login
    assert paths["/api/users"]["get"]["security"]


# --- the login and setup pages in a real browser ------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")


@contextmanager
def serving_over_tcp(app: FastAPI) -> Iterator[str]:
    """``app`` under a real uvicorn on 127.0.0.1, port 0, in a thread; yields its URL."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="auth-pages-server")
    thread.start()
    try:
        for _ in range(600):
            if server.started or not thread.is_alive():
                break
            time.sleep(0.05)
        assert server.started, "the test server did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        assert not thread.is_alive(), "the test server did not stop"


def test_setup_and_login_pages_in_a_browser(tmp_path: Path, isolated_settings: None) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    from playwright.sync_api import expect, sync_playwright

    served, store = make_server(tmp_path)
    served.app.mount("/static", StaticFiles(directory=STATIC), name="static")
    try:
        with serving_over_tcp(served.app) as url, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
            try:
                page = browser.new_page()
                page.goto(f"{url}/login")
                expect(page).to_have_url(f"{url}/setup")
                page.fill("#username", "Root")
                page.fill("#password", PASSWORD)
                page.fill("#password2", PASSWORD + "!")
                page.click("#setup-submit")
                expect(page.locator("#setup-error")).to_have_text("the two passwords differ")
                page.fill("#password", "short")
                page.fill("#password2", "short")
                page.click("#setup-submit")
                expect(page.locator("#setup-error")).to_contain_text("at least 10 characters")
                page.fill("#password", PASSWORD)
                page.fill("#password2", PASSWORD)
                page.click("#setup-submit")
                expect(page).to_have_url(f"{url}/")
                me = page.request.get(f"{url}/api/auth/me")  # with the browser's cookie
                assert me.status == 200 and me.json()["username"] == "root"
                cookies = {c["name"]: c for c in page.context.cookies()}
                assert cookies[SESSION_COOKIE]["httpOnly"] is True
                assert cookies[SESSION_COOKIE]["sameSite"] == "Strict"

                fresh = browser.new_page()  # a new context: no cookie
                fresh.goto(f"{url}/setup")
                expect(fresh).to_have_url(f"{url}/login")
                fresh.goto(f"{url}/login?next=/api/auth/me")
                fresh.fill("#username", "root")
                fresh.fill("#password", "not the password")
                fresh.click("#login-submit")
                expect(fresh.locator("#login-error")).to_have_text("wrong user name or password")
                fresh.fill("#password", PASSWORD)
                fresh.click("#login-submit")
                expect(fresh).to_have_url(f"{url}/api/auth/me")
                assert '"username":"root"' in fresh.content()
                assert fresh.evaluate("document.cookie") == ""  # HttpOnly: scripts cannot read it

                for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
                    away = browser.new_page()
                    away.goto(f"{url}/login?next={quote(target, safe='')}")
                    away.fill("#username", "root")
                    away.fill("#password", PASSWORD)
                    away.click("#login-submit")
                    expect(away).to_have_url(f"{url}/")
                    away.close()
            finally:
                browser.close()
    finally:
        store.close()


async def test_websockets_authenticate_by_header_query_or_cookie(
    server: Server, isolated_settings: None
) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    @server.app.websocket("/ws/whoami")
    async def whoami(websocket: WebSocket) -> None:
        principal = await authenticate_websocket(websocket, Role.operator)
        await websocket.accept()  # then close, so that the client sees the code
        if principal is None:
            await websocket.close(code=1008)
            return
        await websocket.send_text(f"{principal.username} {principal.role} {principal.kind}")
        await websocket.close()

    operator_key = server.user("otto", Role.operator)
    viewer_key = server.user("vera", Role.viewer)
    otto = server.accounts.find_user("otto")
    session = server.accounts.issue(otto.id, "session")

    async def answer(query: str = "", **headers: str) -> str:
        async with asyncio.timeout(30):
            async with connect(
                f"{ws_url}/ws/whoami{query}", additional_headers=headers, proxy=None
            ) as websocket:
                try:
                    return str(await websocket.recv())
                except ConnectionClosed as closed:
                    assert closed.rcvd is not None
                    return f"closed {closed.rcvd.code}"

    with serving_over_tcp(server.app) as url:
        ws_url = url.replace("http://", "ws://")
        assert await answer(Authorization=f"Bearer {operator_key}") == "otto operator api_key"
        assert await answer(f"?token={operator_key}") == "otto operator api_key"
        assert await answer(Cookie=f"{SESSION_COOKIE}={session}") == "otto operator session"
        assert await answer() == "closed 1008"
        assert await answer("?token=fwk_forged") == "closed 1008"
        assert await answer(f"?token={viewer_key}") == "closed 1008"  # role too low
        # The first credential decides: a bad header is not rescued by a good cookie.
        assert (
            await answer(Authorization="Bearer fwk_forged", Cookie=f"{SESSION_COOKIE}={session}")
            == "closed 1008"
        )


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (None, "/"),
        ("", "/"),
        ("/", "/"),
        ("/people", "/people"),
        ("/live/door?x=1#top", "/live/door?x=1#top"),
        ("people", "/"),
        ("//evil.example", "/"),
        ("/\\evil.example", "/"),
        ("/\t/evil.example", "/"),
        ("https://evil.example/", "/"),
        ("javascript:alert(1)", "/"),
    ],
)
def test_safe_next_keeps_redirects_on_this_site(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


async def test_pages_send_the_logged_out_to_login_and_back(server: Server) -> None:
    @server.app.get("/people/{name}")
    async def person_page(request: Request) -> Response:
        principal = await optional_principal(request)
        if principal is None:
            return login_redirect(request)
        return PlainTextResponse(f"hello {principal.username}")

    key = server.user("vera", Role.viewer)
    async with server.client() as anonymous, server.client(key) as vera:
        redirected = await anonymous.get("/people/ann%20lee?tab=faces&x=1")
        assert redirected.status_code == 303
        location = redirected.headers["location"]
        assert location == "/login?next=%2Fpeople%2Fann%2520lee%3Ftab%3Dfaces%26x%3D1"
        assert (
            safe_next(unquote(location.split("next=", 1)[1])) == "/people/ann%20lee?tab=faces&x=1"
        )
        assert (await vera.get("/people/ann")).text == "hello vera"
