"""Where calibrations live: shipped in the package, or measured locally in the data directory.

Shipped: ``facewatch/recognizer/calibrations/<pack>.json``, computed from the shared data by
``benchmarks/calibrate_packs.py``. Local: ``<data dir>/calibration/<key>.json``, written by
``facewatch calibrate``; it takes precedence. Either is used only for the very models it was
measured with: the file names the SHA-256 of the detector and recognizer files, and one made
with other models is ignored (with a warning for a local one).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from facewatch.files import atomic_write
from facewatch.recognizer.calibration import (
    Calibration,
    CalibrationError,
    CalibrationOrigin,
    calibration_from_dict,
)
from facewatch.recognizer.packs import ModelPack

log = logging.getLogger(__name__)

#: Folder of local calibrations under the data directory.
LOCAL_DIR = "calibration"
#: Largest calibration file read, in bytes (a real one is a few kB).
MAX_FILE_BYTES = 1 << 20
_COUNTS_PLACEHOLDER = "@counts@"


def pack_facts(pack: ModelPack) -> dict[str, str]:
    """The models a calibration belongs to, as stored in its provenance."""
    return {
        "name": pack.name,
        "id": pack.id,
        "detector": pack.detector.name,
        "detector_sha256": pack.detector.sha256,
        "recognizer": pack.recognizer.name,
        "recognizer_sha256": pack.recognizer.sha256,
    }


def calibration_key(pack: ModelPack) -> str:
    """File stem of a pack's local calibration: recognizer and detector, as file-name text."""
    raw = f"{pack.id}_{pack.detector.name}-{pack.detector.sha256[:12]}"
    return re.sub(r"[^A-Za-z0-9._-]", "_", raw)


def local_path(data_dir: Path, pack: ModelPack) -> Path:
    return data_dir / LOCAL_DIR / f"{calibration_key(pack)}.json"


def belongs_to(calibration: Calibration, pack: ModelPack) -> bool:
    """Whether ``calibration`` was measured with this pack's detector and recognizer files."""
    facts = calibration.provenance.get("pack")
    if not isinstance(facts, dict):
        return False
    return (
        facts.get("detector_sha256") == pack.detector.sha256
        and facts.get("recognizer_sha256") == pack.recognizer.sha256
    )


def load_calibration(
    pack: ModelPack, data_dir: Path
) -> tuple[Calibration | None, CalibrationOrigin | None]:
    """The pack's calibration: the local one if usable, else the shipped one, else none.

    A local file that is damaged or made with other models is logged and skipped.
    """
    path = local_path(data_dir, pack)
    if path.is_file():
        try:
            local = read_calibration(path)
        except CalibrationError as exc:
            log.warning("local calibration %s not used: %s", path, exc)
        else:
            if belongs_to(local, pack):
                return local, CalibrationOrigin.LOCAL
            log.warning("local calibration %s was made with other model files: not used", path)
    for shipped in _shipped():
        if belongs_to(shipped, pack):
            return shipped, CalibrationOrigin.SHIPPED
    return None, None


def read_calibration(path: Path) -> Calibration:
    """Read one calibration file.

    Raises:
        CalibrationError: unreadable, not JSON, too large or not a calibration.
    """
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise CalibrationError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(data) > MAX_FILE_BYTES:
        raise CalibrationError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    try:
        parsed: Any = json.loads(data)
    except ValueError as exc:
        raise CalibrationError(f"{path}: not JSON ({exc})") from None
    try:
        return calibration_from_dict(parsed)
    except CalibrationError as exc:
        raise CalibrationError(f"{path}: {exc}") from None


def write_calibration(path: Path, calibration: Calibration) -> None:
    """Write a calibration atomically (readers see the old file or the new one).

    Indented for people to read, but the counts on one line: a thousand lines of one number
    each would hide the rest.
    """
    data = calibration.to_dict()
    counts = data["scores"]["exceed"]
    data["scores"]["exceed"] = _COUNTS_PLACEHOLDER
    text = json.dumps(data, indent=1).replace(f'"{_COUNTS_PLACEHOLDER}"', json.dumps(counts))
    atomic_write(path, (text + "\n").encode())


def _shipped() -> Iterator[Calibration]:
    folder = resources.files("facewatch.recognizer") / "calibrations"
    if not folder.is_dir():
        return
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".json"):
            continue
        try:
            yield calibration_from_dict(json.loads(entry.read_text(encoding="utf-8")))
        except (CalibrationError, ValueError) as exc:
            # A shipped file is ours: a damaged one is a packaging bug, not the operator's.
            log.error("shipped calibration %s is damaged: %s", entry.name, exc)
