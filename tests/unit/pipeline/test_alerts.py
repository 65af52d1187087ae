"""Alert fan-out, snapshot paths and region-of-interest geometry, on the event loop, no models."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import numpy as np
import pytest

from facewatch.pipeline.alerts import (
    Alert,
    AlertBus,
    SnapshotWriter,
    crop_with_margin,
    new_alert_id,
)
from facewatch.pipeline.runner import crop_roi, shift
from facewatch.pipeline.types import Faces


def make_alert(n: int) -> Alert:
    return Alert(new_alert_id(), "match", "cam", n, 1, "ada", 0.5, [0, 0, 10, 10], 0.0, 0.0)


async def test_every_subscriber_gets_every_alert_in_order() -> None:
    bus = AlertBus()
    first, second = bus.subscribe(10), bus.subscribe(10)
    for n in range(5):
        bus.publish(make_alert(n))
    bus.close()
    assert [a.track async for a in first] == list(range(5))
    assert [a.track async for a in second] == list(range(5))


async def test_a_stuck_subscriber_is_dropped_and_others_keep_going() -> None:
    bus = AlertBus()
    stuck, reader = bus.subscribe(3), bus.subscribe(100)
    for n in range(10):
        bus.publish(make_alert(n))  # never waits, whatever the subscribers do
    assert stuck.overflowed and stuck.closed
    assert bus.subscribers == 1 and bus.dropped_subscribers == 1
    assert [a.track async for a in stuck] == [0, 1, 2]  # what it had, then the end
    bus.close()
    assert [a.track async for a in reader] == list(range(10))


async def test_a_waiting_subscriber_wakes_for_a_new_alert() -> None:
    bus = AlertBus()
    subscription = bus.subscribe()
    waiting = asyncio.create_task(subscription.get())
    await asyncio.sleep(0)
    bus.publish(make_alert(7))
    alert = await asyncio.wait_for(waiting, 5)
    assert alert is not None and alert.track == 7


def test_alert_ids_are_unique_and_sorted_by_time() -> None:
    ids = [new_alert_id(1000.0 + n) for n in range(100)]
    assert len(set(ids)) == 100
    assert ids == sorted(ids)


@pytest.mark.parametrize(
    ("stream", "folder"),
    [("cam-1", "cam-1"), ("../../etc", "_.._etc"), ("a/b", "a_b"), ("..", "stream")],
)
def test_snapshots_stay_inside_the_data_dir(tmp_path: Path, stream: str, folder: str) -> None:
    image = np.full((60, 80, 3), 128, np.uint8)
    face, frame = SnapshotWriter(tmp_path).write("abc", stream, 0.0, image, [10, 10, 30, 40])
    assert face == f"snapshots/1970-01-01/{folder}/abc-face.jpg"
    for relative in (face, frame):
        path = (tmp_path / relative).resolve()
        assert path.is_relative_to(tmp_path.resolve())
        assert path.read_bytes()[:3] == b"\xff\xd8\xff"


@pytest.mark.parametrize("failing", ["face", "frame"])
def test_a_failed_snapshot_leaves_no_file_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    real_replace = os.replace

    def replace(source: str | Path, target: str | Path) -> None:
        if str(target).endswith(f"-{failing}.jpg"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    image = np.full((60, 80, 3), 128, np.uint8)
    with pytest.raises(OSError, match="No space"):
        SnapshotWriter(tmp_path).write("abc", "cam", 0.0, image, [10, 10, 30, 40])
    assert [p for p in (tmp_path / "snapshots").rglob("*") if p.is_file()] == []


@pytest.mark.parametrize(
    ("bbox", "shape"),
    [
        ([20, 20, 40, 40], (30, 30)),  # 5 px margin each side
        ([0, 0, 10, 10], (13, 13)),  # clipped at the corner
        ([70, 50, 80, 60], (13, 13)),  # clipped at the far edges
    ],
)
def test_crop_with_margin(bbox: list[float], shape: tuple[int, int]) -> None:
    image = np.zeros((60, 80, 3), np.uint8)
    assert crop_with_margin(image, bbox).shape[:2] == shape


@pytest.mark.parametrize(
    ("roi", "offset", "shape"),
    [
        (None, (0, 0), (100, 200)),
        ((0.0, 0.0, 1.0, 1.0), (0, 0), (100, 200)),
        ((0.5, 0.0, 1.0, 0.5), (100, 0), (50, 100)),
        ((0.25, 0.5, 0.75, 1.0), (50, 50), (50, 100)),
    ],
)
def test_roi_crop_and_shift_back(
    roi: tuple[float, float, float, float] | None, offset: tuple[int, int], shape: tuple[int, int]
) -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    crop, corner = crop_roi(image, roi)
    assert corner == offset and crop.shape[:2] == shape
    faces = Faces(
        np.array([[1, 2, 11, 12]], np.float32),
        np.full((1, 5, 2), 5, np.float32),
        np.ones(1, np.float32),
        np.ones(1, np.float32),
        np.ones(1, np.float32),
    )
    moved = shift(faces, corner)
    dx, dy = offset
    np.testing.assert_allclose(moved.xyxy, [[1 + dx, 2 + dy, 11 + dx, 12 + dy]])
    np.testing.assert_allclose(moved.kps[0, 0], [5 + dx, 5 + dy])
