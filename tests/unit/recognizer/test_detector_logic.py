"""Detector pieces without a model: letterbox, NMS, YuNet decoding of hand-made outputs."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from facewatch.recognizer.detector import DetectorOptions, YuNetDetector, letterbox, nms


@pytest.mark.parametrize(
    ("shape", "size", "scale", "content"),
    [
        ((480, 640), (640, 640), 1.0, (480, 640)),
        ((1080, 1920), (640, 640), 1 / 3, (360, 640)),
        ((100, 50), (640, 640), 6.4, (640, 320)),
        ((640, 640), (320, 256), 0.4, (256, 256)),
    ],
)
def test_letterbox(
    shape: tuple[int, int], size: tuple[int, int], scale: float, content: tuple[int, int]
) -> None:
    image = np.full((*shape, 3), 200, np.uint8)
    canvas, used = letterbox(image, size)
    assert canvas.shape == (size[1], size[0], 3)
    assert used == pytest.approx(scale)
    h, w = content
    assert canvas[:h, :w].min() == 200
    assert canvas[h:].max(initial=0) == 0 and canvas[:, w:].max(initial=0) == 0


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.8, 0.9, 0.7], np.float32)
    assert nms(boxes, scores, 0.4).tolist() == [1, 2]
    assert nms(boxes, scores, 0.99).tolist() == [1, 0, 2]
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.4).tolist() == []


class _Shape:
    def __init__(self, name: str, shape: list[Any]) -> None:
        self.name, self.shape = name, shape


class _StubSession:
    """Only what Detector.__init__ reads; decode itself runs no model."""

    def get_inputs(self) -> list[_Shape]:
        return [_Shape("input", ["batch", 3, "height", "width"])]


def yunet(size: tuple[int, int] = (64, 64), threshold: float = 0.5) -> YuNetDetector:
    options = DetectorOptions(size, threshold, 0.4, 1, 8)
    return YuNetDetector(None, _StubSession(), options)  # type: ignore[arg-type]


def yunet_outputs(
    size: tuple[int, int], faces: dict[tuple[int, int, int], dict[str, Any]]
) -> list[np.ndarray]:
    """Raw outputs for one image: faces keyed by (stride, row, col)."""
    width, height = size
    levels = {}
    for stride in (8, 16, 32):
        cells = math.ceil(width / stride) * math.ceil(height / stride)
        levels[stride] = {
            "cls": np.zeros((1, cells, 1), np.float32),
            "obj": np.zeros((1, cells, 1), np.float32),
            "bbox": np.zeros((1, cells, 4), np.float32),
            "kps": np.zeros((1, cells, 10), np.float32),
        }
    for (stride, row, col), face in faces.items():
        cell = row * math.ceil(width / stride) + col
        level = levels[stride]
        level["cls"][0, cell, 0] = face["cls"]
        level["obj"][0, cell, 0] = face["obj"]
        level["bbox"][0, cell] = face["bbox"]
        level["kps"][0, cell] = face["kps"]
    return [levels[s][k] for k in ("cls", "obj", "bbox", "kps") for s in (8, 16, 32)]


def test_yunet_decode_arithmetic() -> None:
    kps = [0.5, 0.5, 1.5, 0.5, 1.0, 1.0, 0.5, 1.5, 1.5, 1.5]
    outputs = yunet_outputs(
        (64, 64),
        {
            (16, 1, 2): {
                "cls": 0.81,
                "obj": 1.0,
                "bbox": [0.5, 0.25, math.log(2), 0.0],
                "kps": kps,
            },
            (8, 0, 0): {"cls": 0.1, "obj": 0.1, "bbox": [0, 0, 0, 0], "kps": [0] * 10},  # below 0.5
        },
    )
    xyxy, score, points = yunet().decode(outputs, 0)
    assert score.tolist() == pytest.approx([0.9])
    # centre ((2 + 0.5) * 16, (1 + 0.25) * 16) = (40, 20); size (32, 16)
    np.testing.assert_allclose(xyxy, [[24, 12, 56, 28]], atol=1e-5)
    expected = (np.array(kps).reshape(5, 2) + [2, 1]) * 16
    np.testing.assert_allclose(points[0], expected, atol=1e-5)


def test_yunet_scores_are_clipped_geometric_means() -> None:
    outputs = yunet_outputs(
        (64, 64),
        {
            (32, 1, 1): {"cls": 1.2, "obj": 0.64, "bbox": [0, 0, 0, 0], "kps": [0] * 10},
        },
    )
    _, score, _ = yunet(threshold=0.1).decode(outputs, 0)
    assert score.tolist() == pytest.approx([0.8])


def test_postprocess_maps_back_and_filters_small_faces() -> None:
    detector = yunet((64, 64))
    kps = [0.0] * 10
    outputs = yunet_outputs(
        (64, 64),
        {
            (16, 1, 1): {
                "cls": 1.0,
                "obj": 1.0,
                "bbox": [0, 0, math.log(2), math.log(2)],
                "kps": kps,
            },
            (8, 6, 6): {"cls": 1.0, "obj": 1.0, "bbox": [0, 0, 0, 0], "kps": kps},  # 8 px wide
        },
    )
    # The frame was 128x128, letterboxed to 64x64 at scale 0.5.
    options = DetectorOptions((64, 64), 0.5, 0.4, 10, 8)
    detector.options = options
    (result,) = detector.postprocess(outputs, [0.5], [(128, 128, 3)])
    # 8 px in the input = 16 px in the frame: kept with min size 10; box centre (16,16)*2
    assert len(result.score) == 2
    sizes = sorted((result.xyxy[:, 2] - result.xyxy[:, 0]).tolist())
    assert sizes == pytest.approx([16.0, 64.0])
    detector.options = DetectorOptions((64, 64), 0.5, 0.4, 20, 8)
    (result,) = detector.postprocess(outputs, [0.5], [(128, 128, 3)])
    assert len(result.score) == 1
