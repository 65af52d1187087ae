"""Labelled videos: H.264 clips built from still photos, with exact ground truth per frame.

Each clip is a series of shots; a shot places one or more photos in a 640x360 frame, each scaled
and moved so that its face (the largest face the engine finds in the photo) follows a straight
path in size and place over the shot. Since every frame is drawn from the photos, who is where is
known exactly: :class:`FaceTruth` per face per frame, the face box being the photo's detected box
carried into the frame.

Kinds of clip (:data:`KINDS`):

* ``cuts``: one face at a time, a hard cut every shot (about 2 s); after each cut the next
  person's face appears where the previous one was, enrolled people and strangers alternating.
* ``pan_zoom``: one face per shot, the camera zooming in (or out) and panning over the photo:
  the face grows from 60 to 200 px (or shrinks) while it crosses the frame.
* ``occlusion``: one face per shot with a bar over the eyes, a patch over the lower half or over
  one side for part of the shot (at its start in every other shot: a face first seen occluded).
* ``small_faces``: three faces of 40, 50 and 60 px side by side, new people every shot.
* ``side_by_side``: three people at about 110 px; every shot the same people change places, so
  that after each cut another person's face is where the previous one was.

People: enrolled ones come from ``faces/identities`` (people with 3 or more photos); one photo of
each is shown, the others are what the benchmark enrolls. Strangers are single-photo people of
``faces_scale/distractors``, never enrolled. ``absent`` people (enrolled from all their photos,
never shown) make the watchlist more than the cast. Who is cast, and which photo is shown, follows
from the seed alone.

Clips are written to a cache folder (``$FACEWATCH_VIDEO_CACHE``, else
``<tmp>/facewatch-labelled-videos``) under a key made from every parameter, so a second build of
the same spec reads the files back. Nothing is ever written into the repository.

The Hamilton clip's labels (``benchmarks/data/hamilton_labels.csv``, our own annotation) are read
by :func:`hamilton_video`: per time range, who is visible and a region holding their face.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
from numpy.typing import NDArray

from facewatch.images import read_image
from facewatch.recognizer.engine import FaceEngine

#: Bump when the drawing or the truth changes: cached clips of older versions are not reused.
BUILDER_VERSION = 1
CACHE_ENV = "FACEWATCH_VIDEO_CACHE"
KINDS = ("cuts", "pan_zoom", "occlusion", "small_faces", "side_by_side")
FPS = 25
RESOLUTION_WH = (640, 360)
STRANGER_PREFIX = "stranger:"
#: Half the side of the square of photo kept around its face, in face heights: hair and
#: shoulders, little room for a bystander's face (which would be a face nobody labelled).
CROP_MARGIN = 1.3
BACKGROUND_BGR = (72, 70, 68)
OCCLUDER_BGR = (30, 32, 34)
#: A shown photo's face must be at least this tall (px) to be scaled up without turning to mush.
MIN_SHOWN_FACE_PX = 80.0
#: Enrolled people come from identities with at least this many photos (one shown, >= 2 enrolled).
MIN_PHOTOS = 3
#: Photos that are copies of another photo of the same person (mirrored): never shown beside it.
TWINS = {
    "angelina_jolie/8.jpg": "angelina_jolie/9.jpg",
    "angelina_jolie/9.jpg": "angelina_jolie/8.jpg",
}
LABELS_CSV = Path(__file__).resolve().parent / "data" / "hamilton_labels.csv"
HAMILTON = "videos/fr_short_hamilton_clip.mp4"

XYXY = tuple[float, float, float, float]
Image = NDArray[np.uint8]


# --- what a clip is made of -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VideoSpec:
    """What to build; every field goes into the cache key.

    Attributes:
        kind: one of :data:`KINDS`.
        shots: number of shots (hard cuts between them).
        shot_s: seconds per shot.
        seed: picks the cast and the shown photos.
        absent: enrolled people never shown.
        fps: frames per second.
        resolution_wh: frame width and height in pixels.
    """

    kind: str
    shots: int
    shot_s: float
    seed: int = 11
    absent: int = 4
    fps: int = FPS
    resolution_wh: tuple[int, int] = RESOLUTION_WH

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r}; one of {', '.join(KINDS)}")
        if self.shots < 1 or self.shot_s <= 0 or self.fps < 1 or self.absent < 0:
            raise ValueError(f"shots, shot_s and fps must be positive, absent >= 0: {self}")

    @property
    def name(self) -> str:
        return self.kind

    def key(self, inputs: str) -> str:
        """Cache key: this spec, the builder version and a digest of the input photos."""
        text = json.dumps([BUILDER_VERSION, asdict(self), inputs], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class PhotoFace:
    """A photo and its largest face.

    Attributes:
        path: the photo file.
        label: the person's name, or ``stranger:<name>``.
        xyxy: the face box in photo pixels.
    """

    path: Path
    label: str
    xyxy: XYXY

    @property
    def height(self) -> float:
        return self.xyxy[3] - self.xyxy[1]

    @property
    def centre_xy(self) -> tuple[float, float]:
        return (self.xyxy[0] + self.xyxy[2]) / 2, (self.xyxy[1] + self.xyxy[3]) / 2


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a face is in the frame: its box centre and height in frame pixels."""

    centre_xy: tuple[float, float]
    height: float


@dataclass(frozen=True, slots=True)
class Occlusion:
    """A patch over part of a face for part of a shot.

    Attributes:
        part: ``eyes`` (a bar), ``lower`` (the lower half) or ``side`` (the left half).
        start, end: fractions of the shot during which it is drawn.
    """

    part: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Layer:
    """One photo in a shot, its face moving in a straight line from ``start`` to ``end``.

    Attributes:
        tile_xyxy: pixels of the frame the photo may paint (None: the whole frame).
    """

    face: PhotoFace
    start: Placement
    end: Placement
    tile_xyxy: tuple[int, int, int, int] | None = None
    occlusion: Occlusion | None = None


@dataclass(frozen=True, slots=True)
class Shot:
    seconds: float
    layers: tuple[Layer, ...]


@dataclass(frozen=True, slots=True)
class FaceTruth:
    """Who is where in one frame.

    Attributes:
        label: the person's name, ``stranger:<name>`` for a never-enrolled person.
        xyxy: face box (x1, y1, x2, y2) in frame pixels, clipped to what is on screen; for the
            Hamilton clip, a region that holds the face for the whole time range.
        visible: share of the face box on screen (1.0: all of it).
        occluded: a patch covers part of the face.
    """

    label: str
    xyxy: XYXY
    visible: float = 1.0
    occluded: bool = False

    @property
    def stranger(self) -> bool:
        return self.label.startswith(STRANGER_PREFIX)

    @property
    def height(self) -> float:
        return self.xyxy[3] - self.xyxy[1]


@dataclass(frozen=True)
class LabelledVideo:
    """A clip and its ground truth.

    Attributes:
        name: short name, e.g. ``cuts``.
        path: the MP4 file.
        fps: frames per second; frame ``i`` is at ``i / fps`` seconds from the first.
        truth: per frame, the faces on screen.
        enroll: the photos to enroll per person (never the photos shown).
        shown: enrolled people who appear in the clip.
        cuts: indices of the frames that start a shot (after the first).
        regions: True when ``truth`` boxes are regions (a detection belongs to a region when its
            centre lies inside) rather than face boxes.
    """

    name: str
    path: Path
    fps: float
    resolution_wh: tuple[int, int]
    truth: tuple[tuple[FaceTruth, ...], ...]
    enroll: dict[str, tuple[Path, ...]]
    shown: tuple[str, ...]
    cuts: tuple[int, ...] = ()
    regions: bool = False
    spec: dict[str, Any] = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return len(self.truth)

    @property
    def seconds(self) -> float:
        return self.frames / self.fps

    @property
    def strangers(self) -> tuple[str, ...]:
        return tuple(sorted({t.label for row in self.truth for t in row if t.stranger}))

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "fps": self.fps,
            "resolution_wh": list(self.resolution_wh),
            "truth": [[asdict(t) for t in row] for row in self.truth],
            "enroll": {k: [str(p) for p in v] for k, v in self.enroll.items()},
            "shown": list(self.shown),
            "cuts": list(self.cuts),
            "regions": self.regions,
            "spec": self.spec,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabelledVideo:
        return cls(
            name=data["name"],
            path=Path(data["path"]),
            fps=float(data["fps"]),
            resolution_wh=(int(data["resolution_wh"][0]), int(data["resolution_wh"][1])),
            truth=tuple(
                tuple(
                    FaceTruth(t["label"], tuple(t["xyxy"]), t["visible"], t["occluded"])
                    for t in row
                )
                for row in data["truth"]
            ),
            enroll={k: tuple(Path(p) for p in v) for k, v in data["enroll"].items()},
            shown=tuple(data["shown"]),
            cuts=tuple(data["cuts"]),
            regions=bool(data["regions"]),
            spec=data["spec"],
        )


# --- the photos' faces ------------------------------------------------------------------------


class PhotoFaces:
    """The largest face of each photo, found by the engine once and cached on disk.

    Args:
        engine: the detector; only used for photos not yet in the cache.
        cache_file: JSON of path -> [x1, y1, x2, y2] (or null: no face), per pack.
    """

    def __init__(self, engine: FaceEngine | None, cache_file: Path) -> None:
        self._engine = engine
        self._file = cache_file
        self._known: dict[str, list[float] | None] = {}
        if cache_file.is_file():
            self._known = json.loads(cache_file.read_text())
        self._dirty = False

    def box(self, path: Path) -> XYXY | None:
        """The largest face's box in photo pixels, None when no face is found."""
        key = f"{path}:{path.stat().st_size}"
        if key not in self._known:
            if self._engine is None:
                raise RuntimeError(f"no engine to find the face of {path}")
            faces = self._engine.detect([read_image(path)])[0]
            self._known[key] = (
                [round(float(v), 2) for v in faces.xyxy[faces.largest()]] if len(faces) else None
            )
            self._dirty = True
        found = self._known[key]
        return None if found is None else (found[0], found[1], found[2], found[3])

    def save(self) -> None:
        if self._dirty:
            self._file.parent.mkdir(parents=True, exist_ok=True)
            partial = self._file.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(json.dumps(self._known))
            partial.replace(self._file)
            self._dirty = False


@dataclass(frozen=True, slots=True)
class Cast:
    """People picked for one clip.

    Attributes:
        enrolled: one shown photo per enrolled person, in order of appearance.
        strangers: one photo per stranger, in order of appearance.
        enroll: every enrolled (and absent) person's photos to enroll.
    """

    enrolled: tuple[PhotoFace, ...]
    strangers: tuple[PhotoFace, ...]
    enroll: dict[str, tuple[Path, ...]]


def pick_cast(
    spec: VideoSpec,
    faces_root: Path,
    scale_root: Path,
    photo_faces: PhotoFaces,
    enrolled: int,
    strangers: int,
) -> Cast:
    """``enrolled`` people shown (and ``spec.absent`` not shown) and ``strangers``, by the seed."""
    rng = random.Random(f"{spec.seed}:{spec.kind}")
    identities = faces_root / "identities"
    people = sorted(
        d.name for d in identities.iterdir() if d.is_dir() and len(photos_of(d)) >= MIN_PHOTOS
    )
    rng.shuffle(people)
    shown: list[PhotoFace] = []
    enroll: dict[str, tuple[Path, ...]] = {}
    for person in people:
        if len(shown) == enrolled:
            break
        photos = photos_of(identities / person)
        candidates = []
        for photo in photos:
            box = photo_faces.box(photo)
            if box is not None and box[3] - box[1] >= MIN_SHOWN_FACE_PX:
                candidates.append(PhotoFace(photo, person, box))
        if not candidates:
            continue
        chosen = rng.choice(candidates)
        twin = TWINS.get(f"{person}/{chosen.path.name}")
        enroll[person] = tuple(
            p for p in photos if p != chosen.path and f"{person}/{p.name}" != twin
        )
        shown.append(chosen)
    if len(shown) < enrolled:
        raise ValueError(f"only {len(shown)} identities usable, {enrolled} wanted")
    others = [p for p in sorted(d.name for d in identities.iterdir() if d.is_dir())]
    others = [p for p in others if p not in enroll and len(photos_of(identities / p)) >= 2]
    rng.shuffle(others)
    for person in others[: spec.absent]:
        enroll[person] = tuple(photos_of(identities / person))

    pool = sorted((scale_root / "distractors").glob("*.jpg"))
    rng.shuffle(pool)
    picked: list[PhotoFace] = []
    for photo in pool:
        if len(picked) == strangers:
            break
        box = photo_faces.box(photo)
        if box is not None and box[3] - box[1] >= MIN_SHOWN_FACE_PX:
            picked.append(PhotoFace(photo, STRANGER_PREFIX + photo.stem, box))
    if len(picked) < strangers:
        raise ValueError(f"only {len(picked)} strangers usable, {strangers} wanted")
    return Cast(tuple(shown), tuple(picked), enroll)


def photos_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


# --- the shots of each kind -------------------------------------------------------------------


def alternate(cast: Cast, count: int) -> list[PhotoFace]:
    """Enrolled, stranger, enrolled, stranger... ``count`` faces."""
    out = []
    for i in range(count):
        pool = cast.enrolled if i % 2 == 0 else cast.strangers
        out.append(pool[(i // 2) % len(pool)])
    return out


def shots_for(spec: VideoSpec, cast: Cast) -> list[Shot]:
    width, height = spec.resolution_wh
    centre = (width / 2, height / 2 - 10)
    shots: list[Shot] = []
    if spec.kind == "cuts":
        for face in alternate(cast, spec.shots):
            # The same place every shot; a slight drift, as a camera would have.
            start = Placement(centre, 150.0)
            end = Placement((centre[0] + 6, centre[1] + 3), 156.0)
            shots.append(Shot(spec.shot_s, (Layer(face, start, end),)))
    elif spec.kind == "pan_zoom":
        for i, face in enumerate(alternate(cast, spec.shots)):
            near = Placement((width * 0.62, height * 0.48), 200.0)
            far = Placement((width * 0.25, height * 0.55), 60.0)
            start, end = (far, near) if i % 2 == 0 else (near, far)
            shots.append(Shot(spec.shot_s, (Layer(face, start, end),)))
    elif spec.kind == "occlusion":
        parts = ("eyes", "lower", "side")
        for i, face in enumerate(alternate(cast, spec.shots)):
            window = (0.0, 0.4) if i % 2 else (0.35, 0.75)
            occlusion = Occlusion(parts[i % len(parts)], *window)
            start = Placement(centre, 140.0)
            end = Placement((centre[0] - 8, centre[1] + 4), 146.0)
            shots.append(Shot(spec.shot_s, (Layer(face, start, end, occlusion=occlusion),)))
    elif spec.kind == "small_faces":
        sizes = (40.0, 50.0, 60.0)
        faces = alternate(cast, 3 * spec.shots)
        for i in range(spec.shots):
            layers = []
            for j, size in enumerate(sizes):
                tile = third(j, width, height)
                x = (tile[0] + tile[2]) / 2
                start = Placement((x - 15, height * 0.45), size)
                end = Placement((x + 15, height * 0.5), size)
                layers.append(Layer(faces[3 * i + j], start, end, tile_xyxy=tile))
            shots.append(Shot(spec.shot_s, tuple(layers)))
    elif spec.kind == "side_by_side":
        people = [cast.enrolled[0], cast.strangers[0], cast.enrolled[1]]
        for i in range(spec.shots):
            order = people[i % 3 :] + people[: i % 3]
            layers = []
            for j, face in enumerate(order):
                tile = third(j, width, height)
                x = (tile[0] + tile[2]) / 2
                start = Placement((x, height * 0.45), 110.0)
                end = Placement((x + 4, height * 0.46), 114.0)
                layers.append(Layer(face, start, end, tile_xyxy=tile))
            shots.append(Shot(spec.shot_s, tuple(layers)))
    return shots


def cast_size(spec: VideoSpec) -> tuple[int, int]:
    """(enrolled shown, strangers) a spec needs."""
    if spec.kind == "small_faces":
        faces = 3 * spec.shots
        return (faces + 1) // 2, faces // 2
    if spec.kind == "side_by_side":
        return 2, 1
    return (spec.shots + 1) // 2, max(1, spec.shots // 2)


def third(j: int, width: int, height: int) -> tuple[int, int, int, int]:
    """The j-th of three side-by-side tiles of the frame."""
    return (j * width // 3, 0, (j + 1) * width // 3, height)


# --- drawing ----------------------------------------------------------------------------------


def placement_at(layer: Layer, fraction: float) -> Placement:
    a, b = layer.start, layer.end
    return Placement(
        (
            a.centre_xy[0] + (b.centre_xy[0] - a.centre_xy[0]) * fraction,
            a.centre_xy[1] + (b.centre_xy[1] - a.centre_xy[1]) * fraction,
        ),
        a.height + (b.height - a.height) * fraction,
    )


def photo_to_frame(face: PhotoFace, place: Placement) -> NDArray[np.float64]:
    """(2, 3) affine map from photo pixels to frame pixels putting the face at ``place``."""
    scale = place.height / face.height
    cx, cy = face.centre_xy
    return np.array(
        [
            [scale, 0.0, place.centre_xy[0] - scale * cx],
            [0.0, scale, place.centre_xy[1] - scale * cy],
        ]
    )


def clip_box(box: XYXY, bounds: tuple[int, int, int, int]) -> XYXY:
    return (
        max(box[0], bounds[0]),
        max(box[1], bounds[1]),
        min(box[2], bounds[2]),
        min(box[3], bounds[3]),
    )


def area(box: XYXY) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def occluder_box(face_xyxy: XYXY, part: str) -> XYXY:
    x1, y1, x2, y2 = face_xyxy
    w, h = x2 - x1, y2 - y1
    if part == "eyes":
        return (x1 - 0.08 * w, y1 + 0.22 * h, x2 + 0.08 * w, y1 + 0.5 * h)
    if part == "lower":
        return (x1 - 0.05 * w, y1 + 0.58 * h, x2 + 0.05 * w, y2 + 0.05 * h)
    return (x1 - 0.05 * w, y1 - 0.05 * h, x1 + 0.5 * w, y2 + 0.05 * h)


def draw_frame(
    layers: Sequence[Layer],
    fraction: float,
    photos: dict[Path, Image],
    resolution_wh: tuple[int, int],
) -> tuple[Image, tuple[FaceTruth, ...]]:
    """One frame of a shot ``fraction`` of the way through, and who is where in it."""
    width, height = resolution_wh
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = BACKGROUND_BGR
    truth = []
    for layer in layers:
        place = placement_at(layer, fraction)
        face = layer.face
        affine = photo_to_frame(face, place)
        tile = layer.tile_xyxy or (0, 0, width, height)
        # Only a square around the face is drawn: bystanders at a photo's edge stay out.
        half = CROP_MARGIN * face.height
        cx, cy = face.centre_xy
        image = photos[face.path]
        px1, py1 = max(0, int(cx - half)), max(0, int(cy - half))
        px2, py2 = min(image.shape[1], int(cx + half)), min(image.shape[0], int(cy + half))
        crop = image[py1:py2, px1:px2]
        shifted = affine.copy()
        shifted[:, 2] += affine[:, :2] @ np.array([px1, py1]) - np.array([tile[0], tile[1]])
        region = frame[tile[1] : tile[3], tile[0] : tile[2]]
        cv2.warpAffine(
            crop,
            shifted,
            (region.shape[1], region.shape[0]),
            dst=region,
            flags=cv2.INTER_AREA if place.height < face.height else cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_TRANSPARENT,
        )
        fx1, fy1 = affine @ np.array([face.xyxy[0], face.xyxy[1], 1.0])
        fx2, fy2 = affine @ np.array([face.xyxy[2], face.xyxy[3], 1.0])
        full = (float(fx1), float(fy1), float(fx2), float(fy2))
        drawn = (
            max(tile[0], int(affine[0, 0] * px1 + affine[0, 2])),
            max(tile[1], int(affine[1, 1] * py1 + affine[1, 2])),
            min(tile[2], math.ceil(affine[0, 0] * px2 + affine[0, 2])),
            min(tile[3], math.ceil(affine[1, 1] * py2 + affine[1, 2])),
        )
        shown = clip_box(full, drawn)
        visible = area(shown) / area(full) if area(full) else 0.0
        occluded = False
        if layer.occlusion is not None and (
            layer.occlusion.start <= fraction < layer.occlusion.end
        ):
            ox1, oy1, ox2, oy2 = clip_box(occluder_box(full, layer.occlusion.part), tile)
            cv2.rectangle(
                frame, (int(ox1), int(oy1)), (int(ox2), int(oy2)), OCCLUDER_BGR, thickness=-1
            )
            occluded = True
        if visible > 0:
            truth.append(
                FaceTruth(
                    face.label, tuple(round(v, 1) for v in shown), round(visible, 3), occluded
                )
            )
    return frame, tuple(truth)


def encode(frames: Sequence[Image], path: Path, fps: int) -> None:
    """H.264 (yuv420p) MP4 of BGR frames."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        # One thread: the same bytes on every machine and run.
        stream.options = {"crf": "18", "preset": "veryfast", "threads": "1"}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


# --- building and caching ---------------------------------------------------------------------


def cache_root() -> Path:
    return Path(
        os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / "facewatch-labelled-videos"
    )


def inputs_digest(faces_root: Path, scale_root: Path) -> str:
    """Names and sizes of the photos a clip may draw from: a changed data set is a new key."""
    digest = hashlib.sha256()
    for root in (faces_root / "identities", scale_root / "distractors"):
        for path in sorted(root.rglob("*")):
            if path.is_file():
                digest.update(f"{path.relative_to(root)}:{path.stat().st_size}\n".encode())
    return digest.hexdigest()[:16]


def build(
    spec: VideoSpec,
    faces_root: Path,
    scale_root: Path,
    engine: FaceEngine | None,
    *,
    cache: Path | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> LabelledVideo:
    """The clip of ``spec``, from the cache when it was built before.

    Args:
        engine: finds the photos' faces on a cache miss (None: the cache must hold the clip).
        cache: the cache folder (default :func:`cache_root`).
    """
    cache = cache or cache_root()
    key = spec.key(inputs_digest(faces_root, scale_root))
    folder = cache / f"{spec.name}-{key}"
    manifest = folder / "truth.json"
    if manifest.is_file():
        return LabelledVideo.from_json(json.loads(manifest.read_text()))
    if engine is None:
        raise RuntimeError(f"{spec.name} is not cached at {folder} and no engine was given")
    pack = engine.pack.name
    photo_faces = PhotoFaces(engine, cache / f"photo-faces-{pack}.json")
    cast = pick_cast(spec, faces_root, scale_root, photo_faces, *cast_size(spec))
    photo_faces.save()
    shots = shots_for(spec, cast)
    photos = {
        layer.face.path: read_image(layer.face.path) for shot in shots for layer in shot.layers
    }
    images: list[Image] = []
    truth: list[tuple[FaceTruth, ...]] = []
    cuts: list[int] = []
    for shot in shots:
        if images:
            cuts.append(len(images))
        count = max(1, round(shot.seconds * spec.fps))
        for i in range(count):
            image, faces = draw_frame(
                shot.layers, i / max(1, count - 1), photos, spec.resolution_wh
            )
            images.append(image)
            truth.append(faces)
    staging = Path(tempfile.mkdtemp(prefix=f"{spec.name}-", dir=cache))
    try:
        encode(images, staging / "video.mp4", spec.fps)
        shown = tuple(dict.fromkeys(face.label for face in cast.enrolled))
        video = LabelledVideo(
            name=spec.name,
            path=folder / "video.mp4",
            fps=float(spec.fps),
            resolution_wh=spec.resolution_wh,
            truth=tuple(truth),
            enroll=cast.enroll,
            shown=shown,
            cuts=tuple(cuts),
            spec=asdict(spec),
        )
        (staging / "truth.json").write_text(json.dumps(video.as_json()))
        try:
            staging.rename(folder)
        except OSError:  # built meanwhile by another process: theirs is the same clip
            pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    progress(f"built {spec.name}: {len(images)} frames, {len(cuts)} cuts, in {folder}")
    return video


def hamilton_video(faces_root: Path, labels: Path = LABELS_CSV) -> LabelledVideo:
    """The Hamilton clip with its hand-written labels as per-frame regions.

    A row (start_s, end_s, person, x1, y1, x2, y2) says the person's face is inside the box for
    frames ``i`` with ``start_s <= i / fps < end_s``; faces outside every row are "other".
    """
    path = faces_root / HAMILTON
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or 30)
        frames = sum(1 for _ in container.decode(stream))
        width, height = stream.codec_context.width, stream.codec_context.height
    with labels.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    truth: list[tuple[FaceTruth, ...]] = []
    for i in range(frames):
        t = i / rate
        truth.append(
            tuple(
                FaceTruth(
                    row["person"],
                    (float(row["x1"]), float(row["y1"]), float(row["x2"]), float(row["y2"])),
                )
                for row in rows
                if float(row["start_s"]) <= t < float(row["end_s"])
            )
        )
    persons = tuple(dict.fromkeys(row["person"] for row in rows))
    cuts = tuple(
        i
        for i in range(1, frames)
        if {t.label for t in truth[i]} != {t.label for t in truth[i - 1]}
    )
    return LabelledVideo(
        name="hamilton",
        path=path,
        fps=rate,
        resolution_wh=(width, height),
        truth=tuple(truth),
        enroll={p: tuple(photos_of(faces_root / "identities" / p)) for p in persons},
        shown=persons,
        cuts=cuts,
        regions=True,
        spec={"labels": str(labels.name)},
    )
