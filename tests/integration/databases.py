"""Fresh databases on the servers this machine runs (PostgreSQL, MariaDB), or SQLite files.

Server tests create a database of their own (``facewatch_test_<random>``) through an admin
connection and drop it afterwards; a server that is not reachable makes the test skip, naming
it. The admin URLs can be changed with FACEWATCH_TEST_POSTGRES_URL / FACEWATCH_TEST_MYSQL_URL.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

ADMIN_URLS = {
    "postgresql": os.environ.get(
        "FACEWATCH_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    ),
    "mariadb": os.environ.get("FACEWATCH_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/"),
}
BACKENDS = ("sqlite", "postgresql", "mariadb")


@contextmanager
def fresh_database(backend: str, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database on ``backend``, dropped on exit."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'facewatch.db'}"
        return
    admin_url = ADMIN_URLS[backend]
    name = f"facewatch_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {name}"))
    except OperationalError as exc:
        admin.dispose()
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        pytest.skip(f"{backend} not reachable at {make_url(admin_url)!r}: {reason}")
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            if backend == "postgresql":
                connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            else:
                connection.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()
