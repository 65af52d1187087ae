"""Faces: shape validation and selection."""

from __future__ import annotations

import numpy as np
import pytest

from facewatch.pipeline.types import Faces


def make_faces(n: int, dim: int | None = 4) -> Faces:
    xyxy = np.array([[i * 10, 0, i * 10 + 5 + i, 8] for i in range(n)], np.float32).reshape(n, 4)
    return Faces(
        xyxy=xyxy,
        kps=np.zeros((n, 5, 2), np.float32),
        score=np.linspace(0.5, 1.0, n, dtype=np.float32),
        sharpness=np.ones(n, np.float32),
        frontal=np.ones(n, np.float32),
        embedding=None if dim is None else np.eye(n, dim, dtype=np.float32),
    )


def test_selection_by_mask_and_index() -> None:
    faces = make_faces(4)
    picked = faces[faces.score > 0.7]
    assert len(picked) == 2 and picked.embedding is not None and picked.embedding.shape == (2, 4)
    assert len(faces[np.array([0, 3])]) == 2
    assert faces.largest() == 3
    assert faces.size.tolist() == [5, 6, 7, 8]


@pytest.mark.parametrize("field", ["xyxy", "kps", "score", "sharpness", "frontal", "embedding"])
def test_shapes_are_validated(field: str) -> None:
    faces = make_faces(3)
    values = {
        name: getattr(faces, name)
        for name in ("xyxy", "kps", "score", "sharpness", "frontal", "embedding")
    }
    values[field] = values[field][:2]
    # A short xyxy changes N itself, so another field is reported as off.
    with pytest.raises(ValueError, match=None if field == "xyxy" else field):
        Faces(**values)


def test_empty() -> None:
    assert len(Faces.empty()) == 0
    assert Faces.empty(128).embedding.shape == (0, 128)  # type: ignore[union-attr]
    with pytest.raises(IndexError):
        Faces.empty().largest()
