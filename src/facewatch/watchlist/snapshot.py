"""Index snapshots on disk: a FAISS index's state with the store version it reflects.

A snapshot is one ``.npz`` file (uncompressed NumPy zip, no pickles) written atomically: temp
file, fsync, rename. Zip members carry CRC-32s that NumPy checks on read, so a damaged file is
detected rather than loaded; a snapshot of another pack, dimension or format is refused too.
"""

from __future__ import annotations

import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facewatch.errors import WatchlistError
from facewatch.files import atomic_writer
from facewatch.watchlist.index import FaissIndex

log = logging.getLogger(__name__)

FORMAT = 1


class SnapshotError(WatchlistError):
    """A snapshot that is missing, damaged, or made for other settings."""


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    version: int
    pack_id: str
    dim: int
    count: int


def snapshot_path(data_dir: Path, pack_id: str) -> Path:
    return data_dir / "index" / f"{pack_id}.npz"


def save_snapshot(path: Path, arrays: dict[str, Any], info: SnapshotInfo) -> None:
    """Write ``arrays`` (from :meth:`FaissIndex.dump`) and ``info`` to ``path`` atomically."""
    meta = {"format": FORMAT, **{k: getattr(info, k) for k in SnapshotInfo.__slots__}}
    with atomic_writer(path) as handle:
        np.savez(handle, meta=np.array(json.dumps(meta)), **arrays)


def load_snapshot(path: Path, index: FaissIndex, *, pack_id: str) -> SnapshotInfo:
    """Restore ``index`` from ``path``; raises SnapshotError (index untouched) if unusable."""
    if not path.is_file():
        raise SnapshotError(f"no index snapshot at {path}")
    try:
        # Our own handle: np.load leaks its file when the zip directory is unreadable.
        with path.open("rb") as handle, np.load(handle, allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"]))
            arrays = {name: archive[name] for name in archive.files if name != "meta"}
    except (OSError, ValueError, KeyError, EOFError, RuntimeError, zipfile.BadZipFile) as exc:
        raise SnapshotError(f"index snapshot {path} is damaged: {exc}") from exc
    try:
        info = SnapshotInfo(
            int(meta["version"]), str(meta["pack_id"]), int(meta["dim"]), int(meta["count"])
        )
        fmt = int(meta["format"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SnapshotError(f"index snapshot {path} has no valid metadata") from exc
    if fmt != FORMAT:
        raise SnapshotError(f"index snapshot {path} has format {fmt}, expected {FORMAT}")
    if info.pack_id != pack_id or info.dim != index.dim:
        raise SnapshotError(
            f"index snapshot {path} is for pack {info.pack_id} ({info.dim}-d), "
            f"not {pack_id} ({index.dim}-d)"
        )
    try:
        index.restore(arrays)
    except WatchlistError as exc:
        raise SnapshotError(f"index snapshot {path}: {exc}") from exc
    if len(index) != info.count:
        index.clear()
        raise SnapshotError(f"index snapshot {path} holds {len(index)} rows, says {info.count}")
    return info
