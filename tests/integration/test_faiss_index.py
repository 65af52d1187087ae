"""FaissIndex against the behaviour every vector index must show (see vector_index_contract)."""

from __future__ import annotations

from typing import Any

import pytest
import vector_index_contract as contract

from facewatch.watchlist.index import FaissIndex, IndexPolicy, VectorIndex

POLICIES = {
    "exact": IndexPolicy(),
    # Tiny bounds: the contract's small data sets cross every rebuild path.
    "rebuilding": IndexPolicy(delta_limit=8, delta_fraction=0.0, removed_limit=4),
}


@pytest.fixture(params=sorted(POLICIES))
def make_index(request: pytest.FixtureRequest) -> contract.IndexFactory:
    def factory(dim: int) -> VectorIndex:
        return FaissIndex(dim, POLICIES[request.param], use_gpu=False)

    return factory


@pytest.mark.parametrize("check", contract.CHECKS, ids=lambda c: c.__name__)
def test_contract(check: Any, make_index: contract.IndexFactory) -> None:
    check(make_index)


@pytest.mark.parametrize(("face_ids", "person_ids", "vectors"), contract.BAD_ADDS)
def test_rejects_bad_add(
    face_ids: Any, person_ids: Any, vectors: Any, make_index: contract.IndexFactory
) -> None:
    contract.check_rejects_bad_add(make_index, face_ids, person_ids, vectors)


@pytest.mark.parametrize(("vectors", "k"), contract.BAD_SEARCHES)
def test_rejects_bad_search(vectors: Any, k: int, make_index: contract.IndexFactory) -> None:
    contract.check_rejects_bad_search(make_index, vectors, k)
