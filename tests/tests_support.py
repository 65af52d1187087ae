"""Builders shared by tests (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import asyncio
import struct
import time
import zlib
from collections.abc import Callable
from typing import Any


def png_header_only(width: int, height: int) -> bytes:
    """A PNG declaring width x height with almost no pixel data: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


async def eventually(condition: Callable[[], bool], timeout_s: float = 60) -> None:
    """Wait until ``condition()`` holds (a bounded wait that catches hangs, not a measurement)."""
    async with asyncio.timeout(timeout_s):
        while True:  # polls: the state belongs to other threads, no event to wait on
            if condition():
                return
            await asyncio.sleep(0.02)


def wait_for(condition: Callable[[], Any], what: str, timeout_s: float = 180) -> Any:
    """Poll ``condition()`` from a test thread until it is truthy and return its value; fail
    naming ``what`` after ``timeout_s`` (a bound that catches hangs, not a measurement)."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)
    return value


def assert_index_rows_match_store(watchlist: Any) -> None:
    """The FAISS index holds exactly the store's embeddings: face id, person id and vector."""
    import numpy as np

    from facewatch.watchlist.index import FaissIndex

    store, index = watchlist.store, watchlist.index
    assert isinstance(index, FaissIndex)
    expected = store.embeddings(watchlist.pack_id, index.dim)
    face_ids, person_ids, vectors = index.vectors()
    order = np.argsort(face_ids)
    assert face_ids[order].tolist() == expected.face_ids.tolist()
    assert person_ids[order].tolist() == expected.person_ids.tolist()
    np.testing.assert_allclose(vectors[order], expected.vectors, atol=1e-6)
