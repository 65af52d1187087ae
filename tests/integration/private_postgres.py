"""A PostgreSQL server of the test's own, to stop, restart and cut off without touching others.

The machine's shared server must stay up for everyone; this one lives in a temporary folder, on
a free loopback port, run by the ``postgres`` OS user (the server refuses to run as root) with
``initdb`` and ``pg_ctl``. It needs root (to act as that user) and the server binaries
(``/usr/lib/postgresql/<version>/bin``, or $FACEWATCH_TEST_PG_BIN); without them the fixture
skips, saying which is missing.

Import the fixture into a test module with
``from private_postgres import private_postgres as private_postgres``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

PG_BIN_ENV = "FACEWATCH_TEST_PG_BIN"
OS_USER = "postgres"
#: Longest wait for the server to start or stop; only there so that a hang fails the test.
PG_CTL_TIMEOUT_S = 60


def find_bin() -> Path | None:
    """The folder holding initdb and pg_ctl: $FACEWATCH_TEST_PG_BIN, else the newest installed."""
    if os.environ.get(PG_BIN_ENV):
        return Path(os.environ[PG_BIN_ENV])
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return found[-1].parent if found else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivatePostgres:
    """One PostgreSQL cluster in ``root``, listening on 127.0.0.1:``port`` only.

    Use :meth:`start` once; :meth:`stop` / :meth:`start` / :meth:`restart` for outages,
    :meth:`terminate` to kill the connections of one database, :meth:`destroy` at the end.
    """

    def __init__(self, bin_dir: Path, root: Path) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.data = root / "cluster"
        self.log = root / "server.log"
        self.port = free_port()
        self._admin: Engine | None = None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["runuser", "-u", OS_USER, "--", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=PG_CTL_TIMEOUT_S + 10,
            check=False,
        )
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(map(str, args))} failed ({done.returncode}): "
                f"{done.stdout}{done.stderr}\n{log[-2000:]}"
            )
        return done

    def init(self) -> None:
        self._run(
            self.bin_dir / "initdb",
            "-D",
            self.data,
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
        )

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories='' "
            "-c max_connections=60 -c shared_buffers=16MB"
        )
        self._run(
            self.bin_dir / "pg_ctl",
            "start",
            "-D",
            self.data,
            "-l",
            self.log,
            "-w",
            "-t",
            str(PG_CTL_TIMEOUT_S),
            "-o",
            options,
        )

    def stop(self, mode: str = "fast") -> None:
        """``fast``: sessions are ended and the server shuts down cleanly; ``immediate``: it
        quits at once, as in a crash, and recovers from its WAL on the next start."""
        self._run(
            self.bin_dir / "pg_ctl", "stop", "-D", self.data, "-m", mode, "-w",
            "-t", str(PG_CTL_TIMEOUT_S),
        )  # fmt: skip

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    @property
    def admin(self) -> Engine:
        if self._admin is None:
            self._admin = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        return self._admin

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        name = f"facewatch_{uuid.uuid4().hex[:10]}"
        with self.admin.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {name}"))
        return self.url(name)

    def terminate(self, database: str) -> int:
        """End every connection to ``database`` (``pg_terminate_backend``); returns how many."""
        with self.admin.connect() as connection:
            ended = connection.execute(
                text(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
                    "FROM pg_stat_activity WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": database},
            ).scalar_one()
        return int(ended)

    def destroy(self) -> None:
        if self._admin is not None:
            self._admin.dispose()
            self._admin = None
        try:
            self.stop("immediate")
        except RuntimeError:
            pass  # not running
        shutil.rmtree(self.root, ignore_errors=True)


def wait_until_accepting(server: PrivatePostgres, timeout_s: float = PG_CTL_TIMEOUT_S) -> None:
    """Until a connection to the server succeeds (``pg_ctl -w`` may return a little early)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with server.admin.connect() as connection:
                connection.execute(text("SELECT 1"))
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL server for this test module alone, destroyed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("a private PostgreSQL server needs root (to run it as the postgres user)")
    bin_dir = find_bin()
    if bin_dir is None or not (bin_dir / "initdb").is_file():
        pytest.skip(f"PostgreSQL server binaries not found (set {PG_BIN_ENV} to their folder)")
    try:
        account = pwd.getpwnam(OS_USER)
    except KeyError:
        pytest.skip(f"no {OS_USER!r} OS user to run a private PostgreSQL server as")
    if shutil.which("runuser") is None:
        pytest.skip("runuser not found: cannot run PostgreSQL as the postgres user")
    # Not under pytest's tmp_path: the postgres user cannot enter root's 0700 folders.
    root = Path(tempfile.mkdtemp(prefix="facewatch-pg-"))
    os.chown(root, account.pw_uid, account.pw_gid)
    server = PrivatePostgres(bin_dir, root)
    try:
        server.init()
        server.start()
        wait_until_accepting(server)
        yield server
    finally:
        server.destroy()
