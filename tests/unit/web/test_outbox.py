"""The bounded outbox: drop the oldest, restore in order; and the feed from the alert bus."""

from __future__ import annotations

import asyncio

import pytest

from facewatch.pipeline.alerts import Alert, AlertBus, new_alert_id
from facewatch.web.outbox import AlertFeed, Outbox, worth_logging


def test_a_full_outbox_drops_its_oldest_and_counts_them() -> None:
    outbox: Outbox[int] = Outbox(3)
    assert [outbox.push(n) for n in range(5)] == [0, 0, 0, 1, 1]
    assert outbox.snapshot() == [2, 3, 4]
    assert outbox.dropped == 2


@pytest.mark.parametrize(
    ("held", "take", "failed", "pushed_meanwhile", "after", "dropped"),
    [
        # A failed delivery goes back to the front, in order.
        ([1, 2, 3], 2, [1, 2], [], [1, 2, 3], 0),
        # Part delivered: only the rest comes back.
        ([1, 2, 3], 3, [3], [], [3], 0),
        # New items came while delivering: restored ones stay in front of them.
        ([1, 2], 2, [1, 2], [3, 4], [1, 2, 3, 4], 0),
        # Full meanwhile (3 dropped while 1, 2 were out): the restored are the oldest, so they
        # go first when they come back.
        ([1, 2, 3, 4], 2, [1, 2], [5, 6, 7], [4, 5, 6, 7], 3),
    ],
)
def test_restore_keeps_order_and_the_bound(
    held: list[int],
    take: int,
    failed: list[int],
    pushed_meanwhile: list[int],
    after: list[int],
    dropped: int,
) -> None:
    outbox: Outbox[int] = Outbox(4)
    for item in held:
        outbox.push(item)
    taken = outbox.take(take)
    assert taken == held[:take]
    for item in pushed_meanwhile:
        outbox.push(item)
    outbox.restore(failed)
    assert outbox.snapshot() == after
    assert outbox.dropped == dropped


def test_take_never_takes_more_than_held() -> None:
    outbox: Outbox[str] = Outbox(10)
    outbox.push("a")
    assert outbox.take(5) == ["a"]
    assert outbox.take(5) == []
    assert len(outbox) == 0


def test_an_outbox_holds_at_least_one() -> None:
    with pytest.raises(ValueError):
        Outbox(0)


@pytest.mark.parametrize(
    ("count", "logged"),
    [(0, False), (1, True), (2, False), (10, True), (100, True), (999, False), (3000, True)],
)
def test_repeated_problems_are_logged_sparingly(count: int, logged: bool) -> None:
    assert worth_logging(count) is logged


def make_alert(track: int) -> Alert:
    return Alert(new_alert_id(), "match", "cam", track, 1, "ada", 0.5, [0, 0, 9, 9], 0.0, 0.0)


async def test_the_feed_empties_the_bus_queue_so_the_bus_never_drops_it() -> None:
    bus = AlertBus()
    outbox: Outbox[Alert] = Outbox(1000)
    woken = asyncio.Event()
    feed = AlertFeed(outbox, queue_size=4, on_alert=woken.set, name="test")
    feed.start(bus)
    for track in range(40):  # ten times the bus queue, with the loop running between alerts
        bus.publish(make_alert(track))
        await asyncio.sleep(0)
    await feed.close()
    assert [alert.track for alert in outbox.snapshot()] == list(range(40))
    assert feed.dropped == 0 and bus.dropped_subscribers == 0 and woken.is_set()


async def test_a_starved_feed_subscribes_again_and_counts_what_it_lost() -> None:
    bus = AlertBus()
    outbox: Outbox[Alert] = Outbox(1000)
    feed = AlertFeed(outbox, queue_size=4, on_alert=lambda: None, name="test")
    feed.start(bus)
    for track in range(10):  # no await: the feed cannot run, its bus queue overflows
        bus.publish(make_alert(track))
    await asyncio.sleep(0.01)
    await asyncio.sleep(0)
    bus.publish(make_alert(10))
    await feed.close()
    assert [alert.track for alert in outbox.snapshot()] == [0, 1, 2, 3, 10]
    assert feed.lost == 6 and feed.dropped == 6


async def test_drain_moves_what_is_queued_without_waiting() -> None:
    bus = AlertBus()
    outbox: Outbox[Alert] = Outbox(1000)
    feed = AlertFeed(outbox, queue_size=100, on_alert=lambda: None, name="test")
    feed.start(bus)
    for track in range(3):
        bus.publish(make_alert(track))
    await feed.drain()  # the feed's task has not run since: drain did the work
    assert [alert.track for alert in outbox.snapshot()] == [0, 1, 2]
    await feed.close()
