"""Five-point face alignment to the recognizer's canonical crop, and landmark-based quality."""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]

#: ArcFace / SFace template for a 112x112 crop: left eye, right eye, nose, mouth left, mouth right.
ARCFACE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


def similarity_transform(
    src: NDArray[np.floating], dst: NDArray[np.floating]
) -> NDArray[np.float64]:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src onto dst.

    Umeyama (1991), the estimate InsightFace and OpenCV's SFace use. Returns a (2, 3) matrix.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(cov) < 0:
        d[-1] = -1
    rotation = u @ np.diag(d) @ vt
    var_src = (src_c**2).sum() / len(src)
    scale = (s * d).sum() / var_src if var_src > 0 else 1.0
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def align_faces(
    image: NDArray[np.uint8], kps: F32, size: tuple[int, int] = (112, 112)
) -> NDArray[np.uint8]:
    """Warp every face of ``image`` onto the template: (N, 5, 2) landmarks -> (N, h, w, 3) crops."""
    template = ARCFACE_112 * (np.array(size, np.float64) / 112.0)
    crops = np.empty((len(kps), size[1], size[0], 3), np.uint8)
    for i, points in enumerate(kps):
        matrix = similarity_transform(points, template)
        crops[i] = cv2.warpAffine(image, matrix, size, flags=cv2.INTER_LINEAR, borderValue=0)
    return crops


def sharpness(crops: NDArray[np.uint8]) -> F32:
    """(N,) variance of the Laplacian of each aligned crop's grey image (higher is sharper).

    Computed on the aligned crop so the figure does not depend on how large the face was.
    """
    values = np.empty(len(crops), np.float32)
    for i, crop in enumerate(crops):
        grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
        values[i] = cv2.Laplacian(grey, cv2.CV_32F).var()
    return values


def frontal(kps: F32) -> F32:
    """(N,) frontal-ness in [0, 1] from the landmarks: 1 looking at the camera, 0 in profile.

    Yaw shows as the nose moving towards one eye: the asymmetry of the nose's horizontal distance
    to the two eyes (and to the two mouth corners) grows from 0 (frontal) to 1 (profile). Roll
    does not count: alignment removes it.
    """
    if len(kps) == 0:
        return np.zeros(0, np.float32)
    eyes_axis = kps[:, 1] - kps[:, 0]
    norm = np.linalg.norm(eyes_axis, axis=1, keepdims=True)
    axis = eyes_axis / np.where(norm > 0, norm, 1)

    def asymmetry(left: F32, right: F32) -> F32:
        to_left = ((kps[:, 2] - left) * axis).sum(axis=1)
        to_right = ((right - kps[:, 2]) * axis).sum(axis=1)
        total = np.abs(to_left) + np.abs(to_right)
        result: F32 = np.abs(to_left - to_right) / np.where(total > 0, total, 1)
        return result

    yaw = 0.5 * (asymmetry(kps[:, 0], kps[:, 1]) + asymmetry(kps[:, 3], kps[:, 4]))
    score: F32 = np.clip(1.0 - yaw, 0.0, 1.0).astype(np.float32)
    return score
