"""Builders shared by tests (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import asyncio
import struct
import zlib
from collections.abc import Callable


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
