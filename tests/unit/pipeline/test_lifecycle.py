"""Alert lifecycle: event sequences, cooldowns, unknown faces and bounded state, as tables."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from facewatch.pipeline.identity import NO_SIMILARITY, Decision
from facewatch.pipeline.lifecycle import AlertLifecycle, LifecycleConfig, LifecycleEvent


@dataclass(frozen=True)
class D:
    """A decision about a track: who (None = unknown), how similar, and when."""

    track: int
    person: int | None
    similarity: float
    now: float
    started: float = 0.0
    embeddings: int = 2
    stream: str = "cam"


@dataclass(frozen=True)
class End:
    """A track ended."""

    track: int
    now: float
    stream: str = "cam"


Step = D | End
# An expected event, shortened: (type, track, person, similarity[, stream])
Expected = tuple[object, ...]


def play(lifecycle: AlertLifecycle, steps: list[Step]) -> list[Expected]:
    events: list[LifecycleEvent] = []
    for step in steps:
        if isinstance(step, D):
            events += lifecycle.on_decision(
                step.stream,
                step.track,
                Decision(step.person, step.similarity),
                step.now,
                track_started_at=step.started,
                embeddings=step.embeddings,
            )
        else:
            events += lifecycle.on_track_ended(step.stream, step.track, step.now)
    return [short(e) for e in events]


def short(e: LifecycleEvent) -> Expected:
    out: Expected = (e.type, e.track, e.person_id, e.similarity)
    if e.stream != "cam":
        out += (e.stream,)
    return out


UNKNOWN = LifecycleConfig(unknown_events=True)
# (config, steps, expected events, expected suppressed count)
CASES: dict[str, tuple[LifecycleConfig, list[Step], list[Expected], int]] = {
    "match then ended": (
        LifecycleConfig(),
        [D(1, 7, 0.6, 1.0), End(1, 5.0)],
        [("match", 1, 7, 0.6), ("ended", 1, 7, 0.6)],
        0,
    ),
    "same person again: update only on a gain of update_min_gain": (
        LifecycleConfig(),
        [D(1, 7, 0.6, 1), D(1, 7, 0.62, 2), D(1, 7, 0.66, 3), D(1, 7, 0.7, 4), End(1, 5)],
        [("match", 1, 7, 0.6), ("update", 1, 7, 0.66), ("ended", 1, 7, 0.66)],
        0,
    ),
    "unknown first, then named": (
        LifecycleConfig(),
        [D(1, None, 0.3, 1), D(1, None, 0.35, 3), D(1, 7, 0.6, 4), End(1, 5)],
        [("match", 1, 7, 0.6), ("ended", 1, 7, 0.6)],
        0,
    ),
    "ended only after a match": (
        LifecycleConfig(),
        [D(1, None, 0.3, 1), End(1, 5), End(2, 5), End(1, 6)],
        [],
        0,
    ),
    "a named track falling below the threshold keeps its identity": (
        LifecycleConfig(),
        [D(1, 7, 0.6, 1), D(1, None, 0.3, 2), End(1, 3)],
        [("match", 1, 7, 0.6), ("ended", 1, 7, 0.6)],
        0,
    ),
    "cooldown suppresses another track of the person": (
        LifecycleConfig(),
        [D(1, 7, 0.6, 1), End(1, 5), D(2, 7, 0.7, 20, started=19), End(2, 25)],
        [("match", 1, 7, 0.6), ("ended", 1, 7, 0.6)],
        1,
    ),
    "cooldown expires": (
        LifecycleConfig(),
        [D(1, 7, 0.6, 1), End(1, 5), D(2, 7, 0.7, 36, started=35), End(2, 40)],
        [("match", 1, 7, 0.6), ("ended", 1, 7, 0.6), ("match", 2, 7, 0.7), ("ended", 2, 7, 0.7)],
        0,
    ),
    "cooldown runs from the last sight, suppressed tracks included": (
        LifecycleConfig(),
        [D(1, 7, 0.6, 1), End(1, 5), D(2, 7, 0.6, 20), End(2, 30), D(3, 7, 0.6, 55)],
        [("match", 1, 7, 0.6), ("ended", 1, 7, 0.6)],
        2,
    ),
    "a person still tracked stays in cooldown however long": (
        LifecycleConfig(),
        [D(1, 7, 0.6, 1), D(2, 7, 0.6, 500)],
        [("match", 1, 7, 0.6)],
        1,
    ),
    "a suppressed track counts once": (
        LifecycleConfig(),
        [D(1, 7, 0.6, 1), D(2, 7, 0.6, 2), D(2, 7, 0.7, 4), D(2, 7, 0.8, 6), End(2, 7)],
        [("match", 1, 7, 0.6)],
        1,
    ),
    "cooldown is per stream": (
        LifecycleConfig(),
        [D(1, 7, 0.6, 1), D(1, 7, 0.6, 2, stream="door")],
        [("match", 1, 7, 0.6), ("match", 1, 7, 0.6, "door")],
        0,
    ),
    "cooldown is per person": (
        LifecycleConfig(),
        [D(1, 7, 0.6, 1), D(2, 8, 0.6, 2)],
        [("match", 1, 7, 0.6), ("match", 2, 8, 0.6)],
        0,
    ),
    "cooldown_s = 0 disables suppression": (
        LifecycleConfig(cooldown_s=0.0),
        [D(1, 7, 0.6, 1), End(1, 2), D(2, 7, 0.6, 3), D(3, 7, 0.6, 3)],
        [("match", 1, 7, 0.6), ("ended", 1, 7, 0.6), ("match", 2, 7, 0.6), ("match", 3, 7, 0.6)],
        0,
    ),
    "the clock going back far expires the cooldown": (
        LifecycleConfig(),
        [D(1, 7, 0.6, 100), End(1, 101), D(2, 7, 0.6, 2, started=1)],
        [("match", 1, 7, 0.6), ("ended", 1, 7, 0.6), ("match", 2, 7, 0.6)],
        0,
    ),
    "unknown events: once, after unknown_after_s and unknown_after_embeddings": (
        UNKNOWN,
        [
            D(1, None, 0.3, 1.0, embeddings=5),  # tracked only 1 s
            D(1, None, 0.35, 2.5, embeddings=1),  # one embedding only
            D(1, None, 0.4, 3.0, embeddings=2),
            D(1, None, 0.45, 4.0, embeddings=3),
            End(1, 5),
        ],
        [("unknown", 1, None, 0.4), ("ended", 1, None, 0.4)],
        0,
    ),
    "unknown events off": (
        LifecycleConfig(),
        [D(1, None, 0.4, 3.0), D(1, None, 0.45, 4.0), End(1, 5)],
        [],
        0,
    ),
    "an unknown later named": (
        UNKNOWN,
        [D(1, None, 0.3, 3.0), D(1, 7, 0.6, 4), End(1, 5)],
        [("unknown", 1, None, 0.3), ("match", 1, 7, 0.6), ("ended", 1, 7, 0.6)],
        0,
    ),
    "no candidate at all: unknown without a similarity": (
        UNKNOWN,
        [D(1, None, NO_SIMILARITY, 3.0), End(1, 5)],
        [("unknown", 1, None, None), ("ended", 1, None, None)],
        0,
    ),
    "a named track is never called unknown": (
        UNKNOWN,
        [D(1, 7, 0.6, 1), D(1, None, 0.3, 5), D(2, 7, 0.6, 6), D(2, None, 0.3, 9)],
        [("match", 1, 7, 0.6)],
        1,
    ),
}


@pytest.mark.parametrize(("config", "steps", "expected", "suppressed"), CASES.values(), ids=CASES)
def test_lifecycle(
    config: LifecycleConfig, steps: list[Step], expected: list[Expected], suppressed: int
) -> None:
    lifecycle = AlertLifecycle(config)
    assert play(lifecycle, steps) == expected
    assert lifecycle.suppressed == suppressed


@pytest.mark.parametrize(
    "before",
    [
        pytest.param([D(1, 7, 0.6, 1)], id="alerted"),
        pytest.param([D(2, 7, 0.6, 0), D(1, 7, 0.6, 1)], id="suppressed"),
        pytest.param([D(1, 7, 0.6, 1), D(1, None, 0.2, 2)], id="alerted, then below threshold"),
    ],
)
def test_a_track_is_never_named_as_someone_else(before: list[Step]) -> None:
    lifecycle = AlertLifecycle()
    play(lifecycle, before)
    with pytest.raises(ValueError, match="never changes"):
        play(lifecycle, [D(1, 8, 0.7, 3)])


def test_state_stays_bounded_over_many_tracks() -> None:
    rng = random.Random(0)
    lifecycle = AlertLifecycle()
    streams = ["a", "b", "c"]
    now = 0.0
    for track in range(10_000):
        now += 1.0
        stream = rng.choice(streams)
        person = rng.choice([None, rng.randrange(1000)])
        steps: list[Step] = [
            D(track, person, 0.6, now, started=now - 3, stream=stream),
            End(track, now + 0.5, stream=stream),
        ]
        play(lifecycle, steps)
    assert lifecycle.active() == 0
    # Only persons seen within the last cooldown or two (one per second here) can remain.
    assert lifecycle.cooldowns() <= 2 * int(LifecycleConfig().cooldown_s) + 2


def test_live_tracks_are_counted_and_forget_stream_drops_them() -> None:
    lifecycle = AlertLifecycle()
    play(lifecycle, [D(1, 7, 0.6, 1), D(2, None, 0.2, 1), D(1, 7, 0.6, 1, stream="door")])
    assert lifecycle.active() == 3 and lifecycle.cooldowns() == 2
    lifecycle.forget_stream("cam")
    assert lifecycle.active() == 1 and lifecycle.cooldowns() == 1
    assert lifecycle.on_track_ended("cam", 1, 2) == []
    lifecycle.forget_stream("nowhere")
    # The forgotten stream starts clean: no cooldown left for person 7 there.
    assert play(lifecycle, [D(3, 7, 0.6, 3)]) == [("match", 3, 7, 0.6)]


@pytest.mark.parametrize(
    "kwargs",
    [{"cooldown_s": -1.0}, {"update_min_gain": -0.1}, {"unknown_after_embeddings": -1}],
    ids=["negative cooldown", "negative gain", "negative embeddings"],
)
def test_config_is_validated(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        LifecycleConfig(**kwargs)  # type: ignore[arg-type]
