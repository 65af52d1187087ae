"""Which face of an enrollment photo to keep, why a photo is refused, and what is wrong with a
face that is kept anyway (pure logic, no I/O).

Only what cannot work is refused: no face, several faces when the caller did not ask for the
largest, a face too small to align or not confidently a face. A blurred or turned face still
identifies its person more often than not (on faces_scale, 7 % of ordinary news photos would
otherwise never be enrolled), so it is kept with a warning; ``strict`` refuses it as before.
"""

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


class Caution(StrEnum):
    """What is wrong with a face that was enrolled anyway (stable strings, like ``Reason``)."""

    BLURRY = "blurry"
    NOT_FRONTAL = "not_frontal"


@dataclass(frozen=True, slots=True)
class Notice:
    """One warning about an accepted face, with the figures behind it."""

    caution: Caution
    detail: str


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
    """The face kept (its row in ``Faces``) and its warnings, or the reason there is none."""

    index: int | None
    reason: Reason | None = None
    detail: str = ""
    notices: tuple[Notice, ...] = ()


def choose_face(faces: Faces, gates: Gates, *, largest: bool, strict: bool = False) -> Verdict:
    """The one usable face of a photo, judged by ``gates``.

    A face is usable when it is big enough and confidently detected. Several usable faces
    refuse the photo (whose face would it be?) unless ``largest`` asks for the biggest. A chosen
    face below the sharpness or frontal-ness gate is kept with a warning, or refused when
    ``strict``.
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
    notices = []
    if faces.sharpness[chosen] < gates.min_sharpness:
        detail = f"sharpness {faces.sharpness[chosen]:.0f} below {gates.min_sharpness:.0f}"
        if strict:
            return Verdict(None, Reason.TOO_BLURRY, detail)
        notices.append(Notice(Caution.BLURRY, detail))
    if faces.frontal[chosen] < gates.min_frontal:
        detail = f"frontal-ness {faces.frontal[chosen]:.2f} below {gates.min_frontal:.2f}"
        if strict:
            return Verdict(None, Reason.NOT_FRONTAL, detail)
        notices.append(Notice(Caution.NOT_FRONTAL, detail))
    return Verdict(chosen, notices=tuple(notices))


def duplicate_of(
    embedding: NDArray[np.float32], templates: NDArray[np.float32], threshold: float
) -> int | None:
    """Row of the first template at least ``threshold`` similar to ``embedding``, else None."""
    if len(templates) == 0:
        return None
    similarity = templates @ embedding
    best = int(np.argmax(similarity))
    return best if similarity[best] >= threshold else None
