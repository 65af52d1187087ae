"""The event history: every alert the pipeline publishes, kept in the store's ``events`` table.

:class:`EventLog` reads the pipeline's :class:`~facewatch.pipeline.alerts.AlertBus` through an
:class:`~facewatch.web.outbox.AlertFeed` and writes alerts in batches, one transaction per batch,
on a thread of its own. When the store is down the alerts wait in a bounded outbox (the oldest
dropped and counted beyond ``write_queue``) and the writer retries with backoff; writes are
idempotent (an alert already stored is skipped), so a batch whose commit was cut off is simply
written again. Hourly, events older than ``keep_days`` go, with their snapshot files.

Queries are synchronous (routes call them on a thread): :meth:`EventLog.query` pages newest
first with an opaque cursor (keyset on ``alert_id``, which sorts by time), :meth:`EventLog.get`,
:meth:`EventLog.after` for resuming, and :meth:`EventLog.resume`, which also sees the alerts not
written yet, for WebSocket clients coming back after a gap.

Filters, times, cursors and snapshot paths are checked in :mod:`facewatch.web.event_filters`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Connection, delete, insert, or_, select
from sqlalchemy.exc import (
    SQLAlchemyError,
)

from facewatch.config import EventSettings
from facewatch.errors import StoreError
from facewatch.pipeline.alerts import Alert, AlertBus
from facewatch.stream.backoff import backoff_delay
from facewatch.watchlist.models import Event
from facewatch.watchlist.store import Store, is_unavailable, safe_url
from facewatch.web.event_filters import (
    MAX_PAGE,
    SNAPSHOT_DIR,
    EventFilters,
    InvalidEventQuery,
    check_alert_id,
    decode_cursor,
    encode_cursor,
    is_alert_id,
    parse_time,
    snapshot_relative,
    with_links,
)
from facewatch.web.outbox import AlertFeed, Outbox, worth_logging

log = logging.getLogger(__name__)

T = TypeVar("T")

_DAY_FOLDER = re.compile(r"\d{4}-\d{2}-\d{2}")
#: Events deleted per retention transaction: short enough not to hold the writers back.
PURGE_CHUNK = 1000
#: Paths per ``IN`` list when checking which snapshot files events still use.
_PATH_CHUNK = 500


@dataclass(frozen=True, slots=True)
class EventPage:
    """One page of events, newest first; ``next_cursor`` is None on the last page."""

    items: list[dict[str, Any]]
    next_cursor: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"items": self.items, "next_cursor": self.next_cursor}


@dataclass(frozen=True, slots=True)
class PurgeResult:
    events: int
    files: int


# --- the log ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Counters:
    written: int = 0
    write_errors: int = 0
    rejected: int = 0
    purged_events: int = 0
    purged_files: int = 0
    last_error: str | None = None
    last_write_at: float | None = None
    failing_since: float | None = None


class EventLog:
    """Writes every alert into the ``events`` table and answers queries about them.

    Args:
        store: the open store; its engine holds the ``events`` table.
        settings: retention, resume limit and the size of the write queue.
        data_dir: the data directory (snapshot paths are relative to it).
        batch_size: alerts per write transaction at most.
        retention_interval_s: seconds between two retention runs (the first runs at start).
        retry_initial_s, retry_max_s: the write retry backoff while the store is down; a short
            longest wait (one connection attempt every few seconds costs the store nothing)
            writes the held alerts soon after the store is back.
        close_timeout_s: how long :meth:`close` waits for pending alerts to be written.
    """

    def __init__(
        self,
        store: Store,
        settings: EventSettings,
        data_dir: Path,
        *,
        batch_size: int = 500,
        retention_interval_s: float = 3600.0,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 5.0,
        close_timeout_s: float = 10.0,
    ) -> None:
        self.store = store
        self.settings = settings
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.batch_size = batch_size
        self.retention_interval_s = retention_interval_s
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.close_timeout_s = close_timeout_s
        self._engine = store.sql
        self._outbox: Outbox[Alert] = Outbox(settings.write_queue)
        self._in_flight: list[Alert] = []
        self._wake = asyncio.Event()
        self._closing_event = asyncio.Event()
        self._feed = AlertFeed(self._outbox, settings.write_queue, self._wake.set, "event log")
        self._counters = _Counters()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="facewatch-events")
        self._writer: asyncio.Task[None] | None = None
        self._retention: asyncio.Task[None] | None = None
        self._closing = False
        self._draining = False
        self._closed = asyncio.Event()

    # --- counters -------------------------------------------------------------------------------

    @property
    def written(self) -> int:
        """Alerts stored (including ones found stored already when a write was retried)."""
        return self._counters.written

    @property
    def pending(self) -> int:
        """Alerts received and not written yet."""
        return len(self._outbox) + len(self._in_flight)

    @property
    def dropped(self) -> int:
        """Alerts never written because the queue was full (the oldest go first)."""
        return self._feed.dropped

    @property
    def write_errors(self) -> int:
        """Failed write attempts (the store down, or an alert it refused)."""
        return self._counters.write_errors

    @property
    def rejected(self) -> int:
        """Alerts the store refused (bad data): logged and skipped, never retried."""
        return self._counters.rejected

    def status(self) -> dict[str, Any]:
        """Counters for health pages and metrics."""
        counters = self._counters
        return {
            "written": counters.written,
            "pending": self.pending,
            "dropped": self.dropped,
            "write_errors": counters.write_errors,
            "rejected": counters.rejected,
            "queue_capacity": self._outbox.capacity,
            "store_ok": counters.failing_since is None,
            "failing_since": counters.failing_since,
            "last_error": counters.last_error,
            "last_write_at": counters.last_write_at,
            "purged_events": counters.purged_events,
            "purged_files": counters.purged_files,
            "keep_days": self.settings.keep_days,
        }

    # --- life -----------------------------------------------------------------------------------

    async def start(self, bus: AlertBus) -> None:
        """Subscribe to ``bus`` and start the writer and the hourly retention."""
        if self._writer is not None:
            return
        self._feed.start(bus)
        self._writer = asyncio.create_task(self._write_loop(), name="facewatch-event-writer")
        self._retention = asyncio.create_task(
            self._retention_loop(), name="facewatch-event-retention"
        )

    async def close(self) -> None:
        """Stop reading the bus, write what is pending (at most ``close_timeout_s``), stop.

        Safe to call twice; a second caller waits for the first.
        """
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        self._closing_event.set()
        try:
            await self._feed.close()
            # Only now may the writer stop at an empty outbox: the feed has handed over all.
            self._draining = True
            self._wake.set()
            if self._retention is not None:
                self._retention.cancel()
                await asyncio.gather(self._retention, return_exceptions=True)
            finished = await self._stop_writer()
            if self.pending:
                log.error(
                    "%d events were not written before shutdown (store: %s)",
                    self.pending,
                    self._counters.last_error or "too slow",
                )
            # A write still running on the thread (writer cancelled) finishes on its own.
            self._executor.shutdown(wait=finished, cancel_futures=True)
        finally:
            self._closed.set()

    async def _stop_writer(self) -> bool:
        """Wait for the writer to flush; True when it finished, False when it was cancelled."""
        if self._writer is None:
            return True
        try:
            async with asyncio.timeout(self.close_timeout_s):
                await asyncio.shield(self._writer)
            return True
        except TimeoutError:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            return False

    # --- writing --------------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            if not self._outbox:
                if self._draining:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._outbox.take(self.batch_size)
            self._in_flight = batch
            try:
                await loop.run_in_executor(self._executor, self._write_batch, batch)
            except StoreError as exc:
                failures += 1
                self._in_flight = []
                self._outbox.restore(batch)
                self._note_failure(exc, failures)
                await self._pause(
                    backoff_delay(
                        failures - 1, self.retry_initial_s, self.retry_max_s, random.random()
                    )
                )
                continue
            except Exception:
                # A bug, not the store: keep the alerts and go on rather than stop writing.
                log.exception("event writer failed; retrying")
                failures += 1
                self._in_flight = []
                self._outbox.restore(batch)
                self._counters.write_errors += 1
                await self._pause(self.retry_max_s)
                continue
            except BaseException:
                # Cancelled (shutdown past its grace): keep the batch counted as pending.
                self._in_flight = []
                self._outbox.restore(batch)
                raise
            self._in_flight = []
            if failures:
                log.info(
                    "event store reachable again after %d failed writes; %d events pending",
                    failures,
                    self.pending,
                )
                failures = 0
                self._counters.failing_since = None

    def _note_failure(self, exc: StoreError, failures: int) -> None:
        counters = self._counters
        counters.write_errors += 1
        counters.last_error = str(exc)
        if counters.failing_since is None:
            counters.failing_since = time.time()
        if worth_logging(failures):
            log.warning(
                "events not written (%d tries so far, %d pending, %d dropped): %s",
                failures,
                self.pending,
                self.dropped,
                exc,
            )

    async def _pause(self, delay_s: float) -> None:
        """Wait before a retry; while closing, retry often until close's deadline."""
        if self._closing:
            await asyncio.sleep(min(delay_s, 0.25))
            return
        try:
            async with asyncio.timeout(delay_s):
                await self._closing_event.wait()
        except TimeoutError:
            pass

    def _write_batch(self, batch: Sequence[Alert]) -> None:
        """Worker thread: write a batch, or alert by alert to set aside the ones refused."""
        try:
            self.write(batch)
            return
        except StoreError:
            raise
        except Exception as exc:
            if len(batch) == 1:
                self._reject(batch[0], exc)
                return
        for alert in batch:
            try:
                self.write([alert])
            except StoreError:
                raise
            except Exception as exc:
                self._reject(alert, exc)

    def _reject(self, alert: Alert, exc: Exception) -> None:
        self._counters.rejected += 1
        self._counters.write_errors += 1
        self._counters.last_error = f"alert {alert.id} refused: {_reason(exc)}"
        log.error("event %s of %s not kept: the store refused it: %s", alert.id, alert.stream, exc)

    def write(self, alerts: Sequence[Alert]) -> int:
        """Store alerts in one transaction, skipping those stored already; returns how many new.

        Synchronous (a worker thread). Idempotent, so a retried batch never duplicates.

        Raises:
            StoreError: the store cannot be reached (retry later).
            Exception: the store refused the data (SQLAlchemy errors, ``ValueError``).
        """
        if not alerts:
            return 0
        rows = [_event_row(alert) for alert in alerts]
        try:
            with self._engine.begin() as connection:
                ids = [row["alert_id"] for row in rows]
                stored = set(
                    connection.scalars(select(Event.alert_id).where(Event.alert_id.in_(ids)))
                )
                new = [row for row in rows if row["alert_id"] not in stored]
                if new:
                    connection.execute(insert(Event), new)
        except Exception as exc:
            if is_unavailable(exc):
                raise self._unavailable_error(exc) from exc
            raise
        self._counters.written += len(alerts)
        self._counters.last_write_at = time.time()
        return len(new)

    # --- reading --------------------------------------------------------------------------------

    def query(
        self,
        *,
        stream: str | Iterable[str] | None = None,
        person_id: str | int | Iterable[str | int] | None = None,
        type: str | Iterable[str] | None = None,
        since: str | float | datetime | None = None,
        until: str | float | datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> EventPage:
        """Events newest first, filtered; ``since`` is inclusive, ``until`` exclusive.

        Raises:
            InvalidEventQuery: a filter, time, limit or cursor that cannot be used.
            StoreError: the store cannot be reached.
        """
        filters = EventFilters.parse(stream, person_id, type, person_parameter="person_id")
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidEventQuery("limit", f"between 1 and {MAX_PAGE}")
        conditions = _conditions(filters)
        if since is not None:
            conditions.append(Event.ts >= parse_time(since, "since"))
        if until is not None:
            conditions.append(Event.ts < parse_time(until, "until"))
        if cursor:
            conditions.append(Event.alert_id < decode_cursor(cursor))
        statement = (
            select(Event.data).where(*conditions).order_by(Event.alert_id.desc()).limit(limit + 1)
        )
        rows = self._read(lambda connection: list(connection.scalars(statement)))
        items = [with_links(data) for data in rows[:limit]]
        more = len(rows) > limit
        return EventPage(items, encode_cursor(items[-1]["id"]) if more and items else None)

    def get(self, alert_id: str) -> dict[str, Any] | None:
        """One event by its alert id, or None."""
        if not is_alert_id(alert_id):
            return None
        statement = select(Event.data).where(Event.alert_id == alert_id)
        data = self._read(lambda connection: connection.scalar(statement))
        return None if data is None else with_links(data)

    def after(
        self,
        alert_id: str,
        limit: int,
        filters: EventFilters | None = None,
        *,
        newest: bool = False,
    ) -> list[dict[str, Any]]:
        """Stored events with a larger alert id than ``alert_id``, oldest first.

        Args:
            alert_id: the last event the reader has.
            limit: events at most.
            filters: only events passing them.
            newest: when more than ``limit`` follow, the last ``limit`` rather than the first.
        """
        if limit <= 0:
            return []
        conditions = [Event.alert_id > check_alert_id(alert_id), *_conditions(filters)]
        order = Event.alert_id.desc() if newest else Event.alert_id.asc()
        statement = select(Event.data).where(*conditions).order_by(order).limit(limit)
        rows = self._read(lambda connection: list(connection.scalars(statement)))
        if newest:
            rows.reverse()
        return [with_links(data) for data in rows]

    async def resume(
        self, alert_id: str, filters: EventFilters, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """What a reader that has everything up to ``alert_id`` missed: stored or not yet.

        Call it after subscribing to the bus: every alert published before that is, by then,
        stored, being written or in the outbox, and this sees all three. Alerts published since
        reach the subscription; some may be returned here too (the caller skips them by id).

        Returns:
            (the last ``limit`` events after ``alert_id``, oldest first; whether older ones
            were left out).
        """
        alert_id = check_alert_id(alert_id)
        await self._feed.drain()
        unwritten = [
            alert.as_dict()
            for alert in [*self._in_flight, *self._outbox.snapshot()]
            if alert.id > alert_id
        ]
        stored = await asyncio.to_thread(self.after, alert_id, limit + 1, filters, newest=True)
        merged = {event["id"]: event for event in stored}
        for event in unwritten:
            if filters.matches(event):
                merged.setdefault(event["id"], with_links(event))
        ordered = [merged[key] for key in sorted(merged)]
        truncated = len(ordered) > limit
        return (ordered[-limit:] if limit > 0 else []), truncated

    def _read(self, run: Callable[[Connection], T]) -> T:
        try:
            with self._engine.connect() as connection:
                return run(connection)
        except SQLAlchemyError as exc:
            if is_unavailable(exc):
                raise self._unavailable_error(exc) from exc
            raise

    def _transaction(self, run: Callable[[Connection], T]) -> T:
        try:
            with self._engine.begin() as connection:
                return run(connection)
        except SQLAlchemyError as exc:
            if is_unavailable(exc):
                raise self._unavailable_error(exc) from exc
            raise

    def _unavailable_error(self, exc: BaseException) -> StoreError:
        return StoreError(f"event store unavailable ({safe_url(self.store.url)}): {_reason(exc)}")

    # --- retention ------------------------------------------------------------------------------

    async def _retention_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                result = await loop.run_in_executor(self._executor, self.purge)
                if result.events or result.files:
                    log.info(
                        "retention: %d events and %d snapshot files older than %g days deleted",
                        result.events,
                        result.files,
                        self.settings.keep_days,
                    )
            except StoreError as exc:
                log.warning("retention skipped this time: %s", exc)
            except Exception:
                log.exception("retention failed")
            await asyncio.sleep(self.retention_interval_s)

    def purge(self, now: float | None = None) -> PurgeResult:
        """Delete events older than ``keep_days`` and the snapshot files no event uses any more.

        Synchronous. Files in day folders older than the cutoff that no event names (alerts that
        were dropped, half-written files) go too, and so do the folders left empty.
        """
        cutoff = datetime.fromtimestamp(
            (time.time() if now is None else now) - self.settings.keep_days * 86400, UTC
        )
        deleted = 0
        paths: set[str] = set()
        while True:

            def chunk(connection: Connection) -> list[Any]:
                found = list(
                    connection.execute(
                        select(Event.id, Event.snapshot, Event.frame_snapshot)
                        .where(Event.ts < cutoff)
                        .order_by(Event.id)
                        .limit(PURGE_CHUNK)
                    )
                )
                if found:
                    connection.execute(delete(Event).where(Event.id.in_([r[0] for r in found])))
                return found

            rows = self._transaction(chunk)
            deleted += len(rows)
            paths.update(path for row in rows for path in row[1:] if path)
            if len(rows) < PURGE_CHUNK:
                break
        files = self._remove_unused(paths) + self._sweep_old_days(cutoff.date())
        self._counters.purged_events += deleted
        self._counters.purged_files += files
        return PurgeResult(deleted, files)

    def _remove_unused(self, paths: Collection[str]) -> int:
        """Delete the snapshot files among ``paths`` that no remaining event names."""
        removed = 0
        ordered = sorted(paths)
        for start in range(0, len(ordered), _PATH_CHUNK):
            chunk = ordered[start : start + _PATH_CHUNK]
            used = self._used(chunk)
            for path in chunk:
                if path not in used and self._unlink(path):
                    removed += 1
        return removed

    def _used(self, paths: list[str]) -> set[str]:
        statement = select(Event.snapshot, Event.frame_snapshot).where(
            or_(Event.snapshot.in_(paths), Event.frame_snapshot.in_(paths))
        )
        rows = self._read(lambda connection: list(connection.execute(statement)))
        return {path for row in rows for path in row if path}

    def _unlink(self, path: str) -> bool:
        """Delete one snapshot file; a link is removed itself, never the file it points to."""
        relative = snapshot_relative(path)
        if relative is None:
            return False
        root = (self.data_dir / SNAPSHOT_DIR).resolve()
        try:
            folder = (root / relative).parent.resolve(strict=True)
        except (OSError, RuntimeError):
            return False
        if not folder.is_relative_to(root):
            return False
        try:
            os.unlink(folder / relative.name)
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.warning("snapshot %s not deleted: %s", path, exc)
            return False
        return True

    def _sweep_old_days(self, cutoff_day: date) -> int:
        """Remove unused files, then empty folders, in day folders before ``cutoff_day``."""
        root = self.data_dir / SNAPSHOT_DIR
        if not root.is_dir():
            return 0
        removed = 0
        for day in sorted(root.iterdir()):
            if not _DAY_FOLDER.fullmatch(day.name) or day.is_symlink() or not day.is_dir():
                continue
            try:
                if date.fromisoformat(day.name) >= cutoff_day:
                    continue
            except ValueError:
                continue
            files = [
                f"{SNAPSHOT_DIR}/{Path(folder, name).relative_to(root).as_posix()}"
                for folder, _, names in os.walk(day)
                for name in names
            ]
            removed += self._remove_unused(files)
            removed += self._remove_partials(day)
            for folder, _, _ in sorted(os.walk(day), key=lambda entry: -len(entry[0])):
                try:
                    os.rmdir(folder)  # only succeeds when empty
                except OSError:
                    pass
        return removed

    @staticmethod
    def _remove_partials(day: Path) -> int:
        """Half-written snapshots (``.<name>.tmp``) a crash left behind."""
        removed = 0
        for folder, _, names in os.walk(day):
            for name in names:
                if name.startswith(".") and name.endswith(".tmp"):
                    try:
                        os.unlink(os.path.join(folder, name))
                        removed += 1
                    except OSError:
                        pass
        return removed


def _conditions(filters: EventFilters | None) -> list[ColumnElement[bool]]:
    if filters is None:
        return []
    conditions: list[ColumnElement[bool]] = []
    if filters.streams:
        conditions.append(Event.stream.in_(sorted(filters.streams)))
    if filters.person_ids:
        conditions.append(Event.person_id.in_(sorted(filters.person_ids)))
    if filters.types:
        conditions.append(Event.type.in_(sorted(filters.types)))
    return conditions


def _event_row(alert: Alert) -> dict[str, Any]:
    """The ``events`` row of an alert; raises ``ValueError`` for data no store would keep."""
    data = alert.as_dict()
    # Checked here so one bad alert is refused alone, with a clear reason, before any SQL.
    json.dumps(data, allow_nan=False)
    return {
        "alert_id": alert.id,
        "type": alert.type,
        "stream": alert.stream,
        "track": alert.track,
        "person_id": alert.person_id,
        "person": alert.person,
        "similarity": alert.similarity,
        "ts": datetime.fromtimestamp(alert.ts, UTC),
        "snapshot": alert.snapshot,
        "frame_snapshot": alert.frame_snapshot,
        "data": data,
    }


def _reason(exc: BaseException) -> str:
    original = getattr(exc, "orig", None)
    text = str(original or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
