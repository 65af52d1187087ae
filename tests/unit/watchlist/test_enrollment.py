"""Which face of an enrollment photo is kept, and the reason a photo is refused."""

from __future__ import annotations

import numpy as np
import pytest

from facewatch.pipeline.types import Faces
from facewatch.watchlist.enrollment import Gates, Reason, choose_face, duplicate_of

GATES = Gates(
    min_face_size=40, min_score=0.5, min_sharpness=50, min_frontal=0.2, duplicate_similarity=0.95
)


def make_faces(*faces: tuple[float, float, float, float]) -> Faces:
    """Faces from (side in px, score, sharpness, frontal) tuples, boxes side by side."""
    n = len(faces)
    xyxy = np.array([[i * 500, 0, i * 500 + f[0], f[0]] for i, f in enumerate(faces)], np.float32)
    return Faces(
        xyxy=xyxy.reshape(n, 4),
        kps=np.zeros((n, 5, 2), np.float32),
        score=np.array([f[1] for f in faces], np.float32),
        sharpness=np.array([f[2] for f in faces], np.float32),
        frontal=np.array([f[3] for f in faces], np.float32),
    )


GOOD = (120, 0.9, 500, 0.9)


@pytest.mark.parametrize(
    ("faces", "largest", "index", "reason"),
    [
        ((GOOD,), False, 0, None),
        ((), False, None, Reason.NO_FACE),
        (((30, 0.9, 500, 0.9),), False, None, Reason.TOO_SMALL),
        (((120, 0.4, 500, 0.9),), False, None, Reason.LOW_CONFIDENCE),
        (((120, 0.9, 20, 0.9),), False, None, Reason.TOO_BLURRY),
        (((120, 0.9, 500, 0.1),), False, None, Reason.NOT_FRONTAL),
        ((GOOD, (200, 0.9, 500, 0.9)), False, None, Reason.SEVERAL_FACES),
        ((GOOD, (200, 0.9, 500, 0.9)), True, 1, None),
        # A small or doubtful second face does not make the photo ambiguous.
        ((GOOD, (25, 0.9, 500, 0.9)), False, 0, None),
        ((GOOD, (200, 0.3, 500, 0.9)), False, 0, None),
        # With --largest, the quality gates apply to the face chosen.
        ((GOOD, (200, 0.9, 10, 0.9)), True, None, Reason.TOO_BLURRY),
    ],
)
def test_choose_face(
    faces: tuple[tuple[float, float, float, float], ...],
    largest: bool,
    index: int | None,
    reason: Reason | None,
) -> None:
    verdict = choose_face(make_faces(*faces), GATES, largest=largest)
    assert (verdict.index, verdict.reason) == (index, reason)
    assert bool(verdict.detail) == (reason is not None)


def test_duplicate_of() -> None:
    templates = np.eye(3, dtype=np.float32)
    near = np.array([0.99, 0.141, 0], np.float32)
    assert duplicate_of(near / np.linalg.norm(near), templates, 0.95) == 0
    assert duplicate_of(np.array([0.6, 0.8, 0], np.float32), templates, 0.95) is None
    assert duplicate_of(near, np.zeros((0, 3), np.float32), 0.95) is None
