"""Box geometry shared by the detector's refinement and the tracker (pure NumPy)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]


def iou_matrix(a_xyxy: F64 | F32, b_xyxy: F64 | F32) -> F64:
    """Intersection over union of every box of ``a_xyxy`` with every box of ``b_xyxy``.

    Args:
        a_xyxy: (A, 4) boxes as x1, y1, x2, y2 in pixels.
        b_xyxy: (B, 4) boxes likewise.

    Returns:
        (A, B) IoU in [0, 1]; 0 where both boxes are empty.
    """
    a = np.asarray(a_xyxy, np.float64).reshape(-1, 4)
    b = np.asarray(b_xyxy, np.float64).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0.0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0.0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0.0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    out: F64 = np.zeros_like(union)
    np.divide(inter, union, out=out, where=union > 0)
    return out
