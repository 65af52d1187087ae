"""Event filters, times, cursors, snapshot paths and links: pure logic, tables of cases."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

import pytest

from facewatch.web.event_filters import (
    MAX_FILTER_VALUES,
    EventFilters,
    InvalidEventQuery,
    check_alert_id,
    decode_cursor,
    encode_cursor,
    parse_time,
    snapshot_relative,
    with_links,
)


def alert(stream: str = "cam", person_id: int | None = 7, type: str = "match") -> dict[str, Any]:
    return {"id": "0190abc", "stream": stream, "person_id": person_id, "type": type}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({}, EventFilters()),
        ({"stream": "a,b"}, EventFilters(streams=frozenset({"a", "b"}))),
        ({"stream": " a , ,b "}, EventFilters(streams=frozenset({"a", "b"}))),
        ({"stream": ["a", "b"]}, EventFilters(streams=frozenset({"a", "b"}))),
        ({"stream": ""}, EventFilters()),
        ({"person": "3,12"}, EventFilters(person_ids=frozenset({3, 12}))),
        ({"person": 5}, EventFilters(person_ids=frozenset({5}))),
        ({"person": [5, "6"]}, EventFilters(person_ids=frozenset({5, 6}))),
        ({"type": "match,ended"}, EventFilters(types=frozenset({"match", "ended"}))),
        (
            {"stream": "door", "person": "1", "type": "unknown"},
            EventFilters(frozenset({"door"}), frozenset({1}), frozenset({"unknown"})),
        ),
    ],
)
def test_filters_parse_comma_lists_and_lists(given: dict[str, Any], expected: EventFilters) -> None:
    assert EventFilters.parse(**given) == expected


@pytest.mark.parametrize(
    ("given", "parameter"),
    [
        ({"type": "match,sighting"}, "type"),
        ({"person": "ada"}, "person"),
        ({"person": "1.5"}, "person"),
        ({"person": [True]}, "person"),
        ({"stream": [{"a": 1}]}, "stream"),
        ({"stream": "x" * 129}, "stream"),
        ({"stream": ",".join(f"s{n}" for n in range(MAX_FILTER_VALUES + 1))}, "stream"),
    ],
)
def test_filters_refuse_what_cannot_be_used(given: dict[str, Any], parameter: str) -> None:
    with pytest.raises(InvalidEventQuery) as refused:
        EventFilters.parse(**given)
    assert refused.value.parameter == parameter


def test_a_person_filter_is_named_as_the_caller_names_it() -> None:
    with pytest.raises(InvalidEventQuery) as refused:
        EventFilters.parse(person="x", person_parameter="person_id")
    assert refused.value.parameter == "person_id"
    assert "person_id" in str(refused.value)


@pytest.mark.parametrize(
    ("filters", "event", "passes"),
    [
        (EventFilters(), alert(), True),
        (EventFilters(streams=frozenset({"cam"})), alert(), True),
        (EventFilters(streams=frozenset({"door"})), alert(), False),
        (EventFilters(person_ids=frozenset({7})), alert(), True),
        (EventFilters(person_ids=frozenset({8})), alert(), False),
        (EventFilters(person_ids=frozenset({7})), alert(person_id=None), False),
        (EventFilters(types=frozenset({"ended"})), alert(), False),
        (EventFilters(types=frozenset({"ended", "match"})), alert(), True),
        (
            EventFilters(frozenset({"cam"}), frozenset({7}), frozenset({"update"})),
            alert(),
            False,
        ),
    ],
)
def test_filters_match_alerts(filters: EventFilters, event: dict[str, Any], passes: bool) -> None:
    assert filters.matches(event) is passes


def test_filters_show_themselves_sorted() -> None:
    filters = EventFilters.parse("b,a", "10,9", "update,match")
    shown = filters.as_dict()
    assert shown == {"stream": ["a", "b"], "person": [9, 10], "type": ["match", "update"]}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("2026-01-31T08:00:00Z", datetime(2026, 1, 31, 8, tzinfo=UTC)),
        ("2026-01-31T08:00:00", datetime(2026, 1, 31, 8, tzinfo=UTC)),
        ("2026-01-31", datetime(2026, 1, 31, tzinfo=UTC)),
        ("2026-01-31T09:30:00+01:30", datetime(2026, 1, 31, 8, tzinfo=UTC)),
        ("0", datetime(1970, 1, 1, tzinfo=UTC)),
        ("1769846400", datetime(2026, 1, 31, 8, tzinfo=UTC)),
        ("1769846400.5", datetime(2026, 1, 31, 8, 0, 0, 500000, tzinfo=UTC)),
        (1769846400, datetime(2026, 1, 31, 8, tzinfo=UTC)),
        (datetime(2026, 1, 31, 8), datetime(2026, 1, 31, 8, tzinfo=UTC)),
    ],
)
def test_times_are_iso_8601_or_unix_seconds(given: Any, expected: datetime) -> None:
    parsed = parse_time(given)
    assert parsed == expected
    assert parsed.tzinfo == UTC


@pytest.mark.parametrize("given", ["yesterday", "", "2026-13-01", "nan", "inf", "-5", "1e20"])
def test_times_that_are_not_times_are_refused(given: str) -> None:
    with pytest.raises(InvalidEventQuery) as refused:
        parse_time(given, "since")
    assert refused.value.parameter == "since"


@pytest.mark.parametrize("alert_id", ["0", "0190abcdef0123456789", "f" * 40])
def test_cursors_carry_an_alert_id_and_come_back(alert_id: str) -> None:
    cursor = encode_cursor(alert_id)
    assert alert_id not in cursor  # opaque to clients
    assert decode_cursor(cursor) == alert_id


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not base64 !",
        "YmVmb3JlOg",  # "before:" with no id
        "YWZ0ZXI6MTIz",  # "after:123"
        "YmVmb3JlOnh5eg",  # "before:xyz"
        "x" * 200,
    ],
)
def test_cursors_not_handed_out_are_refused(cursor: str) -> None:
    with pytest.raises(InvalidEventQuery) as refused:
        decode_cursor(cursor)
    assert refused.value.parameter == "cursor"


@pytest.mark.parametrize(
    ("given", "expected"),
    [("0190ABC", "0190abc"), (" 0190abc ", "0190abc")],
)
def test_alert_ids_are_normalised(given: str, expected: str) -> None:
    assert check_alert_id(given) == expected


@pytest.mark.parametrize("given", ["", "0190abg", "1" * 41, "../x", "1 OR 1=1"])
def test_what_is_not_an_alert_id_is_refused(given: str) -> None:
    with pytest.raises(InvalidEventQuery):
        check_alert_id(given)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("snapshots/2026-01-31/cam/a-face.jpg", "2026-01-31/cam/a-face.jpg"),
        ("2026-01-31/cam/a-face.jpg", "2026-01-31/cam/a-face.jpg"),
        ("2026-01-31//cam/./a-face.JPG", "2026-01-31/cam/a-face.JPG"),
        ("a.jpeg", "a.jpeg"),
        ("snapshots/snapshots/a.jpg", "snapshots/a.jpg"),
        ("../etc/passwd", None),
        ("2026-01-31/../../facewatch.db", None),
        ("snapshots/../faces/x.jpg", None),
        ("/etc/shadow.jpg", None),
        ("..\\..\\x.jpg", None),
        ("a.jpg\x00.png", None),
        ("2026-01-31/cam/a-face.png", None),
        ("snapshots", None),
        ("", None),
        (".", None),
        ("a/" * 600 + "x.jpg", None),
    ],
)
def test_snapshot_paths_stay_in_the_snapshots_folder(path: str, expected: str | None) -> None:
    relative = snapshot_relative(path)
    assert relative == (None if expected is None else PurePosixPath(expected))


def test_alerts_link_their_snapshots() -> None:
    shown = with_links(
        {
            "id": "1",
            "snapshot": "snapshots/2026-01-31/cam/1-face.jpg",
            "frame_snapshot": "../../etc/passwd",
        }
    )
    assert shown["snapshot_url"] == "/api/snapshots/2026-01-31/cam/1-face.jpg"
    assert shown["frame_snapshot_url"] is None
    assert shown["snapshot"] == "snapshots/2026-01-31/cam/1-face.jpg"
    assert with_links({"id": "2", "snapshot": None})["snapshot_url"] is None
