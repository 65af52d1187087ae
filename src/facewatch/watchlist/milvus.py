"""Milvus as the watchlist's vector index: a Milvus server, or milvus-lite's local ``.db`` file.

:class:`MilvusIndex` keeps the semantics of :class:`~facewatch.watchlist.index.FaissIndex`: rows
keyed by face id carry a person id and an L2-normalised embedding, ``add`` replaces a face id
already present, and a search ranks by inner product (cosine similarity on these vectors).

Every call is blocking network I/O (milvus-lite too: it serves gRPC on loopback from threads of
this process), so callers on the event loop run them in an executor. Every pymilvus or gRPC
failure surfaces as :class:`~facewatch.errors.WatchlistError` naming the URI and collection.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import grpc
import numpy as np
from numpy.typing import NDArray
from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import MilvusException

from facewatch.errors import WatchlistError
from facewatch.watchlist.index import F32, I64, Hits, as_queries

FACE_ID = "face_id"
PERSON_ID = "person_id"
EMBEDDING = "embedding"

#: Milvus caps both ``limit`` (top-k) and a query's page at 16384 rows.
MAX_K = 16384
_QUERY_PAGE = 16384
#: Rows and queries per request stay well under Milvus's default 64 MiB gRPC message limit.
_MAX_MESSAGE_BYTES = 16 * 2**20
_MAX_ROWS_PER_REQUEST = 10_000
#: Hits per search request (queries × k), under the server's cap on a result's size.
_MAX_HITS_PER_REQUEST = 100_000
#: Ids per ``face_id in [...]`` expression, which the server parses as text.
_IDS_PER_EXPRESSION = 4096
_STRONG = "Strong"
_EXACT_INDEXES = frozenset({"FLAT", "BRUTE_FORCE"})


class MilvusIndex:
    """Vector index stored in a Milvus collection (server or milvus-lite file).

    The collection holds ``face_id`` (INT64 primary key, never auto-generated), ``person_id``
    (INT64) and ``embedding`` (FLOAT_VECTOR of dimension ``dim``), indexed with metric IP. It is
    created when missing; an existing one must have exactly this schema. Reads use Strong
    consistency, so they see every write that has returned.

    Args:
        uri: ``http(s)://host:port`` of a Milvus server, or a path ending in ``.db`` for a
            milvus-lite file (its folder must exist).
        collection: collection name.
        dim: embedding dimension D (from the model pack).
        token: ``user:password`` or an API key for a server; empty for none.
        timeout_s: bound on each call, connection and retries included, in seconds.

    Raises:
        WatchlistError: the server cannot be reached, the file cannot be opened, or the
            collection exists with another schema or dimension.
    """

    def __init__(
        self,
        uri: str,
        collection: str,
        dim: int,
        *,
        token: str = "",
        timeout_s: float = 10.0,
    ) -> None:
        if dim <= 0:
            raise WatchlistError(f"embedding dimension must be positive, got {dim}")
        if not collection:
            raise WatchlistError("the Milvus collection name must not be empty")
        if timeout_s <= 0:
            raise WatchlistError(f"timeout_s must be positive, got {timeout_s}")
        self._dim = dim
        self._collection = collection
        self._timeout_s = timeout_s
        self._lite_path = os.path.abspath(uri) if uri.endswith(".db") else None
        self._uri = uri if self._lite_path else _redacted(uri)
        self._write = threading.Lock()
        self._closed = False
        self._client: Any = None
        if self._lite_path is not None:
            _lite_servers.acquire(self._lite_path)
        try:
            self._client = self._connect(uri, token)
            self._index_type = self._open_collection()
        except BaseException:
            self.close()
            raise

    # -- reading ---------------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def uri(self) -> str:
        """The URI, with any credentials in it removed."""
        return self._uri

    @property
    def collection(self) -> str:
        return self._collection

    def __len__(self) -> int:
        with self._calling("count rows"):
            rows = self._live().query(
                self._collection,
                filter="",
                output_fields=["count(*)"],
                consistency_level=_STRONG,
                timeout=self._timeout_s,
            )
        return int(rows[0]["count(*)"])

    def search(self, vectors: F32, k: int) -> Hits:
        """Top-k rows by inner product for each query.

        Args:
            vectors: (N, D) or (D,) float32 L2-normalised query embeddings.
            k: rows per query, 1 to 16384 (Milvus's cap).

        Returns:
            (N, k) hits, best first, padded with ``NO_FACE`` / ``-inf`` past the rows present.
        """
        if not 1 <= k <= MAX_K:
            raise WatchlistError(f"k must be between 1 and {MAX_K}, got {k}")
        queries = as_queries(vectors, self._dim)
        hits = Hits.empty(len(queries), k)
        step = max(1, min(_rows_per_request(self._dim), _MAX_HITS_PER_REQUEST // k))
        for start in range(0, len(queries), step):
            chunk = queries[start : start + step]
            with self._calling("search"):
                results = self._live().search(
                    self._collection,
                    data=list(chunk),
                    limit=k,
                    output_fields=[PERSON_ID],
                    anns_field=EMBEDDING,
                    search_params={"metric_type": "IP"},
                    consistency_level=_STRONG,
                    timeout=self._timeout_s,
                )
            for offset, row in enumerate(results):
                at = start + offset
                for rank, hit in enumerate(row):
                    hits.face_ids[at, rank] = int(hit[FACE_ID])
                    hits.person_ids[at, rank] = int(hit["entity"][PERSON_ID])
                    hits.similarity[at, rank] = float(hit["distance"])
        return hits

    def face_ids(self) -> I64:
        """Every face id in the collection (any order), paged past Milvus's 16384-row cap."""
        pages: list[I64] = []
        with self._calling("list face ids"):
            iterator = self._live().query_iterator(
                self._collection,
                batch_size=_QUERY_PAGE,
                output_fields=[FACE_ID],
                consistency_level=_STRONG,
                timeout=self._timeout_s,
            )
            try:
                while page := iterator.next():
                    pages.append(np.fromiter((row[FACE_ID] for row in page), np.int64))
            finally:
                iterator.close()
        return np.concatenate(pages) if pages else np.zeros(0, np.int64)

    def status(self) -> dict[str, Any]:
        """backend, kind, device, count, dim, memory_bytes, uri, collection and index_type.

        ``memory_bytes`` estimates the vectors and ids held by milvus-lite in this process; it
        is None for a server, whose memory is not ours and depends on the index it built.
        """
        count = len(self)
        return {
            "backend": "milvus",
            "kind": "exact" if self._index_type in _EXACT_INDEXES else "approximate",
            "device": "lite" if self._lite_path else "server",
            "count": count,
            "dim": self._dim,
            "memory_bytes": count * (self._dim * 4 + 16) if self._lite_path else None,
            "uri": self._uri,
            "collection": self._collection,
            "index_type": self._index_type,
        }

    # -- writing ---------------------------------------------------------------------------------

    def add(self, face_ids: I64, person_ids: I64, vectors: F32) -> None:
        """Add rows; a face id already present is replaced.

        Args:
            face_ids: (N,) non-negative int64 face ids, distinct.
            person_ids: (N,) int64 person ids.
            vectors: (N, D) float32 L2-normalised embeddings.
        """
        ids, persons, rows = _validate_rows(face_ids, person_ids, vectors, self._dim)
        step = _rows_per_request(self._dim)
        with self._write:
            for start in range(0, len(ids), step):
                stop = start + step
                data = [
                    {FACE_ID: face, PERSON_ID: person, EMBEDDING: vector}
                    for face, person, vector in zip(
                        ids[start:stop].tolist(),
                        persons[start:stop].tolist(),
                        rows[start:stop],
                        strict=True,
                    )
                ]
                # Upsert, not insert: Milvus keeps duplicate primary keys side by side.
                with self._calling("upsert"):
                    self._live().upsert(self._collection, data, timeout=self._timeout_s)

    def remove(self, face_ids: Iterable[int]) -> int:
        """Remove rows by face id; returns how many were present.

        Milvus's delete count is the number of ids asked for, not found, so the present ones
        are looked up first.
        """
        ids = np.unique(np.fromiter((int(i) for i in face_ids), np.int64)).tolist()
        removed = 0
        with self._write:
            for start in range(0, len(ids), _IDS_PER_EXPRESSION):
                asked = ids[start : start + _IDS_PER_EXPRESSION]
                with self._calling("remove"):
                    rows = self._live().query(
                        self._collection,
                        ids=asked,
                        output_fields=[FACE_ID],
                        consistency_level=_STRONG,
                        timeout=self._timeout_s,
                    )
                    present = [int(row[FACE_ID]) for row in rows]
                    if present:
                        self._live().delete(self._collection, ids=present, timeout=self._timeout_s)
                removed += len(present)
        return removed

    def clear(self) -> None:
        """Remove every row, by dropping and recreating the collection.

        Readers in other processes may briefly find no collection while this runs.
        """
        with self._write:
            with self._calling("drop collection"):
                self._live().drop_collection(self._collection, timeout=self._timeout_s)
            self._index_type = self._open_collection()

    def close(self) -> None:
        """Close the connection and stop this file's milvus-lite server when it was the last
        user; safe to call twice."""
        with self._write:
            if self._closed:
                return
            self._closed = True
            client, self._client = self._client, None
        try:
            if client is not None:
                client.close()
        finally:
            if self._lite_path is not None:
                _lite_servers.release(self._lite_path)

    def __enter__(self) -> MilvusIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------------

    def _connect(self, uri: str, token: str) -> Any:
        try:
            # A dedicated connection is really closed by ``close``; a shared one would outlive us.
            return MilvusClient(uri=uri, token=token, timeout=self._timeout_s, dedicated=True)
        except (MilvusException, grpc.RpcError, grpc.FutureTimeoutError) as error:
            hint = " (is another process using this file?)" if self._lite_path else ""
            raise WatchlistError(
                f"cannot connect to Milvus at {self._uri}: {_reason(error)}{hint}"
            ) from error

    def _open_collection(self) -> str:
        """Create the collection when missing, check its schema, index and load it.

        Returns:
            The vector index type (e.g. ``FLAT``, ``AUTOINDEX``).
        """
        client = self._live()
        with self._calling("open collection"):
            if not client.has_collection(self._collection, timeout=self._timeout_s):
                self._create_collection()
            self._check_schema(
                client.describe_collection(self._collection, timeout=self._timeout_s)
            )
            if not client.list_indexes(self._collection, field_name=EMBEDDING):
                # Not ``sync``: pymilvus would then poll the build, sleeping 0.5 s before its
                # first look, and a float timeout would never end that poll. Loading waits for
                # the index anyway, and the server builds it for new segments as they come.
                client.create_index(
                    self._collection, self._index_params(), timeout=self._timeout_s, sync=False
                )
            index = client.describe_index(self._collection, EMBEDDING, timeout=self._timeout_s)
            if str(index.get("metric_type", "")).upper() != "IP":
                raise WatchlistError(
                    f"Milvus collection {self._collection!r} at {self._uri} indexes "
                    f"{EMBEDDING!r} with metric {index.get('metric_type')!r}, expected 'IP'"
                )
            # Loading a loaded collection is a no-op; a reopened milvus-lite file starts released.
            client.load_collection(self._collection, timeout=self._timeout_s)
        return str(index.get("index_type", "")).upper()

    def _create_collection(self) -> None:
        client = self._live()
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(FACE_ID, DataType.INT64, is_primary=True)
        schema.add_field(PERSON_ID, DataType.INT64)
        schema.add_field(EMBEDDING, DataType.FLOAT_VECTOR, dim=self._dim)
        # Without index params: the caller creates the index (without polling) and loads.
        client.create_collection(
            self._collection, schema=schema, consistency_level=_STRONG, timeout=self._timeout_s
        )

    def _index_params(self) -> Any:
        params = self._live().prepare_index_params()
        if self._lite_path:
            # milvus-lite is for small watchlists and tests: exact search, as FaissIndex gives.
            params.add_index(field_name=EMBEDDING, index_type="FLAT", metric_type="IP")
        else:
            # AUTOINDEX lets the server pick its tuned default (HNSW on open-source Milvus, the
            # only choice on Zilliz Cloud) and keeps search params free of index-specific knobs
            # such as HNSW's ``ef``, which would otherwise have to grow with k.
            params.add_index(field_name=EMBEDDING, index_type="AUTOINDEX", metric_type="IP")
        return params

    def _check_schema(self, described: dict[str, Any]) -> None:
        fields = {field["name"]: field for field in described.get("fields", [])}
        where = f"Milvus collection {self._collection!r} at {self._uri}"
        vector = fields.get(EMBEDDING)
        if vector is not None and vector.get("type") == DataType.FLOAT_VECTOR:
            found = int(vector.get("params", {}).get("dim", 0))
            if found != self._dim:
                raise WatchlistError(
                    f"{where} holds vectors of dimension {found}, "
                    f"but this index expects dimension {self._dim}"
                )
        expected = {
            FACE_ID: DataType.INT64,
            PERSON_ID: DataType.INT64,
            EMBEDDING: DataType.FLOAT_VECTOR,
        }
        found_types = {name: field.get("type") for name, field in fields.items()}
        primary = [name for name, field in fields.items() if field.get("is_primary")]
        if found_types != expected or primary != [FACE_ID] or described.get("auto_id"):
            shown = {name: getattr(kind, "name", kind) for name, kind in found_types.items()}
            raise WatchlistError(
                f"{where} has fields {shown} (primary {primary}, auto_id "
                f"{bool(described.get('auto_id'))}); expected face_id INT64 primary key without "
                f"auto_id, person_id INT64 and embedding FLOAT_VECTOR({self._dim})"
            )

    def _live(self) -> Any:
        client = self._client
        if client is None:
            raise WatchlistError(f"Milvus index {self._collection!r} at {self._uri} is closed")
        return client

    @contextmanager
    def _calling(self, action: str) -> Iterator[None]:
        """Turn pymilvus and gRPC failures of ``action`` into WatchlistError."""
        try:
            yield
        except (MilvusException, grpc.RpcError, grpc.FutureTimeoutError) as error:
            raise WatchlistError(
                f"Milvus {action} on collection {self._collection!r} at {self._uri} failed: "
                f"{_reason(error)}"
            ) from error


class _LiteServers:
    """Counts the open indexes on each milvus-lite file, to stop its server after the last one.

    pymilvus starts a milvus-lite server (gRPC threads in this process, holding a lock on the
    file) on first use of a ``.db`` path and only stops it at interpreter exit; a closed index
    must release the file so that another process, or a later test, can open it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users: dict[str, int] = {}

    def acquire(self, path: str) -> None:
        with self._lock:
            self._users[path] = self._users.get(path, 0) + 1

    def release(self, path: str) -> None:
        with self._lock:
            left = self._users.get(path, 0) - 1
            if left > 0:
                self._users[path] = left
                return
            self._users.pop(path, None)
            from milvus_lite.server_manager import server_manager_instance

            # Inside the lock, so that a concurrent open cannot reuse a server being stopped.
            server_manager_instance.release_server(path)


_lite_servers = _LiteServers()


def _validate_rows(
    face_ids: NDArray[Any], person_ids: NDArray[Any], vectors: NDArray[Any], dim: int
) -> tuple[I64, I64, F32]:
    """The same checks as FaissIndex's: matching lengths, non-negative distinct face ids."""
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


def _rows_per_request(dim: int) -> int:
    return max(1, min(_MAX_ROWS_PER_REQUEST, _MAX_MESSAGE_BYTES // (dim * 4 + 16)))


def _redacted(uri: str) -> str:
    """``uri`` without the ``user:password@`` part, for messages and status."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()


def _reason(error: BaseException) -> str:
    message = getattr(error, "message", None)
    if isinstance(message, str) and message:
        return message
    details = getattr(error, "details", None)
    if callable(details):
        return str(details())
    return str(error) or type(error).__name__
