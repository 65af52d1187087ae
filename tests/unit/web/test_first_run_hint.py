"""The first-start hint names the set-up page where an operator can reach it."""

from __future__ import annotations

import pytest

from facewatch.config import load_settings
from facewatch.web.app import first_run_hint


@pytest.mark.parametrize(
    ("host", "port", "where"),
    [
        ("127.0.0.1", 8000, "http://localhost:8000/setup"),
        ("0.0.0.0", 8080, "http://localhost:8080/setup"),
        ("cams.example", 8000, "http://cams.example:8000/setup"),
        ("127.0.0.1", 0, "open /setup "),  # port picked at start: no made-up address
    ],
)
def test_the_hint_names_the_setup_page(host: str, port: int, where: str) -> None:
    settings = load_settings(server={"host": host, "port": port})
    hint = first_run_hint(settings, has_users=False)
    assert hint is not None and where in hint and ":0/" not in hint
    assert first_run_hint(settings, has_users=True) is None
