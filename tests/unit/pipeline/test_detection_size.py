"""The detector input fitted to a frame's aspect, by table."""

from __future__ import annotations

import pytest

from facewatch.pipeline.runner import fitted_detection_size


@pytest.mark.parametrize(
    ("resolution_wh", "base_wh", "fitted"),
    [
        ((640, 360), (640, 640), (640, 384)),  # 16:9 at the base width: 24 rows of padding
        ((1920, 1080), (640, 640), (640, 384)),  # scaled down by 3 first
        ((1280, 720), (640, 640), (640, 384)),
        ((720, 1280), (640, 640), (384, 640)),  # portrait
        ((640, 480), (640, 640), (640, 480)),  # 4:3 is already a multiple of 32
        ((500, 500), (640, 640), (640, 640)),  # square: scaled up, as the base size would
        ((320, 180), (640, 640), (640, 384)),  # small frames are scaled up to the same scale
        ((1920, 1080), (1280, 736), (1280, 736)),  # a wide base: height limits, width 1280
        ((4000, 10), (640, 640), (640, 32)),  # a sliver still gets one stride
        ((1, 1), (320, 320), (320, 320)),
    ],
)
def test_fitted_detection_size(
    resolution_wh: tuple[int, int], base_wh: tuple[int, int], fitted: tuple[int, int]
) -> None:
    size = fitted_detection_size(resolution_wh, base_wh)
    assert size == fitted
    assert all(side % 32 == 0 for side in size)
    assert size[0] <= base_wh[0] and size[1] <= base_wh[1]
