"""Alignment transform and landmark-based quality."""

from __future__ import annotations

import math

import numpy as np
import pytest

from facewatch.recognizer.align import (
    ARCFACE_112,
    align_faces,
    frontal,
    sharpness,
    similarity_transform,
)


@pytest.mark.parametrize(
    ("angle", "scale", "shift"),
    [(0.0, 1.0, (0.0, 0.0)), (30.0, 2.0, (15.0, -4.0)), (-75.0, 0.4, (100.0, 200.0))],
)
def test_similarity_transform_recovers_a_known_transform(
    angle: float, scale: float, shift: tuple[float, float]
) -> None:
    theta = math.radians(angle)
    rotation = scale * np.array(
        [[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]]
    )
    src = ARCFACE_112 * 1.7 + 40
    dst = src @ rotation.T + np.array(shift)
    matrix = similarity_transform(src, dst)
    np.testing.assert_allclose(matrix[:, :2], rotation, atol=1e-9)
    np.testing.assert_allclose(src @ matrix[:, :2].T + matrix[:, 2], dst, atol=1e-9)


def test_align_puts_landmarks_on_the_template() -> None:
    image = np.zeros((300, 300, 3), np.uint8)
    kps = (ARCFACE_112 * 2 + 50).astype(np.float32)
    for x, y in kps:
        image[int(round(y)) - 1 : int(round(y)) + 2, int(round(x)) - 1 : int(round(x)) + 2] = 255
    crops = align_faces(image, kps[None])
    assert crops.shape == (1, 112, 112, 3)
    for x, y in ARCFACE_112:
        assert crops[0, int(round(y)), int(round(x)), 0] > 100


def test_frontal_orders_poses() -> None:
    straight = ARCFACE_112.astype(np.float32)
    turned = straight.copy()
    turned[2, 0] = 44.0  # nose close to one eye: head turned
    profile = straight.copy()
    profile[2, 0] = 36.0  # nose beyond the eye
    values = frontal(np.stack([straight, turned, profile]))
    assert values[0] > 0.95
    assert values[0] > values[1] > values[2]
    assert frontal(np.zeros((0, 5, 2), np.float32)).shape == (0,)


def test_frontal_ignores_roll() -> None:
    theta = math.radians(40)
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    rolled = (ARCFACE_112 @ rotation.T).astype(np.float32)
    assert frontal(rolled[None])[0] == pytest.approx(
        frontal(ARCFACE_112[None].astype(np.float32))[0], abs=1e-4
    )


def test_sharpness_prefers_detail() -> None:
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 255, (1, 112, 112, 3), dtype=np.uint8)
    flat = np.full((1, 112, 112, 3), 128, np.uint8)
    assert sharpness(noisy)[0] > 1000 > sharpness(flat)[0] == 0
