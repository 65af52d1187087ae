"""The watchlist's tables (SQLAlchemy 2 declarative models); migrations live in ``migrations/``.

The store is the source of truth: persons, their face templates and each template's embedding
per model pack. ``watchlist_state.version`` grows by one in every transaction that changes
persons or faces, so a persisted index snapshot can tell whether it is stale.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

#: BIGINT ids everywhere but SQLite, whose auto-increment needs INTEGER PRIMARY KEY.
Id = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes, stored naive-UTC so every backend keeps them alike."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Person(Base):
    """Someone on the watchlist."""

    __tablename__ = "persons"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    age: Mapped[int | None] = mapped_column(Integer)
    gender: Mapped[str | None] = mapped_column(String(32))
    address: Mapped[str | None] = mapped_column(String(500))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)

    faces: Mapped[list[Face]] = relationship(
        back_populates="person", cascade="all, delete-orphan", passive_deletes=True
    )


class Face(Base):
    """One enrolled photo of a person: where it is kept and how good it was."""

    __tablename__ = "faces"
    __table_args__ = (UniqueConstraint("person_id", "image_sha256", name="uq_faces_person_image"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    person_id: Mapped[int] = mapped_column(
        Id, ForeignKey("persons.id", ondelete="CASCADE"), index=True
    )
    image_sha256: Mapped[str] = mapped_column(String(64), index=True)
    #: Path of the stored photo relative to the data directory (for re-embedding).
    image_path: Mapped[str] = mapped_column(String(300))
    #: The face in the photo, [x1, y1, x2, y2] in pixels, and its 5 landmarks [[x, y], ...].
    bbox: Mapped[list[float]] = mapped_column(JSON)
    landmarks: Mapped[list[list[float]]] = mapped_column(JSON)
    det_score: Mapped[float] = mapped_column(Float)
    face_size: Mapped[float] = mapped_column(Float)
    sharpness: Mapped[float] = mapped_column(Float)
    frontal: Mapped[float] = mapped_column(Float)
    #: The model pack that measured the quality above when the face was enrolled.
    pack_id: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    person: Mapped[Person] = relationship(back_populates="faces")


class Embedding(Base):
    """A face's template under one model pack: float32 little-endian bytes, L2-normalised."""

    __tablename__ = "embeddings"
    __table_args__ = (Index("ix_embeddings_pack", "pack_id"),)

    face_id: Mapped[int] = mapped_column(
        Id, ForeignKey("faces.id", ondelete="CASCADE"), primary_key=True
    )
    pack_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    #: Denormalised from faces so the index can be rebuilt from this table alone.
    person_id: Mapped[int] = mapped_column(Id)
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class WatchlistState(Base):
    """One row: the version of the watchlist's content."""

    __tablename__ = "watchlist_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(BigInteger, default=0)


class User(Base):
    """Someone who may log in: an ``admin``, ``operator`` or ``viewer``."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    #: A self-describing modern hash (argon2id), never the password.
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Credential(Base):
    """A secret that stands for a user: a UI session, a bearer token or an API key.

    Only the SHA-256 of the secret is kept, so a copy of the database logs nobody in.
    """

    __tablename__ = "credentials"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(Id, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    #: ``session`` (cookie), ``token`` (bearer, expires) or ``api_key`` (bearer, until revoked).
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str | None] = mapped_column(String(100))
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    #: The secret's first characters, shown so a user can tell their keys apart.
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Event(Base):
    """An alert the pipeline emitted, kept for history and for subscribers resuming after a gap.

    ``id`` grows with every event and is what a reconnecting WebSocket client resumes from.
    No foreign key to persons: forgetting a person keeps the history of what was seen.
    """

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_stream_ts", "stream", "ts"),
        Index("ix_events_person_ts", "person_id", "ts"),
        Index("ix_events_type_ts", "type", "ts"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    alert_id: Mapped[str] = mapped_column(String(40), unique=True)
    type: Mapped[str] = mapped_column(String(16))
    stream: Mapped[str] = mapped_column(String(128))
    track: Mapped[int] = mapped_column(Integer)
    person_id: Mapped[int | None] = mapped_column(Id)
    person: Mapped[str | None] = mapped_column(String(200))
    similarity: Mapped[float | None] = mapped_column(Float)
    ts: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    snapshot: Mapped[str | None] = mapped_column(String(300))
    frame_snapshot: Mapped[str | None] = mapped_column(String(300))
    #: The whole alert as published (bbox, track start, previous person, ...).
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
