"""Batching: gather items from many producers into one batch for one inference call.

A batch leaves when it holds ``max_batch`` items, or ``max_wait_s`` after its first item arrived,
whichever comes first: a full load gets full batches, a light one gets low latency. A caller that
knows no more items can come soon (every live camera already has its frame in the batch) says so
with ``complete``, and the batch leaves without waiting out ``max_wait_s``.
:class:`BatchPolicy` is the pure rule; :func:`next_batch` applies it to a queue.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from facewatch.pipeline.queues import QueueClosed

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """When a batch leaves.

    Attributes:
        max_batch: items at most.
        max_wait_s: seconds after the first item at most.
    """

    max_batch: int
    max_wait_s: float

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {self.max_batch}")
        if self.max_wait_s < 0:
            raise ValueError(f"max_wait_s must not be negative, got {self.max_wait_s}")

    def remaining_s(self, size: int, first_at: float, now: float) -> float:
        """Seconds the batch may still wait for more items; 0 when it must leave now."""
        if size >= self.max_batch:
            return 0.0
        return max(0.0, first_at + self.max_wait_s - now)

    def ready(self, size: int, first_at: float, now: float) -> bool:
        """Whether a batch of ``size`` items, the first at ``first_at``, leaves at ``now``."""
        return size > 0 and self.remaining_s(size, first_at, now) == 0.0


class BatchSource(Protocol[T_co]):
    """Where batches come from: :class:`asyncio.Queue` and the pipeline's own queues."""

    def get_nowait(self) -> T_co: ...

    async def get(self) -> T_co: ...


async def next_batch(
    source: BatchSource[T],
    policy: BatchPolicy,
    clock: Callable[[], float] = time.monotonic,
    complete: Callable[[list[T]], bool] | None = None,
) -> list[T]:
    """Wait for a first item, then take more until the policy says the batch leaves.

    Items already queued are always taken (up to ``max_batch``); ``complete(batch)`` returning
    True only stops the waiting for more.

    Raises:
        QueueClosed: the source was closed before a first item came; a source closed while the
            batch fills ends the batch early with what it has.
    """
    batch = [await source.get()]
    first_at = clock()
    while not policy.ready(len(batch), first_at, clock()):
        try:
            batch.append(source.get_nowait())
            continue
        except asyncio.QueueEmpty:
            if complete is not None and complete(batch):
                break
        except QueueClosed:
            break
        try:
            async with asyncio.timeout(policy.remaining_s(len(batch), first_at, clock())):
                batch.append(await source.get())
        except (TimeoutError, QueueClosed):
            break
    return batch
