"""Alert lifecycle: which decisions about tracks become events, with per-stream cooldowns.

A pure state machine: no I/O, no clock of its own (every call passes ``now``), no threads.

Events of one track:

- ``match`` the first time the track's decision names a person;
- ``update`` when the track, having matched, is named as the same person with a similarity at
  least ``update_min_gain`` above that of the track's last alert;
- ``unknown`` (only with ``unknown_events``) once, for a track never named that has been
  tracked for ``unknown_after_s`` and embedded ``unknown_after_embeddings`` times;
- ``ended`` when a track that produced a ``match`` (or an ``unknown``) ends, with the person and
  similarity of its last alert.

A track's person never changes: once a decision named someone (alerted or suppressed), a
decision naming anyone else is refused with ``ValueError``. The caller splits such a track
instead (the old one ends, the face starts a new track), so that one track, one alert history
and one snapshot always belong to one person.

Cooldown, per (stream, person): once a ``match`` for person P was emitted on stream S, another
track of P on S does not produce a ``match`` (it is counted in ``suppressed``) while P is still
tracked on S or was last seen on S less than ``cooldown_s`` ago. The cooldown thus runs from the
last sight of P rather than from the first alert: someone who stands in view for ten minutes
while occlusions split their track in pieces is announced once, not once per piece. A suppressed
track is still followed: if it turns out to be another person, that person gets a ``match``
subject to its own cooldown; it gets no ``ended``. The key includes the stream on purpose: the
same person appearing on another camera is alerted, since an operator wants to know that a
person moved. ``cooldown_s = 0`` disables suppression.

Memory stays bounded: a track's state goes when it ends, a stream's with
:meth:`AlertLifecycle.forget_stream`, and a cooldown entry once no track holds it and it has
expired. Times of one stream should come from one clock (monotonic time is best); a cooldown
entry more than ``cooldown_s`` in the future (a clock that jumped back) counts as expired.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from facewatch.pipeline.identity import Decision

EventType = Literal["match", "update", "ended", "unknown"]


@dataclass(frozen=True, slots=True)
class LifecycleConfig:
    """When decisions become events.

    Attributes:
        cooldown_s: seconds after the last sight of an alerted person on a stream during which
            a new track of that person there raises no ``match``; 0 disables the cooldown.
        update_min_gain: rise in similarity for the same person, since the track's last alert,
            that raises an ``update``.
        unknown_events: whether tracks never named raise ``unknown`` (and then ``ended``).
        unknown_after_s: seconds a track must have been tracked before it is called unknown.
        unknown_after_embeddings: embeddings a track must have had before it is called unknown.
    """

    cooldown_s: float = 30.0
    update_min_gain: float = 0.05
    unknown_events: bool = False
    unknown_after_s: float = 2.0
    unknown_after_embeddings: int = 2

    def __post_init__(self) -> None:
        if self.cooldown_s < 0 or self.unknown_after_s < 0:
            raise ValueError("cooldown_s and unknown_after_s must not be negative")
        if self.update_min_gain < 0:
            raise ValueError("update_min_gain must not be negative")
        if self.unknown_after_embeddings < 0:
            raise ValueError("unknown_after_embeddings must not be negative")


@dataclass(frozen=True, slots=True)
class LifecycleEvent:
    """One alert-worthy change of a track.

    Attributes:
        type: ``match``, ``update``, ``ended`` or ``unknown``.
        stream: the stream id.
        track: the track id within the stream.
        person_id: the person named; None for ``unknown`` (and the ``ended`` of an unknown).
        similarity: the cosine similarity behind it; None when there was no candidate.
    """

    type: EventType
    stream: str
    track: int
    person_id: int | None
    similarity: float | None


@dataclass(slots=True)
class _TrackState:
    # The person the track holds a cooldown entry for: the one alerted, or the one it was
    # suppressed for. None while the track was never named.
    person_id: int | None = None
    alerted: bool = False  # a match was emitted
    alert_similarity: float | None = None  # of the last match/update
    unknown: bool = False  # an unknown event was emitted
    unknown_similarity: float | None = None
    suppressed_for: set[int] = field(default_factory=set)


@dataclass(slots=True)
class _Cooldown:
    last_seen: float  # the last time a track on the stream was known to be this person
    holders: int = 0  # live tracks whose identity is this person


def _similarity(value: float) -> float | None:
    # Decisions without any candidate carry -inf, which has no place in an event (or JSON).
    return value if math.isfinite(value) else None


class AlertLifecycle:
    """Turns decisions about tracks into :class:`LifecycleEvent` s, across streams.

    Attributes:
        suppressed: matches suppressed by a cooldown so far (once per track and person).
    """

    def __init__(self, config: LifecycleConfig = LifecycleConfig()) -> None:
        self.config = config
        self.suppressed = 0
        self._tracks: dict[str, dict[int, _TrackState]] = {}
        self._cooldowns: dict[str, dict[int, _Cooldown]] = {}
        self._next_prune: dict[str, float] = {}

    def active(self) -> int:
        """How many tracks have state kept (those with a decision and not yet ended)."""
        return sum(len(tracks) for tracks in self._tracks.values())

    def cooldowns(self) -> int:
        """How many (stream, person) cooldown entries are kept."""
        return sum(len(entries) for entries in self._cooldowns.values())

    def on_decision(
        self,
        stream: str,
        track: int,
        decision: Decision,
        now: float,
        *,
        track_started_at: float,
        embeddings: int,
    ) -> list[LifecycleEvent]:
        """Take a new decision about a live track.

        Args:
            stream: the stream id.
            track: the track id, unique within the stream.
            decision: who the track is now, from its current template.
            now: the time of the decision, in seconds.
            track_started_at: when the track started, on the same clock.
            embeddings: how many embeddings the track's template pools so far.

        Returns:
            The events raised: none, or one.

        Raises:
            ValueError: the decision names someone other than the person the track was already
                named as (split the track instead).
        """
        self._prune(stream, now)
        state = self._tracks.setdefault(stream, {}).setdefault(track, _TrackState())
        person = decision.person_id
        similarity = _similarity(decision.similarity)

        if person is None:
            cfg = self.config
            if (
                cfg.unknown_events
                and state.person_id is None
                and not state.unknown
                and now - track_started_at >= cfg.unknown_after_s
                and embeddings >= cfg.unknown_after_embeddings
            ):
                state.unknown = True
                state.unknown_similarity = similarity
                return [LifecycleEvent("unknown", stream, track, None, similarity)]
            # A named track that is now below the threshold keeps its identity: the alert
            # stands until a decision names someone else.
            return []

        if state.person_id is not None and person != state.person_id:
            raise ValueError(
                f"track {track} of {stream} is person {state.person_id}, not {person}: a track's "
                "person never changes; split the track"
            )
        if state.alerted:
            self._hold(stream, state, person, now)
            gained = (
                similarity is not None
                and state.alert_similarity is not None
                and similarity >= state.alert_similarity + self.config.update_min_gain
            )
            if not gained:
                return []
            state.alert_similarity = similarity
            return [LifecycleEvent("update", stream, track, person, similarity)]

        if person == state.person_id:  # the person it was suppressed for
            self._hold(stream, state, person, now)
            return []
        if self._cooling(stream, person, now):
            if person not in state.suppressed_for:
                state.suppressed_for.add(person)
                self.suppressed += 1
            self._hold(stream, state, person, now)
            return []
        self._hold(stream, state, person, now)
        state.alerted = True
        state.alert_similarity = similarity
        return [LifecycleEvent("match", stream, track, person, similarity)]

    def on_track_ended(self, stream: str, track: int, now: float) -> list[LifecycleEvent]:
        """A track ended (lost, or its stream stopped); forgets it.

        Returns:
            ``ended`` for a track that raised a ``match`` (or an ``unknown``), else nothing.
            A track never seen, or already ended, gives nothing.
        """
        tracks = self._tracks.get(stream)
        state = None if tracks is None else tracks.pop(track, None)
        if tracks is not None and not tracks:
            del self._tracks[stream]
        if state is None:
            return []
        person = state.person_id
        self._release(stream, state, now)
        self._prune(stream, now)
        if state.alerted:
            return [LifecycleEvent("ended", stream, track, person, state.alert_similarity)]
        if state.unknown:
            return [LifecycleEvent("ended", stream, track, None, state.unknown_similarity)]
        return []

    def forget_stream(self, stream: str) -> None:
        """Drop all state of a stream that was removed (no events)."""
        self._tracks.pop(stream, None)
        self._cooldowns.pop(stream, None)
        self._next_prune.pop(stream, None)

    def _cooling(self, stream: str, person: int, now: float) -> bool:
        entry = self._cooldowns.get(stream, {}).get(person)
        return entry is not None and (entry.holders > 0 or self._fresh(entry, now))

    def _fresh(self, entry: _Cooldown, now: float) -> bool:
        # abs(): a decision a little out of order is still fresh, but an entry far in the
        # future belongs to a clock that jumped back (a looping file) and has expired.
        return abs(now - entry.last_seen) <= self.config.cooldown_s

    def _hold(self, stream: str, state: _TrackState, person: int, now: float) -> None:
        """Make ``person`` the track's identity and mark them seen on ``stream`` at ``now``."""
        if state.person_id != person:
            self._release(stream, state, now)
            state.person_id = person
            if self.config.cooldown_s > 0:
                entries = self._cooldowns.setdefault(stream, {})
                entries.setdefault(person, _Cooldown(now)).holders += 1
        entry = self._cooldowns.get(stream, {}).get(person)
        if entry is not None:
            entry.last_seen = now

    def _release(self, stream: str, state: _TrackState, now: float) -> None:
        """The track no longer holds its person's entry; the cooldown runs from ``now``."""
        if state.person_id is None:
            return
        entry = self._cooldowns.get(stream, {}).get(state.person_id)
        if entry is not None:
            entry.holders -= 1
            entry.last_seen = now
        state.person_id = None

    def _prune(self, stream: str, now: float) -> None:
        """Drop the stream's expired entries, at most once per ``cooldown_s`` of its time."""
        entries = self._cooldowns.get(stream)
        if entries is None:
            return
        due = self._next_prune.get(stream)
        # Not yet due; a time far before the due time means the clock went back: prune now.
        if due is not None and due - self.config.cooldown_s <= now < due:
            return
        for person in [p for p, e in entries.items() if e.holders <= 0 and not self._fresh(e, now)]:
            del entries[person]
        if entries:
            self._next_prune[stream] = now + self.config.cooldown_s
        else:
            del self._cooldowns[stream]
            self._next_prune.pop(stream, None)
