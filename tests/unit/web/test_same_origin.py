"""Which requests count as coming from the server's own pages (for the session cookie): pure logic
on the request's ``Origin`` and ``Host`` headers and the CORS setting."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from starlette.requests import Request

from facewatch.config import load_settings
from facewatch.web.auth import same_origin

APP = "https://app.example"


def request(headers: dict[str, str], cors_origins: list[str] | None = None) -> Request:
    settings = load_settings(server={"cors_origins": cors_origins or []})
    app = SimpleNamespace(state=SimpleNamespace(settings=settings))
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/auth/keys",
        "headers": [(name.lower().encode(), value.encode()) for name, value in headers.items()],
        "query_string": b"",
        "app": app,
    }
    return Request(scope)


@pytest.mark.parametrize(
    ("headers", "cors", "expected"),
    [
        ({"Host": "cams.example"}, None, True),  # no Origin: not a browser
        ({"Host": "cams.example", "Origin": "https://cams.example"}, None, True),
        ({"Host": "cams.example:443", "Origin": "https://cams.example"}, None, True),
        ({"Host": "CAMS.example", "Origin": "https://cams.EXAMPLE"}, None, True),
        ({"Host": "127.0.0.1:8000", "Origin": "http://127.0.0.1:8000"}, None, True),
        ({"Host": "127.0.0.1:8000", "Origin": "http://127.0.0.1:8001"}, None, False),
        ({"Host": "127.0.0.1:8000", "Origin": "http://localhost:8000"}, None, False),
        ({"Host": "cams.example", "Origin": "https://other.cams.example"}, None, False),
        ({"Host": "cams.example", "Origin": "https://cams.example.attacker.test"}, None, False),
        ({"Host": "cams.example", "Origin": "null"}, None, False),
        ({"Host": "cams.example", "Origin": ""}, None, False),
        ({"Host": "cams.example", "Origin": "file://cams.example"}, None, False),
        ({"Origin": "https://cams.example"}, None, False),  # no Host to compare with
        ({"Host": "cams.example", "Origin": "https://app.example"}, [APP], True),
        ({"Host": "cams.example", "Origin": "https://evil.example"}, [APP], False),
    ],
)
def test_same_origin(headers: dict[str, str], cors: list[str] | None, expected: bool) -> None:
    assert same_origin(request(headers, cors)) is expected
