"""What the alerts WebSocket answers to client messages, and MQTT topic names: pure logic."""

from __future__ import annotations

import json
import math

import pytest

from facewatch.pipeline.alerts import Alert
from facewatch.web.event_filters import EventFilters
from facewatch.web.mqtt import alert_payload, alert_topic, topic_level
from facewatch.web.routes.alerts_ws import answer


@pytest.mark.parametrize(
    ("text", "reply_type", "error_code"),
    [
        ('{"type": "ping"}', "pong", None),
        ('{"filters": {"stream": "a"}}', "filters", None),
        ("not json", "error", "malformed_message"),
        ("[1, 2]", "error", "malformed_message"),
        ('"filters"', "error", "malformed_message"),
        ('{"filters": "stream=a"}', "error", "invalid_filters"),
        ('{"filters": {"camera": "a"}}', "error", "invalid_filters"),
        ('{"filters": {"type": "sighting"}}', "error", "invalid_filters"),
        ('{"filters": {"person": "ada"}}', "error", "invalid_filters"),
        ('{"type": "subscribe"}', "error", "unknown_message"),
        ("{}", "error", "unknown_message"),
    ],
)
def test_client_messages_get_an_answer(text: str, reply_type: str, error_code: str | None) -> None:
    reply = answer(text)
    assert reply.message["type"] == reply_type
    if error_code is None:
        assert "error" not in reply.message
    else:
        assert reply.message["error"]["code"] == error_code
        assert reply.message["error"]["message"]
        assert reply.filters is None


def test_new_filters_replace_the_old_ones() -> None:
    reply = answer('{"filters": {"stream": ["a", "b"], "person": "4", "type": "match"}}')
    expected = EventFilters(frozenset({"a", "b"}), frozenset({4}), frozenset({"match"}))
    assert reply.filters == expected
    assert reply.message == {
        "type": "filters",
        "filters": {"stream": ["a", "b"], "person": [4], "type": ["match"]},
    }
    assert answer('{"filters": {}}').filters == EventFilters()


def make_alert(stream: str, person_id: int | None, similarity: float | None = 0.5) -> Alert:
    person = None if person_id is None else "ada"
    return Alert("01ab", "match", stream, 3, person_id, person, similarity, [1, 2, 3, 4], 5.0, 4.0)


@pytest.mark.parametrize(
    ("stream", "person_id", "topic"),
    [
        ("door", 12, "fw/alerts/door/12"),
        ("door", None, "fw/alerts/door/unknown"),
        ("a/b", 1, "fw/alerts/a_b/1"),
        ("x+#", 1, "fw/alerts/x__/1"),
    ],
)
def test_alert_topics(stream: str, person_id: int | None, topic: str) -> None:
    assert alert_topic("fw", make_alert(stream, person_id)) == topic


def test_a_topic_level_is_never_empty() -> None:
    assert topic_level("") == "_"


def test_the_payload_is_the_alert_json() -> None:
    alert = make_alert("door", 12)
    assert json.loads(alert_payload(alert)) == alert.as_dict()


def test_a_payload_with_numbers_json_cannot_hold_is_refused() -> None:
    with pytest.raises(ValueError):
        alert_payload(make_alert("door", 12, similarity=math.nan))
