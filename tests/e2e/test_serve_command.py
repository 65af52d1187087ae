"""`facewatch serve` as an operator runs it: a first start guides to set-up, SIGTERM stops it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from facewatch.config import ENV_PREFIX


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.slow
def test_serve_guides_the_first_user_to_setup_and_stops_on_sigterm(
    tmp_path: Path, model_cache: Path
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env |= {"FACE_AI_CACHE_DIR": str(model_cache), "FACE_AI_PROVIDERS": "cpu"}
    command = [sys.executable, "-m", "facewatch", "serve", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--data-dir", str(tmp_path / "data")],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, process.stderr.read()  # type: ignore[union-attr]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/live").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not answer"
            time.sleep(0.2)
        setup = httpx.get(f"http://127.0.0.1:{port}/api/setup/status")
        assert setup.json() == {"needed": True}
        assert httpx.get(f"http://127.0.0.1:{port}/api/people").status_code == 401
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # uvicorn shuts down gracefully, then re-raises the signal it caught, as a service should.
    assert process.returncode in (0, -signal.SIGTERM), stderr
    assert "Application shutdown complete" in stderr
    assert f"http://localhost:{port}/setup" in stderr


def failed_logins(port: int, forwarded_for: list[str]) -> list[int]:
    """One failed login per forwarded address, each for a user name of its own."""
    statuses = []
    for n, address in enumerate(forwarded_for):
        response = httpx.post(
            f"http://127.0.0.1:{port}/api/auth/login",
            json={"username": f"guess-{n}", "password": "wrong password"},
            headers={"X-Forwarded-For": address},
        )
        statuses.append(response.status_code)
    return statuses


@pytest.mark.slow
@pytest.mark.parametrize("trusted", [True, False])
def test_forwarded_client_addresses_count_only_from_trusted_proxies(
    tmp_path: Path, model_cache: Path, trusted: bool
) -> None:
    """Behind a proxy, one client's failed logins must not lock out the others; without a
    trusted proxy, a client must not escape the limit by sending its own X-Forwarded-For."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env |= {
        "FACE_AI_CACHE_DIR": str(model_cache),
        "FACE_AI_PROVIDERS": "cpu",
        "FACE_AI_AUTH__LOGIN_ATTEMPTS": "2",
    }
    if trusted:
        env["FACE_AI_SERVER__TRUSTED_PROXIES"] = "127.0.0.1"
    command = [sys.executable, "-m", "facewatch", "serve", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--data-dir", str(tmp_path / "data")], env=env, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, "the server stopped"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/live").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not answer"
            time.sleep(0.2)
        statuses = failed_logins(port, ["203.0.113.7"] * 3 + ["203.0.113.8"])
    finally:
        process.terminate()
        process.wait(60)
    if trusted:  # the third from .7 is refused; .8 is another client, still heard
        assert statuses == [401, 401, 429, 401]
    else:  # every request comes from 127.0.0.1, whatever the header says
        assert statuses == [401, 401, 429, 429]
