"""``facewatch calibrate DIR``: the pack's non-mated score distribution on the operator's photos.

DIR holds one sub-folder of photos per person, as for ``facewatch import``; the people need not
be enrolled (better not: they stand for the strangers the cameras will see). The calibration is
saved in ``<data dir>/calibration/`` and from then on takes precedence over the one shipped with
the pack; ``facewatch status`` shows the threshold it gives. A set too small to be trusted (under
:data:`~facewatch.recognizer.calibration.MIN_PEOPLE` people, or too few comparisons to resolve
the target FPIR at :data:`MIN_CHECK_SIZE` templates) is not saved: the pack's default stays.

Output follows :mod:`facewatch.cli`: one JSON object on stdout, messages on stderr, exit 1 when
the photos do not make a usable calibration.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from facewatch import __version__
from facewatch.config import Settings
from facewatch.recognizer.calibrate import (
    calibration_of,
    embed_photos,
    labels_of,
    person_folders,
)
from facewatch.recognizer.calibration import MIN_PEOPLE, REPORTED_SIZES, CalibrationError
from facewatch.recognizer.calibration_files import local_path, pack_facts, write_calibration
from facewatch.recognizer.engine import FaceEngine

EXIT_INPUT = 1
#: The smallest watchlist (in templates) a saved calibration must resolve the target FPIR for.
MIN_CHECK_SIZE = 10


def add_calibrate_command(commands: Any, data_dir: argparse.ArgumentParser) -> None:
    """Register ``calibrate``; ``data_dir`` is the parent parser with --data-dir."""
    sub = commands.add_parser(
        "calibrate",
        help="measure the match threshold's false alarms on your own photos (one folder per "
        "person)",
        parents=[data_dir],
    )
    sub.add_argument("folder", type=Path, metavar="DIR")
    sub.add_argument(
        "--target-fpir",
        type=float,
        help="FPIR the printed thresholds are for (default: watchlist.target_fpir)",
    )
    sub.add_argument("--dry-run", action="store_true", help="measure and print, but do not save")
    sub.set_defaults(handler=_calibrate)


def _error(message: str) -> None:
    print(f"facewatch: error: {message}", file=sys.stderr)


def _calibrate(args: argparse.Namespace, settings: Settings) -> int:
    target = args.target_fpir if args.target_fpir is not None else settings.watchlist.target_fpir
    if not 0.0 < target < 1.0:
        _error(f"--target-fpir must lie between 0 and 1, not {target}")
        return EXIT_INPUT
    kept = "the pack's default calibration (or its threshold) stays in effect"
    try:
        people = person_folders(args.folder)
    except CalibrationError as exc:
        _error(f"{exc}; {kept}")
        return EXIT_INPUT
    if len(people) < MIN_PEOPLE:
        _error(
            f"{args.folder} holds photos of {len(people)} people: a calibration needs at least "
            f"{MIN_PEOPLE}; {kept}"
        )
        return EXIT_INPUT
    engine = FaceEngine.load(settings.engine)
    paths, person_ids = labels_of(people)
    bar = tqdm(total=len(paths), unit="photo", disable=not sys.stderr.isatty(), file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.n = done
        bar.refresh()

    photos = embed_photos(engine, paths, progress)
    bar.close()
    for source, reason in photos.unreadable.items():
        print(f"facewatch: skipped {source}: {reason}", file=sys.stderr)
    data_dir = settings.data_dir.expanduser().resolve()
    provenance = {
        "pack": pack_facts(engine.pack),
        "data": {
            "folder": str(args.folder.resolve()),
            "people": len(people),
            "photos": len(paths),
            "unreadable": len(photos.unreadable),
            "no_face": photos.no_face,
            "templates_per_person": 1,
        },
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "facewatch": __version__,
        "command": "facewatch calibrate",
    }
    record: dict[str, Any] = {
        "pack": engine.pack.id,
        "people": len(people),
        "photos": len(paths),
        "skipped": {"unreadable": len(photos.unreadable), "no_face": photos.no_face},
        "target_fpir": target,
    }
    try:
        calibration = calibration_of(photos, person_ids, provenance)
    except CalibrationError as exc:
        _emit({**record, "saved": None, "error": str(exc)})
        _error(f"{exc}; {kept}")
        return EXIT_INPUT
    record |= {
        "comparisons": calibration.comparisons,
        "people_used": calibration.people,
        "photos_used": calibration.photos,
        "supported_max_threshold": calibration.supported_max,
        "smallest_rate": calibration.smallest_rate,
        "thresholds": calibration.table(target, REPORTED_SIZES),
    }
    if calibration.threshold_for(target, MIN_CHECK_SIZE).clamped:
        message = (
            f"{calibration.comparisons} comparisons tell false-match rates down to "
            f"{calibration.smallest_rate:.2g} only, not enough for an FPIR of {target:g} at "
            f"{MIN_CHECK_SIZE} templates: add people (and photos); not saved, {kept}"
        )
        _emit({**record, "saved": None, "error": message})
        _error(message)
        return EXIT_INPUT
    target_path = local_path(data_dir, engine.pack)
    if not args.dry_run:
        write_calibration(target_path, calibration)
    _emit({**record, "saved": None if args.dry_run else str(target_path)})
    return 0


def _emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record, separators=(",", ":")) + "\n")
    sys.stdout.flush()
