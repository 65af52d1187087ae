"""File helpers shared by the packages: atomic writes, checksums, and how writes are going.

:class:`WriteHealth` keeps the outcome of one kind of write (index snapshots, enrollment
photos) for the health report: a disk that fills up shows as failures with their error and
time, and clears with the next write that succeeds.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

#: Errors that mean the file system has no room left (space or quota).
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` so readers see the old file or the whole new one."""
    with atomic_writer(target) as handle:
        handle.write(data)


@contextmanager
def atomic_writer(target: Path) -> Iterator[BinaryIO]:
    """A handle whose content replaces ``target`` in one step when the block ends without error.

    Temp file in the same folder, fsync, rename, fsync of the folder (so the rename itself
    survives a power cut); the temp file is removed on failure and ``target`` is untouched.
    Temp files are named ``.<target name>.<random>.tmp``; one left by a killed process is
    harmless and :func:`remove_stale_temps` clears it.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_stale_temps(folder: Path, older_than_s: float, *, now: float | None = None) -> int:
    """Delete the temp files of :func:`atomic_writer` in ``folder`` older than ``older_than_s``.

    Only old ones: a younger one may belong to a write still running in another process that
    shares the folder. Returns how many were removed.
    """
    limit = (time.time() if now is None else now) - older_than_s
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        if not (entry.name.startswith(".") and entry.name.endswith(".tmp")):
            continue
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < limit:
                os.unlink(entry.path)
                removed += 1
        except OSError:  # gone meanwhile, or not ours to delete: nothing to clean
            continue
    return removed


def is_no_space(exc: BaseException) -> bool:
    """Whether ``exc`` says the file system is full (or the quota used up)."""
    return isinstance(exc, OSError) and exc.errno in NO_SPACE


@dataclass
class WriteHealth:
    """How the writes of one kind of file went: failures, the last error and when, recovery.

    Thread-safe; times are Unix seconds.
    """

    failures: int = 0
    failing_since: float | None = None
    last_error: str | None = None
    last_failure_at: float | None = None
    last_success_at: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """False from a failure until the next write that succeeds."""
        return self.failing_since is None

    def succeeded(self) -> None:
        with self._lock:
            self.failing_since = None
            self.last_success_at = time.time()

    def failed(self, error: BaseException | str) -> None:
        with self._lock:
            now = time.time()
            self.failures += 1
            self.last_error = error if isinstance(error, str) else describe_os_error(error)
            self.last_failure_at = now
            if self.failing_since is None:
                self.failing_since = now

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "ok": self.failing_since is None,
                "failures": self.failures,
                "failing_since": self.failing_since,
                "last_error": self.last_error,
                "last_failure_at": self.last_failure_at,
                "last_success_at": self.last_success_at,
            }


def describe_os_error(exc: BaseException) -> str:
    """A one-line reason: ``[Errno 28] No space left on device`` reads as its strerror."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some filesystems do not open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
