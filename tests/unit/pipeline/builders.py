"""Builders for pipeline tests (importable as ``builders`` from this folder's tests)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from facewatch.pipeline.types import Faces

# Landmarks as fractions of the box (eye, eye, nose, mouth corner, mouth corner): about where a
# frontal face has them, so that the kps are plausible without mattering to these tests.
_KPS_FRACTIONS = np.array(
    [[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]], np.float32
)


def square(cx: float, cy: float, side: float = 100.0) -> list[float]:
    """An xyxy box of ``side`` pixels centred on (cx, cy)."""
    return [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]


def make_faces(
    xyxy: Sequence[Sequence[float]] = (),
    *,
    score: float | Sequence[float] = 0.9,
    sharpness: float | Sequence[float] = 200.0,
    frontal: float | Sequence[float] = 1.0,
    embedding: Sequence[Sequence[float]] | None = None,
) -> Faces:
    """Faces with the given boxes; a scalar attribute applies to every face.

    Args:
        xyxy: N boxes as x1, y1, x2, y2 in pixels.
        score: detection score(s).
        sharpness: Laplacian variance(s).
        frontal: frontal-ness value(s) in [0, 1].
        embedding: (N, D) embeddings, or None.
    """
    boxes = np.array(xyxy, np.float32).reshape(-1, 4)
    n = len(boxes)
    wh = boxes[:, None, 2:] - boxes[:, None, :2]
    return Faces(
        xyxy=boxes,
        kps=(boxes[:, None, :2] + wh * _KPS_FRACTIONS).astype(np.float32),
        score=np.broadcast_to(np.asarray(score, np.float32), (n,)).copy(),
        sharpness=np.broadcast_to(np.asarray(sharpness, np.float32), (n,)).copy(),
        frontal=np.broadcast_to(np.asarray(frontal, np.float32), (n,)).copy(),
        embedding=None if embedding is None else np.array(embedding, np.float32).reshape(n, -1),
    )
