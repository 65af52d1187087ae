"""Alerts waiting for a slow consumer (the database, an MQTT broker), bounded, oldest dropped.

:class:`Outbox` is the bounded buffer (no I/O); :class:`AlertFeed` moves alerts from the
pipeline's :class:`~facewatch.pipeline.alerts.AlertBus` into one as soon as they are published.
The bus drops a subscriber whose queue is full, so a consumer that may stall for minutes (a
database restart) must not read the bus directly: the feed empties its subscription at once and
the outbox, not the bus, decides what is dropped: the oldest alerts, counted.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from facewatch.pipeline.alerts import Alert, AlertBus, Subscription

log = logging.getLogger(__name__)

T = TypeVar("T")


class Outbox(Generic[T]):
    """A FIFO of at most ``capacity`` items that drops its oldest when full.

    Items a consumer :meth:`take` s and fails to deliver go back to the front with
    :meth:`restore`, so delivery order is kept across retries.

    Attributes:
        capacity: items held at most.
        dropped: items dropped because the outbox was full, since creation.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("an outbox holds at least one item")
        self.capacity = capacity
        self.dropped = 0
        self._items: deque[T] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def push(self, item: T) -> int:
        """Append ``item``; returns how many old items were dropped to make room (0 or 1)."""
        self._items.append(item)
        return self._trim()

    def take(self, limit: int) -> list[T]:
        """Remove and return up to ``limit`` items from the front, oldest first."""
        count = min(limit, len(self._items))
        return [self._items.popleft() for _ in range(count)]

    def restore(self, items: Iterable[T]) -> int:
        """Put items taken earlier back at the front, in order; returns how many were dropped.

        When the outbox filled up meanwhile, the oldest go first, and those are the restored.
        """
        self._items.extendleft(reversed(list(items)))
        return self._trim()

    def snapshot(self) -> list[T]:
        """The items held, oldest first, without removing them."""
        return list(self._items)

    def _trim(self) -> int:
        excess = len(self._items) - self.capacity
        for _ in range(excess):
            self._items.popleft()
        if excess > 0:
            self.dropped += excess
            return excess
        return 0


class AlertFeed:
    """Moves every alert published on a bus into an :class:`Outbox`, as it comes.

    Args:
        outbox: where alerts go; full, it drops its oldest.
        queue_size: the bus subscription's bound; the feed empties it at every alert, so it only
            fills when the event loop is starved.
        on_alert: called after alerts were added (to wake the consumer).
        name: who consumes the alerts, for log lines.

    Attributes:
        lost: alerts the bus dropped for us (our subscription overflowed): we subscribe again
            and count what was published meanwhile.
    """

    def __init__(
        self,
        outbox: Outbox[Alert],
        queue_size: int,
        on_alert: Callable[[], None],
        name: str,
    ) -> None:
        self.outbox = outbox
        self.queue_size = queue_size
        self.lost = 0
        self._on_alert = on_alert
        self._name = name
        self._bus: AlertBus | None = None
        self._subscription: Subscription | None = None
        self._received = 0
        self._published_at_subscribe = 0
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self, bus: AlertBus) -> None:
        if self._task is not None:
            return
        self._bus = bus
        self._subscribe()
        self._task = asyncio.create_task(self._pump(), name=f"facewatch-{self._name}-feed")

    @property
    def dropped(self) -> int:
        """Alerts lost on the way: dropped by the outbox or by the bus."""
        return self.outbox.dropped + self.lost

    async def drain(self) -> None:
        """Move what the subscription holds into the outbox now.

        It never suspends while alerts are queued, so what the outbox holds afterwards is, at
        this instant, everything published and not yet consumed.
        """
        subscription = self._subscription
        if subscription is None:
            return
        moved = 0
        while len(subscription):
            alert = await subscription.get()
            if alert is None:
                break
            self._accept(alert)
            moved += 1
        if moved:
            self._on_alert()

    async def close(self, timeout_s: float = 5.0) -> None:
        """Stop reading the bus, keeping in the outbox what the subscription still held."""
        self._closing = True
        if self._subscription is not None:
            self._subscription.close()
        if self._task is None:
            return
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(self._task)
        except TimeoutError:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _subscribe(self) -> None:
        assert self._bus is not None
        self._subscription = self._bus.subscribe(self.queue_size)
        self._published_at_subscribe = self._bus.published
        self._received = 0

    def _accept(self, alert: Alert) -> None:
        self._received += 1
        if self.outbox.push(alert) and worth_logging(self.outbox.dropped):
            log.warning(
                "%s is behind: %d alerts dropped so far (oldest first, the queue holds %d)",
                self._name,
                self.outbox.dropped,
                self.outbox.capacity,
            )

    async def _pump(self) -> None:
        while True:
            subscription = self._subscription
            assert subscription is not None
            alert = await subscription.get()
            if alert is not None:
                self._accept(alert)
                self._on_alert()
                continue
            if not subscription.overflowed or self._closing:
                return
            # The loop was starved long enough for our queue to fill: the bus dropped us.
            # Everything published since we subscribed reached us or is lost.
            assert self._bus is not None
            missed = self._bus.published - self._published_at_subscribe - self._received
            self.lost += max(0, missed)
            log.warning("%s lost %d alerts: its bus queue overflowed", self._name, missed)
            self._subscribe()


def worth_logging(count: int) -> bool:
    """Whether the ``count``-th occurrence of a repeated problem gets a log line.

    The 1st, 10th, 100th and every 1000th: enough to see it going on without flooding the log.
    """
    return count in (1, 10, 100) or (count > 0 and count % 1000 == 0)
