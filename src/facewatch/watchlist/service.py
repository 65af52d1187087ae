"""The watchlist: enrollment, identification and upkeep over one store and one vector index.

The store is the source of truth and the index is derived from it. Writes go to the store
first (one transaction each), then to the index; ``applied_version`` is the store version the
index is known to match. Whenever the index may have missed something (another process wrote,
the process died between the two steps, a snapshot is old) :meth:`Watchlist.sync` compares
face ids and fixes the difference from the store. Searches only read the index, never wait for
writes, and see each write whole or not at all.

Files: enrollment photos are kept content-addressed under ``<data dir>/faces`` before the faces
that point at them are committed, and a photo no face uses any more is deleted after the commit
that removed its last face (a crash in between leaves an unused file, which is harmless). The
index snapshot is written a moment after each change; one that fails (a full disk) is retried
with backoff, the previous snapshot staying in place. :meth:`Watchlist.storage_status` says how
these writes are going, without touching the database.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from facewatch.config import Settings
from facewatch.errors import (
    EnrollmentRejected,
    ImageError,
    PersonNotFoundError,
    StoreError,
    WatchlistError,
)
from facewatch.files import WriteHealth, atomic_write, is_no_space, remove_stale_temps
from facewatch.images import decode_image
from facewatch.pipeline.types import Faces
from facewatch.recognizer.calibration import MatchThreshold, choose_threshold
from facewatch.recognizer.calibration_files import load_calibration
from facewatch.recognizer.engine import FaceEngine
from facewatch.watchlist.enrollment import Gates, Notice, Reason, choose_face, duplicate_of
from facewatch.watchlist.index import (
    FaissIndex,
    IndexPolicy,
    PersonMatch,
    VectorIndex,
    best_per_person,
)
from facewatch.watchlist.snapshot import (
    SnapshotError,
    SnapshotInfo,
    load_snapshot,
    save_snapshot,
    snapshot_path,
)
from facewatch.watchlist.store import (
    Change,
    FaceRecord,
    NewFace,
    Page,
    PersonRecord,
    Store,
    safe_url,
)

log = logging.getLogger(__name__)

#: Face ids per IN (...) query when loading missing embeddings.
SYNC_CHUNK = 5000
#: Templates looked at per query before keeping the best per person: enough for top_k persons
#: even when each has several templates near the query.
TEMPLATES_PER_PERSON = 4

#: First and longest wait before writing a snapshot again after a failed write, in seconds.
SNAPSHOT_RETRY_S = 2.0
SNAPSHOT_RETRY_MAX_S = 60.0
#: First and longest wait before checking the store again after a write it cut off, in seconds.
RESYNC_RETRY_S = 1.0
RESYNC_RETRY_MAX_S = 30.0
#: Temp files of atomic writes older than this are left-overs of a killed process (seconds).
STALE_TEMP_S = 3600.0
#: Where enrollment photos are kept, under the data directory.
PHOTO_DIR = "faces"

Progress = Callable[[int, int], None]


class PhotoStorageError(StoreError):
    """An enrollment photo that cannot be kept in the data directory (disk full, read-only).

    ``path`` is relative to the data directory; ``no_space`` tells a full disk (or used-up
    quota) from other failures.
    """

    def __init__(self, path: Path, exc: OSError) -> None:
        reason = exc.strerror or str(exc) or type(exc).__name__
        super().__init__(f"cannot keep the enrollment photo {path}: {reason}")
        self.path = path
        self.errno = exc.errno
        self.no_space = is_no_space(exc)


@dataclass(frozen=True, slots=True)
class Photo:
    """An enrollment photo: its bytes and where they came from (a file name, an upload)."""

    source: str
    data: bytes

    def digest(self) -> str:
        """Hex SHA-256 of the bytes: the photo's identity in the store."""
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True, slots=True)
class Rejection:
    source: str
    reason: Reason
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"image": self.source, "reason": self.reason.value, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Caveat:
    """A warning about one accepted face (blurry, not frontal): enrolled, but a weak template."""

    source: str
    face_id: int
    notice: Notice

    def as_dict(self) -> dict[str, Any]:
        return {
            "image": self.source,
            "face_id": self.face_id,
            "warning": self.notice.caution.value,
            "detail": self.notice.detail,
        }


@dataclass(frozen=True, slots=True)
class Enrollment:
    """What an enrollment did: the person, the faces added, their warnings, the photos refused."""

    person: PersonRecord
    accepted: list[FaceRecord]
    rejected: list[Rejection]
    warnings: list[Caveat] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Identification:
    """One face found in a query image and who it is (``person`` None when nobody matches)."""

    image: str
    bbox: list[float]
    score: float
    person: str | None
    person_id: int | None
    similarity: float | None
    candidates: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "bbox": self.bbox,
            "score": self.score,
            "person": self.person,
            "person_id": self.person_id,
            "similarity": self.similarity,
            "candidates": self.candidates,
        }


class Watchlist:
    """Persons and their face templates, searchable by face.

    Use :meth:`open`; call :meth:`close` (or use it as a context manager) to save the index
    snapshot and release connections.
    """

    def __init__(
        self, settings: Settings, engine: FaceEngine, store: Store, index: VectorIndex
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.store = store
        self.index = index
        self.pack_id = engine.pack.id
        options = settings.watchlist
        self.gates = Gates(
            options.enroll_min_face_size,
            options.enroll_min_score,
            options.enroll_min_sharpness,
            options.enroll_min_frontal,
            options.duplicate_similarity,
        )
        self.data_dir = settings.data_dir.expanduser().resolve()
        self.calibration, self.calibration_origin = load_calibration(engine.pack, self.data_dir)
        self._enrolled = (0, 0)  # persons, templates
        self._match = self._choose_threshold(0, 0)
        self.applied_version = -1
        self.loaded_from = "empty"
        # Serialises store write + index update within this process, so the index follows the
        # store's version order and applied_version is always truthful.
        self._apply = threading.RLock()
        self._snapshot_lock = threading.Lock()
        self._snapshot_timer: threading.Timer | None = None
        self._snapshot_due = 0.0
        self._snapshot_version = -1
        self._resync_timer: threading.Timer | None = None
        self._resync_failures = 0
        self._closed = False
        #: How index snapshot and enrollment photo writes are going (for health reports).
        self.snapshot_writes = WriteHealth()
        self.photo_writes = WriteHealth()

    # --- life cycle ---------------------------------------------------------------------------

    @classmethod
    def open(cls, settings: Settings, engine: FaceEngine) -> Watchlist:
        """Open the store (migrating it), build the index for the engine's pack, sync them."""
        store = Store(settings.database_url)
        try:
            index = _open_index(settings, engine)
            watchlist = cls(settings, engine, store, index)
            watchlist._start()
        except BaseException:
            store.close()
            raise
        return watchlist

    def _start(self) -> None:
        self._remove_left_overs()
        if isinstance(self.index, FaissIndex):
            path = snapshot_path(self.data_dir, self.pack_id)
            try:
                info = load_snapshot(path, self.index, pack_id=self.pack_id)
                self.applied_version = self._snapshot_version = info.version
                self.loaded_from = "snapshot"
            except SnapshotError as exc:
                if path.exists():
                    log.warning("%s; rebuilding the index from the store", exc)
                self.loaded_from = "store"
        else:
            self.loaded_from = "backend"
        with self._apply:
            stale = self.store.version() != self.applied_version
            if stale:
                changed = self._sync_locked(full=self.loaded_from == "store")
                if self.loaded_from == "snapshot" and changed:
                    self.loaded_from = "snapshot+store"
                    log.info("index snapshot was stale; %d rows brought up to date", changed)
        missing = len(self.store.faces_without_embedding(self.pack_id))
        if missing:
            log.warning(
                "%d enrolled faces have no embedding for pack %s and cannot be found: "
                "run `facewatch reindex`",
                missing,
                self.pack_id,
            )
        self._recount_enrolled()
        if self.loaded_from != "snapshot" or stale:
            self._schedule_snapshot()

    def _remove_left_overs(self) -> None:
        """Temp files of atomic writes a killed process left (old ones only: see STALE_TEMP_S)."""
        folders = [self.data_dir / "index"]
        photos = self.data_dir / PHOTO_DIR
        if photos.is_dir():
            folders += [entry for entry in photos.iterdir() if entry.is_dir()]
        removed = sum(remove_stale_temps(folder, STALE_TEMP_S) for folder in folders)
        if removed:
            log.info("%d unfinished temp files of a stopped process removed", removed)

    def close(self) -> None:
        """Save the index snapshot if it changed, then release the store and index (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for timer in (self._snapshot_timer, self._resync_timer):
            if timer is not None:
                timer.cancel()
        try:
            self.save_snapshot()
            if self.applied_version != self._snapshot_version and not self.snapshot_writes.ok:
                log.warning(
                    "index snapshot not saved at close (%s): the next start loads the previous "
                    "one (version %d) and catches up from the store",
                    self.snapshot_writes.last_error,
                    self._snapshot_version,
                )
        finally:
            closer = getattr(self.index, "close", None)
            if closer is not None:
                closer()
            self.store.close()

    def __enter__(self) -> Watchlist:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- keeping the index in step ------------------------------------------------------------

    def sync(self) -> int:
        """Make the index match the store; returns how many rows were added or removed."""
        with self._apply:
            changed = self._sync_locked(full=False)
        if changed:
            self._schedule_snapshot()
        return changed

    def refresh(self) -> int:
        """Sync only if the store changed since the index last matched it (cheap to poll)."""
        if self.store.version() == self.applied_version:
            return 0
        return self.sync()

    def _sync_locked(self, *, full: bool) -> int:
        version = self.store.version()  # read first: rows read after it are at least as new
        dim = self.engine.embedding_dim
        if full:
            rows = self.store.embeddings(self.pack_id, dim)
            if isinstance(self.index, FaissIndex):
                self.index.replace_all(rows.face_ids, rows.person_ids, rows.vectors)
            else:
                self.index.clear()
                self.index.add(rows.face_ids, rows.person_ids, rows.vectors)
            self.applied_version = version
            self._recount_enrolled()
            return len(rows.face_ids)
        wanted = self.store.embedded_face_ids(self.pack_id)
        present = self.index.face_ids()
        missing = np.setdiff1d(wanted, present)
        extra = np.setdiff1d(present, wanted)
        if len(extra):
            self.index.remove(extra.tolist())
        for start in range(0, len(missing), SYNC_CHUNK):
            chunk = missing[start : start + SYNC_CHUNK].tolist()
            rows = self.store.embeddings(self.pack_id, dim, face_ids=chunk)
            self.index.add(rows.face_ids, rows.person_ids, rows.vectors)
        self.applied_version = version
        if len(missing) or len(extra):
            log.info("index synced: %d rows added, %d removed", len(missing), len(extra))
            self._recount_enrolled()
        return int(len(missing) + len(extra))

    def _apply_change(self, change: Change) -> None:
        """Apply one committed write to the index (caller holds ``_apply``)."""
        if change.removed:
            self.index.remove(change.removed)
        if change.added:
            self.index.add(
                np.array([a[0] for a in change.added], np.int64),
                np.array([a[1] for a in change.added], np.int64),
                np.stack([a[2] for a in change.added]).astype(np.float32),
            )
        if change.version == self.applied_version + 1:
            self.applied_version = change.version
        else:
            # Someone else (another process) wrote in between: fetch what we have not seen.
            self._sync_locked(full=False)
        self._recount_enrolled()
        self._schedule_snapshot()

    # --- snapshots ----------------------------------------------------------------------------

    def save_snapshot(self) -> bool:
        """Write the FAISS index snapshot if it is behind the index; True if written."""
        if not isinstance(self.index, FaissIndex):
            return False
        with self._snapshot_lock:
            with self._apply:
                version = self.applied_version
                if version == self._snapshot_version or version < 0:
                    return False
                arrays = self.index.dump()
                count = len(self.index)
            info = SnapshotInfo(version, self.pack_id, self.index.dim, count)
            path = snapshot_path(self.data_dir, self.pack_id)
            try:
                save_snapshot(path, arrays, info)
            except OSError as exc:
                # The previous snapshot is untouched and the store holds everything: the next
                # start loads the old snapshot and syncs it, and the write is retried meanwhile.
                first = self.snapshot_writes.ok
                self.snapshot_writes.failed(exc)
                log.log(
                    logging.ERROR if first else logging.DEBUG,
                    "cannot save the index snapshot %s: %s; the previous one stays (version "
                    "%d), retrying with backoff",
                    path,
                    exc,
                    self._snapshot_version,
                )
                return False
            if not self.snapshot_writes.ok:
                log.info("index snapshot saved again after %s", self.snapshot_writes.last_error)
            self.snapshot_writes.succeeded()
            self._snapshot_version = version
            return True

    def _schedule_snapshot(self, delay: float | None = None) -> None:
        """Save the snapshot ``delay`` seconds from now (default: snapshot_interval_s).

        A pending save due sooner is kept; one due later (a retry's backoff) is replaced, so a
        change after a failure is saved as promptly as any other.
        """
        if not isinstance(self.index, FaissIndex) or self._closed:
            return
        if delay is None:
            delay = self.settings.watchlist.snapshot_interval_s
        with self._apply:  # not _snapshot_lock: save_snapshot takes that one, then _apply
            due = time.monotonic() + delay
            pending = self._snapshot_timer
            if pending is not None and pending.is_alive():
                if self._snapshot_due <= due:
                    return
                pending.cancel()
            timer = threading.Timer(delay, self._snapshot_in_background)
            timer.daemon = True
            timer.name = "facewatch-index-snapshot"
            self._snapshot_timer = timer
            self._snapshot_due = due
            timer.start()

    def _snapshot_in_background(self) -> None:
        try:
            self.save_snapshot()
        except Exception as exc:  # a timer thread has nobody to report to but the log
            self.snapshot_writes.failed(exc)
            log.exception("index snapshot failed")
        with self._apply:
            if self._snapshot_timer is threading.current_thread():
                self._snapshot_timer = None
            behind = self.applied_version != self._snapshot_version
        if not behind:
            return
        # Failed, or the index changed while this save ran: go again.
        if self.snapshot_writes.ok:
            self._schedule_snapshot()
        else:
            self._schedule_snapshot(self._snapshot_retry_delay())

    def _snapshot_retry_delay(self) -> float:
        failing_since = self.snapshot_writes.failing_since or time.time()
        # Doubling with the time spent failing, not the attempts: changes also trigger saves.
        elapsed = max(0.0, time.time() - failing_since)
        return min(SNAPSHOT_RETRY_MAX_S, max(SNAPSHOT_RETRY_S, elapsed))

    # --- after a write the store cut off ------------------------------------------------------

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold ``_apply`` around a store write and its index update.

        A write that failed with the store unreachable may still have committed (the
        connection dropped after the commit was sent); the index would then miss it, so the
        store is checked again in the background until it answers.
        """
        with self._apply:
            try:
                yield
            except PhotoStorageError:
                raise
            except StoreError:
                self._resync_later()
                raise

    def _resync_later(self) -> None:
        if self._closed:
            return
        with self._apply:
            if self._resync_timer is not None and self._resync_timer.is_alive():
                return
            delay = min(RESYNC_RETRY_MAX_S, RESYNC_RETRY_S * 2 ** min(self._resync_failures, 16))
            timer = threading.Timer(delay, self._resync)
            timer.daemon = True
            timer.name = "facewatch-index-resync"
            self._resync_timer = timer
            timer.start()

    def _resync(self) -> None:
        try:
            changed = self.refresh()
        except StoreError as exc:
            self._resync_failures += 1
            log.debug("store still unreachable for the index check: %s", exc)
        except Exception:
            log.exception("index check after a failed write failed")
            return
        else:
            self._resync_failures = 0
            if changed:
                log.warning("a write reported as failed had reached the store; index synced")
            return
        with self._apply:
            if self._resync_timer is threading.current_thread():
                self._resync_timer = None
        self._resync_later()

    # --- enrollment ---------------------------------------------------------------------------

    def enroll(
        self,
        details: dict[str, Any],
        photos: Sequence[Photo],
        *,
        largest: bool = False,
    ) -> Enrollment:
        """A new person from their photos; the person exists only if some photo was accepted.

        Raises:
            EnrollmentRejected: no photo was usable (reasons per photo).
            WatchlistError: invalid details.
        """
        accepted, notices, rejected = self._screen(photos, largest=largest, person_id=None)
        if not accepted:
            raise EnrollmentRejected([(r.source, r.reason.value, r.detail) for r in rejected])
        with self._writing():
            self._keep_photos(photos, accepted)
            person, faces, change = self.store.create_person(details, accepted, self.pack_id)
            self._apply_change(change)
        return Enrollment(person, faces, rejected, _caveats(faces, notices))

    def add_photos(
        self, person_id: int, photos: Sequence[Photo], *, largest: bool = False
    ) -> Enrollment:
        """More faces for an existing person.

        Raises:
            PersonNotFoundError: no such person.
            EnrollmentRejected: no photo was usable.
        """
        self.store.get_person(person_id)
        accepted, notices, rejected = self._screen(photos, largest=largest, person_id=person_id)
        if not accepted:
            raise EnrollmentRejected([(r.source, r.reason.value, r.detail) for r in rejected])
        with self._writing():
            self._keep_photos(photos, accepted)
            faces, change = self.store.add_faces(person_id, accepted, self.pack_id)
            self._apply_change(change)
        return Enrollment(
            self.store.get_person(person_id), faces, rejected, _caveats(faces, notices)
        )

    def _screen(
        self, photos: Sequence[Photo], *, largest: bool, person_id: int | None
    ) -> tuple[list[NewFace], list[list[tuple[str, Notice]]], list[Rejection]]:
        """Decode, detect and embed every photo in one batch; keep the usable, unique ones.

        Returns:
            The faces to add, per face its warnings (with the photo's source), and the photos
            refused in the order given.
        """
        rejected: list[tuple[int, Rejection]] = []
        decoded: list[tuple[int, Photo, str, NDArray[np.uint8]]] = []
        limit = self.engine.settings.max_image_pixels
        for position, photo in enumerate(photos):
            try:
                image = decode_image(photo.data, max_pixels=limit, source=photo.source)
            except ImageError as exc:
                rejected.append((position, Rejection(photo.source, Reason.NOT_AN_IMAGE, str(exc))))
                continue
            decoded.append((position, photo, photo.digest(), image))
        found = self.engine.embed([item[3] for item in decoded]) if decoded else []

        known_hashes: set[str] = set()
        templates = np.zeros((0, self.engine.embedding_dim), np.float32)
        if person_id is not None:
            known_hashes, rows = self.store.templates(person_id, self.pack_id)
            templates = rows.vectors
        accepted: list[NewFace] = []
        notices: list[list[tuple[str, Notice]]] = []
        strict = self.settings.watchlist.enroll_strict_quality
        for (position, photo, digest, _), faces in zip(decoded, found, strict=True):
            if digest in known_hashes:
                rejected.append(
                    (
                        position,
                        Rejection(photo.source, Reason.DUPLICATE, "this photo is already enrolled"),
                    )
                )
                continue
            verdict = choose_face(faces, self.gates, largest=largest, strict=strict)
            if verdict.index is None:
                assert verdict.reason is not None
                rejected.append((position, Rejection(photo.source, verdict.reason, verdict.detail)))
                continue
            new = _new_face(faces, verdict.index, digest, photo)
            twin = duplicate_of(new.embedding, templates, self.gates.duplicate_similarity)
            if twin is not None:
                similarity = float(templates[twin] @ new.embedding)
                detail = f"same face as an existing template (similarity {similarity:.3f})"
                rejected.append((position, Rejection(photo.source, Reason.DUPLICATE, detail)))
                continue
            known_hashes.add(digest)
            templates = np.concatenate([templates, new.embedding[None]])
            accepted.append(new)
            notices.append([(photo.source, notice) for notice in verdict.notices])
        # Reasons come back in the order the photos were given.
        refused = [rejection for _, rejection in sorted(rejected, key=lambda r: r[0])]
        return accepted, notices, refused

    def _keep_photos(self, photos: Sequence[Photo], accepted: Sequence[NewFace]) -> None:
        """Store the accepted photos (content-addressed) before the faces that point at them.

        Called under ``_apply``, as photo deletion is: a photo found here cannot be deleted by
        this process before the faces using it are committed.

        Raises:
            PhotoStorageError: a photo could not be written (the enrollment does not happen).
        """
        by_hash = {p.digest(): p for p in photos}
        wrote = False
        for face in accepted:
            target = self.data_dir / face.image_path
            if target.exists():
                continue
            try:
                atomic_write(target, by_hash[face.image_sha256].data)
            except OSError as exc:
                self.photo_writes.failed(exc)
                log.warning("enrollment refused: photo %s not kept: %s", face.image_path, exc)
                raise PhotoStorageError(Path(face.image_path), exc) from exc
            wrote = True
        if wrote:
            self.photo_writes.succeeded()

    def _drop_photos(self, paths: Sequence[str]) -> int:
        """Delete photo files no face uses any more (called under ``_apply``, after the commit).

        Paths come from the store; one that would lead outside the photo folder is left alone.
        """
        root = (self.data_dir / PHOTO_DIR).resolve()
        removed = 0
        for relative in paths:
            target = self.data_dir / relative
            try:
                folder = target.parent.resolve(strict=True)
            except (OSError, RuntimeError):
                continue
            if not folder.is_relative_to(root):
                log.warning("photo path %r is outside %s: not deleted", relative, root)
                continue
            try:
                os.unlink(folder / target.name)
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("unused photo %s not deleted: %s", relative, exc)
                continue
            removed += 1
        return removed

    # --- editing ------------------------------------------------------------------------------

    def update_person(self, person_id: int, changes: dict[str, Any]) -> PersonRecord:
        return self.store.update_person(person_id, changes)

    def remove_face(self, face_id: int) -> int:
        """Remove one template (and its photo if no other face uses it); returns its person."""
        with self._writing():
            person_id, change = self.store.remove_face(face_id)
            self._apply_change(change)
            self._drop_photos(change.unused_photos)
        return person_id

    def forget(self, person_id: int) -> int:
        """Delete a person, all their templates and the photos no other face uses.

        Returns how many templates left the index.
        """
        with self._writing():
            change = self.store.delete_person(person_id)
            self._apply_change(change)
            self._drop_photos(change.unused_photos)
        return len(change.removed)

    def reset(self, *, confirm: bool) -> int:
        """Delete every person; ``confirm`` must be True. Returns the templates removed."""
        if confirm is not True:
            raise WatchlistError("reset deletes every person: pass confirm=True to do it")
        with self._writing():
            change = self.store.reset()
            self._apply_change(change)
            if isinstance(self.index, FaissIndex):
                self.index.clear()
            self._drop_photos(change.unused_photos)
        log.warning("watchlist reset: %d templates removed", len(change.removed))
        return len(change.removed)

    def resolve(self, person: str) -> PersonRecord:
        """A person by id (digits) or by exact name (which must be unique)."""
        if person.isdigit():
            return self.store.get_person(int(person))
        named = self.store.persons_named(person)
        if not named:
            raise PersonNotFoundError(person)
        if len(named) > 1:
            ids = ", ".join(str(p.id) for p in named)
            raise WatchlistError(
                f"{len(named)} persons are named {person!r} (ids {ids}): use an id"
            )
        return named[0]

    def search_persons(self, **filters: Any) -> Page:
        return self.store.search_persons(**filters)

    # --- the match threshold ------------------------------------------------------------------

    @property
    def threshold(self) -> float:
        """Cosine similarity a person's best score must reach for a face to get their name.

        Cheap (the pipeline reads it for every search): chosen again only when the number of
        enrolled persons changes; see :meth:`match_threshold`.
        """
        return self._match.value

    def match_threshold(self) -> MatchThreshold:
        """The threshold in effect, where it comes from and the FPIR it is expected to give.

        A set ``engine.match_threshold`` wins; else the pack's calibration gives the threshold
        for ``watchlist.target_fpir`` at the current number of enrolled persons (counting their
        templates: each is one chance for a stranger); else the pack's own.
        """
        return self._match

    def _choose_threshold(self, persons: int, templates: int) -> MatchThreshold:
        return choose_threshold(
            fixed=self.settings.engine.match_threshold,
            pack_threshold=self.engine.pack.recognizer.match_threshold,
            calibration=self.calibration,
            origin=self.calibration_origin,
            target_fpir=self.settings.watchlist.target_fpir,
            persons=persons,
            templates=templates,
        )

    def _recount_enrolled(self) -> None:
        """Count persons and templates after the index changed; choose the threshold again.

        Runs where writes and syncs run (never on the event loop); a store that does not answer
        keeps the previous count until the next change.
        """
        try:
            counts = self.store.counts()
        except StoreError as exc:
            log.warning("cannot count persons for the match threshold: %s", exc)
            return
        enrolled = (counts["persons"], counts["faces"])
        if enrolled != self._enrolled:
            self._enrolled = enrolled
            previous, self._match = self._match, self._choose_threshold(*enrolled)
            if previous.value != self._match.value:
                log.info(
                    "match threshold %.3f (%s) for %d persons, %d templates",
                    self._match.value,
                    self._match.source.value,
                    *enrolled,
                )

    # --- identification -----------------------------------------------------------------------

    def match(
        self, embeddings: NDArray[np.float32], k: int | None = None
    ) -> list[list[PersonMatch]]:
        """The best ``k`` persons for each (N, D) embedding, best first, threshold not applied."""
        k = k or self.settings.watchlist.top_k
        if len(embeddings) == 0 or len(self.index) == 0:
            return [[] for _ in range(len(embeddings))]
        hits = self.index.search(embeddings, k * TEMPLATES_PER_PERSON)
        return [best_per_person(hits, row, k) for row in range(len(hits))]

    def identify_faces(
        self, faces: Sequence[Faces], sources: Sequence[str]
    ) -> list[list[Identification]]:
        """Who each face is, for faces with embeddings (one ``Faces`` per image)."""
        embeddings = [f.embedding for f in faces if f.embedding is not None and len(f)]
        stacked = (
            np.concatenate(embeddings)
            if embeddings
            else np.zeros((0, self.engine.embedding_dim), np.float32)
        )
        matches = self.match(stacked)
        names = self.store.names(sorted({m.person_id for row in matches for m in row}))
        out: list[list[Identification]] = []
        row = 0
        for item, source in zip(faces, sources, strict=True):
            found = []
            for i in range(len(item)):
                candidates = matches[row]
                row += 1
                best = candidates[0] if candidates else None
                hit = best is not None and best.similarity >= self.threshold
                found.append(
                    Identification(
                        image=source,
                        bbox=[round(float(v), 1) for v in item.xyxy[i]],
                        score=round(float(item.score[i]), 4),
                        person=names.get(best.person_id) if hit and best else None,
                        person_id=best.person_id if hit and best else None,
                        similarity=round(best.similarity, 4) if best else None,
                        candidates=[
                            {
                                "person": names.get(m.person_id),
                                "person_id": m.person_id,
                                "face_id": m.face_id,
                                "similarity": round(m.similarity, 4),
                            }
                            for m in candidates
                        ],
                    )
                )
            out.append(found)
        return out

    def identify(
        self, images: Sequence[NDArray[np.uint8]], sources: Sequence[str]
    ) -> list[list[Identification]]:
        """Detect, embed (one batch) and identify every face of every image."""
        return self.identify_faces(self.engine.embed(images), sources)

    # --- re-embedding -------------------------------------------------------------------------

    def reindex(self, progress: Progress | None = None, *, batch: int = 32) -> dict[str, int]:
        """Embed, with this pack, every stored face that has no embedding for it yet.

        Each stored photo is detected again and the face overlapping the enrolled box most is
        embedded; photos whose face is not found again are reported as ``lost``.
        """
        pending = self.store.faces_without_embedding(self.pack_id)
        done = lost = 0
        for start in range(0, len(pending), batch):
            chunk = pending[start : start + batch]
            images, kept = [], []
            for face in chunk:
                try:
                    data = (self.data_dir / face.image_path).read_bytes()
                    images.append(
                        decode_image(data, max_pixels=self.engine.settings.max_image_pixels)
                    )
                    kept.append(face)
                except (OSError, ImageError) as exc:
                    log.warning("face %d: cannot read %s: %s", face.id, face.image_path, exc)
                    lost += 1
            rows = []
            for face, found in zip(kept, self.engine.embed(images), strict=True):
                best = _same_face(found, face.bbox)
                if best is None or found.embedding is None:
                    log.warning("face %d: not found again in %s", face.id, face.image_path)
                    lost += 1
                    continue
                rows.append((face.id, found.embedding[best]))
            if rows:
                with self._writing():
                    change = self.store.put_embeddings(self.pack_id, rows)
                    self._apply_change(change)
                done += len(change.added)
            if progress is not None:
                progress(min(start + batch, len(pending)), len(pending))
        return {"faces": len(pending), "embedded": done, "lost": lost}

    # --- status -------------------------------------------------------------------------------

    def storage_status(self) -> dict[str, Any]:
        """How writes to the data directory are going; reads no database (safe in an outage).

        ``index_snapshot`` (None for backends without one): the snapshot file, its size, the
        store version it holds, and whether the last save failed, with the error and times.
        ``photos``: the same for enrollment photos.
        """
        snapshot: dict[str, Any] | None = None
        if isinstance(self.index, FaissIndex):
            path = snapshot_path(self.data_dir, self.pack_id)
            try:
                size: int | None = path.stat().st_size
            except OSError:
                size = None
            snapshot = {
                "path": str(path),
                "bytes": size,
                "version": self._snapshot_version,
                "behind": self.applied_version != self._snapshot_version,
                **self.snapshot_writes.as_dict(),
            }
        return {
            "data_dir": str(self.data_dir),
            "index_snapshot": snapshot,
            "photos": self.photo_writes.as_dict(),
        }

    def status(self) -> dict[str, Any]:
        counts = self.store.counts()
        return {
            "pack": self.pack_id,
            "threshold": self.threshold,
            "matching": self.match_threshold().as_dict(),
            "store": {
                "url": safe_url(self.store.url),
                "dialect": self.store.dialect,
                "version": self.store.version(),
                **counts,
            },
            "index": {
                **self.index.status(),
                "applied_version": self.applied_version,
                "loaded_from": self.loaded_from,
                "snapshot_version": self._snapshot_version,
            },
        }


def _open_index(settings: Settings, engine: FaceEngine) -> VectorIndex:
    options = settings.watchlist
    dim = engine.embedding_dim
    if options.milvus_dimension is not None and options.milvus_dimension != dim:
        raise WatchlistError(
            f"MILVUS_DIMENSION is {options.milvus_dimension} but pack {engine.pack.id} makes "
            f"{dim}-d embeddings"
        )
    if options.backend == "faiss":
        policy = IndexPolicy(
            approximate_above=options.approximate_above,
            approximate=options.approximate_index,
            nprobe=options.nprobe,
        )
        return FaissIndex(dim, policy, use_gpu=options.use_gpu)
    try:
        from facewatch.watchlist.milvus import MilvusIndex
    except ImportError as exc:
        raise WatchlistError(
            f"the Milvus backend needs pymilvus: pip install 'facewatch[milvus]' ({exc})"
        ) from exc

    uri = options.milvus_uri or f"http://{options.milvus_host}:{options.milvus_port}"
    # One collection per pack: embeddings of different models must never be compared.
    collection = f"{options.milvus_collection_name}_{_slug(engine.pack.id)}"
    return MilvusIndex(uri, collection, dim, token=options.milvus_token)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)


def _new_face(faces: Faces, i: int, digest: str, photo: Photo) -> NewFace:
    assert faces.embedding is not None
    suffix = Path(photo.source).suffix.lower()
    suffix = suffix if suffix in {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"} else ""
    return NewFace(
        image_sha256=digest,
        image_path=f"faces/{digest[:2]}/{digest}{suffix}",
        bbox=[float(v) for v in faces.xyxy[i]],
        landmarks=[[float(x), float(y)] for x, y in faces.kps[i]],
        det_score=float(faces.score[i]),
        face_size=float(faces.size[i]),
        sharpness=float(faces.sharpness[i]),
        frontal=float(faces.frontal[i]),
        embedding=faces.embedding[i].astype(np.float32),
    )


def _caveats(
    faces: Sequence[FaceRecord], notices: Sequence[Sequence[tuple[str, Notice]]]
) -> list[Caveat]:
    """The warnings of the faces the store added (in the order they were given to it)."""
    return [
        Caveat(source, face.id, notice)
        for face, found in zip(faces, notices, strict=True)
        for source, notice in found
    ]


def _same_face(found: Faces, bbox: Sequence[float]) -> int | None:
    """Row of ``found`` overlapping ``bbox`` best (IoU >= 0.3), else None."""
    if len(found) == 0:
        return None
    box = np.asarray(bbox, np.float64)
    x1 = np.maximum(found.xyxy[:, 0], box[0])
    y1 = np.maximum(found.xyxy[:, 1], box[1])
    x2 = np.minimum(found.xyxy[:, 2], box[2])
    y2 = np.minimum(found.xyxy[:, 3], box[3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = found.area + (box[2] - box[0]) * (box[3] - box[1]) - inter
    iou = inter / np.maximum(union, 1e-9)
    best = int(np.argmax(iou))
    return best if iou[best] >= 0.3 else None
