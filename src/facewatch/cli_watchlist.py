"""Watchlist commands: ``enroll``, ``import``, ``people``, ``forget``, ``identify``, ``reindex``,
``status``, ``reset``.

Output follows :mod:`facewatch.cli`: JSON lines on stdout, messages on stderr, exit 1 when some
input was refused, 2 when nothing could run. Progress bars appear only on a terminal (stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm import tqdm

from facewatch.config import Settings
from facewatch.errors import EnrollmentRejected, ImageError, PersonNotFoundError
from facewatch.images import read_image
from facewatch.recognizer.engine import FaceEngine
from facewatch.watchlist.service import Photo, Watchlist

EXIT_INPUT = 1
#: Files `import` looks at in a person's folder (others are ignored, not refused).
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}

Handler = Callable[[argparse.Namespace, Settings], int]


def add_commands(commands: Any, data_dir: argparse.ArgumentParser) -> None:
    """Register the watchlist sub-commands; ``data_dir`` is the parent parser with --data-dir."""

    def add(name: str, handler: Handler, text: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = commands.add_parser(name, help=text, parents=[data_dir])
        sub.set_defaults(handler=handler)
        return sub

    enroll = add("enroll", _enroll, "add a person from one or more photos")
    enroll.add_argument("--name", required=True)
    enroll.add_argument("--age", type=int)
    enroll.add_argument("--gender")
    enroll.add_argument("--address")
    enroll.add_argument(
        "--attributes", type=json.loads, default=None, help="free-form details as a JSON object"
    )
    _largest(enroll)
    enroll.add_argument("images", nargs="+", type=Path, metavar="IMAGE")

    imports = add("import", _import, "enroll one person per sub-folder (folder name = name)")
    _largest(imports)
    imports.add_argument("folder", type=Path, metavar="DIR")

    people = add("people", _people, "list or search persons")
    people.add_argument("--search", help="part of a name or address (case-insensitive)")
    people.add_argument("--offset", type=int, default=0)
    people.add_argument("--limit", type=int, default=100)

    forget = add("forget", _forget, "delete a person and all their faces")
    forget.add_argument("person", metavar="PERSON", help="person id or exact name")

    identify = add("identify", _identify, "who is each face in the images")
    identify.add_argument("images", nargs="+", type=Path, metavar="IMAGE")

    add("reindex", _reindex, "embed stored faces with the current model pack")
    add("status", _status, "store and index status")

    reset = add("reset", _reset, "delete every person (asks for --yes)")
    reset.add_argument("--yes", action="store_true", help="really delete everything")


def _largest(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--largest",
        action="store_true",
        help="use the largest face of a photo with several (default: refuse the photo)",
    )


def _emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")
    sys.stdout.flush()


def _error(message: str) -> None:
    print(f"facewatch: error: {message}", file=sys.stderr)


@contextmanager
def _watchlist(settings: Settings) -> Iterator[Watchlist]:
    engine = FaceEngine.load(settings.engine)
    watchlist = Watchlist.open(settings, engine)
    try:
        yield watchlist
    finally:
        watchlist.close()


def _photos(paths: list[Path]) -> tuple[list[Photo], list[dict[str, str]]]:
    photos, unreadable = [], []
    for path in paths:
        try:
            photos.append(Photo(str(path), path.read_bytes()))
        except OSError as exc:
            unreadable.append(
                {"image": str(path), "reason": "not_an_image", "detail": exc.strerror or str(exc)}
            )
    return photos, unreadable


def _enroll(args: argparse.Namespace, settings: Settings) -> int:
    details = {
        "name": args.name,
        "age": args.age,
        "gender": args.gender,
        "address": args.address,
        "attributes": args.attributes or {},
    }
    photos, unreadable = _photos(args.images)
    with _watchlist(settings) as watchlist:
        try:
            result = watchlist.enroll(details, photos, largest=args.largest)
        except EnrollmentRejected as exc:
            rejected = unreadable + [
                {"image": source, "reason": reason, "detail": detail}
                for source, reason, detail in exc.rejected
            ]
            _emit({"person": None, "accepted": [], "warnings": [], "rejected": rejected})
            _error(str(exc))
            return EXIT_INPUT
    rejected = unreadable + [r.as_dict() for r in result.rejected]
    _emit(
        {
            "person": result.person.as_dict(),
            "accepted": [f.as_dict() for f in result.accepted],
            "warnings": [w.as_dict() for w in result.warnings],
            "rejected": rejected,
        }
    )
    # Warnings (a blurry or turned face, enrolled anyway) are not a failure.
    return EXIT_INPUT if rejected else 0


def _import(args: argparse.Namespace, settings: Settings) -> int:
    root: Path = args.folder
    if not root.is_dir():
        _error(f"{root} is not a folder")
        return EXIT_INPUT
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    totals = {"persons": len(folders), "enrolled": 0, "resumed": 0, "failed": 0}
    totals |= {"photos_accepted": 0, "photos_rejected": 0, "photos_skipped": 0}
    totals |= {"photos_with_warnings": 0}
    with _watchlist(settings) as watchlist:
        bar = tqdm(folders, unit="person", disable=not sys.stderr.isatty(), file=sys.stderr)
        for folder in bar:
            record = _import_person(watchlist, folder, largest=args.largest)
            _emit(record)
            totals["photos_accepted"] += len(record["accepted"])
            totals["photos_rejected"] += len(record["rejected"])
            totals["photos_with_warnings"] += len({w["face_id"] for w in record["warnings"]})
            totals["photos_skipped"] += record["skipped"]
            if record["person_id"] is None:
                totals["failed"] += 1
            elif record["resumed"]:
                totals["resumed"] += 1
            else:
                totals["enrolled"] += 1
    _emit({"summary": totals})
    return EXIT_INPUT if totals["failed"] or totals["photos_rejected"] else 0


def _import_person(watchlist: Watchlist, folder: Path, *, largest: bool) -> dict[str, Any]:
    """Enroll one folder; a person of that name from an earlier (interrupted) run is resumed."""
    name = folder.name
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    photos, unreadable = _photos(files)
    record: dict[str, Any] = {
        "person": name,
        "person_id": None,
        "resumed": False,
        "accepted": [],
        "warnings": [],
        "rejected": list(unreadable),
        "skipped": 0,
    }
    existing = watchlist.store.persons_named(name)
    try:
        if existing:
            person = existing[0]
            record |= {"person_id": person.id, "resumed": True}
            # Photos enrolled by the interrupted run are skipped, not refused as duplicates.
            known = {face.image_sha256 for face in watchlist.store.faces_of(person.id)}
            fresh = [p for p in photos if p.digest() not in known]
            record["skipped"] = len(photos) - len(fresh)
            if not fresh:
                return record
            result = watchlist.add_photos(person.id, fresh, largest=largest)
        else:
            result = watchlist.enroll({"name": name}, photos, largest=largest)
            record["person_id"] = result.person.id
    except EnrollmentRejected as exc:
        record["rejected"] += [
            {"image": source, "reason": reason, "detail": detail}
            for source, reason, detail in exc.rejected
        ]
        return record
    record["accepted"] = [f.id for f in result.accepted]
    record["warnings"] = [w.as_dict() for w in result.warnings]
    record["rejected"] += [r.as_dict() for r in result.rejected]
    return record


def _people(args: argparse.Namespace, settings: Settings) -> int:
    with _watchlist(settings) as watchlist:
        page = watchlist.search_persons(text=args.search, offset=args.offset, limit=args.limit)
        for person in page.items:
            _emit(person.as_dict())
    print(f"{len(page.items)} of {page.total} persons (offset {page.offset})", file=sys.stderr)
    return 0


def _forget(args: argparse.Namespace, settings: Settings) -> int:
    with _watchlist(settings) as watchlist:
        try:
            person = watchlist.resolve(args.person)
        except PersonNotFoundError as exc:
            _error(str(exc))
            return EXIT_INPUT
        removed = watchlist.forget(person.id)
    _emit({"forgotten": person.as_dict(), "faces_removed": removed})
    return 0


def _identify(args: argparse.Namespace, settings: Settings) -> int:
    loaded, failures = [], 0
    for path in args.images:
        try:
            loaded.append(
                (str(path), read_image(path, max_pixels=settings.engine.max_image_pixels))
            )
        except ImageError as exc:
            failures += 1
            _error(str(exc))
    if loaded:
        with _watchlist(settings) as watchlist:
            results = watchlist.identify([image for _, image in loaded], [s for s, _ in loaded])
        for (source, _), faces in zip(loaded, results, strict=True):
            if not faces:
                print(f"facewatch: no face in {source}", file=sys.stderr)
            for face in faces:
                _emit(face.as_dict())
    return EXIT_INPUT if failures else 0


def _reindex(args: argparse.Namespace, settings: Settings) -> int:
    with _watchlist(settings) as watchlist:
        bar = tqdm(total=0, unit="face", disable=not sys.stderr.isatty(), file=sys.stderr)

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        result = watchlist.reindex(progress)
        bar.close()
        _emit({"pack": watchlist.pack_id, **result})
    return EXIT_INPUT if result["lost"] else 0


def _status(args: argparse.Namespace, settings: Settings) -> int:
    with _watchlist(settings) as watchlist:
        _emit(watchlist.status())
    return 0


def _reset(args: argparse.Namespace, settings: Settings) -> int:
    if not args.yes:
        _error("reset deletes every person and face: run it again with --yes")
        return EXIT_INPUT
    with _watchlist(settings) as watchlist:
        removed = watchlist.reset(confirm=True)
    _emit({"reset": True, "faces_removed": removed})
    return 0
