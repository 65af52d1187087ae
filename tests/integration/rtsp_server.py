"""A real RTSP server on loopback for the tests: gst-rtsp-server in a child process.

Each mount serves a video file's own H.264 (never re-encoded) over RTP, looped forever and paced
in real time like a camera: all clients of a mount see the same frames at the same time. See
:mod:`rtsp_serve` (the program the child runs, on Debian's ``/usr/bin/python3``, which has
PyGObject) for how.

Use the fixture (import it into the test module, or once into a conftest)::

    from rtsp_server import rtsp_server_factory as rtsp_server_factory  # re-exported: no F401/F811

    def test_reads(rtsp_server_factory, faces_dir):
        server = rtsp_server_factory({"cam": faces_dir / "videos" / "intel_asl_thanks.mkv"})
        url = server.url("cam")  # rtsp://127.0.0.1:<port>/cam
        server.kill()  # a crashed camera; server.restart() brings it back on the same port

It skips the test, saying why, where the server cannot run (``scripts/install-test-system``
installs what it needs). A client decodes from the next key frame: most test clips have one, at
their start, so that takes up to one clip length after connecting.
"""

from __future__ import annotations

import functools
import os
import selectors
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import IO, NoReturn

import pytest

#: The child's interpreter: Debian's python3, where python3-gi and the GStreamer typelibs live.
SYSTEM_PYTHON = Path(os.environ.get("FACEWATCH_TEST_GST_PYTHON", "/usr/bin/python3"))
SERVE = Path(__file__).with_name("rtsp_serve.py")
INSTALL_HINT = "run scripts/install-test-system as root"
#: Start-up on a busy 2-core machine: interpreter, GStreamer (a first run builds its plugin
#: registry), demuxing the clips, then a DESCRIBE per mount. It takes well under 2 s here.
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
DESCRIBE_TIMEOUT_S = 10.0
POLL_S = 0.05


class RtspServerError(RuntimeError):
    """The server did not start; the message ends with what the child wrote to stderr."""


class RtspServer:
    """gst-rtsp-server in a child process on 127.0.0.1, serving files looped in real time.

    Attributes:
        mounts: mount name -> video file (H.264 in mp4 or mkv).
        port: TCP port on 127.0.0.1; the same across restarts.
    """

    def __init__(self, mounts: dict[str, Path], port: int | None = None) -> None:
        for name in mounts:
            if not name or "/" in name or "=" in name or name.strip() != name:
                raise ValueError(f"bad mount name {name!r}")
        self.mounts = {name: Path(path).resolve() for name, path in mounts.items()}
        self.port = port if port is not None else _free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    def url(self, name: str) -> str:
        """``rtsp://127.0.0.1:{port}/{name}``."""
        if name not in self.mounts:
            raise KeyError(f"no mount {name!r} (have {sorted(self.mounts)})")
        return f"rtsp://127.0.0.1:{self.port}/{name}"

    def start(self) -> None:
        """Start the child; return once each mount answers DESCRIBE with 200.

        Raises:
            RtspServerError: the child exited or did not answer within START_TIMEOUT_S; the
                message ends with its stderr.
        """
        if self._running():
            raise RuntimeError(f"RTSP server on port {self.port} is already running")
        self._reap()
        missing = [str(path) for path in self.mounts.values() if not path.is_file()]
        if missing:
            raise FileNotFoundError(f"videos to serve not found: {', '.join(missing)}")
        self._stderr = tempfile.TemporaryFile()
        mounts = [f"{name}={path}" for name, path in self.mounts.items()]
        # stdin stays an open pipe: the child stops when it closes, even if this process dies.
        self._process = subprocess.Popen(
            [str(SYSTEM_PYTHON), str(SERVE), "--port", str(self.port), *mounts],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        # Its own word first: a DESCRIBE alone could reach another process that holds the port.
        self._wait_for_listening(deadline)
        for name in self.mounts:
            self._wait_for_describe(name, deadline)

    def kill(self) -> None:
        """SIGKILL the child, as a crashed camera or server would go; clients see the TCP close."""
        if self._running():
            assert self._process is not None
            self._process.kill()
        self._reap()

    def restart(self) -> None:
        """Kill the child if it runs, then start it again on the same port with the same mounts."""
        self.kill()
        self.start()

    def stop(self) -> None:
        """Ask the child to close its clients and exit; kill it after STOP_TIMEOUT_S. Idempotent."""
        process = self._process
        if process is not None and process.poll() is None:
            assert process.stdin is not None
            process.stdin.close()
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
        self._reap()

    def __enter__(self) -> RtspServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _reap(self) -> None:
        """Wait for an exited (or killed) child and close its pipe and log."""
        if self._process is not None:
            self._process.wait()
            for pipe in (self._process.stdin, self._process.stdout):
                if pipe is not None:
                    pipe.close()
            self._process = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def _wait_for_listening(self, deadline: float) -> None:
        """Wait for the child's one line on stdout, written once it listens on the port."""
        assert self._process is not None and self._process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._process.stdout, selectors.EVENT_READ)
            line = b""
            while not line.endswith(b"\n"):
                if not selector.select(timeout=max(deadline - time.monotonic(), 0)):
                    self._fail(f"did not listen within {START_TIMEOUT_S:g} s")
                chunk = os.read(self._process.stdout.fileno(), 256)
                if not chunk:
                    self._process.wait()
                    self._fail(f"exited with status {self._process.returncode}")
                line += chunk

    def _wait_for_describe(self, name: str, deadline: float) -> None:
        assert self._process is not None
        error: OSError | None = None
        while True:
            if self._process.poll() is not None:
                self._fail(f"exited with status {self._process.returncode}")
            try:
                status = _describe(self.port, name, DESCRIBE_TIMEOUT_S)
            except OSError as exc:  # not listening yet, or a DESCRIBE that timed out
                status, error = None, exc
            if status == 200:
                return
            if status is not None:
                self._fail(f"answered DESCRIBE {self.url(name)} with status {status}")
            if time.monotonic() > deadline:
                self._fail(
                    f"did not answer DESCRIBE {self.url(name)} within {START_TIMEOUT_S:g} s"
                    f" ({error})"
                )
            time.sleep(POLL_S)

    def _fail(self, what: str) -> NoReturn:
        assert self._stderr is not None
        stderr = self._stderr
        self._stderr = None  # keep it readable through kill()
        self.kill()
        stderr.seek(0)
        output = stderr.read().decode(errors="replace").strip()
        stderr.close()
        raise RtspServerError(
            f"RTSP server on 127.0.0.1:{self.port} {what}; its stderr:\n{output or '(empty)'}"
        )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _describe(port: int, name: str, timeout: float) -> int:
    """The status code of one RTSP DESCRIBE of ``name`` (raises OSError when none comes)."""
    request = (
        f"DESCRIBE rtsp://127.0.0.1:{port}/{name} RTSP/1.0\r\n"
        "CSeq: 1\r\nAccept: application/sdp\r\nUser-Agent: facewatch-tests\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request.encode())
        reply = b""
        while b"\r\n" not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionResetError("connection closed before an RTSP status line")
            reply += chunk
    version, _, rest = reply.partition(b"\r\n")[0].decode("latin-1").partition(" ")
    code = rest.split(" ", 1)[0]
    if version != "RTSP/1.0" or not code.isdigit():
        raise ConnectionError(f"not an RTSP reply: {reply[:80]!r}")
    return int(code)


@functools.cache
def rtsp_available() -> str | None:
    """None when the RTSP server can run here, else why not (a skip reason)."""
    if not SYSTEM_PYTHON.is_file():
        return (
            f"{SYSTEM_PYTHON} not found (the RTSP server runs on Debian's python3): {INSTALL_HINT}"
        )
    try:
        check = subprocess.run(
            [str(SYSTEM_PYTHON), str(SERVE), "--check"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"{SERVE.name} --check did not finish in 120 s"
    if check.returncode != 0:
        detail = "; ".join((check.stderr or check.stdout).strip().splitlines()[-3:])
        return f"the RTSP server cannot run here ({detail}): {INSTALL_HINT}"
    return None


@pytest.fixture
def rtsp_server_factory() -> Iterator[Callable[[dict[str, Path]], RtspServer]]:
    """Start an :class:`RtspServer` on a free port per call; all are stopped at teardown.

    Skips the test with :func:`rtsp_available`'s reason where the server cannot run.
    """
    reason = rtsp_available()
    if reason is not None:
        pytest.skip(reason)
    with ExitStack() as stack:

        def start(mounts: dict[str, Path]) -> RtspServer:
            server = RtspServer(mounts)
            stack.callback(server.stop)
            server.start()
            return server

        yield start
