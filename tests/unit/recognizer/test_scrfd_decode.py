"""SCRFD decoding on hand-made outputs: anchor centres, distances, landmarks, batch layouts.

SCRFD's anchor centres sit on the top-left corner of each cell, (col * stride, row * stride),
with the anchors of a cell consecutive; boxes are (left, top, right, bottom) distances and
landmarks offsets from that centre, in stride units. Expected values below are worked out by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from facewatch.recognizer.detector import DetectorOptions, ScrfdDetector
from facewatch.recognizer.packs import DetectorSpec

F32 = NDArray[np.float32]

#: width, height: at stride 8 a grid of 12 columns x 8 rows, 6 x 4 at 16, 3 x 2 at 32.
SIZE = (96, 64)
KPS = np.array([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], np.float32)  # stride units


class _Info:
    def __init__(self, name: str, shape: list[Any]) -> None:
        self.name, self.shape = name, shape


class _StubSession:
    """What ScrfdDetector reads of a session, and a ``run`` replaying per-image outputs.

    ``run`` reads the image number from the first value of each image of the blob and returns
    that image's outputs in the layout of the export (with or without a batch axis); like ONNX
    Runtime it refuses a batch larger than a fixed batch of 1.
    """

    def __init__(
        self,
        batch: int | str,
        rank: int,
        n_outputs: int = 9,
        per_image: list[list[F32]] | None = None,
    ) -> None:
        self.batch, self.rank = batch, rank
        self.n_outputs = n_outputs
        self.per_image = per_image or []
        self.calls: list[int] = []

    def get_inputs(self) -> list[_Info]:
        return [_Info("input.1", [self.batch, 3, "height", "width"])]

    def get_outputs(self) -> list[_Info]:
        shape: list[Any] = ["batch", "anchors", 1] if self.rank == 3 else ["anchors", 1]
        return [_Info(f"out{i}", shape) for i in range(self.n_outputs)]

    def run(self, names: None, feed: dict[str, F32]) -> list[F32]:
        blob = feed["input.1"]
        if self.batch == 1 and len(blob) != 1:
            raise ValueError(f"invalid dimensions for input: input.1, got {len(blob)}, expected 1")
        self.calls.append(len(blob))
        images = [self.per_image[int(image[0, 0, 0])] for image in blob]
        if self.rank == 2:
            return images[0]  # no batch axis: one image per call
        return [np.stack([outs[k] for outs in images]) for k in range(self.n_outputs)]


def detector(
    session: _StubSession | None = None, size: tuple[int, int] = SIZE, threshold: float = 0.5
) -> ScrfdDetector:
    spec = DetectorSpec("stub/det", "scrfd", Path("det.onnx"), "0" * 64, "test")
    options = DetectorOptions(size, threshold, 0.4, 1, 8)
    return ScrfdDetector(spec, session or _StubSession("batch", 3), options)  # type: ignore[arg-type]


def blank(
    size: tuple[int, int] = SIZE, strides: tuple[int, ...] = (8, 16, 32), anchors: int = 2
) -> list[F32]:
    """One image's outputs, all zero: scores (A, 1), then boxes (A, 4), then landmarks (A, 10)."""
    width, height = size
    counts = [(height // s) * (width // s) * anchors for s in strides]
    return (
        [np.zeros((n, 1), np.float32) for n in counts]
        + [np.zeros((n, 4), np.float32) for n in counts]
        + [np.zeros((n, 10), np.float32) for n in counts]
    )


def put(
    outputs: list[F32], level: int, index: int, score: float, dist: tuple[float, ...] = (1, 1, 1, 1)
) -> None:
    n = len(outputs) // 3
    outputs[level][index, 0] = score
    outputs[level + n][index] = dist
    outputs[level + 2 * n][index] = KPS.ravel()


def batched(*images: list[F32]) -> list[F32]:
    return [np.stack(level) for level in zip(*images, strict=True)]


# level, flat index, distances -> anchor centre, xyxy (all in input pixels)
CASES = [
    pytest.param(0, 0, (1, 2, 3, 4), (0, 0), (-8, -16, 24, 32), id="s8-first-cell-anchor0"),
    pytest.param(0, 1, (1, 1, 1, 1), (0, 0), (-8, -8, 8, 8), id="s8-first-cell-anchor1"),
    pytest.param(0, 2, (1, 1, 1, 1), (8, 0), (0, -8, 16, 8), id="s8-second-cell"),
    pytest.param(0, 25, (0.5, 0.5, 0.5, 0.5), (0, 8), (-4, 4, 4, 12), id="s8-second-row"),
    pytest.param(0, 191, (1, 1, 1, 1), (88, 56), (80, 48, 96, 64), id="s8-last-anchor"),
    pytest.param(1, 15, (2, 1, 0.5, 0.25), (16, 16), (-16, 0, 24, 20), id="s16-row1-col1"),
    pytest.param(1, 12, (1, 1, 1, 1), (0, 16), (-16, 0, 16, 32), id="s16-second-row"),
    pytest.param(2, 4, (0.5, 0.5, 1, 1), (64, 0), (48, -16, 96, 32), id="s32-last-col"),
    pytest.param(2, 7, (1, 1, 1, 1), (0, 32), (-32, 0, 32, 64), id="s32-second-row-anchor1"),
]


@pytest.mark.parametrize(("level", "index", "dist", "centre", "xyxy"), CASES)
def test_one_anchor(
    level: int, index: int, dist: tuple[float, ...], centre: tuple[int, int], xyxy: tuple[int, ...]
) -> None:
    outputs = blank()
    put(outputs, level, index, 0.9, dist)

    boxes, scores, kps = detector().decode(batched(outputs), 0)

    stride = (8, 16, 32)[level]
    np.testing.assert_allclose(boxes, [xyxy])
    np.testing.assert_allclose(scores, [0.9])
    np.testing.assert_allclose(kps, [np.array(centre, np.float32) + KPS * stride])


def test_nothing_above_threshold() -> None:
    outputs = blank()
    put(outputs, 0, 3, 0.49)

    boxes, scores, kps = detector().decode(batched(outputs), 0)

    assert (boxes.shape, scores.shape, kps.shape) == ((0, 4), (0,), (0, 5, 2))


def test_threshold_is_inclusive_and_levels_come_in_stride_order() -> None:
    outputs = blank()
    put(outputs, 2, 0, 0.5)
    put(outputs, 0, 5, 0.8)
    put(outputs, 0, 4, 0.3)
    put(outputs, 1, 1, 0.95)

    boxes, scores, _ = detector().decode(batched(outputs), 0)

    np.testing.assert_allclose(scores, [0.8, 0.95, 0.5])
    # index 5: cell 2 (col 2) of stride 8; index 1: cell 0 of stride 16; index 0: cell 0 of 32.
    np.testing.assert_allclose(boxes[:, :2], [[8, -8], [-16, -16], [-32, -32]])


def test_batch_index_selects_the_image() -> None:
    first, second = blank(), blank()
    put(second, 1, 15, 0.9)
    outputs = batched(first, second)

    assert len(detector().decode(outputs, 0)[1]) == 0
    boxes, _, _ = detector().decode(outputs, 1)
    np.testing.assert_allclose(boxes, [[0, 0, 32, 32]])


def test_five_strides_one_anchor() -> None:
    # 15 outputs: strides 8..128, one anchor a cell. 256 x 128 input: 2 x 1 cells at 128.
    size = (256, 128)
    strides = (8, 16, 32, 64, 128)
    outputs = blank(size, strides, anchors=1)
    put(outputs, 3, 5, 0.9)  # stride 64, 4 columns: cell 5 is row 1, col 1
    put(outputs, 4, 1, 0.8)  # stride 128: cell 1 is row 0, col 1

    session = _StubSession("batch", 3, n_outputs=15)
    boxes, _, kps = detector(session, size).decode(batched(outputs), 0)

    np.testing.assert_allclose(boxes, [[0, 0, 128, 128], [0, -128, 256, 128]])
    np.testing.assert_allclose(kps[1], np.array([128, 0]) + KPS * 128)


# input batch, output rank -> one call per batch, or one per frame
LAYOUTS = [
    pytest.param("batch", 3, [3], id="dynamic-batch"),
    pytest.param(1, 3, [1, 1, 1], id="batch-fixed-at-1"),
    pytest.param(1, 2, [1, 1, 1], id="no-batch-axis"),
    pytest.param("batch", 2, [1, 1, 1], id="no-batch-axis-dynamic-input"),
]


@pytest.mark.parametrize(("batch", "rank", "calls"), LAYOUTS)
def test_every_export_layout_decodes_each_frame(
    batch: int | str, rank: int, calls: list[int]
) -> None:
    images = [blank() for _ in range(3)]
    put(images[0], 0, 0, 0.9)
    put(images[2], 2, 7, 0.9)
    session = _StubSession(batch, rank, per_image=images)
    det = detector(session)
    blob = np.stack([np.full((3, SIZE[1], SIZE[0]), i, np.float32) for i in range(3)])

    outputs = det.infer(blob)

    assert session.calls == calls
    found = [det.decode(outputs, i)[0] for i in range(3)]
    np.testing.assert_allclose(found[0], [[-8, -8, 8, 8]])
    assert found[1].shape == (0, 4)
    np.testing.assert_allclose(found[2], [[-32, 0, 32, 64]])


@pytest.mark.parametrize(
    ("size", "ok"), [((640, 640), True), ((384, 256), True), ((320, 320), False)]
)
def test_five_stride_models_need_sizes_in_multiples_of_128(size: tuple[int, int], ok: bool) -> None:
    from facewatch.errors import ModelLoadError

    session = _StubSession("batch", 3, n_outputs=15)
    if ok:
        assert detector(session, size).strides[-1] == 128
    else:
        with pytest.raises(ModelLoadError, match="multiple of 128"):
            detector(session, size)
