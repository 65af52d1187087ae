"""Measuring a calibration on folders of photos, one folder per person.

Each person is enrolled with their first photo (in name order), and every photo that held a
face is compared with every other person: the best of those scores per (photo, person) pair is
one non-mated comparison (see :func:`~facewatch.recognizer.calibration.non_mated_person_scores`).
One face per photo: the largest (the enrollment convention), or the one nearest the centre for
photo sets cropped around their subject (LFW), where the largest can be someone beside them.
Unreadable photos and photos without a face are skipped and counted. Used by
``facewatch calibrate`` and ``benchmarks/calibrate_packs.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from facewatch.errors import ImageError
from facewatch.images import read_image
from facewatch.pipeline.types import Faces
from facewatch.recognizer.calibration import (
    MIN_PEOPLE,
    Calibration,
    CalibrationError,
    non_mated_person_scores,
)
from facewatch.recognizer.engine import FaceEngine

#: Files looked at in a person's folder (others are ignored).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
#: Photos per detection + embedding call.
BATCH = 16

Progress = Callable[[int, int], None]
#: Which face of a photo stands for its person.
Pick = Literal["largest", "central"]


@dataclass(frozen=True, slots=True)
class EmbeddedPhotos:
    """One face of each photo (see :data:`Pick`).

    Attributes:
        paths: (M,) the photos, in the order given.
        embeddings: (M, D) float32, L2-normalised; zeros where ``found`` is False.
        found: (M,) bool, a face was found (False also for unreadable photos).
        unreadable: photos that could not be read or decoded, with the reason.
    """

    paths: list[Path]
    embeddings: NDArray[np.float32]
    found: NDArray[np.bool_]
    unreadable: dict[str, str] = field(default_factory=dict)

    @property
    def no_face(self) -> int:
        return int((~self.found).sum()) - len(self.unreadable)


def person_folders(root: Path) -> dict[str, list[Path]]:
    """Photos per person: one sub-folder of ``root`` per person, photos in name order.

    Raises:
        CalibrationError: ``root`` is not a folder.
    """
    if not root.is_dir():
        raise CalibrationError(f"{root} is not a folder (one sub-folder of photos per person)")
    people = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if photos:
            people[folder.name] = photos
    return people


def embed_photos(
    engine: FaceEngine,
    paths: Sequence[Path],
    progress: Progress | None = None,
    *,
    pick: Pick = "largest",
) -> EmbeddedPhotos:
    """Embed one face of each photo, :data:`BATCH` photos per engine call.

    Args:
        engine: the pack to calibrate.
        paths: the photos.
        progress: called with (photos done, photos) after each batch.
        pick: ``largest``: the face with the largest box; ``central``: the face whose box
            centre is nearest the image centre.
    """
    embeddings = np.zeros((len(paths), engine.embedding_dim), np.float32)
    found = np.zeros(len(paths), bool)
    unreadable: dict[str, str] = {}
    limit = engine.settings.max_image_pixels
    for start in range(0, len(paths), BATCH):
        rows, images = [], []
        for row in range(start, min(start + BATCH, len(paths))):
            try:
                images.append(read_image(paths[row], max_pixels=limit))
                rows.append(row)
            except ImageError as exc:
                unreadable[str(paths[row])] = exc.message
        for row, image, faces in zip(
            rows, images, engine.embed(images) if images else [], strict=True
        ):
            if len(faces) and faces.embedding is not None:
                chosen = faces.largest() if pick == "largest" else _central(faces, image.shape)
                embeddings[row] = faces.embedding[chosen]
                found[row] = True
        if progress is not None:
            progress(min(start + BATCH, len(paths)), len(paths))
    return EmbeddedPhotos(list(paths), embeddings, found, unreadable)


def _central(faces: Faces, shape: tuple[int, ...]) -> int:
    """Row of the face whose box centre is nearest the centre of an image of ``shape`` (h, w)."""
    centres = (faces.xyxy[:, :2] + faces.xyxy[:, 2:]) / 2
    middle = np.array([shape[1] / 2, shape[0] / 2])
    return int(np.argmin(np.linalg.norm(centres - middle, axis=1)))


def labels_of(people: Mapping[str, Sequence[Path]]) -> tuple[list[Path], NDArray[np.int64]]:
    """Every photo of ``people`` in order, and the (M,) person number of each."""
    paths = [photo for photos in people.values() for photo in photos]
    ids = np.repeat(np.arange(len(people), dtype=np.int64), [len(p) for p in people.values()])
    return paths, ids


def first_found(person_ids: NDArray[np.int64], found: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """(M,) bool: each person's first photo that held a face (their one template)."""
    templates = np.zeros(len(person_ids), bool)
    seen: set[int] = set()
    for row in np.flatnonzero(found):
        person = int(person_ids[row])
        if person not in seen:
            seen.add(person)
            templates[row] = True
    return templates


def calibration_of(
    photos: EmbeddedPhotos,
    person_ids: NDArray[np.int64],
    provenance: Mapping[str, object],
    *,
    min_people: int = MIN_PEOPLE,
) -> Calibration:
    """The calibration of embedded, labelled photos (see the module's description).

    Raises:
        CalibrationError: fewer than ``min_people`` persons have a photo with a face.
    """
    templates = first_found(person_ids, photos.found)
    people = int(templates.sum())
    if people < min_people:
        raise CalibrationError(
            f"{people} people with a usable photo: a calibration needs at least {min_people} "
            "(different people, several photos each)"
        )
    kept = photos.found
    counts, comparisons = non_mated_person_scores(
        photos.embeddings[kept], person_ids[kept], templates[kept]
    )
    return Calibration(
        counts,
        comparisons=comparisons,
        people=people,
        photos=int(kept.sum()),
        provenance=dict(provenance),
    )
