"""Frame taps for live views: newest frames kept, drops counted, closing ends the watch."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from facewatch.pipeline.taps import FrameTaps
from facewatch.pipeline.types import LiveFrame


def live_frame(stream_id: str, seq: int) -> LiveFrame:
    return LiveFrame(stream_id, seq, seq / 30, 1e9 + seq, np.zeros((4, 4, 3), np.uint8), ())


@pytest.mark.parametrize(
    ("maxsize", "offered", "kept", "dropped"),
    [(1, 1, [0], 0), (1, 3, [2], 2), (2, 5, [3, 4], 3), (4, 2, [0, 1], 0)],
)
async def test_a_watch_keeps_the_newest_frames_and_counts_the_rest(
    maxsize: int, offered: int, kept: list[int], dropped: int
) -> None:
    taps = FrameTaps()
    watch = taps.watch("cam", maxsize)
    for seq in range(offered):
        taps.offer(live_frame("cam", seq))
    watch.close()
    assert [frame.seq async for frame in watch] == []  # closing drops what was held
    watch = taps.watch("cam", maxsize)
    for seq in range(offered):
        taps.offer(live_frame("cam", seq))
    got = [(await watch.get()).seq for _ in kept]  # type: ignore[union-attr]
    assert got == kept and watch.dropped == dropped


async def test_frames_go_only_to_watches_of_their_stream() -> None:
    taps = FrameTaps()
    cam, door = taps.watch("cam"), taps.watch("door")
    taps.offer(live_frame("cam", 7))
    assert (await cam.get()).seq == 7  # type: ignore[union-attr]
    assert not taps.wanted("yard") and taps.wanted("door")
    door.close()
    assert not taps.wanted("door")


async def test_closing_a_stream_wakes_and_ends_its_waiting_viewers() -> None:
    taps = FrameTaps()
    watch = taps.watch("cam")
    waiting = asyncio.create_task(watch.get())
    await asyncio.sleep(0)
    taps.close_stream("cam")
    assert await asyncio.wait_for(waiting, 1) is None
    assert not taps.wanted("cam")
    taps.offer(live_frame("cam", 1))  # after closing: ignored, nothing held
    assert await watch.get() is None


def test_a_watch_needs_room_for_a_frame() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        FrameTaps().watch("cam", 0)
