"""MilvusIndex against a real milvus-lite file in ``tmp_path``.

The backend-independent behaviour lives in :mod:`vector_index_contract`; this module adds what
only Milvus has: a file that persists, a schema that can disagree, a server that can be down.
Every test ends by checking that the file's milvus-lite server was stopped (its lock released).
"""

from __future__ import annotations

import fcntl
import itertools
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import vector_index_contract as contract
from vector_index_contract import DIM, IndexFactory, filled, unit_rows

from facewatch.errors import WatchlistError

pytest.importorskip("pymilvus", reason="pymilvus is not installed (extra 'milvus')")
pytest.importorskip("milvus_lite", reason="milvus-lite is not installed (extra 'milvus')")
from facewatch.watchlist.milvus import MAX_K, MilvusIndex  # noqa: E402

OpenIndex = Callable[..., MilvusIndex]


def file_released(db_path: Path) -> bool:
    """Whether no milvus-lite server holds the file (its flock on ``LOCK`` is free)."""
    lock = db_path / "LOCK"
    if not lock.exists():
        return True
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "watchlist.db"


@pytest.fixture
def open_index(db_path: Path) -> Iterator[OpenIndex]:
    """Opens MilvusIndex on ``db_path``; closes them all and checks the file was released."""
    opened: list[MilvusIndex] = []

    def open_(dim: int = DIM, collection: str = "faces", **kwargs: Any) -> MilvusIndex:
        index = MilvusIndex(str(db_path), collection, dim, **kwargs)
        opened.append(index)
        return index

    yield open_
    for index in opened:
        index.close()
    assert file_released(db_path), "a milvus-lite server still holds the file"


@pytest.fixture
def make_index(open_index: OpenIndex) -> IndexFactory:
    """The contract's factory: each call is a new collection in the same file."""
    names = (f"faces_{n}" for n in itertools.count())
    return lambda dim: open_index(dim, next(names))


# -- the shared contract ---------------------------------------------------------------------


@pytest.mark.parametrize("check", contract.CHECKS, ids=lambda check: check.__name__[6:])
def test_contract(check: Callable[[IndexFactory], None], make_index: IndexFactory) -> None:
    check(make_index)


@pytest.mark.parametrize(("face_ids", "person_ids", "vectors"), contract.BAD_ADDS)
def test_rejects_bad_add(
    make_index: IndexFactory, face_ids: Any, person_ids: Any, vectors: Any
) -> None:
    contract.check_rejects_bad_add(make_index, face_ids, person_ids, vectors)


@pytest.mark.parametrize(("vectors", "k"), contract.BAD_SEARCHES)
def test_rejects_bad_search(make_index: IndexFactory, vectors: Any, k: int) -> None:
    contract.check_rejects_bad_search(make_index, vectors, k)


@pytest.mark.slow
def test_face_ids_past_the_query_limit(make_index: IndexFactory) -> None:
    # 20k rows: past Milvus's 16384-row query cap, and two insert requests.
    contract.check_face_ids_lists_every_row(make_index, rows=20_000)


# -- Milvus only -----------------------------------------------------------------------------


def test_k_above_milvus_cap_is_rejected(open_index: OpenIndex) -> None:
    index = open_index()
    with pytest.raises(WatchlistError, match=str(MAX_K)):
        index.search(unit_rows(1), MAX_K + 1)


def test_rows_persist_in_the_file(open_index: OpenIndex, db_path: Path) -> None:
    first, data = filled(lambda dim: open_index(dim), 40)
    first.remove([1000])
    before = first.search(data["vectors"][:5], 4)
    first.close()
    assert file_released(db_path)

    again = open_index()
    assert len(again) == 39
    np.testing.assert_array_equal(np.sort(again.face_ids()), data["face_ids"][1:])
    after = again.search(data["vectors"][:5], 4)
    np.testing.assert_array_equal(after.face_ids, before.face_ids)
    np.testing.assert_array_equal(after.person_ids, before.person_ids)
    np.testing.assert_allclose(after.similarity, before.similarity, atol=contract.TOLERANCE)


def test_indexes_on_one_file_share_its_server(open_index: OpenIndex, db_path: Path) -> None:
    first, second = open_index(), open_index()
    first.add(np.array([1]), np.array([2]), unit_rows(1))
    assert second.face_ids().tolist() == [1]  # a write that returned is seen at once
    first.close()
    assert not file_released(db_path), "closing one index stopped the other's server"
    assert second.search(unit_rows(1), 1).face_ids.tolist() == [[1]]
    second.close()
    assert file_released(db_path)


def test_close_is_idempotent_and_later_calls_fail(open_index: OpenIndex, db_path: Path) -> None:
    index = open_index()
    index.close()
    index.close()
    assert file_released(db_path)
    with pytest.raises(WatchlistError, match="closed"):
        len(index)
    with pytest.raises(WatchlistError, match="closed"):
        index.add(np.array([1]), np.array([1]), unit_rows(1))


CALLS_AFTER_SERVER_GONE = {
    "len": lambda index, data: len(index),
    "search": lambda index, data: index.search(data["vectors"], 2),
    "face_ids": lambda index, data: index.face_ids(),
    "add": lambda index, data: index.add(data["face_ids"], data["person_ids"], data["vectors"]),
    "remove": lambda index, data: index.remove([1000]),
    "status": lambda index, data: index.status(),
}


@pytest.mark.parametrize("call", CALLS_AFTER_SERVER_GONE.values(), ids=CALLS_AFTER_SERVER_GONE)
def test_server_gone_mid_session_is_a_watchlist_error(
    open_index: OpenIndex, db_path: Path, call: Callable[[MilvusIndex, dict[str, Any]], object]
) -> None:
    from milvus_lite import server_manager_instance

    index, data = filled(lambda dim: open_index(dim, timeout_s=2.0), 3)
    server_manager_instance.release_server(str(db_path))  # as if the server died
    with pytest.raises(WatchlistError, match=str(db_path)):
        call(index, data)


def test_dimension_mismatch_names_collection_and_both_dimensions(open_index: OpenIndex) -> None:
    open_index(dim=DIM, collection="gallery").close()
    with pytest.raises(WatchlistError, match=rf"'gallery'.*dimension {DIM}.*dimension 8\b"):
        open_index(dim=8, collection="gallery")


@pytest.mark.parametrize(
    ("auto_id", "person_field", "metric", "complaint"),
    [
        pytest.param(False, "label", "IP", r"fields .*'label'", id="other-field"),
        pytest.param(True, "person_id", "IP", r"auto_id True", id="auto-id"),
        pytest.param(False, "person_id", "L2", r"metric 'L2', expected 'IP'", id="l2-metric"),
    ],
)
def test_foreign_collection_is_rejected(
    open_index: OpenIndex,
    db_path: Path,
    auto_id: bool,
    person_field: str,
    metric: str,
    complaint: str,
) -> None:
    from pymilvus import DataType, MilvusClient

    keep_alive = open_index()  # keeps the file's server up for the raw client below
    client = MilvusClient(str(db_path), dedicated=True)
    try:
        schema = MilvusClient.create_schema(auto_id=auto_id, enable_dynamic_field=False)
        schema.add_field("face_id", DataType.INT64, is_primary=True)
        schema.add_field(person_field, DataType.INT64)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=DIM)
        index = client.prepare_index_params()
        index.add_index(field_name="embedding", index_type="FLAT", metric_type=metric)
        client.create_collection("foreign", schema=schema, index_params=index)
    finally:
        client.close()
    with pytest.raises(WatchlistError, match=rf"'foreign'.*{complaint}"):
        open_index(collection="foreign")
    keep_alive.close()


def test_status(open_index: OpenIndex, db_path: Path) -> None:
    index, _ = filled(lambda dim: open_index(dim, "statuses"), 10)
    status = index.status()
    assert status == {
        "backend": "milvus",
        "kind": "exact",
        "device": "lite",
        "count": 10,
        "dim": DIM,
        "memory_bytes": 10 * (DIM * 4 + 16),
        "uri": str(db_path),
        "collection": "statuses",
        "index_type": "FLAT",
    }


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("uri", "shown", "hidden"),
    [
        pytest.param("http://127.0.0.1:{port}", "127.0.0.1:{port}", None, id="no-server"),
        pytest.param(
            "http://watcher:s3cret@127.0.0.1:{port}", "127.0.0.1:{port}", "s3cret", id="redacted"
        ),
        pytest.param("{tmp}/missing/watchlist.db", "missing", None, id="no-folder"),
    ],
)
def test_connection_failure_is_a_watchlist_error(
    tmp_path: Path, uri: str, shown: str, hidden: str | None
) -> None:
    port = closed_port()
    uri = uri.format(port=port, tmp=tmp_path)
    with pytest.raises(WatchlistError, match="cannot connect to Milvus") as raised:
        MilvusIndex(uri, "faces", DIM, timeout_s=2.0)
    assert shown.format(port=port) in str(raised.value)
    if hidden:
        assert hidden not in str(raised.value)
