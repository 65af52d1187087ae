"""Who a track is: when to embed its faces, how to pool the embeddings, and the decision.

Embedding every face of every frame would waste the GPU on near-identical crops. Instead each
detection gets a cheap :func:`face_quality`, and :func:`should_embed` embeds a track's face only
when it is clearly better than what the track already has, or when a while has passed. A
:class:`TrackEvidence` keeps the track's best few embeddings and pools them into one template,
which is searched in the watchlist; :func:`decide` turns the search result into a
:class:`Decision`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from facewatch.pipeline.types import Faces

F32 = NDArray[np.float32]

#: The similarity of a decision made without any candidate: below every real similarity.
NO_SIMILARITY = float("-inf")


def face_quality(
    faces: Faces, *, reference_size: float = 112.0, reference_sharpness: float = 150.0
) -> F32:
    """How good each face is for recognition, in (0, 1], to rank a track's faces.

    The product of four factors:

    - the detection score;
    - ``min(1, size / reference_size)``, where size is the shorter side of the box in pixels:
      the embedder sees a 112x112 aligned crop, so a larger face adds no detail, while a smaller
      one is upsampled and loses it about in proportion;
    - ``0.25 + 0.75 × frontal`` (frontal 1 facing the camera, towards 0 in profile);
    - ``0.25 + 0.75 × min(1, sharpness / reference_sharpness)``, where sharpness is the variance
      of the Laplacian of the aligned grey crop: motion blur and defocus lower it.

    A product, because each factor can spoil an embedding; but pose and sharpness keep a floor of
    a quarter, because on real video they are too coarse to veto a face: a small face in a 640x360
    clip has a sharpness under 10 and a three-quarter view often reads as frontal 0, and both
    still match their person (measured on ``fr_short_hamilton_clip.mp4``). Quality ranks faces
    of one track and weighs their embeddings; it rejects nothing by itself.

    Args:
        faces: N faces, with ``sharpness`` and ``frontal`` filled in.
        reference_size: shorter box side in pixels at and above which size stops mattering.
        reference_sharpness: Laplacian variance at and above which sharpness stops mattering.

    Returns:
        (N,) float32 quality.
    """
    if reference_size <= 0 or reference_sharpness <= 0:
        raise ValueError("reference_size and reference_sharpness must be positive")
    size = np.clip(faces.size / reference_size, 0.0, 1.0)
    sharp = np.clip(faces.sharpness / reference_sharpness, 0.0, 1.0)
    score = np.clip(faces.score, 0.0, 1.0)
    frontal = np.clip(faces.frontal, 0.0, 1.0)
    quality: F32 = (score * size * (0.25 + 0.75 * frontal) * (0.25 + 0.75 * sharp)).astype(
        np.float32
    )
    return quality


@dataclass(frozen=True, slots=True)
class EmbedPolicy:
    """When a track's face is worth embedding again.

    Attributes:
        improve_ratio: embed when the face's quality is at least the track's best embedded
            quality times this.
        interval_s: ...or when this many seconds have passed since the track's last embedding,
            so that a track of constant quality still gets fresh evidence now and then.
        max_per_track: never more embeddings than this for one track, however long it lives.
        min_quality: never embed a face below this quality.
    """

    improve_ratio: float = 1.25
    interval_s: float = 2.0
    max_per_track: int = 20
    min_quality: float = 0.0

    def __post_init__(self) -> None:
        if self.improve_ratio < 1.0:
            raise ValueError("improve_ratio must be at least 1")
        if self.interval_s < 0:
            raise ValueError("interval_s must not be negative")
        if self.max_per_track < 1:
            raise ValueError("max_per_track must be at least 1")
        if not 0.0 <= self.min_quality <= 1.0:
            raise ValueError("min_quality must be in [0, 1]")


def should_embed(
    policy: EmbedPolicy,
    *,
    quality: float,
    now: float,
    embedded: int,
    best_quality: float | None,
    last_embedded_at: float | None,
) -> bool:
    """Whether to embed a track's face now.

    Args:
        policy: the thresholds.
        quality: this face's :func:`face_quality`.
        now: this frame's time in seconds (the same clock as ``last_embedded_at``).
        embedded: embeddings the track has had so far.
        best_quality: the best quality embedded so far, None before the first.
        last_embedded_at: when the track was last embedded, None before the first.

    Returns:
        True for the first face of acceptable quality, and after that for a face clearly
        better than the best so far or one that comes ``interval_s`` after the last embedding;
        never past ``max_per_track`` nor below ``min_quality``.
    """
    if embedded >= policy.max_per_track or quality < policy.min_quality:
        return False
    if embedded == 0 or best_quality is None or last_embedded_at is None:
        return True
    return quality >= best_quality * policy.improve_ratio or (
        now - last_embedded_at >= policy.interval_s
    )


@dataclass(slots=True)
class TrackEvidence:
    """The embeddings of one track: its ``keep`` best by quality, pooled into a template.

    Mutable, one per track, owned by the pipeline.

    Attributes:
        keep: how many embeddings to keep (the best by quality).
        best_quality: the best quality added so far, None before the first.
        embedded: how many embeddings were added (kept or not).
        last_embedded_at: the time of the last :meth:`add`, None before the first.
    """

    keep: int = 5
    best_quality: float | None = None
    embedded: int = 0
    last_embedded_at: float | None = None
    # (quality, order added, (D,) embedding), at most ``keep`` of them.
    _kept: list[tuple[float, int, F32]] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.keep < 1:
            raise ValueError("keep must be at least 1")

    def add(self, embedding: F32, quality: float, ts: float) -> None:
        """Record one embedding of the track.

        Args:
            embedding: (D,) L2-normalised embedding of the face.
            quality: its :func:`face_quality`.
            ts: the time of its frame, in seconds.
        """
        vector = np.asarray(embedding, np.float32)
        if vector.ndim != 1:
            raise ValueError(f"embedding must be (D,), got {vector.shape}")
        if self._kept and self._kept[0][2].shape != vector.shape:
            raise ValueError(f"embedding must be {self._kept[0][2].shape}, got {vector.shape}")
        self._kept.append((float(quality), self.embedded, vector.copy()))
        if len(self._kept) > self.keep:
            # Drop the worst; among equals the oldest, since the newer shows the face as it is.
            self._kept.remove(min(self._kept, key=lambda item: (item[0], item[1])))
        self.embedded += 1
        self.best_quality = (
            float(quality) if self.best_quality is None else max(self.best_quality, quality)
        )
        self.last_embedded_at = ts

    def newest(self) -> tuple[F32, float, float] | None:
        """The last embedding added if it is still kept, with its quality and time: (embedding,
        quality, ts), ready for :meth:`add`; None otherwise."""
        if not self._kept:
            return None
        quality, order, vector = max(self._kept, key=lambda item: item[1])
        if order != self.embedded - 1 or self.last_embedded_at is None:
            return None
        return vector.copy(), quality, self.last_embedded_at

    @property
    def kept(self) -> int:
        """How many embeddings are kept (at most ``keep``)."""
        return len(self._kept)

    def template(self) -> F32 | None:
        """(D,) the quality-weighted mean of the kept embeddings, L2-normalised.

        Returns:
            The template, or None when nothing was added (or, degenerately, when the kept
            embeddings cancel out and have no mean direction).
        """
        if not self._kept:
            return None
        weights = np.array([q for q, _, _ in self._kept], np.float64)
        vectors = np.stack([v for _, _, v in self._kept]).astype(np.float64)
        # Qualities all zero carry no preference: weigh the embeddings equally.
        if not weights.sum() > 0:
            weights = np.ones_like(weights)
        mean: NDArray[np.float64] = weights @ vectors / weights.sum()
        norm = float(np.linalg.norm(mean))
        if norm < 1e-12:
            return None
        template: F32 = (mean / norm).astype(np.float32)
        return template


@dataclass(frozen=True, slots=True)
class Decision:
    """Who a track is, from the search of its template.

    Attributes:
        person_id: the person, or None for unknown.
        similarity: the best candidate's cosine similarity (also when unknown);
            ``NO_SIMILARITY`` (-inf) when there was no candidate at all.
    """

    person_id: int | None
    similarity: float


def decide(
    candidates: Sequence[tuple[int, float]], threshold: float, *, margin: float = 0.0
) -> Decision:
    """Name the person of a track, or decide it is unknown.

    Args:
        candidates: (person_id, cosine similarity) pairs for the track's template, best first
            as a search returns them (the order is not relied on); a person may appear more
            than once (several enrolled faces), which counts as one person.
        threshold: the best similarity must reach this.
        margin: and exceed the best *other* person's similarity by more than this, so two
            look-alike persons at nearly the same similarity give unknown rather than a coin
            toss. With 0, an exact tie between two persons is unknown.

    Returns:
        The best person when both tests pass; otherwise unknown with the best similarity.
    """
    if margin < 0:
        raise ValueError("margin must not be negative")
    if not candidates:
        return Decision(None, NO_SIMILARITY)
    ranked = sorted(candidates, key=lambda c: c[1], reverse=True)
    best_person, best = ranked[0]
    second = next((sim for person, sim in ranked[1:] if person != best_person), None)
    if best >= threshold and (second is None or second + margin < best):
        return Decision(int(best_person), float(best))
    return Decision(None, float(best))
