"""The watchlist: enrollment, identification and upkeep over one store and one vector index.

The store is the source of truth and the index is derived from it. Writes go to the store
first (one transaction each), then to the index; ``applied_version`` is the store version the
index is known to match. Whenever the index may have missed something (another process wrote,
the process died between the two steps, a snapshot is old) :meth:`Watchlist.sync` compares
face ids and fixes the difference from the store. Searches only read the index, never wait for
writes, and see each write whole or not at all.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
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
    WatchlistError,
)
from facewatch.files import atomic_write
from facewatch.images import decode_image
from facewatch.pipeline.types import Faces
from facewatch.recognizer.engine import FaceEngine
from facewatch.watchlist.enrollment import Gates, Reason, choose_face, duplicate_of
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

Progress = Callable[[int, int], None]


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
class Enrollment:
    """What an enrollment did: the person, the faces added, the photos refused."""

    person: PersonRecord
    accepted: list[FaceRecord]
    rejected: list[Rejection]


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
        self.threshold = engine.match_threshold
        options = settings.watchlist
        self.gates = Gates(
            options.enroll_min_face_size,
            options.enroll_min_score,
            options.enroll_min_sharpness,
            options.enroll_min_frontal,
            options.duplicate_similarity,
        )
        self.data_dir = settings.data_dir.expanduser().resolve()
        self.applied_version = -1
        self.loaded_from = "empty"
        # Serialises store write + index update within this process, so the index follows the
        # store's version order and applied_version is always truthful.
        self._apply = threading.RLock()
        self._snapshot_lock = threading.Lock()
        self._snapshot_timer: threading.Timer | None = None
        self._snapshot_version = -1
        self._closed = False

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
        if self.loaded_from != "snapshot" or stale:
            self._schedule_snapshot()

    def close(self) -> None:
        """Save the index snapshot if it changed, then release the store and index (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._snapshot_timer is not None:
            self._snapshot_timer.cancel()
        try:
            self.save_snapshot()
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
            try:
                save_snapshot(snapshot_path(self.data_dir, self.pack_id), arrays, info)
            except OSError as exc:
                # The store still holds everything; the next start rebuilds from it.
                log.error("cannot save the index snapshot: %s", exc)
                return False
            self._snapshot_version = version
            return True

    def _schedule_snapshot(self) -> None:
        if not isinstance(self.index, FaissIndex) or self._closed:
            return
        delay = self.settings.watchlist.snapshot_interval_s
        with self._apply:  # not _snapshot_lock: save_snapshot takes that one, then _apply
            if self._snapshot_timer is not None and self._snapshot_timer.is_alive():
                return
            timer = threading.Timer(delay, self._snapshot_in_background)
            timer.daemon = True
            timer.name = "facewatch-index-snapshot"
            self._snapshot_timer = timer
            timer.start()

    def _snapshot_in_background(self) -> None:
        try:
            self.save_snapshot()
        except Exception:  # a timer thread has nobody to report to but the log
            log.exception("index snapshot failed")

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
        accepted, rejected = self._screen(photos, largest=largest, person_id=None)
        if not accepted:
            raise EnrollmentRejected([(r.source, r.reason.value, r.detail) for r in rejected])
        self._keep_photos(photos, accepted)
        with self._apply:
            person, faces, change = self.store.create_person(details, accepted, self.pack_id)
            self._apply_change(change)
        return Enrollment(person, faces, rejected)

    def add_photos(
        self, person_id: int, photos: Sequence[Photo], *, largest: bool = False
    ) -> Enrollment:
        """More faces for an existing person.

        Raises:
            PersonNotFoundError: no such person.
            EnrollmentRejected: no photo was usable.
        """
        self.store.get_person(person_id)
        accepted, rejected = self._screen(photos, largest=largest, person_id=person_id)
        if not accepted:
            raise EnrollmentRejected([(r.source, r.reason.value, r.detail) for r in rejected])
        self._keep_photos(photos, accepted)
        with self._apply:
            faces, change = self.store.add_faces(person_id, accepted, self.pack_id)
            self._apply_change(change)
        return Enrollment(self.store.get_person(person_id), faces, rejected)

    def _screen(
        self, photos: Sequence[Photo], *, largest: bool, person_id: int | None
    ) -> tuple[list[NewFace], list[Rejection]]:
        """Decode, detect and embed every photo in one batch; keep the usable, unique ones."""
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
        for (position, photo, digest, _), faces in zip(decoded, found, strict=True):
            if digest in known_hashes:
                rejected.append(
                    (
                        position,
                        Rejection(photo.source, Reason.DUPLICATE, "this photo is already enrolled"),
                    )
                )
                continue
            verdict = choose_face(faces, self.gates, largest=largest)
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
        # Reasons come back in the order the photos were given.
        return accepted, [rejection for _, rejection in sorted(rejected, key=lambda r: r[0])]

    def _keep_photos(self, photos: Sequence[Photo], accepted: Sequence[NewFace]) -> None:
        """Store the accepted photos (content-addressed) before the faces that point at them."""
        by_hash = {p.digest(): p for p in photos}
        for face in accepted:
            target = self.data_dir / face.image_path
            if not target.exists():
                atomic_write(target, by_hash[face.image_sha256].data)

    # --- editing ------------------------------------------------------------------------------

    def update_person(self, person_id: int, changes: dict[str, Any]) -> PersonRecord:
        return self.store.update_person(person_id, changes)

    def remove_face(self, face_id: int) -> int:
        """Remove one template; returns its person's id."""
        with self._apply:
            person_id, change = self.store.remove_face(face_id)
            self._apply_change(change)
        return person_id

    def forget(self, person_id: int) -> int:
        """Delete a person and all their templates; returns how many templates left the index."""
        with self._apply:
            change = self.store.delete_person(person_id)
            self._apply_change(change)
        return len(change.removed)

    def reset(self, *, confirm: bool) -> int:
        """Delete every person; ``confirm`` must be True. Returns the templates removed."""
        if confirm is not True:
            raise WatchlistError("reset deletes every person: pass confirm=True to do it")
        with self._apply:
            change = self.store.reset()
            self._apply_change(change)
            if isinstance(self.index, FaissIndex):
                self.index.clear()
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
                with self._apply:
                    change = self.store.put_embeddings(self.pack_id, rows)
                    self._apply_change(change)
                done += len(change.added)
            if progress is not None:
                progress(min(start + batch, len(pending)), len(pending))
        return {"faces": len(pending), "embedded": done, "lost": lost}

    # --- status -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        counts = self.store.counts()
        return {
            "pack": self.pack_id,
            "threshold": self.threshold,
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
