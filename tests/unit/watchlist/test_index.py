"""FaissIndex beyond the shared contract: rebuilds, the approximate switch, dumps, merging."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from facewatch.errors import WatchlistError
from facewatch.watchlist.index import (
    NO_FACE,
    ApproximateKind,
    FaissIndex,
    Hits,
    IndexPolicy,
    best_per_person,
)

DIM = 32


def unit(rows: int, seed: int = 0) -> NDArray[np.float32]:
    x = np.random.default_rng(seed).standard_normal((rows, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def probes(vectors: NDArray[np.float32], noise: float, seed: int = 1) -> NDArray[np.float32]:
    """Noisy copies of ``vectors``, as a genuine second photo of a face would be."""
    x = vectors + noise * np.random.default_rng(seed).standard_normal(vectors.shape)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_delta_is_folded_into_the_base_past_its_limit() -> None:
    index = FaissIndex(DIM, IndexPolicy(delta_limit=10, delta_fraction=0.0), use_gpu=False)
    rows = unit(25)
    for start in range(0, 25, 5):
        index.add(np.arange(start, start + 5), np.zeros(5), rows[start : start + 5])
    status = index.status()
    assert status["count"] == 25
    assert status["pending_rows"] <= 10  # rebuilt at least once
    hits = index.search(rows, 1)
    np.testing.assert_array_equal(hits.face_ids[:, 0], np.arange(25))


def test_removed_rows_never_come_back_after_rebuilds() -> None:
    index = FaissIndex(DIM, IndexPolicy(delta_limit=4, delta_fraction=0.0, removed_limit=3))
    rows = unit(40)
    index.replace_all(np.arange(40), np.arange(40), rows)
    for face in range(0, 40, 2):
        assert index.remove([face]) == 1
    assert index.remove([0]) == 0
    assert sorted(index.face_ids().tolist()) == list(range(1, 40, 2))
    hits = index.search(rows, 3)
    assert not np.isin(hits.face_ids, np.arange(0, 40, 2)).any()


@pytest.mark.parametrize(
    ("rows", "approximate_above", "approximate", "kind"),
    [
        (500, 1000, "pq", "exact"),
        (500, 499, "pq", "pq"),
        (500, 499, "ivf", "ivf"),
        (500, 500, "ivf", "exact"),
    ],
)
def test_kind_follows_the_size(
    rows: int, approximate_above: int, approximate: ApproximateKind, kind: str
) -> None:
    policy = IndexPolicy(approximate_above=approximate_above, approximate=approximate)
    index = FaissIndex(DIM, policy, use_gpu=False)
    index.replace_all(np.arange(rows), np.arange(rows), unit(rows))
    assert index.kind == kind
    assert index.status()["kind"] == kind


@pytest.mark.parametrize(
    "policy",
    [
        IndexPolicy(approximate_above=0, approximate="ivf", nprobe=16),
        IndexPolicy(approximate_above=0, approximate="pq"),
    ],
    ids=["ivf", "pq"],
)
def test_approximate_finds_noisy_probes_like_exact_search(policy: IndexPolicy) -> None:
    rows = unit(4000)
    exact = FaissIndex(DIM, IndexPolicy(approximate_above=10**9), use_gpu=False)
    ivf = FaissIndex(DIM, policy, use_gpu=False)
    assert ivf.policy.kind_for(4000) == policy.approximate
    for index in (exact, ivf):
        index.replace_all(np.arange(4000), np.arange(4000), rows)
    queries = probes(rows[:300], noise=0.08)
    truth = exact.search(queries, 1).face_ids[:, 0]
    found = ivf.search(queries, 1).face_ids[:, 0]
    np.testing.assert_array_equal(truth, np.arange(300))
    assert np.mean(found == truth) >= 0.97


@pytest.mark.parametrize(
    ("approximate_above", "approximate"), [(10**9, "pq"), (0, "pq"), (0, "ivf")]
)
def test_dump_and_restore_keep_every_row(
    approximate_above: int, approximate: ApproximateKind
) -> None:
    policy = IndexPolicy(
        approximate_above=approximate_above,
        approximate=approximate,
        delta_limit=50,
        delta_fraction=0.0,
    )
    index = FaissIndex(DIM, policy, use_gpu=False)
    rows = unit(2000)
    index.replace_all(np.arange(2000), np.arange(2000) // 2, rows[:2000])
    index.add(np.arange(5000, 5010), np.full(10, 9), unit(10, seed=5))  # stays in the delta
    index.remove([3, 4])  # stays a tombstone
    copy = FaissIndex(DIM, policy, use_gpu=False)
    copy.restore(index.dump())
    assert len(copy) == len(index) == 2008
    assert copy.kind == index.kind
    queries = probes(rows[:50], noise=0.02)
    before, after = index.search(queries, 5), copy.search(queries, 5)
    np.testing.assert_array_equal(before.face_ids, after.face_ids)
    np.testing.assert_allclose(before.similarity, after.similarity, atol=1e-6)


def test_restore_refuses_an_inconsistent_dump() -> None:
    index = FaissIndex(DIM, use_gpu=False)
    index.replace_all(np.arange(10), np.arange(10), unit(10))
    dump = index.dump()
    dump["base_face_ids"] = dump["base_face_ids"][:-1]
    target = FaissIndex(DIM, use_gpu=False)
    with pytest.raises(WatchlistError):
        target.restore(dump)
    assert len(target) == 0


def test_replace_all_refuses_duplicate_ids() -> None:
    index = FaissIndex(DIM, use_gpu=False)
    with pytest.raises(WatchlistError):
        index.replace_all(np.array([1, 1]), np.array([1, 1]), unit(2))


def test_a_search_keeps_the_state_it_started_with() -> None:
    """A reader holding the published state is unaffected by writes published after it."""
    index = FaissIndex(DIM, IndexPolicy(delta_limit=1, delta_fraction=0.0), use_gpu=False)
    rows = unit(20)
    index.replace_all(np.arange(10), np.arange(10), rows[:10])
    state = index._state
    index.add(np.arange(10, 20), np.arange(10, 20), rows[10:])
    index.remove(range(5))
    assert len(state) == 10 and len(index) == 15
    assert state.base_rows == 10  # the old base object was not modified in place


@pytest.mark.parametrize(
    ("faces", "persons", "sims", "k", "expected"),
    [
        ([1, 2, 3], [7, 7, 8], [0.9, 0.8, 0.7], 5, [(7, 1), (8, 3)]),
        ([1, 2, 3], [7, 8, 9], [0.9, 0.8, 0.7], 2, [(7, 1), (8, 2)]),
        ([1, NO_FACE, NO_FACE], [7, NO_FACE, NO_FACE], [0.5, -np.inf, -np.inf], 3, [(7, 1)]),
        ([NO_FACE], [NO_FACE], [-np.inf], 1, []),
    ],
)
def test_best_per_person(
    faces: list[int], persons: list[int], sims: list[float], k: int, expected: list[tuple[int, int]]
) -> None:
    hits = Hits(
        np.array([faces], np.int64), np.array([persons], np.int64), np.array([sims], np.float32)
    )
    assert [(m.person_id, m.face_id) for m in best_per_person(hits, 0, k)] == expected


@pytest.mark.parametrize(("dim", "expected"), [(512, 64), (128, 16), (100, 10), (16, 2), (3, 1)])
def test_pq_subquantizers_divide_the_dimension(dim: int, expected: int) -> None:
    assert IndexPolicy.pq_subquantizers(dim) == expected


@pytest.mark.parametrize(("rows", "expected"), [(10, 1), (390, 10), (10_000, 256), (10**6, 4000)])
def test_nlist_keeps_enough_training_rows_per_cell(rows: int, expected: int) -> None:
    assert IndexPolicy.nlist_for(rows) == expected
