"""Data that flows through the pipeline: frozen dataclasses holding one array per field."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Faces:
    """The faces found in one image.

    Attributes:
        xyxy: (N, 4) boxes as x1, y1, x2, y2 in pixels of the source image.
        kps: (N, 5, 2) landmarks in pixels: eye, eye, nose, mouth corner, mouth corner, in
            image left-to-right order for each pair (the ArcFace alignment order).
        score: (N,) detection confidence in [0, 1].
        sharpness: (N,) variance of the Laplacian of the aligned 112x112 grey crop.
        frontal: (N,) 1.0 for a face looking straight at the camera, towards 0 in profile.
        embedding: (N, D) L2-normalised embeddings, or None when not computed. D comes from the
            model pack.
    """

    xyxy: FloatArray
    kps: FloatArray
    score: FloatArray
    sharpness: FloatArray
    frontal: FloatArray
    embedding: FloatArray | None = field(default=None)

    def __post_init__(self) -> None:
        n = self.xyxy.shape[0]
        if self.xyxy.shape != (n, 4):
            raise ValueError(f"xyxy must be (N, 4), got {self.xyxy.shape}")
        if self.kps.shape != (n, 5, 2):
            raise ValueError(f"kps must be ({n}, 5, 2), got {self.kps.shape}")
        for name in ("score", "sharpness", "frontal"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must be ({n},), got {getattr(self, name).shape}")
        if self.embedding is not None and (
            self.embedding.ndim != 2 or self.embedding.shape[0] != n
        ):
            raise ValueError(f"embedding must be ({n}, D), got {self.embedding.shape}")

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def __getitem__(self, index: NDArray[np.bool_] | NDArray[np.intp] | slice) -> Faces:
        """Faces selected by a boolean mask, an index array or a slice."""
        return Faces(
            xyxy=self.xyxy[index],
            kps=self.kps[index],
            score=self.score[index],
            sharpness=self.sharpness[index],
            frontal=self.frontal[index],
            embedding=None if self.embedding is None else self.embedding[index],
        )

    @property
    def size(self) -> FloatArray:
        """(N,) the shorter side of each box, in pixels."""
        wh = self.xyxy[:, 2:] - self.xyxy[:, :2]
        return wh.min(axis=1) if len(self) else np.zeros(0, np.float32)

    @property
    def area(self) -> FloatArray:
        """(N,) box areas in square pixels."""
        wh = self.xyxy[:, 2:] - self.xyxy[:, :2]
        return (wh[:, 0] * wh[:, 1]).astype(np.float32)

    def largest(self) -> int:
        """Index of the face with the largest box; raises IndexError when there is none."""
        if not len(self):
            raise IndexError("no faces")
        return int(np.argmax(self.area))

    def record(self, i: int, *, with_embedding: bool = False) -> dict[str, Any]:
        """Face ``i`` as JSON, the one shape the command line and the REST API both print."""
        record: dict[str, Any] = {
            "bbox": [round(float(v), 2) for v in self.xyxy[i]],
            "score": round(float(self.score[i]), 4),
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.kps[i]],
            "quality": {
                "score": round(float(self.score[i]), 4),
                "size": round(float(self.size[i]), 2),
                "sharpness": round(float(self.sharpness[i]), 2),
                "frontal": round(float(self.frontal[i]), 4),
            },
        }
        if with_embedding and self.embedding is not None:
            record["embedding"] = [round(float(v), 6) for v in self.embedding[i]]
        return record

    @classmethod
    def empty(cls, embedding_dim: int | None = None) -> Faces:
        """No faces (with an empty (0, D) embedding when ``embedding_dim`` is given)."""
        zeros = np.zeros(0, np.float32)
        return cls(
            xyxy=np.zeros((0, 4), np.float32),
            kps=np.zeros((0, 5, 2), np.float32),
            score=zeros,
            sharpness=zeros,
            frontal=zeros,
            embedding=None if embedding_dim is None else np.zeros((0, embedding_dim), np.float32),
        )


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded video frame on its way through the pipeline.

    Attributes:
        stream_id: the stream it came from.
        seq: its number within the stream, from 0, counting every frame decoded (dropped ones
            included), so gaps show drops.
        pts_s: media time in seconds since the stream's first frame, from the source's own
            timestamps; non-decreasing, also across loops and reconnects (see
            ``stream.pacing.PtsClock``).
        captured_at: wall-clock time (UNIX seconds) when it was decoded.
        decoded_at: ``time.monotonic()`` when it was decoded; latencies are measured from it.
        image: (H, W, 3) uint8 BGR pixels.
    """

    stream_id: str
    seq: int
    pts_s: float
    captured_at: float
    decoded_at: float
    image: NDArray[np.uint8]

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8, got {self.image.shape}")

    @property
    def resolution_wh(self) -> tuple[int, int]:
        return int(self.image.shape[1]), int(self.image.shape[0])


@dataclass(frozen=True, slots=True)
class LiveFace:
    """A tracked face as a live view draws it.

    Attributes:
        track: track id within the stream.
        bbox: x1, y1, x2, y2 in pixels of the frame.
        person_id, person: who the track is so far, None while unknown or undecided.
        similarity: the track's similarity to that person (best candidate when unknown), None
            before its first search.
    """

    track: int
    bbox: tuple[float, float, float, float]
    person_id: int | None
    person: str | None
    similarity: float | None


@dataclass(frozen=True, slots=True)
class LiveFrame:
    """A processed frame with its tracked faces, for live views (see ``Pipeline.watch_frames``).

    Attributes:
        image: (H, W, 3) uint8 BGR pixels, shared with the pipeline: do not modify.
    """

    stream_id: str
    seq: int
    pts_s: float
    captured_at: float
    image: NDArray[np.uint8]
    faces: tuple[LiveFace, ...]
