"""Face quality, the embedding policy, track evidence pooling and the identity decision."""

from __future__ import annotations

import math

import numpy as np
import pytest
from builders import make_faces, square

from facewatch.pipeline.identity import (
    NO_SIMILARITY,
    Decision,
    EmbedPolicy,
    TrackEvidence,
    decide,
    face_quality,
    should_embed,
)
from facewatch.pipeline.types import Faces


def faces_varying(attribute: str, values: list[float]) -> Faces:
    """One face per value, identical but for ``attribute`` (``size`` is the box side)."""
    n = len(values)
    if attribute == "size":
        return make_faces([square(500, 500, v) for v in values])
    kwargs: dict[str, float | list[float]] = {"score": 0.9, "sharpness": 150.0, "frontal": 1.0}
    kwargs[attribute] = values
    return make_faces([square(500, 500, 112)] * n, **kwargs)  # type: ignore[arg-type]


# (attribute, increasing values, the value at and above which it stops mattering, whether its
# zero vetoes the face: pose and sharpness only lower it to a quarter)
QUALITY_CASES = {
    "score": ("score", [0.0, 0.3, 0.6, 0.9, 1.0], None, True),
    "size": ("size", [10.0, 40.0, 80.0, 112.0, 300.0], 112.0, False),
    "frontal": ("frontal", [0.0, 0.2, 0.5, 0.8, 1.0], None, False),
    "sharpness": ("sharpness", [0.0, 20.0, 75.0, 150.0, 1000.0], 150.0, False),
}


@pytest.mark.parametrize(
    ("attribute", "values", "saturates_at", "vetoes"), QUALITY_CASES.values(), ids=QUALITY_CASES
)
def test_quality_rises_with_each_factor_and_saturates(
    attribute: str, values: list[float], saturates_at: float | None, vetoes: bool
) -> None:
    quality = face_quality(faces_varying(attribute, values))
    assert quality.dtype == np.float32 and quality.shape == (len(values),)
    assert np.all((quality >= 0) & (quality <= 1))
    assert np.all(np.diff(quality) >= 0), quality
    assert quality[1] > quality[0]
    if saturates_at is not None:
        saturated = quality[np.array(values) >= saturates_at]
        assert len(saturated) >= 2 and np.all(saturated == saturated[0])
    if values[0] == 0.0:
        if vetoes:
            assert quality[0] == 0.0
        else:
            assert quality[0] == pytest.approx(0.25 * quality[-1])


def test_quality_is_the_product_of_the_factors() -> None:
    faces = make_faces([square(0, 0, 56)], score=0.8, sharpness=75.0, frontal=0.5)
    # score x size x (1/4 + 3/4 frontal) x (1/4 + 3/4 sharpness)
    assert face_quality(faces)[0] == pytest.approx(0.8 * 0.5 * 0.625 * 0.625)
    assert face_quality(faces, reference_size=56, reference_sharpness=75)[0] == pytest.approx(0.5)


def test_quality_of_no_faces_and_bad_references() -> None:
    assert face_quality(Faces.empty()).shape == (0,)
    with pytest.raises(ValueError):
        face_quality(Faces.empty(), reference_size=0)


POLICY = EmbedPolicy(improve_ratio=1.25, interval_s=2.0, max_per_track=3, min_quality=0.05)
# (quality, now, embedded, best_quality, last_embedded_at, expected)
EMBED_CASES = {
    "first acceptable face": (0.2, 0.0, 0, None, None, True),
    "first face too poor": (0.04, 0.0, 0, None, None, False),
    "clearly better": (0.5, 0.5, 1, 0.4, 0.0, True),
    "only a little better": (0.45, 0.5, 1, 0.4, 0.0, False),
    "same quality, interval passed": (0.4, 2.0, 1, 0.4, 0.0, True),
    "same quality, interval not passed": (0.4, 1.9, 1, 0.4, 0.0, False),
    "worse, interval passed": (0.1, 3.0, 1, 0.4, 0.0, True),
    "worse than min_quality, interval passed": (0.01, 3.0, 1, 0.4, 0.0, False),
    "max_per_track reached": (0.9, 10.0, 3, 0.1, 0.0, False),
    "clock went back: only improvement counts": (0.4, -5.0, 1, 0.4, 0.0, False),
}


@pytest.mark.parametrize(
    ("quality", "now", "embedded", "best_quality", "last_embedded_at", "expected"),
    EMBED_CASES.values(),
    ids=EMBED_CASES,
)
def test_should_embed(
    quality: float,
    now: float,
    embedded: int,
    best_quality: float | None,
    last_embedded_at: float | None,
    expected: bool,
) -> None:
    got = should_embed(
        POLICY,
        quality=quality,
        now=now,
        embedded=embedded,
        best_quality=best_quality,
        last_embedded_at=last_embedded_at,
    )
    assert got is expected


@pytest.mark.parametrize(
    "kwargs",
    [{"improve_ratio": 0.9}, {"interval_s": -1.0}, {"max_per_track": 0}, {"min_quality": 1.5}],
    ids=["ratio below one", "negative interval", "no embeddings", "min quality above one"],
)
def test_policy_is_validated(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        EmbedPolicy(**kwargs)  # type: ignore[arg-type]


def unit(*values: float) -> np.ndarray:
    v = np.array(values, np.float32)
    return v / np.linalg.norm(v)


def test_evidence_single_sample_is_its_own_template() -> None:
    evidence = TrackEvidence()
    assert evidence.template() is None and evidence.best_quality is None
    e = unit(1, 2, 3, 4)
    evidence.add(e, 0.5, ts=3.0)
    np.testing.assert_allclose(evidence.template(), e, rtol=1e-6)  # type: ignore[arg-type]
    assert (evidence.embedded, evidence.best_quality, evidence.last_embedded_at) == (1, 0.5, 3.0)


def test_evidence_template_is_the_quality_weighted_mean() -> None:
    evidence = TrackEvidence()
    evidence.add(unit(1, 0, 0), 0.75, ts=0.0)
    evidence.add(unit(0, 1, 0), 0.25, ts=1.0)
    template = evidence.template()
    assert template is not None and template.dtype == np.float32
    np.testing.assert_allclose(template, unit(3, 1, 0), rtol=1e-6)
    assert float(np.linalg.norm(template)) == pytest.approx(1.0)


def test_evidence_keeps_the_best_by_quality() -> None:
    evidence = TrackEvidence(keep=2)
    # Axis i carries quality q: the template shows which axes were kept.
    for axis, quality in enumerate([0.3, 0.9, 0.1, 0.6]):
        evidence.add(np.eye(4, dtype=np.float32)[axis], quality, ts=float(axis))
    assert evidence.kept == 2 and evidence.embedded == 4
    assert evidence.best_quality == 0.9 and evidence.last_embedded_at == 3.0
    np.testing.assert_allclose(evidence.template(), unit(0, 0.9, 0, 0.6), rtol=1e-6)  # type: ignore[arg-type]


def test_evidence_among_equal_qualities_keeps_the_newest() -> None:
    evidence = TrackEvidence(keep=1)
    evidence.add(unit(1, 0), 0.5, ts=0.0)
    evidence.add(unit(0, 1), 0.5, ts=1.0)
    np.testing.assert_allclose(evidence.template(), unit(0, 1))  # type: ignore[arg-type]


def test_evidence_rejects_other_shapes() -> None:
    evidence = TrackEvidence()
    evidence.add(unit(1, 0, 0), 0.5, ts=0.0)
    with pytest.raises(ValueError):
        evidence.add(unit(1, 0), 0.5, ts=1.0)
    with pytest.raises(ValueError):
        evidence.add(np.ones((2, 3), np.float32), 0.5, ts=1.0)
    with pytest.raises(ValueError):
        TrackEvidence(keep=0)


# (candidates, threshold, margin, expected)
DECIDE_CASES = {
    "no candidates": ([], 0.4, 0.0, Decision(None, NO_SIMILARITY)),
    "one above threshold": ([(7, 0.6)], 0.4, 0.0, Decision(7, 0.6)),
    "exactly at threshold": ([(7, 0.4)], 0.4, 0.0, Decision(7, 0.4)),
    "below threshold": ([(7, 0.39)], 0.4, 0.0, Decision(None, 0.39)),
    "clear winner": ([(7, 0.6), (8, 0.45)], 0.4, 0.1, Decision(7, 0.6)),
    "within the margin": ([(7, 0.6), (8, 0.55)], 0.4, 0.1, Decision(None, 0.6)),
    "tie without margin": ([(7, 0.6), (8, 0.6)], 0.4, 0.0, Decision(None, 0.6)),
    "same person twice is no rival": ([(7, 0.6), (7, 0.59), (8, 0.3)], 0.4, 0.1, Decision(7, 0.6)),
    "candidates out of order": ([(8, 0.3), (7, 0.6)], 0.4, 0.1, Decision(7, 0.6)),
    "second below threshold still counts": ([(7, 0.45), (8, 0.38)], 0.4, 0.1, Decision(None, 0.45)),
}


@pytest.mark.parametrize(
    ("candidates", "threshold", "margin", "expected"), DECIDE_CASES.values(), ids=DECIDE_CASES
)
def test_decide(
    candidates: list[tuple[int, float]], threshold: float, margin: float, expected: Decision
) -> None:
    assert decide(candidates, threshold, margin=margin) == expected


def test_no_candidates_is_below_every_similarity() -> None:
    assert math.isinf(NO_SIMILARITY) and NO_SIMILARITY < -1.0
    with pytest.raises(ValueError):
        decide([], 0.4, margin=-0.1)
