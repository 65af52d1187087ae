"""Where a face is looked for again at full resolution: the window geometry and the matching."""

from __future__ import annotations

import numpy as np
import pytest

from facewatch.recognizer.refine import refine_window, same_face


@pytest.mark.parametrize(
    ("xyxy", "image_wh", "window", "scale", "input_size"),
    [
        # A 250x250 portrait: the window is the whole photo, padded to 256 (no resize).
        ((70, 60, 180, 190), (250, 250), (0, 0, 250, 250), 1.0, (256, 256)),
        # A face in a big frame: corner moved down to multiples of 32, one face side around.
        ((1000, 500, 1100, 620), (1920, 1080), (864, 352, 1220, 740), 1.0, (384, 416)),
        # A face at the right border: the window stops at the image.
        ((1850, 10, 1920, 90), (1920, 1080), (1760, 0, 1920, 170), 1.0, (160, 192)),
        # A face too big for REFINE_MAX_SIDE: the window is scaled down to 1280 px.
        ((500, 100, 1500, 1400), (4000, 3000), (0, 0, 2800, 2700), 1280 / 2800, (1280, 1248)),
    ],
)
def test_refine_window(
    xyxy: tuple[float, ...],
    image_wh: tuple[int, int],
    window: tuple[int, int, int, int],
    scale: float,
    input_size: tuple[int, int],
) -> None:
    found = refine_window(np.array(xyxy, np.float32), image_wh)
    assert (found.x0, found.y0, found.x1, found.y1) == window
    assert found.scale == pytest.approx(scale)
    assert found.input_size == input_size
    assert found.x0 % 32 == 0 and found.y0 % 32 == 0


def test_same_face_needs_enough_overlap() -> None:
    target = np.array([100, 100, 200, 200], np.float32)
    candidates = np.array([[0, 0, 50, 50], [105, 98, 204, 199], [120, 120, 200, 200]], np.float32)
    assert same_face(candidates, target) == 1
    assert same_face(candidates[[0]], target) is None
    assert same_face(np.zeros((0, 4), np.float32), target) is None
