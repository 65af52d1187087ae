"""The one-frame hand-off from a decode thread to the event loop."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from facewatch.pipeline.types import Frame
from facewatch.stream.handoff import Handoff, HandoffClosed

IMAGE = np.zeros((2, 2, 3), np.uint8)


def frame(seq: int) -> Frame:
    return Frame("s", seq, seq / 30, 0.0, 0.0, IMAGE)


async def test_live_producer_replaces_the_untaken_frame() -> None:
    got: list[int] = []
    handoff = Handoff(asyncio.get_running_loop(), lambda f: got.append(f.seq))
    stop = threading.Event()
    # The loop does not run between these puts, as when a decoder outpaces it.
    replaced = [handoff.put(frame(i), wait=False, stopped=stop.is_set) for i in range(4)]
    assert [r.seq if r else None for r in replaced] == [None, 0, 1, 2]
    await asyncio.sleep(0)
    assert got == [3]  # one delivery, the newest frame
    assert handoff.put(frame(4), wait=False, stopped=stop.is_set) is None
    await asyncio.sleep(0)
    assert got == [3, 4]


async def test_waiting_producer_delivers_every_frame_in_order() -> None:
    got: list[int] = []
    handoff = Handoff(asyncio.get_running_loop(), lambda f: got.append(f.seq))
    stop = threading.Event()

    def produce() -> None:
        for i in range(200):
            assert handoff.put(frame(i), wait=True, stopped=stop.is_set) is None

    await asyncio.wait_for(asyncio.to_thread(produce), 10)
    await asyncio.sleep(0)
    assert got == list(range(200))


async def test_window_waits_for_releases() -> None:
    got: list[int] = []
    handoff = Handoff(asyncio.get_running_loop(), lambda f: got.append(f.seq), window=2)
    stop = threading.Event()
    done = threading.Event()

    def produce() -> None:
        for i in range(4):
            handoff.put(frame(i), wait=True, stopped=stop.is_set)
        done.set()

    thread = threading.Thread(target=produce)
    thread.start()
    try:
        for _ in range(100):  # the consumer takes frames 0 and 1 but finishes neither
            await asyncio.sleep(0.005)
        assert got == [0, 1] and not done.is_set()
        handoff.release(0)
        handoff.release(0)  # twice, or an unknown frame: ignored
        handoff.release(99)
        for _ in range(200):
            await asyncio.sleep(0.005)
            if got == [0, 1, 2]:
                break
        assert got == [0, 1, 2] and not done.is_set()
        handoff.release(1)
        handoff.release(2)
        await asyncio.wait_for(asyncio.to_thread(done.wait), 5)
        await asyncio.sleep(0)
        assert got == [0, 1, 2, 3]
    finally:
        stop.set()
        thread.join(5)


async def test_close_frees_a_waiting_producer() -> None:
    handoff = Handoff(asyncio.get_running_loop(), lambda f: None, window=1)
    stop = threading.Event()
    handoff.put(frame(0), wait=True, stopped=stop.is_set)  # taken, never released
    waiting = asyncio.to_thread(handoff.put, frame(1), wait=True, stopped=stop.is_set)
    task = asyncio.ensure_future(waiting)
    await asyncio.sleep(0.05)
    handoff.close()
    with pytest.raises(HandoffClosed):
        await asyncio.wait_for(task, 5)


async def test_a_failing_sink_is_logged_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    def sink(f: Frame) -> None:
        raise RuntimeError("bug in the sink")

    handoff = Handoff(asyncio.get_running_loop(), sink, window=1)
    stop = threading.Event()
    handoff.put(frame(0), wait=True, stopped=stop.is_set)
    await asyncio.sleep(0)
    assert "frame sink failed" in caplog.text
    # The failed frame was released: the window does not leak.
    await asyncio.wait_for(
        asyncio.to_thread(handoff.put, frame(1), wait=True, stopped=stop.is_set), 5
    )


def test_closed_loop_closes_the_handoff() -> None:
    loop = asyncio.new_event_loop()
    loop.close()
    handoff = Handoff(loop, lambda f: None)
    with pytest.raises(HandoffClosed):
        handoff.put(frame(0), wait=False, stopped=lambda: False)
