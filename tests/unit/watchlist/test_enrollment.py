"""Which face of an enrollment photo is kept, the reason a photo is refused, and warnings."""

from __future__ import annotations

import numpy as np
import pytest

from facewatch.pipeline.types import Faces
from facewatch.watchlist.enrollment import Caution, Gates, Reason, choose_face, duplicate_of

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


BLURRY = (120, 0.9, 20, 0.9)
TURNED = (120, 0.9, 500, 0.1)


@pytest.mark.parametrize(
    ("faces", "largest", "strict", "index", "reason", "cautions"),
    [
        ((GOOD,), False, False, 0, None, ()),
        ((), False, False, None, Reason.NO_FACE, ()),
        (((30, 0.9, 500, 0.9),), False, False, None, Reason.TOO_SMALL, ()),
        (((120, 0.4, 500, 0.9),), False, False, None, Reason.LOW_CONFIDENCE, ()),
        # Blur and pose are warnings on the kept face, refusals only when strict.
        ((BLURRY,), False, False, 0, None, (Caution.BLURRY,)),
        ((TURNED,), False, False, 0, None, (Caution.NOT_FRONTAL,)),
        (((120, 0.9, 20, 0.1),), False, False, 0, None, (Caution.BLURRY, Caution.NOT_FRONTAL)),
        ((BLURRY,), False, True, None, Reason.TOO_BLURRY, ()),
        ((TURNED,), False, True, None, Reason.NOT_FRONTAL, ()),
        ((GOOD,), False, True, 0, None, ()),
        ((GOOD, (200, 0.9, 500, 0.9)), False, False, None, Reason.SEVERAL_FACES, ()),
        ((GOOD, (200, 0.9, 500, 0.9)), True, False, 1, None, ()),
        # A small or doubtful second face does not make the photo ambiguous.
        ((GOOD, (25, 0.9, 500, 0.9)), False, False, 0, None, ()),
        ((GOOD, (200, 0.3, 500, 0.9)), False, False, 0, None, ()),
        # With --largest, the quality gates apply to the face chosen.
        ((GOOD, (200, 0.9, 10, 0.9)), True, True, None, Reason.TOO_BLURRY, ()),
        ((GOOD, (200, 0.9, 10, 0.9)), True, False, 1, None, (Caution.BLURRY,)),
    ],
)
def test_choose_face(
    faces: tuple[tuple[float, float, float, float], ...],
    largest: bool,
    strict: bool,
    index: int | None,
    reason: Reason | None,
    cautions: tuple[Caution, ...],
) -> None:
    verdict = choose_face(make_faces(*faces), GATES, largest=largest, strict=strict)
    assert (verdict.index, verdict.reason) == (index, reason)
    assert bool(verdict.detail) == (reason is not None)
    assert tuple(n.caution for n in verdict.notices) == cautions
    assert all(n.detail for n in verdict.notices)


def test_duplicate_of() -> None:
    templates = np.eye(3, dtype=np.float32)
    near = np.array([0.99, 0.141, 0], np.float32)
    assert duplicate_of(near / np.linalg.norm(near), templates, 0.95) == 0
    assert duplicate_of(np.array([0.6, 0.8, 0], np.float32), templates, 0.95) is None
    assert duplicate_of(near, np.zeros((0, 3), np.float32), 0.95) is None
