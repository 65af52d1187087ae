"""File helpers: atomic writes leave the old file or the new one, stale temp files are swept,
and :class:`WriteHealth` tells a failing kind of write from a recovered one."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

from facewatch.files import (
    WriteHealth,
    atomic_write,
    atomic_writer,
    describe_os_error,
    is_no_space,
    remove_stale_temps,
)


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "index.npz"
    atomic_write(target, b"old")
    with pytest.raises(OSError), atomic_writer(target) as handle:
        handle.write(b"half of the new")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.npz"]


def test_only_old_temp_files_of_atomic_writes_are_swept(tmp_path: Path) -> None:
    now = time.time()
    old, young = tmp_path / ".index.npz.abc.tmp", tmp_path / ".index.npz.def.tmp"
    keep = [tmp_path / "index.npz", tmp_path / "notes.tmp", tmp_path / ".hidden"]
    for path in [old, young, *keep]:
        path.write_bytes(b"x")
    os.utime(old, (now - 7200, now - 7200))
    for path in keep:
        os.utime(path, (now - 7200, now - 7200))
    assert remove_stale_temps(tmp_path, 3600, now=now) == 1
    assert not old.exists() and young.exists() and all(p.exists() for p in keep)
    assert remove_stale_temps(tmp_path / "missing", 3600) == 0


def test_write_health_fails_then_recovers() -> None:
    health = WriteHealth()
    assert health.ok and health.as_dict()["failures"] == 0
    health.failed(OSError(errno.ENOSPC, "No space left on device", "/data/index/x.npz"))
    first = health.as_dict()
    health.failed(OSError(errno.EIO, "Input/output error"))
    failing = health.as_dict()
    assert not health.ok and failing["failures"] == 2
    assert failing["failing_since"] == first["failing_since"] <= failing["last_failure_at"]
    assert failing["last_error"] == "Input/output error"
    assert first["last_error"] == "No space left on device: /data/index/x.npz"
    health.succeeded()
    recovered = health.as_dict()
    assert recovered["ok"] and recovered["failing_since"] is None
    assert recovered["failures"] == 2 and recovered["last_success_at"] is not None


@pytest.mark.parametrize(
    ("error", "full"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), True),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
        (OSError(errno.EACCES, "Permission denied"), False),
        (ValueError("not a disk error"), False),
    ],
)
def test_no_space_is_told_from_other_errors(error: Exception, full: bool) -> None:
    assert is_no_space(error) is full
    assert describe_os_error(error)
