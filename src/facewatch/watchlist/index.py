"""Vector indexes over face templates: the protocol, search results, and the in-memory FAISS index.

Every vector is an L2-normalised embedding, so inner product is cosine similarity. Rows are
identified by the store's face id and carry the person id, so a search answers "which person"
without a round trip to the store.

:class:`FaissIndex` never blocks readers: the published state is an immutable
:class:`_Published` object that a search reads once; a writer builds the next state beside it
and swaps one reference. Small changes go into a delta (brute-forced with NumPy) and a set of
removed ids; when those grow past a bound the base FAISS index is rebuilt from the live
vectors, still beside the published one.

Above ``approximate_above`` rows the base becomes approximate. The default, ``pq``, scans every
row's 4-bit product-quantized code (``IndexPQFastScan``, 32 bytes a row at 512-d) and re-ranks
the ``refine_factor × k`` best with the exact vectors (``IndexRefineFlat``): it needs no cluster
structure in the data, so a probe's own template is never left in an unvisited cell as it can
be with IVF, and its cost is a fast linear scan of codes a tenth the size of the vectors.
``ivf`` (``IndexIVFFlat``) stays available for galleries far beyond what one scan can serve.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import faiss
import numpy as np
from numpy.typing import NDArray

from facewatch.errors import WatchlistError

I64 = NDArray[np.int64]
F32 = NDArray[np.float32]
IndexKind = Literal["exact", "pq", "ivf"]
ApproximateKind = Literal["pq", "ivf"]

#: No face: the id used to pad results when fewer than ``k`` rows exist.
NO_FACE = -1


@dataclass(frozen=True, slots=True)
class Hits:
    """Top-k rows for each of N queries, best first.

    Attributes:
        face_ids: (N, k) int64 face ids, ``NO_FACE`` where there are fewer than k rows.
        person_ids: (N, k) int64 person ids, ``NO_FACE`` likewise.
        similarity: (N, k) float32 cosine similarity, ``-inf`` for padding.
    """

    face_ids: I64
    person_ids: I64
    similarity: F32

    def __post_init__(self) -> None:
        if not (self.face_ids.shape == self.person_ids.shape == self.similarity.shape):
            raise ValueError("face_ids, person_ids and similarity must have the same shape")
        if self.face_ids.ndim != 2:
            raise ValueError(f"hits must be (N, k), got {self.face_ids.shape}")

    def __len__(self) -> int:
        return int(self.face_ids.shape[0])

    @staticmethod
    def empty(queries: int, k: int) -> Hits:
        return Hits(
            np.full((queries, k), NO_FACE, np.int64),
            np.full((queries, k), NO_FACE, np.int64),
            np.full((queries, k), -np.inf, np.float32),
        )


@dataclass(frozen=True, slots=True)
class PersonMatch:
    """One candidate person for one query face."""

    person_id: int
    face_id: int
    similarity: float


def best_per_person(hits: Hits, row: int, k: int) -> list[PersonMatch]:
    """The ``k`` best distinct persons of query ``row``, each by its most similar template."""
    seen: set[int] = set()
    out: list[PersonMatch] = []
    for face, person, sim in zip(
        hits.face_ids[row], hits.person_ids[row], hits.similarity[row], strict=True
    ):
        if face == NO_FACE or int(person) in seen:
            continue
        seen.add(int(person))
        out.append(PersonMatch(int(person), int(face), float(sim)))
        if len(out) == k:
            break
    return out


@runtime_checkable
class VectorIndex(Protocol):
    """What the watchlist needs from a vector index (FAISS in memory, or Milvus)."""

    @property
    def dim(self) -> int: ...

    def __len__(self) -> int: ...

    def add(self, face_ids: I64, person_ids: I64, vectors: F32) -> None:
        """Add rows; a face id already present is replaced."""
        ...

    def remove(self, face_ids: Iterable[int]) -> int:
        """Remove rows by face id; returns how many were present."""
        ...

    def search(self, vectors: F32, k: int) -> Hits:
        """Top-k rows by inner product for each (N, D) query."""
        ...

    def face_ids(self) -> I64:
        """Every face id in the index (any order)."""
        ...

    def clear(self) -> None: ...

    def status(self) -> dict[str, Any]:
        """backend, kind, device, count, dim, memory_bytes and backend specifics."""
        ...


def as_queries(vectors: NDArray[Any], dim: int) -> F32:
    """Validate (N, D) or (D,) query/row vectors into a contiguous float32 (N, D) array."""
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or array.shape[1] != dim:
        raise WatchlistError(f"expected vectors of dimension {dim}, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise WatchlistError("vectors contain NaN or infinity")
    return array


# --- FAISS ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IndexPolicy:
    """When and how the FAISS base index becomes approximate.

    Attributes:
        approximate_above: live rows above which the base is approximate instead of exact.
        approximate: which approximate index: ``pq`` (compressed scan + exact re-ranking) or
            ``ivf`` (inverted lists).
        nprobe: IVF cells visited per query.
        refine_factor: ``pq`` re-ranks this many times ``k`` candidates with exact vectors.
        delta_limit: rows added since the last rebuild that are brute-forced beside the base;
            past it (or ``delta_fraction`` of the base) the base is rebuilt.
        delta_fraction: see ``delta_limit``.
        removed_limit: removed rows still physically in the base before a rebuild.
    """

    approximate_above: int = 100_000
    approximate: ApproximateKind = "pq"
    nprobe: int = 32
    refine_factor: int = 32
    delta_limit: int = 4096
    delta_fraction: float = 0.05
    removed_limit: int = 1024

    def kind_for(self, rows: int) -> IndexKind:
        return self.approximate if rows > self.approximate_above else "exact"

    @staticmethod
    def pq_subquantizers(dim: int) -> int:
        """Sub-quantizers of the ``pq`` index: one per 8 dimensions (4 bits each), at least 2,
        and a divisor of ``dim`` as product quantization requires."""
        m = max(2, dim // 8)
        while dim % m:
            m -= 1
        return m

    @staticmethod
    def nlist_for(rows: int) -> int:
        # ~4·sqrt(N) cells (the usual FAISS guidance), but never fewer than the 39 training rows
        # per cell k-means needs to place its centroids well.
        return int(max(1, min(65536, 4 * round(np.sqrt(rows)), rows // 39)))


@dataclass(frozen=True, slots=True)
class _Published:
    """One immutable state of a :class:`FaissIndex` (never mutated once published)."""

    kind: IndexKind
    base: Any  # faiss.Index or None
    base_face_ids: I64
    base_person_ids: I64
    delta_vectors: F32
    delta_face_ids: I64
    delta_person_ids: I64
    removed: frozenset[int] = field(default_factory=frozenset)

    @property
    def base_rows(self) -> int:
        return int(self.base_face_ids.shape[0])

    def __len__(self) -> int:
        return self.base_rows - len(self.removed) + int(self.delta_face_ids.shape[0])


class FaissIndex:
    """In-memory FAISS index over face templates; readers never wait for writers.

    Args:
        dim: embedding dimension D (from the model pack).
        policy: when to go approximate and when to rebuild.
        use_gpu: put the base index on GPU 0 when FAISS was built with GPU support and sees one.
    """

    def __init__(self, dim: int, policy: IndexPolicy | None = None, *, use_gpu: bool = True):
        if dim <= 0:
            raise WatchlistError(f"embedding dimension must be positive, got {dim}")
        self._dim = dim
        self.policy = policy or IndexPolicy()
        self._gpu = use_gpu and gpu_count() > 0
        self._write = threading.Lock()
        self._state = self._empty_state()

    # -- reading (no locks) --------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def kind(self) -> IndexKind:
        return self._state.kind

    def __len__(self) -> int:
        return len(self._state)

    def face_ids(self) -> I64:
        state = self._state
        base = state.base_face_ids
        if state.removed:
            base = base[~np.isin(base, np.fromiter(state.removed, np.int64))]
        return np.concatenate([base, state.delta_face_ids])

    def search(self, vectors: F32, k: int) -> Hits:
        if k < 1:
            raise WatchlistError(f"k must be at least 1, got {k}")
        queries = as_queries(vectors, self._dim)
        state = self._state  # one read: the whole search sees one consistent state
        parts = [self._search_base(state, queries, k), _search_delta(state, queries, k)]
        return _merge(parts, k)

    def status(self) -> dict[str, Any]:
        state = self._state
        return {
            "backend": "faiss",
            "kind": state.kind,
            "device": "gpu" if self._gpu else "cpu",
            "count": len(state),
            "dim": self._dim,
            "memory_bytes": _memory_bytes(state, self._dim),
            "pending_rows": int(state.delta_face_ids.shape[0]),
            "removed_rows": len(state.removed),
            "nlist": int(state.base.nlist) if state.kind == "ivf" else None,
            "nprobe": self.policy.nprobe if state.kind == "ivf" else None,
            "refine_factor": self.policy.refine_factor if state.kind == "pq" else None,
        }

    # -- writing (serialised by one lock) -------------------------------------------------------

    def add(self, face_ids: I64, person_ids: I64, vectors: F32) -> None:
        ids, persons, rows = _validate_rows(face_ids, person_ids, vectors, self._dim)
        if ids.size == 0:
            return
        with self._write:
            state = self._without(self._state, ids)
            state = _Published(
                state.kind,
                state.base,
                state.base_face_ids,
                state.base_person_ids,
                np.concatenate([state.delta_vectors, rows]),
                np.concatenate([state.delta_face_ids, ids]),
                np.concatenate([state.delta_person_ids, persons]),
                state.removed,
            )
            self._publish(state)

    def remove(self, face_ids: Iterable[int]) -> int:
        ids = np.unique(np.fromiter((int(i) for i in face_ids), np.int64))
        with self._write:
            before = len(self._state)
            state = self._without(self._state, ids)
            removed = before - len(state)
            if removed:
                self._publish(state)
            return removed

    def replace_all(self, face_ids: I64, person_ids: I64, vectors: F32) -> None:
        """Swap in a whole new content in one step (a rebuild from the store)."""
        ids, persons, rows = _validate_rows(face_ids, person_ids, vectors, self._dim)
        if np.unique(ids).size != ids.size:
            raise WatchlistError("duplicate face ids in a rebuild")
        with self._write:
            self._state = self._build(ids, persons, rows)

    def clear(self) -> None:
        with self._write:
            self._state = self._empty_state()

    def dump(self) -> dict[str, NDArray[Any]]:
        """The current state as plain arrays (for a snapshot); :meth:`restore` reverses it."""
        state = self._state
        base = state.base
        if base is not None and type(base).__name__.startswith("Gpu"):
            base = faiss.index_gpu_to_cpu(base)
        return {
            "kind": np.array(state.kind),
            "base": faiss.serialize_index(base) if base is not None else np.zeros(0, np.uint8),
            "base_face_ids": state.base_face_ids,
            "base_person_ids": state.base_person_ids,
            "delta_vectors": state.delta_vectors,
            "delta_face_ids": state.delta_face_ids,
            "delta_person_ids": state.delta_person_ids,
            "removed": np.array(sorted(state.removed), np.int64),
        }

    def restore(self, arrays: dict[str, NDArray[Any]]) -> None:
        """Replace the content with a :meth:`dump`; raises WatchlistError if it is inconsistent."""
        try:
            kind = str(arrays["kind"])
            blob = np.asarray(arrays["base"], np.uint8)
            base = faiss.deserialize_index(blob) if blob.size else None
            base_ids = np.asarray(arrays["base_face_ids"], np.int64)
            base_persons = np.asarray(arrays["base_person_ids"], np.int64)
            delta = np.asarray(arrays["delta_vectors"], np.float32).reshape(-1, self._dim)
            delta_ids = np.asarray(arrays["delta_face_ids"], np.int64)
            delta_persons = np.asarray(arrays["delta_person_ids"], np.int64)
            removed = frozenset(int(i) for i in arrays["removed"])
        except (KeyError, ValueError, RuntimeError) as exc:
            raise WatchlistError(f"index dump is unreadable: {exc}") from exc
        rows = 0 if base is None else int(base.ntotal)
        if (
            kind not in ("exact", "pq", "ivf")
            or (base is not None and base.d != self._dim)
            or not (rows == len(base_ids) == len(base_persons))
            or not (len(delta) == len(delta_ids) == len(delta_persons))
            or not removed <= set(base_ids.tolist())
        ):
            raise WatchlistError("index dump is inconsistent (sizes, dimension or kind)")
        if isinstance(base, faiss.IndexIVF):
            base.nprobe = self.policy.nprobe
            base.make_direct_map()
        if isinstance(base, faiss.IndexRefine):
            base.k_factor = float(self.policy.refine_factor)
        if base is not None and self._gpu and kind != "pq":
            base = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, base)
        state = _Published(
            "ivf" if kind == "ivf" else "pq" if kind == "pq" else "exact",
            base,
            base_ids,
            base_persons,
            delta,
            delta_ids,
            delta_persons,
            removed,
        )
        with self._write:
            self._state = state

    def vectors(self) -> tuple[I64, I64, F32]:
        """Every live row: (face ids, person ids, vectors), for persistence or a rebuild."""
        state = self._state
        ids, persons, rows = _base_rows(state)
        return (
            np.concatenate([ids, state.delta_face_ids]),
            np.concatenate([persons, state.delta_person_ids]),
            np.concatenate([rows, state.delta_vectors]),
        )

    # -- internals -----------------------------------------------------------------------------

    def _empty_state(self) -> _Published:
        empty = np.zeros(0, np.int64)
        return _Published(
            "exact", None, empty, empty, np.zeros((0, self._dim), np.float32), empty, empty
        )

    def _without(self, state: _Published, ids: I64) -> _Published:
        """``state`` minus the rows with these face ids (from the delta or marked removed)."""
        keep = ~np.isin(state.delta_face_ids, ids)
        in_base = ids[np.isin(ids, state.base_face_ids)]
        removed = state.removed | frozenset(int(i) for i in in_base)
        if keep.all() and removed == state.removed:
            return state
        return _Published(
            state.kind,
            state.base,
            state.base_face_ids,
            state.base_person_ids,
            state.delta_vectors[keep],
            state.delta_face_ids[keep],
            state.delta_person_ids[keep],
            removed,
        )

    def _publish(self, state: _Published) -> None:
        """Publish ``state``, first folding the delta into a new base when it has grown."""
        delta = int(state.delta_face_ids.shape[0])
        if (
            delta > max(self.policy.delta_limit, self.policy.delta_fraction * state.base_rows)
            or len(state.removed) > self.policy.removed_limit
        ):
            ids, persons, rows = _base_rows(state)
            state = self._build(
                np.concatenate([ids, state.delta_face_ids]),
                np.concatenate([persons, state.delta_person_ids]),
                np.concatenate([rows, state.delta_vectors]),
            )
        self._state = state

    def _build(self, ids: I64, persons: I64, rows: F32) -> _Published:
        kind = self.policy.kind_for(len(ids))
        if kind == "pq" and self._gpu:
            # FAISS has no GPU fast-scan index, and exact search on a GPU is faster anyway.
            kind = "exact"
        base = self._new_base(kind, rows) if len(ids) else None
        if base is not None:
            base.add(rows)
        empty = np.zeros(0, np.int64)
        return _Published(
            kind, base, ids, persons, np.zeros((0, self._dim), np.float32), empty, empty
        )

    def _new_base(self, kind: IndexKind, rows: F32) -> Any:
        index: Any
        if kind == "exact":
            index = faiss.IndexFlatIP(self._dim)
        elif kind == "pq":
            codes = faiss.IndexPQFastScan(
                self._dim, self.policy.pq_subquantizers(self._dim), 4, faiss.METRIC_INNER_PRODUCT
            )
            index = faiss.IndexRefineFlat(codes)
            index.k_factor = float(self.policy.refine_factor)
            # 16 centroids per sub-quantizer: a few thousand rows train them; more only slows.
            index.train(rows[np.random.default_rng(0).permutation(len(rows))[:65_536]])
            return index
        else:
            nlist = self.policy.nlist_for(len(rows))
            quantizer = faiss.IndexFlatIP(self._dim)
            index = faiss.IndexIVFFlat(quantizer, self._dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.nprobe = self.policy.nprobe
            # FAISS wants at least ~39 training rows per cell; more only slows training.
            sample = rows[np.random.default_rng(0).permutation(len(rows))[: nlist * 64]]
            index.train(sample)
            # ``reconstruct`` (used for rebuilds) needs the id -> slot map of an IVF index.
            index.make_direct_map()
        if self._gpu:
            index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
        return index

    def _search_base(self, state: _Published, queries: F32, k: int) -> Hits:
        if state.base is None or state.base_rows == 0:
            return Hits.empty(len(queries), k)
        # Removed rows are still in the base: ask for enough extra to fill k after dropping them.
        wanted = min(state.base_rows, k + len(state.removed))
        similarity, rows = state.base.search(queries, wanted)
        valid = rows >= 0
        face_ids = np.where(valid, state.base_face_ids[np.maximum(rows, 0)], NO_FACE)
        person_ids = np.where(valid, state.base_person_ids[np.maximum(rows, 0)], NO_FACE)
        similarity = np.where(valid, similarity, -np.inf).astype(np.float32)
        if state.removed:
            dropped = np.isin(face_ids, np.fromiter(state.removed, np.int64))
            face_ids = np.where(dropped, NO_FACE, face_ids)
            person_ids = np.where(dropped, NO_FACE, person_ids)
            similarity = np.where(dropped, -np.inf, similarity).astype(np.float32)
        return Hits(face_ids, person_ids, similarity)


def _search_delta(state: _Published, queries: F32, k: int) -> Hits:
    rows = int(state.delta_face_ids.shape[0])
    if rows == 0:
        return Hits.empty(len(queries), k)
    similarity = queries @ state.delta_vectors.T  # (N, rows)
    take = min(k, rows)
    top = np.argpartition(-similarity, take - 1, axis=1)[:, :take]
    return Hits(
        state.delta_face_ids[top],
        state.delta_person_ids[top],
        np.take_along_axis(similarity, top, axis=1).astype(np.float32),
    )


def _merge(parts: Sequence[Hits], k: int) -> Hits:
    """The k best of several partial results, best first, padded to k."""
    face_ids = np.concatenate([p.face_ids for p in parts], axis=1)
    person_ids = np.concatenate([p.person_ids for p in parts], axis=1)
    similarity = np.concatenate([p.similarity for p in parts], axis=1)
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    merged = Hits(
        np.take_along_axis(face_ids, order, axis=1),
        np.take_along_axis(person_ids, order, axis=1),
        np.take_along_axis(similarity, order, axis=1),
    )
    if merged.face_ids.shape[1] < k:
        pad = Hits.empty(len(merged), k - merged.face_ids.shape[1])
        merged = _merge([merged, pad], k)
    return merged


def _base_rows(state: _Published) -> tuple[I64, I64, F32]:
    """Live rows of the base (removed ones dropped), read back from FAISS."""
    if state.base is None or state.base_rows == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros((0, state.delta_vectors.shape[1]), np.float32)
    base = state.base
    if type(base).__name__.startswith("Gpu"):
        base = faiss.index_gpu_to_cpu(base)
        if isinstance(base, faiss.IndexIVF):
            base.make_direct_map()  # the GPU copy does not carry it
    rows = base.reconstruct_n(0, state.base_rows)
    keep = ~np.isin(state.base_face_ids, np.fromiter(state.removed, np.int64))
    return state.base_face_ids[keep], state.base_person_ids[keep], rows[keep]


def _validate_rows(
    face_ids: NDArray[Any], person_ids: NDArray[Any], vectors: NDArray[Any], dim: int
) -> tuple[I64, I64, F32]:
    ids = np.asarray(face_ids, np.int64).reshape(-1)
    persons = np.asarray(person_ids, np.int64).reshape(-1)
    rows = as_queries(vectors, dim) if len(ids) else np.zeros((0, dim), np.float32)
    if not (len(ids) == len(persons) == len(rows)):
        raise WatchlistError(
            f"{len(ids)} face ids, {len(persons)} person ids and {len(rows)} vectors differ"
        )
    if np.any(ids < 0):
        raise WatchlistError("face ids must be non-negative")
    if np.unique(ids).size != ids.size:
        raise WatchlistError("a face id appears twice in one call")
    return ids, persons, rows


def _memory_bytes(state: _Published, dim: int) -> int:
    rows = state.base_rows + int(state.delta_face_ids.shape[0])
    # Vectors (IVF lists hold them once more with ids; pq adds its codes) plus the id columns.
    extra = {"ivf": 8, "pq": IndexPolicy.pq_subquantizers(dim) // 2}.get(state.kind, 0)
    return rows * (dim * 4 + 16) + state.base_rows * extra


def gpu_count() -> int:
    """GPUs FAISS can use (0 with faiss-cpu)."""
    counter = getattr(faiss, "get_num_gpus", None)
    return int(counter()) if counter is not None else 0
