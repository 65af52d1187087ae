"""Which face of an enrollment photo to keep, and why a photo is refused (pure logic, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

from facewatch.pipeline.types import Faces


class Reason(StrEnum):
    """Why an enrollment photo was refused (stable strings: API and CLI clients read them)."""

    NOT_AN_IMAGE = "not_an_image"
    NO_FACE = "no_face"
    SEVERAL_FACES = "several_faces"
    TOO_SMALL = "too_small"
    LOW_CONFIDENCE = "low_confidence"
    TOO_BLURRY = "too_blurry"
    NOT_FRONTAL = "not_frontal"
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class Gates:
    """Quality an enrollment face must reach (see WatchlistSettings.enroll_*)."""

    min_face_size: float
    min_score: float
    min_sharpness: float
    min_frontal: float
    duplicate_similarity: float


@dataclass(frozen=True, slots=True)
class Verdict:
    """The face kept (its row in ``Faces``), or the reason there is none."""

    index: int | None
    reason: Reason | None = None
    detail: str = ""


def choose_face(faces: Faces, gates: Gates, *, largest: bool) -> Verdict:
    """The one usable face of a photo, judged by ``gates``.

    A face is usable when it is big enough and confidently detected. Several usable faces
    refuse the photo (whose face would it be?) unless ``largest`` asks for the biggest. The
    chosen face must then be sharp and frontal enough.
    """
    if len(faces) == 0:
        return Verdict(None, Reason.NO_FACE, "no face found")
    sizes = faces.size
    big = sizes >= gates.min_face_size
    usable = big & (faces.score >= gates.min_score)
    if not usable.any():
        best = int(np.argmax(sizes))
        if not big[best]:
            return Verdict(
                None,
                Reason.TOO_SMALL,
                f"largest face is {sizes[best]:.0f} px, at least {gates.min_face_size:.0f} needed",
            )
        return Verdict(
            None,
            Reason.LOW_CONFIDENCE,
            f"detection score {faces.score[best]:.2f} below {gates.min_score:.2f}",
        )
    candidates = np.flatnonzero(usable)
    if len(candidates) > 1 and not largest:
        return Verdict(
            None, Reason.SEVERAL_FACES, f"{len(candidates)} faces found; enroll needs exactly one"
        )
    chosen = int(candidates[np.argmax(faces.area[candidates])])
    if faces.sharpness[chosen] < gates.min_sharpness:
        return Verdict(
            None,
            Reason.TOO_BLURRY,
            f"sharpness {faces.sharpness[chosen]:.0f} below {gates.min_sharpness:.0f}",
        )
    if faces.frontal[chosen] < gates.min_frontal:
        return Verdict(
            None,
            Reason.NOT_FRONTAL,
            f"frontal-ness {faces.frontal[chosen]:.2f} below {gates.min_frontal:.2f}",
        )
    return Verdict(chosen)


def duplicate_of(
    embedding: NDArray[np.float32], templates: NDArray[np.float32], threshold: float
) -> int | None:
    """Row of the first template at least ``threshold`` similar to ``embedding``, else None."""
    if len(templates) == 0:
        return None
    similarity = templates @ embedding
    best = int(np.argmax(similarity))
    return best if similarity[best] >= threshold else None
