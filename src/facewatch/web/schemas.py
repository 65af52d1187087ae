"""Request and response bodies of the REST API (faces, people, watchlist, streams, health).

Responses are built from the dictionaries the CLI and the services already produce
(``Faces.record``, ``PersonRecord.as_dict``, ``FaceRecord.as_dict``, ``StreamStatus.as_dict``),
so one serialisation serves both; these models pin the shapes and document them in OpenAPI.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from facewatch.stream.config import StreamConfig


class Strict(BaseModel):
    """Request bodies: unknown keys are errors that name the key."""

    model_config = ConfigDict(extra="forbid")


# --- faces -------------------------------------------------------------------------------------


class Quality(BaseModel):
    score: float = Field(description="Detection confidence in [0, 1].")
    size: float = Field(description="Shorter side of the box, in pixels.")
    sharpness: float = Field(description="Laplacian variance of the aligned face.")
    frontal: float = Field(description="1 looking at the camera, towards 0 in profile.")


class DetectedFace(BaseModel):
    bbox: list[float] = Field(description="x1, y1, x2, y2 in pixels of the image.")
    score: float
    landmarks: list[list[float]] = Field(description="Five [x, y] points: eyes, nose, mouth.")
    quality: Quality


class EmbeddedFace(DetectedFace):
    embedding: list[float] = Field(description="L2-normalised embedding (the pack's dimension).")


class Detection(BaseModel):
    width: int
    height: int
    faces: list[DetectedFace]


class Embedding(BaseModel):
    width: int
    height: int
    faces: list[EmbeddedFace]


class Verification(BaseModel):
    same: bool = Field(description="similarity >= threshold.")
    similarity: float = Field(description="Cosine similarity of the largest face of each image.")
    threshold: float


class Candidate(BaseModel):
    person_id: int
    name: str | None
    similarity: float
    face_id: int | None = Field(None, description="The template that matched best.")


class IdentifiedFace(BaseModel):
    bbox: list[float]
    score: float
    match: Candidate | None = Field(description="The best person at the threshold, else null.")
    candidates: list[Candidate] = Field(description="Best persons first, threshold not applied.")


class Query(BaseModel):
    width: int
    height: int
    threshold: float
    faces: list[IdentifiedFace]


class ItemError(BaseModel):
    code: str
    message: str
    model_config = ConfigDict(extra="allow")


class FailedItem(BaseModel):
    index: int
    error: ItemError


class DetectionItem(Detection):
    index: int


class EmbeddingItem(Embedding):
    index: int


class QueryItem(Query):
    index: int


class VerificationItem(Verification):
    index: int


class DetectionBatch(BaseModel):
    results: list[DetectionItem | FailedItem]


class EmbeddingBatch(BaseModel):
    results: list[EmbeddingItem | FailedItem]


class QueryBatch(BaseModel):
    results: list[QueryItem | FailedItem]


class VerificationBatch(BaseModel):
    results: list[VerificationItem | FailedItem]


# --- people ------------------------------------------------------------------------------------


class PersonDetails(Strict):
    """A person's details as clients send them (enrollment, PATCH)."""

    name: str | None = Field(None, min_length=1, max_length=200)
    age: int | None = Field(None, ge=0, le=150)
    gender: str | None = Field(None, max_length=32)
    address: str | None = Field(None, max_length=500)
    attributes: dict[str, Any] | None = Field(None, description="Free-form JSON object.")

    @field_validator("name")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("name must not be blank")
        return value.strip() if value is not None else None


class Person(BaseModel):
    id: int
    name: str
    age: int | None
    gender: str | None
    address: str | None
    attributes: dict[str, Any]
    face_count: int
    created_at: datetime
    updated_at: datetime


class FaceQuality(BaseModel):
    det_score: float
    face_size: float
    sharpness: float
    frontal: float


class Face(BaseModel):
    id: int
    person_id: int
    image_sha256: str
    image_path: str = Field(description="Where the photo is kept, relative to the data dir.")
    image_url: str = Field(description="GET it for the photo.")
    bbox: list[float]
    quality: FaceQuality
    pack_id: str
    created_at: datetime


class Rejected(BaseModel):
    image: str = Field(description="The file name, or the field and position of the photo.")
    reason: str = Field(
        description="not_an_image, no_face, several_faces, too_small, low_confidence, "
        "duplicate; too_blurry and not_frontal only with watchlist.enroll_strict_quality."
    )
    detail: str


class EnrollmentWarning(BaseModel):
    image: str = Field(description="The file name, or the field and position of the photo.")
    face_id: int = Field(description="The accepted face the warning is about.")
    warning: str = Field(
        description="blurry or not_frontal: the face was enrolled but is a weak template "
        "(refused as too_blurry / not_frontal with watchlist.enroll_strict_quality)."
    )
    detail: str


class Enrollment(BaseModel):
    person: Person
    accepted: list[Face]
    warnings: list[EnrollmentWarning] = Field(
        description="Accepted faces that are blurry or turned away, one entry per warning."
    )
    rejected: list[Rejected]


class PeoplePage(BaseModel):
    items: list[Person]
    total: int
    page: int
    per_page: int


class Faces(BaseModel):
    items: list[Face]


class PersonDeleted(BaseModel):
    person: Person
    faces_removed: int


class FaceDeleted(BaseModel):
    person: Person
    face_id: int


class MatchThreshold(BaseModel):
    """The identification threshold in effect and what it is expected to give."""

    threshold: float = Field(description="Cosine similarity a person's best score must reach.")
    source: Literal["fixed", "calibrated", "pack"] = Field(
        description="fixed: engine.match_threshold is set; calibrated: from the pack's "
        "calibration for target_fpir at the watchlist's size; pack: the pack's own threshold "
        "(no calibration, or fewer than two persons enrolled)."
    )
    calibration: Literal["shipped", "local"] | None = Field(
        description="Whose calibration: shipped with the pack, or measured by "
        "`facewatch calibrate` in the data directory; null without one."
    )
    target_fpir: float = Field(description="False-positive identification rate asked for.")
    persons: int = Field(description="Enrolled persons.")
    templates: int = Field(description="Their templates: each is one chance for a stranger.")
    expected_fpir: float | None = Field(
        description="Share of faces of people who are not enrolled expected to get a name at "
        "this threshold and size, from the calibration; null without one."
    )
    clamped: bool = Field(
        description="The calibration cannot resolve the target at this size: the threshold is "
        "the highest it supports and expected_fpir exceeds the target."
    )
    note: str = Field(
        description="Why the source is what it is; empty when the calibrated threshold meets "
        "the target."
    )


class WatchlistStatus(BaseModel):
    """Store and index counts and the match threshold in effect (``facewatch status``)."""

    model_config = ConfigDict(extra="allow")

    pack: str = Field(description="Id of the embedding space (recognizer and its checksum).")
    threshold: float = Field(description="The match threshold in effect (matching.threshold).")
    matching: MatchThreshold
    store: dict[str, Any] = Field(description="url, dialect, version, persons, faces.")
    index: dict[str, Any] = Field(description="backend, kind, device, count, versions.")


class ResetRequest(Strict):
    confirm: bool = Field(False, description="Must be true: reset deletes every person.")


class ResetDone(BaseModel):
    reset: bool
    faces_removed: int


# --- streams -----------------------------------------------------------------------------------


class StreamCreate(StreamConfig):
    """A new stream: its settings, and optionally the id it should have."""

    id: str | None = Field(
        None,
        description="1-64 letters, digits, '.', '_' or '-'; default: the slug of the name.",
    )


class Stream(BaseModel):
    id: str
    name: str
    url: str = Field(description="Credentials replaced by ***.")
    kind: str = Field(description="rtsp, http, file or webrtc.")
    state: str = Field(description="starting, running, paused, reconnecting, ended, stopped.")
    persisted: bool = Field(description="Kept in streams.json and restored at start-up.")
    config: dict[str, Any]
    status: dict[str, Any] = Field(
        description="input_fps, processed_fps, frames_decoded, frames_processed, dropped (by "
        "reason), reconnects, last_error, last_error_at, lag_s, resolution_wh."
    )


class Streams(BaseModel):
    items: list[Stream]


class StreamDeleted(BaseModel):
    id: str
    deleted: bool


# --- health ------------------------------------------------------------------------------------


class Health(BaseModel):
    status: str
    version: str


class Readiness(BaseModel):
    status: str
    checks: dict[str, dict[str, Any]]
