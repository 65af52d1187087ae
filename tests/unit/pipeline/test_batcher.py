"""Batch policy by table; next_batch and the queues on a real event loop."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from facewatch.pipeline.batcher import BatchPolicy, next_batch
from facewatch.pipeline.queues import ClosableQueue, FrameHub, LatestQueue, QueueClosed
from facewatch.pipeline.types import Frame


@pytest.mark.parametrize(
    ("max_batch", "max_wait_s", "size", "first_at", "now", "ready", "remaining"),
    [
        (4, 0.02, 0, 0.0, 0.0, False, 0.02),
        (4, 0.02, 1, 0.0, 0.0, False, 0.02),
        (4, 0.02, 1, 0.0, 0.015, False, 0.005),
        (4, 0.02, 1, 0.0, 0.02, True, 0.0),
        (4, 0.02, 3, 0.0, 0.5, True, 0.0),
        (4, 0.02, 4, 0.0, 0.0, True, 0.0),
        (4, 0.02, 5, 0.0, 0.0, True, 0.0),
        (1, 10.0, 1, 0.0, 0.0, True, 0.0),
        (8, 0.0, 1, 5.0, 5.0, True, 0.0),
    ],
    ids=[
        "empty-never-ready",
        "first-item-waits",
        "partway",
        "deadline",
        "long-after",
        "full",
        "over-full",
        "batch-of-one",
        "no-wait",
    ],
)
def test_batch_policy(
    max_batch: int,
    max_wait_s: float,
    size: int,
    first_at: float,
    now: float,
    ready: bool,
    remaining: float,
) -> None:
    policy = BatchPolicy(max_batch, max_wait_s)
    assert policy.ready(size, first_at, now) is ready
    assert policy.remaining_s(size, first_at, now) == pytest.approx(remaining)


@pytest.mark.parametrize(("max_batch", "max_wait_s"), [(0, 0.1), (4, -1.0)])
def test_batch_policy_rejects_nonsense(max_batch: int, max_wait_s: float) -> None:
    with pytest.raises(ValueError):
        BatchPolicy(max_batch, max_wait_s)


async def test_full_batch_leaves_without_waiting() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(10):
        queue.put_nowait(i)
    # A huge wait: only the size rule can end these batches.
    policy = BatchPolicy(4, 3600.0)
    assert await next_batch(queue, policy) == [0, 1, 2, 3]
    assert await next_batch(queue, policy) == [4, 5, 6, 7]


async def test_partial_batch_leaves_after_the_wait() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    queue.put_nowait(1)
    assert await next_batch(queue, BatchPolicy(8, 0.01)) == [1]


async def test_items_arriving_during_the_wait_join_the_batch() -> None:
    queue: ClosableQueue[int] = ClosableQueue(16)

    async def produce() -> None:
        for i in range(3):
            await queue.put(i)
            await asyncio.sleep(0)

    producer = asyncio.create_task(produce())
    batch = await next_batch(queue, BatchPolicy(3, 5.0))
    await producer
    assert batch == [0, 1, 2]


async def test_a_complete_batch_leaves_without_waiting_but_takes_what_is_queued() -> None:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for item in ("cam-a", "cam-b", "cam-a"):
        queue.put_nowait(item)
    # Only "complete" can end this batch early: the wait is an hour and the batch has room.
    policy = BatchPolicy(8, 3600.0)
    cameras = {"cam-a", "cam-b"}
    async with asyncio.timeout(5):
        batch = await next_batch(queue, policy, complete=lambda got: cameras <= set(got))
    assert batch == ["cam-a", "cam-b", "cam-a"]


async def test_an_incomplete_batch_waits_out_the_policy() -> None:
    queue: asyncio.Queue[str] = asyncio.Queue()
    queue.put_nowait("cam-a")
    batch = await next_batch(
        queue, BatchPolicy(8, 0.02), complete=lambda got: {"cam-a", "cam-b"} <= set(got)
    )
    assert batch == ["cam-a"]


async def test_closed_queue_ends_batches() -> None:
    queue: ClosableQueue[int] = ClosableQueue(4)
    await queue.put(1)
    queue.close()
    assert await next_batch(queue, BatchPolicy(4, 5.0)) == [1]
    with pytest.raises(QueueClosed):
        await next_batch(queue, BatchPolicy(4, 5.0))
    with pytest.raises(QueueClosed):
        await queue.put(2)


async def test_closable_queue_put_waits_for_room() -> None:
    queue: ClosableQueue[int] = ClosableQueue(1)
    await queue.put(1)
    blocked = asyncio.create_task(queue.put(2))
    await asyncio.sleep(0.01)
    assert not blocked.done()
    assert queue.get_nowait() == 1
    await asyncio.wait_for(blocked, 5)
    assert queue.get_nowait() == 2


def test_latest_queue_drops_oldest_and_counts() -> None:
    queue: LatestQueue[int] = LatestQueue(2)
    dropped = [queue.put_nowait(i) for i in range(5)]
    assert dropped == [None, None, 0, 1, 2]
    assert queue.dropped == 3
    assert [queue.get_nowait(), queue.get_nowait()] == [3, 4]


def make_frame(stream: str, seq: int) -> Frame:
    return Frame(stream, seq, seq / 25, 0.0, 0.0, np.zeros((4, 4, 3), np.uint8))


async def test_frame_hub_round_robin_and_drops() -> None:
    drops: list[tuple[str, int, str]] = []
    hub = FrameHub(
        on_drop=lambda f, why: drops.append((f.stream_id, f.seq, why)),
        depth_for=lambda stream: 3 if stream == "file" else 1,
    )
    for seq in range(3):
        hub.put(make_frame("cam", seq))
        hub.put(make_frame("file", seq))
    # The live camera kept only its newest frame; the file kept all three.
    assert drops == [("cam", 0, "queue_full"), ("cam", 1, "queue_full")]
    order = [(f.stream_id, f.seq) for f in [hub.get_nowait() for _ in range(4)]]
    assert order == [("cam", 2), ("file", 0), ("file", 1), ("file", 2)]
    with pytest.raises(asyncio.QueueEmpty):
        hub.get_nowait()
    hub.close()
    hub.put(make_frame("cam", 9))
    assert drops[-1] == ("cam", 9, "stopped")
    with pytest.raises(QueueClosed):
        await hub.get()
