"""Behaviour every :class:`~facewatch.watchlist.index.VectorIndex` backend must show.

Each ``check_*`` takes an index factory: ``factory(dim)`` returns a new, empty index of that
dimension (the caller owns closing it). Expected results come from a NumPy brute force, so a
backend is only ever compared with plain inner products, never with another backend.

A backend's test module calls these from its own tests, e.g.::

    @pytest.mark.parametrize("check", contract.CHECKS, ids=lambda c: c.__name__)
    def test_contract(check, make_index):
        check(make_index)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from facewatch.errors import WatchlistError
from facewatch.watchlist.index import NO_FACE, VectorIndex

IndexFactory = Callable[[int], VectorIndex]

DIM = 16
#: float32 inner products from a server and from NumPy agree to about this.
TOLERANCE = 1e-5


def unit_rows(rows: int, dim: int = DIM, seed: int = 0) -> NDArray[np.float32]:
    """(rows, dim) float32 L2-normalised random vectors."""
    vectors = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def brute_force(
    rows: NDArray[np.float32], queries: NDArray[np.float32], k: int
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """(N, k') row positions and similarities, best first, k' = min(k, rows)."""
    similarity = queries @ rows.T
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(similarity, order, axis=1)


def filled(factory: IndexFactory, rows: int, seed: int = 0) -> tuple[VectorIndex, dict[str, Any]]:
    """An index holding ``rows`` random rows; face ids 1000+i, person ids i // 3."""
    index = factory(DIM)
    data = {
        "face_ids": np.arange(1000, 1000 + rows, dtype=np.int64),
        "person_ids": np.arange(rows, dtype=np.int64) // 3,
        "vectors": unit_rows(rows, seed=seed),
    }
    index.add(data["face_ids"], data["person_ids"], data["vectors"])
    return index, data


def check_search_matches_brute_force(factory: IndexFactory) -> None:
    index, data = filled(factory, 300)
    queries = unit_rows(7, seed=1)
    hits = index.search(queries, 10)
    positions, similarity = brute_force(data["vectors"], queries, 10)
    assert hits.face_ids.shape == hits.person_ids.shape == hits.similarity.shape == (7, 10)
    assert hits.face_ids.dtype == hits.person_ids.dtype == np.int64
    assert hits.similarity.dtype == np.float32
    np.testing.assert_array_equal(hits.face_ids, data["face_ids"][positions])
    np.testing.assert_array_equal(hits.person_ids, data["person_ids"][positions])
    np.testing.assert_allclose(hits.similarity, similarity, atol=TOLERANCE)
    assert np.all(np.diff(hits.similarity, axis=1) <= TOLERANCE), "not best first"


def check_search_finds_each_row_itself(factory: IndexFactory) -> None:
    index, data = filled(factory, 50)
    hits = index.search(data["vectors"], 1)
    np.testing.assert_array_equal(hits.face_ids[:, 0], data["face_ids"])
    np.testing.assert_allclose(hits.similarity[:, 0], 1.0, atol=TOLERANCE)


def check_single_query_vector(factory: IndexFactory) -> None:
    index, data = filled(factory, 20)
    hits = index.search(data["vectors"][3], 2)
    assert hits.face_ids.shape == (1, 2)
    assert hits.face_ids[0, 0] == data["face_ids"][3]


def check_padding_when_k_exceeds_rows(factory: IndexFactory) -> None:
    index, data = filled(factory, 3)
    hits = index.search(unit_rows(2, seed=5), 6)
    assert hits.face_ids.shape == (2, 6)
    assert set(hits.face_ids[:, :3].ravel().tolist()) == set(data["face_ids"].tolist())
    assert np.all(hits.face_ids[:, 3:] == NO_FACE)
    assert np.all(hits.person_ids[:, 3:] == NO_FACE)
    assert np.all(np.isneginf(hits.similarity[:, 3:]))
    assert np.all(np.isfinite(hits.similarity[:, :3]))


def check_empty_index(factory: IndexFactory) -> None:
    index = factory(DIM)
    assert len(index) == 0
    assert index.face_ids().size == 0
    hits = index.search(unit_rows(4), 3)
    assert hits.face_ids.shape == (4, 3)
    assert np.all(hits.face_ids == NO_FACE) and np.all(np.isneginf(hits.similarity))
    assert index.remove([1, 2]) == 0


def check_add_replaces_face_id(factory: IndexFactory) -> None:
    index, data = filled(factory, 10)
    old, new = data["vectors"][4], unit_rows(1, seed=9)[0]
    face = int(data["face_ids"][4])
    index.add(np.array([face], np.int64), np.array([777], np.int64), new[None])
    assert len(index) == 10
    hits = index.search(new, 10)
    assert hits.face_ids[0].tolist().count(face) == 1, "the old row is still there"
    assert hits.face_ids[0, 0] == face and hits.person_ids[0, 0] == 777
    np.testing.assert_allclose(hits.similarity[0, 0], 1.0, atol=TOLERANCE)
    # Searching by the old vector finds the face only through its new vector.
    again = index.search(old, 10)
    at = again.face_ids[0].tolist().index(face)
    np.testing.assert_allclose(again.similarity[0, at], float(old @ new), atol=TOLERANCE)


def check_remove_counts_present_rows(factory: IndexFactory) -> None:
    index, data = filled(factory, 20)
    gone = [1000, 1001, 1005]
    assert index.remove(gone + [1005, 5, 99_999]) == 3  # a repeat and two absent ids
    assert index.remove(gone) == 0
    assert len(index) == 17
    assert set(index.face_ids().tolist()) == set(data["face_ids"].tolist()) - set(gone)
    hits = index.search(data["vectors"][[0, 1, 5]], 17)
    assert not np.isin(hits.face_ids, gone).any()
    assert index.remove([]) == 0


def check_face_ids_lists_every_row(factory: IndexFactory, rows: int = 500) -> None:
    index, data = filled(factory, rows)
    ids = index.face_ids()
    assert ids.dtype == np.int64
    np.testing.assert_array_equal(np.sort(ids), data["face_ids"])
    assert len(index) == rows


def check_clear(factory: IndexFactory) -> None:
    index, data = filled(factory, 30)
    index.clear()
    assert len(index) == 0 and index.face_ids().size == 0
    assert np.all(index.search(data["vectors"][:2], 3).face_ids == NO_FACE)
    index.add(data["face_ids"][:2], data["person_ids"][:2], data["vectors"][:2])
    assert len(index) == 2


def check_status(factory: IndexFactory) -> None:
    index, _ = filled(factory, 12)
    assert isinstance(index, VectorIndex)
    status = index.status()
    for key in ("backend", "kind", "device", "count", "dim", "memory_bytes"):
        assert key in status, key
    assert status["count"] == 12 and status["dim"] == DIM


def _bad_add_cases() -> list[Any]:
    one = unit_rows(1)
    two = unit_rows(2)
    nan = two.copy()
    nan[1, 3] = np.nan
    inf = two.copy()
    inf[0, 0] = np.inf
    ids2, persons2 = np.array([1, 2]), np.array([7, 7])
    return [
        pytest.param(ids2, persons2, unit_rows(2, dim=DIM + 1), id="wrong-dimension"),
        pytest.param(ids2, persons2, nan, id="nan"),
        pytest.param(ids2, persons2, inf, id="infinity"),
        pytest.param(np.array([3, 3]), persons2, two, id="duplicate-face-ids"),
        pytest.param(np.array([-1, 2]), persons2, two, id="negative-face-id"),
        pytest.param(ids2, np.array([7]), two, id="fewer-person-ids"),
        pytest.param(ids2, persons2, one, id="fewer-vectors"),
        pytest.param(ids2, persons2, unit_rows(2)[:, :, None], id="three-dimensional"),
    ]


BAD_ADDS = _bad_add_cases()

BAD_SEARCHES = [
    pytest.param(unit_rows(2, dim=DIM - 1), 3, id="wrong-dimension"),
    pytest.param(np.full((1, DIM), np.nan, np.float32), 3, id="nan"),
    pytest.param(unit_rows(2), 0, id="k-zero"),
    pytest.param(unit_rows(2), -4, id="k-negative"),
]


def check_rejects_bad_add(
    factory: IndexFactory, face_ids: Any, person_ids: Any, vectors: Any
) -> None:
    """``add`` refuses the rows and leaves the index as it was."""
    index, data = filled(factory, 5)
    with pytest.raises(WatchlistError):
        index.add(face_ids, person_ids, vectors)
    np.testing.assert_array_equal(np.sort(index.face_ids()), data["face_ids"])


def check_rejects_bad_search(factory: IndexFactory, vectors: Any, k: int) -> None:
    index, _ = filled(factory, 5)
    with pytest.raises(WatchlistError):
        index.search(vectors, k)


#: The checks that take only a factory, for one parametrized test.
CHECKS: list[Callable[[IndexFactory], None]] = [
    check_search_matches_brute_force,
    check_search_finds_each_row_itself,
    check_single_query_vector,
    check_padding_when_k_exceeds_rows,
    check_empty_index,
    check_add_replaces_face_id,
    check_remove_counts_present_rows,
    check_face_ids_lists_every_row,
    check_clear,
    check_status,
]
