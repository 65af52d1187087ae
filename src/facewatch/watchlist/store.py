"""The watchlist store: persons, faces and embeddings in SQLite, PostgreSQL or MySQL/MariaDB.

Every change is one transaction that first bumps ``watchlist_state.version``: the bump takes the
database's write lock at the start (SQLite never has to upgrade a read lock, which deadlocks),
orders concurrent writers, and tells index snapshots which content they reflect. Callers get
plain dataclasses back, never ORM objects tied to a session.

A database that cannot be reached (down, restarting, connection killed) is a
:class:`~facewatch.errors.StoreError`, never a raw driver error; nothing is retried here, since a
write whose commit was cut off may or may not have landed. Pooled connections are checked before
use, so the first call after the database is back succeeds. Names of persons, which recognition
needs on every match, are served from memory while the database cannot be reached.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from numpy.typing import NDArray
from sqlalchemy import Engine, create_engine, delete, event, func, or_, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker

from facewatch.errors import PersonNotFoundError, StoreError, WatchlistError
from facewatch.watchlist.models import Embedding, Face, Person, WatchlistState, utcnow

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
#: Rows fetched per round trip when streaming embeddings out for an index rebuild.
CHUNK_ROWS = 20_000
#: Details a person has besides their faces; ``attributes`` is free-form JSON.
PERSON_FIELDS = ("name", "age", "gender", "address", "attributes")
#: Values per ``IN (...)`` list when checking which photo paths faces still use.
PATH_CHUNK = 500
#: Errors that mean "the database cannot be reached now" rather than "it refused this".
UNAVAILABLE: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    DisconnectionError,
    PoolTimeoutError,
)


@dataclass(frozen=True, slots=True)
class PersonRecord:
    id: int
    name: str
    age: int | None
    gender: str | None
    address: str | None
    attributes: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    face_count: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "age": self.age,
            "gender": self.gender,
            "address": self.address,
            "attributes": self.attributes,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "face_count": self.face_count,
        }


@dataclass(frozen=True, slots=True)
class FaceRecord:
    id: int
    person_id: int
    image_sha256: str
    image_path: str
    bbox: list[float]
    det_score: float
    face_size: float
    sharpness: float
    frontal: float
    pack_id: str
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "person_id": self.person_id,
            "image_sha256": self.image_sha256,
            "image_path": self.image_path,
            "bbox": [round(v, 2) for v in self.bbox],
            "quality": {
                "det_score": round(self.det_score, 4),
                "face_size": round(self.face_size, 2),
                "sharpness": round(self.sharpness, 2),
                "frontal": round(self.frontal, 4),
            },
            "pack_id": self.pack_id,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class NewFace:
    """A face accepted for enrollment, with its embedding under ``pack_id``."""

    image_sha256: str
    image_path: str
    bbox: list[float]
    landmarks: list[list[float]]
    det_score: float
    face_size: float
    sharpness: float
    frontal: float
    embedding: NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Page:
    items: list[PersonRecord]
    total: int
    offset: int
    limit: int


@dataclass(frozen=True, slots=True)
class Rows:
    """Embeddings read back from the store: face ids (N,), person ids (N,), vectors (N, D)."""

    face_ids: NDArray[np.int64]
    person_ids: NDArray[np.int64]
    vectors: NDArray[np.float32]

    @staticmethod
    def empty(dim: int) -> Rows:
        return Rows(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, dim), np.float32))


@dataclass(slots=True)
class Change:
    """What one write did, for the index: rows to add, face ids to drop, the new version.

    ``unused_photos`` are the photo paths (relative to the data directory) of removed faces
    that no face uses any more once the write is committed: their files may go.
    """

    version: int
    added: list[tuple[int, int, NDArray[np.float32]]] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    unused_photos: list[str] = field(default_factory=list)


def safe_url(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL has nothing we can safely show but its scheme
        return url.split(":", 1)[0] + ":..."


class Store:
    """Persons, faces and their embeddings; migrated to the latest schema when opened.

    Args:
        url: SQLAlchemy URL (``sqlite:///path``, ``postgresql+psycopg://...``,
            ``mysql+pymysql://...``).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self._engine = _create_engine(url)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot open the store at {safe_url(url)}: {_reason(exc)}") from exc
        try:
            self.migrate()
        except BaseException as exc:
            self._engine.dispose()  # no pooled connection outlives a store that failed to open
            if isinstance(exc, SQLAlchemyError):
                raise StoreError(
                    f"cannot open the store at {safe_url(url)}: {_reason(exc)}"
                ) from exc
            raise
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        # Names read or written by this process, for recognition while the database is away.
        self._names: dict[int, str] = {}
        self._names_lock = threading.Lock()

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    @property
    def sql(self) -> Engine:
        """The SQLAlchemy engine, for the other tables of the same database (accounts, events)."""
        return self._engine

    def close(self) -> None:
        self._engine.dispose()

    # --- schema -------------------------------------------------------------------------------

    def migrate(self) -> None:
        """Bring the schema to the latest migration (a no-op when it is there already)."""
        current, head = self.schema_revision()
        if current == head:
            return
        if current is not None and not self._known_revision(current):
            raise StoreError(
                f"the store {safe_url(self.url)} has schema {current}, which this facewatch "
                f"(schema {head}) does not know: it was written by a newer facewatch. Run that "
                "version, or restore the backup taken before the upgrade."
            )
        log.info("migrating the store %s from %s to %s", safe_url(self.url), current, head)
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        # Alembic's own INFO lines are noise next to ours.
        logging.getLogger("alembic").setLevel(logging.WARNING)
        with self._engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    @staticmethod
    def _known_revision(revision: str) -> bool:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        return any(
            script.revision == revision
            for script in ScriptDirectory.from_config(config).walk_revisions()
        )

    def schema_revision(self) -> tuple[str | None, str | None]:
        """(the database's migration, the latest migration this code knows)."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        head = ScriptDirectory.from_config(config).get_current_head()
        with self._engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
        return current, head

    # --- transactions -------------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[Session]:
        try:
            with self._sessions() as session:
                yield session
        except SQLAlchemyError as exc:
            if is_unavailable(exc):
                raise self._unavailable_error(exc) from exc
            raise

    def _unavailable_error(self, exc: SQLAlchemyError) -> StoreError:
        return StoreError(f"store unavailable ({safe_url(self.url)}): {_reason(exc)}")

    @contextmanager
    def _write(self) -> Iterator[tuple[Session, Change]]:
        """A transaction that bumps the version first; commits on success, else rolls back."""
        try:
            with self._sessions.begin() as session:
                session.execute(
                    update(WatchlistState)
                    .where(WatchlistState.id == 1)
                    .values(version=WatchlistState.version + 1)
                )
                version = session.scalar(
                    select(WatchlistState.version).where(WatchlistState.id == 1)
                )
                if version is None:
                    raise StoreError("the watchlist_state row is missing: was the schema migrated?")
                yield session, Change(int(version))
        except SQLAlchemyError as exc:
            if is_unavailable(exc):
                raise self._unavailable_error(exc) from exc
            raise

    def version(self) -> int:
        with self._read() as session:
            value = session.scalar(select(WatchlistState.version).where(WatchlistState.id == 1))
        return int(value or 0)

    # --- persons ------------------------------------------------------------------------------

    def create_person(
        self, details: dict[str, Any], faces: Sequence[NewFace], pack_id: str
    ) -> tuple[PersonRecord, list[FaceRecord], Change]:
        """A new person and their faces, in one transaction."""
        details = _check_details(details, creating=True)
        with self._write() as (session, change):
            person = Person(**{"attributes": {}, **details})
            session.add(person)
            session.flush()
            records = self._insert_faces(session, change, person.id, faces, pack_id)
            person_record = _person(person, len(records))
        self._remember_names({person_record.id: person_record.name})
        return person_record, records, change

    def add_faces(
        self, person_id: int, faces: Sequence[NewFace], pack_id: str
    ) -> tuple[list[FaceRecord], Change]:
        with self._write() as (session, change):
            person = session.get(Person, person_id, with_for_update=True)
            if person is None:
                raise PersonNotFoundError(person_id)
            records = self._insert_faces(session, change, person_id, faces, pack_id)
            person.updated_at = utcnow()
        return records, change

    def update_person(self, person_id: int, changes: dict[str, Any]) -> PersonRecord:
        changes = _check_details(changes, creating=False)
        with self._write() as (session, _):
            person = session.get(Person, person_id)
            if person is None:
                raise PersonNotFoundError(person_id)
            for key, value in changes.items():
                setattr(person, key, value)
            person.updated_at = utcnow()
            session.flush()
            record = _person(person, self._face_count(session, person_id))
        self._remember_names({record.id: record.name})
        return record

    def delete_person(self, person_id: int) -> Change:
        with self._write() as (session, change):
            person = session.get(Person, person_id)
            if person is None:
                raise PersonNotFoundError(person_id)
            faces = session.execute(
                select(Face.id, Face.image_path).where(Face.person_id == person_id)
            ).all()
            change.removed = [int(face_id) for face_id, _ in faces]
            # Explicit deletes: the ON DELETE CASCADE is there too, but not every SQLite
            # connection made outside facewatch turns foreign keys on.
            session.execute(delete(Embedding).where(Embedding.face_id.in_(change.removed)))
            session.execute(delete(Face).where(Face.person_id == person_id))
            session.execute(delete(Person).where(Person.id == person_id))
            change.unused_photos = _unused_photos(session, [path for _, path in faces])
        with self._names_lock:
            self._names.pop(person_id, None)
        return change

    def remove_face(self, face_id: int) -> tuple[int, Change]:
        """Remove one face; returns its person's id."""
        with self._write() as (session, change):
            face = session.get(Face, face_id)
            if face is None:
                raise WatchlistError(f"no face {face_id} in the watchlist")
            person_id, path = face.person_id, face.image_path
            session.execute(delete(Embedding).where(Embedding.face_id == face_id))
            session.execute(delete(Face).where(Face.id == face_id))
            change.removed = [face_id]
            change.unused_photos = _unused_photos(session, [path])
        return person_id, change

    def reset(self) -> Change:
        """Delete every person, face and embedding."""
        with self._write() as (session, change):
            faces = session.execute(select(Face.id, Face.image_path)).all()
            change.removed = [int(face_id) for face_id, _ in faces]
            session.execute(delete(Embedding))
            session.execute(delete(Face))
            session.execute(delete(Person))
            change.unused_photos = _unused_photos(session, [path for _, path in faces])
        with self._names_lock:
            self._names.clear()
        return change

    def get_person(self, person_id: int) -> PersonRecord:
        with self._read() as session:
            person = session.get(Person, person_id)
            if person is None:
                raise PersonNotFoundError(person_id)
            return _person(person, self._face_count(session, person_id))

    def persons_named(self, name: str) -> list[PersonRecord]:
        with self._read() as session:
            found = session.scalars(select(Person).where(Person.name == name).order_by(Person.id))
            return [_person(p, self._face_count(session, p.id)) for p in found]

    def names(self, person_ids: Sequence[int]) -> dict[int, str]:
        """Names by person id (ids of nobody are left out).

        While the database cannot be reached, the names this process last read or wrote are
        answered instead (ids it never saw are left out), so that recognition, which needs
        names on every match, goes on through an outage.
        """
        if not person_ids:
            return {}
        wanted = set(person_ids)
        try:
            with self._read() as session:
                rows = session.execute(select(Person.id, Person.name).where(Person.id.in_(wanted)))
                found = {int(pid): name for pid, name in rows}
        except StoreError as exc:
            with self._names_lock:
                known = {pid: self._names[pid] for pid in wanted if pid in self._names}
            log.debug("names of %d persons from memory: %s", len(known), exc)
            return known
        self._remember_names(found)
        return found

    def _remember_names(self, names: dict[int, str]) -> None:
        with self._names_lock:
            self._names.update(names)

    def search_persons(
        self,
        *,
        text: str | None = None,
        name: str | None = None,
        address: str | None = None,
        gender: str | None = None,
        min_age: int | None = None,
        max_age: int | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> Page:
        """Persons matching every given filter (case-insensitive substrings), by id.

        ``text`` matches the name or the address.
        """
        if offset < 0 or not 1 <= limit <= 1000:
            raise WatchlistError("offset must be >= 0 and limit between 1 and 1000")
        query = select(Person)
        if text:
            query = query.where(or_(_contains(Person.name, text), _contains(Person.address, text)))
        if name:
            query = query.where(_contains(Person.name, name))
        if address:
            query = query.where(_contains(Person.address, address))
        if gender:
            query = query.where(func.lower(Person.gender) == gender.lower())
        if min_age is not None:
            query = query.where(Person.age >= min_age)
        if max_age is not None:
            query = query.where(Person.age <= max_age)
        with self._read() as session:
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            persons = list(session.scalars(query.order_by(Person.id).offset(offset).limit(limit)))
            counts = self._face_counts(session, [p.id for p in persons])
            items = [_person(p, counts.get(p.id, 0)) for p in persons]
        return Page(items, int(total), offset, limit)

    # --- faces and embeddings -----------------------------------------------------------------

    def faces_of(self, person_id: int) -> list[FaceRecord]:
        with self._read() as session:
            if session.get(Person, person_id) is None:
                raise PersonNotFoundError(person_id)
            faces = session.scalars(
                select(Face).where(Face.person_id == person_id).order_by(Face.id)
            )
            return [_face(f) for f in faces]

    def get_face(self, face_id: int) -> FaceRecord:
        with self._read() as session:
            face = session.get(Face, face_id)
            if face is None:
                raise WatchlistError(f"no face {face_id} in the watchlist")
            return _face(face)

    def templates(self, person_id: int, pack_id: str) -> tuple[set[str], Rows]:
        """A person's photo hashes and their embeddings under ``pack_id`` (for duplicates)."""
        with self._read() as session:
            hashes = set(
                session.scalars(select(Face.image_sha256).where(Face.person_id == person_id))
            )
            rows = session.execute(
                select(Embedding.face_id, Embedding.person_id, Embedding.dim, Embedding.vector)
                .where(Embedding.person_id == person_id, Embedding.pack_id == pack_id)
                .order_by(Embedding.face_id)
            ).all()
        return hashes, _rows(rows)

    def embeddings(self, pack_id: str, dim: int, face_ids: Sequence[int] | None = None) -> Rows:
        """Every embedding under ``pack_id`` (or just those of ``face_ids``), by face id."""
        parts: list[Rows] = []
        with self._read() as session:
            last = -1
            while True:
                query = (
                    select(Embedding.face_id, Embedding.person_id, Embedding.dim, Embedding.vector)
                    .where(Embedding.pack_id == pack_id, Embedding.face_id > last)
                    .order_by(Embedding.face_id)
                    .limit(CHUNK_ROWS)
                )
                if face_ids is not None:
                    query = query.where(Embedding.face_id.in_(face_ids))
                chunk = session.execute(query).all()
                if not chunk:
                    break
                parts.append(_rows(chunk, dim))
                last = int(chunk[-1][0])
        if not parts:
            return Rows.empty(dim)
        return Rows(
            np.concatenate([p.face_ids for p in parts]),
            np.concatenate([p.person_ids for p in parts]),
            np.concatenate([p.vectors for p in parts]),
        )

    def embedded_face_ids(self, pack_id: str) -> NDArray[np.int64]:
        with self._read() as session:
            ids = session.scalars(select(Embedding.face_id).where(Embedding.pack_id == pack_id))
            return np.fromiter((int(i) for i in ids), np.int64)

    def faces_without_embedding(self, pack_id: str) -> list[FaceRecord]:
        embedded = select(Embedding.face_id).where(Embedding.pack_id == pack_id)
        with self._read() as session:
            faces = session.scalars(select(Face).where(Face.id.not_in(embedded)).order_by(Face.id))
            return [_face(f) for f in faces]

    def put_embeddings(
        self, pack_id: str, rows: Sequence[tuple[int, NDArray[np.float32]]]
    ) -> Change:
        """Store (face id, embedding) pairs under ``pack_id`` (re-embedding for a new pack).

        Faces deleted meanwhile are skipped.
        """
        with self._write() as (session, change):
            wanted = [face_id for face_id, _ in rows]
            persons = dict(
                session.execute(select(Face.id, Face.person_id).where(Face.id.in_(wanted))).all()
            )
            session.execute(
                delete(Embedding).where(Embedding.pack_id == pack_id, Embedding.face_id.in_(wanted))
            )
            for face_id, vector in rows:
                if face_id not in persons:
                    continue
                session.add(_embedding(face_id, persons[face_id], pack_id, vector))
                change.added.append((face_id, persons[face_id], vector))
        return change

    def counts(self) -> dict[str, int]:
        with self._read() as session:
            return {
                "persons": int(session.scalar(select(func.count(Person.id))) or 0),
                "faces": int(session.scalar(select(func.count(Face.id))) or 0),
            }

    # --- internals ----------------------------------------------------------------------------

    def _insert_faces(
        self,
        session: Session,
        change: Change,
        person_id: int,
        faces: Sequence[NewFace],
        pack_id: str,
    ) -> list[FaceRecord]:
        rows = []
        for new in faces:
            face = Face(
                person_id=person_id,
                image_sha256=new.image_sha256,
                image_path=new.image_path,
                bbox=new.bbox,
                landmarks=new.landmarks,
                det_score=new.det_score,
                face_size=new.face_size,
                sharpness=new.sharpness,
                frontal=new.frontal,
                pack_id=pack_id,
            )
            session.add(face)
            rows.append((face, new))
        try:
            session.flush()
        except IntegrityError as exc:
            raise WatchlistError(
                f"person {person_id} already has one of these photos (same image hash)"
            ) from exc
        for face, new in rows:
            session.add(_embedding(face.id, person_id, pack_id, new.embedding))
            change.added.append((face.id, person_id, new.embedding))
        session.flush()
        return [_face(face) for face, _ in rows]

    @staticmethod
    def _face_count(session: Session, person_id: int) -> int:
        return int(
            session.scalar(select(func.count(Face.id)).where(Face.person_id == person_id)) or 0
        )

    @staticmethod
    def _face_counts(session: Session, person_ids: list[int]) -> dict[int, int]:
        if not person_ids:
            return {}
        rows = session.execute(
            select(Face.person_id, func.count(Face.id))
            .where(Face.person_id.in_(person_ids))
            .group_by(Face.person_id)
        )
        return {int(pid): int(count) for pid, count in rows}


def _create_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # pre_ping replaces connections the server dropped (a restart) instead of failing once.
        return create_engine(url, pool_pre_ping=True, pool_recycle=3600)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        # WAL: readers never wait for the writer; foreign keys are off by default in SQLite.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def _unused_photos(session: Session, paths: Sequence[str]) -> list[str]:
    """Those of ``paths`` that no face row uses (inside the transaction that removed faces)."""
    unique = sorted(set(paths))
    used: set[str] = set()
    for start in range(0, len(unique), PATH_CHUNK):
        chunk = unique[start : start + PATH_CHUNK]
        used.update(session.scalars(select(Face.image_path).where(Face.image_path.in_(chunk))))
    return [path for path in unique if path not in used]


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot be reached now (retry later), not a bad query."""
    if isinstance(exc, UNAVAILABLE):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def _check_details(details: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    unknown = set(details) - set(PERSON_FIELDS)
    if unknown:
        raise WatchlistError(f"unknown person fields: {sorted(unknown)}")
    out = dict(details)
    if creating or "name" in out:
        name = str(out.get("name") or "").strip()
        if not name:
            raise WatchlistError("a person needs a non-empty name")
        if len(name) > 200:
            raise WatchlistError("a name is at most 200 characters")
        out["name"] = name
    if out.get("age") is not None and not (isinstance(out["age"], int) and 0 <= out["age"] <= 150):
        raise WatchlistError(f"age must be a whole number between 0 and 150, got {out['age']!r}")
    for key, limit in (("gender", 32), ("address", 500)):
        if out.get(key) is not None and len(str(out[key])) > limit:
            raise WatchlistError(f"{key} is at most {limit} characters")
    if "attributes" in out and out["attributes"] is None:
        out["attributes"] = {}
    if "attributes" in out and not isinstance(out["attributes"], dict):
        raise WatchlistError("attributes must be a JSON object")
    return out


def _contains(column: Any, text: str) -> Any:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return func.lower(column).like(f"%{escaped}%", escape="\\")


def _embedding(
    face_id: int, person_id: int, pack_id: str, vector: NDArray[np.float32]
) -> Embedding:
    data = np.ascontiguousarray(vector, dtype="<f4").reshape(-1)
    return Embedding(
        face_id=face_id, pack_id=pack_id, person_id=person_id, dim=data.size, vector=data.tobytes()
    )


def _rows(rows: Sequence[Any], dim: int | None = None) -> Rows:
    if not rows:
        return Rows.empty(dim or 0)
    dims = {int(r[2]) for r in rows}
    if len(dims) != 1 or (dim is not None and dims != {dim}):
        raise WatchlistError(f"embeddings of dimension {sorted(dims)} where {dim} was expected")
    width = dims.pop()
    vectors = np.frombuffer(b"".join(r[3] for r in rows), dtype="<f4").reshape(-1, width)
    return Rows(
        np.fromiter((int(r[0]) for r in rows), np.int64, len(rows)),
        np.fromiter((int(r[1]) for r in rows), np.int64, len(rows)),
        vectors.astype(np.float32),
    )


def _person(person: Person, face_count: int) -> PersonRecord:
    return PersonRecord(
        person.id,
        person.name,
        person.age,
        person.gender,
        person.address,
        dict(person.attributes or {}),
        person.created_at,
        person.updated_at,
        face_count,
    )


def _face(face: Face) -> FaceRecord:
    return FaceRecord(
        face.id,
        face.person_id,
        face.image_sha256,
        face.image_path,
        list(face.bbox),
        face.det_score,
        face.face_size,
        face.sharpness,
        face.frontal,
        face.pack_id,
        face.created_at,
    )


def _reason(exc: SQLAlchemyError) -> str:
    original = getattr(exc, "orig", None)
    return str(original or exc).strip().splitlines()[0]
