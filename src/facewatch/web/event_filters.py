"""What readers of the event history ask for, checked and matched without I/O.

Filters (streams, persons, alert types) for the REST API, the alerts WebSocket and the store
queries; times given as ISO-8601 or UNIX seconds; the opaque page cursors; and snapshot paths,
which must never lead outside the snapshots folder.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from facewatch.errors import FacewatchError

ALERT_TYPES = ("match", "update", "ended", "unknown")
#: Events per page at most (REST ``limit``).
MAX_PAGE = 500
#: Values per filter at most: enough for any screen, small enough for an SQL ``IN``.
MAX_FILTER_VALUES = 100
#: Where snapshot JPEGs are served from (``GET /api/snapshots/<day>/<stream>/<file>``).
SNAPSHOT_ROUTE = "/api/snapshots/"
#: Snapshots live in this folder of the data directory; alerts name them from the data directory.
SNAPSHOT_DIR = "snapshots"
SNAPSHOT_SUFFIXES = (".jpg", ".jpeg")

_ALERT_ID = re.compile(r"[0-9a-f]{1,40}")
_CURSOR_PREFIX = "before:"


class InvalidEventQuery(FacewatchError, ValueError):
    """A filter, time or cursor that cannot be used; ``parameter`` names it."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
        self.message = message


# --- pure logic: filters, times, cursors, snapshot paths ----------------------------------------


@dataclass(frozen=True, slots=True)
class EventFilters:
    """Which alerts a reader wants; an empty set lets every value through.

    Attributes:
        streams: stream ids.
        person_ids: person ids (alerts about nobody never match a person filter).
        types: alert types (``match``, ``update``, ``ended``, ``unknown``).
    """

    streams: frozenset[str] = frozenset()
    person_ids: frozenset[int] = frozenset()
    types: frozenset[str] = frozenset()

    @classmethod
    def parse(
        cls,
        stream: str | Iterable[str] | None = None,
        person: str | int | Iterable[str | int] | None = None,
        type: str | Iterable[str] | None = None,
        *,
        person_parameter: str = "person",
    ) -> EventFilters:
        """Filters from comma-separated strings or lists, as clients send them.

        Raises:
            InvalidEventQuery: an unknown type, a person id that is not a whole number, an
                empty or overlong stream id, more than :data:`MAX_FILTER_VALUES` values, or a
                value that is no text, number or list of them.
        """
        streams = _values("stream", stream)
        for stream_id in streams:
            if len(stream_id) > 128:
                raise InvalidEventQuery("stream", "a stream id is at most 128 characters")
        persons: set[int] = set()
        for value in _values(person_parameter, person):
            try:
                persons.add(int(value))
            except ValueError:
                raise InvalidEventQuery(
                    person_parameter, f"{value!r} is not a person id (a whole number)"
                ) from None
        types = _values("type", type)
        unknown = sorted(types - set(ALERT_TYPES))
        if unknown:
            raise InvalidEventQuery(
                "type", f"unknown alert type {unknown[0]!r}; one of {', '.join(ALERT_TYPES)}"
            )
        return cls(frozenset(streams), frozenset(persons), frozenset(types))

    def matches(self, alert: Mapping[str, Any]) -> bool:
        """Whether an alert (its dict) passes every filter."""
        if self.streams and alert.get("stream") not in self.streams:
            return False
        if self.person_ids and alert.get("person_id") not in self.person_ids:
            return False
        return not self.types or alert.get("type") in self.types

    def as_dict(self) -> dict[str, list[Any]]:
        return {
            "stream": sorted(self.streams),
            "person": sorted(self.person_ids),
            "type": sorted(self.types),
        }


def _values(parameter: str, given: str | int | Iterable[str | int] | None) -> set[str]:
    if given is None:
        return set()
    # Clients send JSON: a float, a bool or an object is none of the shapes a filter takes.
    if isinstance(given, bool | Mapping) or not isinstance(given, Iterable | int):
        raise InvalidEventQuery(
            parameter, f"expected text, a number or a list of them, got {type(given).__name__}"
        )
    items: Iterable[str | int] = (
        given.split(",")
        if isinstance(given, str)
        else ([given] if isinstance(given, int) else given)
    )
    values: set[str] = set()
    for item in items:
        if isinstance(item, bool) or not isinstance(item, str | int):
            raise InvalidEventQuery(parameter, f"expected text or numbers, got {item!r}")
        text = str(item).strip()
        if text:
            values.add(text)
    if len(values) > MAX_FILTER_VALUES:
        raise InvalidEventQuery(parameter, f"at most {MAX_FILTER_VALUES} values")
    return values


def parse_time(value: str | float | datetime, parameter: str = "time") -> datetime:
    """A UTC datetime from ISO-8601 (a time without zone is UTC) or UNIX seconds.

    Raises:
        InvalidEventQuery: anything else, or a time outside years 1970..9999.
    """
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, bool):
        raise InvalidEventQuery(parameter, "expected a time")
    seconds: float | None = None
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                raise InvalidEventQuery(
                    parameter,
                    f"{text[:40]!r} is not a time: use ISO-8601 (2026-01-31T08:00:00Z) or "
                    "UNIX seconds",
                ) from None
            return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if not math.isfinite(seconds) or not 0 <= seconds < 253402300800:
        raise InvalidEventQuery(parameter, "UNIX seconds between 1970 and 9999 expected")
    return datetime.fromtimestamp(seconds, UTC)


def is_alert_id(value: str) -> bool:
    """Whether ``value`` looks like an alert id (lowercase hexadecimal, at most 40 characters)."""
    return _ALERT_ID.fullmatch(value) is not None


def check_alert_id(value: str, parameter: str = "after") -> str:
    """``value`` as an alert id; raises :class:`InvalidEventQuery` when it is not one."""
    text = value.strip().lower()
    if not is_alert_id(text):
        raise InvalidEventQuery(parameter, f"{value[:48]!r} is not an alert id")
    return text


def encode_cursor(alert_id: str) -> str:
    """The opaque cursor of the page that follows the event ``alert_id`` (newest first)."""
    raw = (_CURSOR_PREFIX + alert_id).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The alert id a cursor continues before.

    Raises:
        InvalidEventQuery: not a cursor this server handed out.
    """
    problem = InvalidEventQuery("cursor", "not a cursor from a previous page")
    if len(cursor) > 128:
        raise problem
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise problem from None
    if not raw.startswith(_CURSOR_PREFIX) or not is_alert_id(raw[len(_CURSOR_PREFIX) :]):
        raise problem
    return raw[len(_CURSOR_PREFIX) :]


def snapshot_relative(path: str) -> PurePosixPath | None:
    """A snapshot path inside the snapshots folder, or None when it can never be one.

    Accepts what alerts carry (``snapshots/<day>/<stream>/<file>.jpg``, relative to the data
    directory) and the same without the ``snapshots/`` folder. Refuses absolute paths, ``..``,
    backslashes, NUL and anything but a JPEG name. Symbolic links are the resolver's business
    (:func:`resolve_snapshot`).
    """
    if not path or len(path) > 1024 or "\x00" in path or "\\" in path or path.startswith("/"):
        return None
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if not parts or any(part == ".." for part in parts):
        return None
    if parts[0] == SNAPSHOT_DIR:
        parts = parts[1:]
    if not parts or not parts[-1].lower().endswith(SNAPSHOT_SUFFIXES):
        return None
    return PurePosixPath(*parts)


def resolve_snapshot(data_dir: Path, path: str) -> Path | None:
    """The real file a snapshot path names, or None unless it is a file inside the folder.

    Links are followed and the result must still lie under ``<data_dir>/snapshots``.
    """
    relative = snapshot_relative(path)
    if relative is None:
        return None
    root = (data_dir / SNAPSHOT_DIR).resolve()
    try:
        target = (root / relative).resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a loop of links
        return None
    if not target.is_relative_to(root) or not target.is_file():
        return None
    return target


def with_links(alert: Mapping[str, Any]) -> dict[str, Any]:
    """The alert's dict with ``snapshot_url`` and ``frame_snapshot_url`` (None without one)."""
    out = dict(alert)
    for key in ("snapshot", "frame_snapshot"):
        value = alert.get(key)
        relative = snapshot_relative(value) if isinstance(value, str) else None
        out[f"{key}_url"] = None if relative is None else SNAPSHOT_ROUTE + relative.as_posix()
    return out
