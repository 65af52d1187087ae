"""Face detectors: letterbox a batch of frames, one inference call, decode, NMS, map back.

Each model family differs only in how its input blob is made and how its raw outputs turn into
boxes, scores and five landmarks; :class:`Detector` does the rest the same way for all of them.
Coordinates are decoded in the letterboxed input and divided by the letterbox scale (the image
sits at the top-left corner, so no offset is needed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from facewatch.errors import ModelLoadError
from facewatch.recognizer.packs import DetectorSpec

F32 = NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Detections:
    """Raw detections of one image: (N, 4) xyxy, (N,) score, (N, 5, 2) landmarks, in pixels."""

    xyxy: F32
    score: F32
    kps: F32


@dataclass(frozen=True, slots=True)
class DetectorOptions:
    """Thresholds applied by every detector."""

    input_size: tuple[int, int]  # width, height
    confidence_threshold: float
    nms_threshold: float
    min_face_size: float
    max_batch: int


def letterbox(
    image: NDArray[np.uint8], size: tuple[int, int], *, upscale: bool = True
) -> tuple[NDArray[np.uint8], float]:
    """Resize ``image`` to fit ``size`` (w, h) keeping its aspect, padded bottom/right with black.

    With ``upscale`` False an image smaller than ``size`` keeps its pixels (scale 1) and is
    only padded.

    Returns the (h, w, 3) canvas and the scale applied (input pixels per source pixel).
    """
    width, height = size
    scale = min(width / image.shape[1], height / image.shape[0])
    if not upscale:
        scale = min(scale, 1.0)
    new_w = max(1, min(width, round(image.shape[1] * scale)))
    new_h = max(1, min(height, round(image.shape[0] * scale)))
    canvas = np.zeros((height, width, 3), np.uint8)
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    return canvas, scale


def nms(xyxy: F32, score: F32, iou_threshold: float) -> NDArray[np.intp]:
    """Indices kept by non-maximum suppression, best first (OpenCV's implementation)."""
    if len(score) == 0:
        return np.zeros(0, np.intp)
    xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    keep = cv2.dnn.NMSBoxes(xywh.tolist(), score.tolist(), 0.0, iou_threshold)
    return np.asarray(keep, np.intp).reshape(-1)


class Detector:
    """Runs one detector model on batches of BGR frames of any sizes."""

    kind: ClassVar[str]

    def __init__(self, spec: DetectorSpec, session: ort.InferenceSession, options: DetectorOptions):
        self.spec = spec
        self.session = session
        self.options = options
        self.input_name = session.get_inputs()[0].name
        batch_dim = session.get_inputs()[0].shape[0]
        # A model exported with a fixed batch of 1 is run once per frame.
        self.batched = not isinstance(batch_dim, int) or batch_dim != 1

    def prepare(
        self, images: Sequence[NDArray[np.uint8]], *, upscale: bool = True
    ) -> tuple[F32, list[float]]:
        """Letterbox every image and build one (B, 3, H, W) input blob; return it and the scales.

        ``upscale`` False: images smaller than the input are padded, not enlarged.
        """
        canvases, scales = zip(
            *(letterbox(image, self.options.input_size, upscale=upscale) for image in images),
            strict=True,
        )
        return self.blob(np.stack(canvases)), list(scales)

    def infer(self, blob: F32) -> list[F32]:
        """One inference call over the whole blob (or one per frame for fixed-batch models)."""
        if self.batched:
            return [np.asarray(o) for o in self.session.run(None, {self.input_name: blob})]
        runs = [
            self.session.run(None, {self.input_name: blob[i : i + 1]}) for i in range(len(blob))
        ]
        return [np.concatenate([np.asarray(r[k]) for r in runs]) for k in range(len(runs[0]))]

    def postprocess(
        self, outputs: list[F32], scales: list[float], shapes: Sequence[tuple[int, ...]]
    ) -> list[Detections]:
        """Decode, filter, suppress and map back to each frame's pixels."""
        results = []
        for index, (scale, shape) in enumerate(zip(scales, shapes, strict=True)):
            xyxy, score, kps = self.decode(outputs, index)
            keep = score >= self.options.confidence_threshold
            xyxy, score, kps = xyxy[keep], score[keep], kps[keep]
            order = nms(xyxy, score, self.options.nms_threshold)
            xyxy, score, kps = xyxy[order] / scale, score[order], kps[order] / scale
            height, width = shape[:2]
            xyxy[:, 0::2] = xyxy[:, 0::2].clip(0, width)
            xyxy[:, 1::2] = xyxy[:, 1::2].clip(0, height)
            sides = np.minimum(xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1])
            big = sides >= self.options.min_face_size
            results.append(
                Detections(
                    xyxy[big].astype(np.float32),
                    score[big].astype(np.float32),
                    kps[big].astype(np.float32),
                )
            )
        return results

    def detect(self, images: Sequence[NDArray[np.uint8]]) -> list[Detections]:
        """Detect faces in ``images`` (BGR uint8, any sizes), ``max_batch`` frames per call."""
        results: list[Detections] = []
        step = self.options.max_batch
        for start in range(0, len(images), step):
            chunk = images[start : start + step]
            blob, scales = self.prepare(chunk)
            results.extend(self.postprocess(self.infer(blob), scales, [i.shape for i in chunk]))
        return results

    # Model specific ---------------------------------------------------------------------------

    def blob(self, canvases: NDArray[np.uint8]) -> F32:
        """(B, H, W, 3) BGR canvases -> (B, 3, H, W) model input."""
        raise NotImplementedError

    def decode(self, outputs: list[F32], index: int) -> tuple[F32, F32, F32]:
        """Raw outputs of image ``index`` -> (M, 4) xyxy, (M,) score, (M, 5, 2) kps.

        Coordinates are in pixels of the letterboxed input.
        """
        raise NotImplementedError


def _grid(rows: int, cols: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Column and row index of every cell, row-major: (rows*cols,) each."""
    r, c = np.divmod(np.arange(rows * cols, dtype=np.float32), np.float32(cols))
    return c, r


class YuNetDetector(Detector):
    """YuNet 2023mar: anchor-free, strides 8/16/32, sigmoid cls and obj heads; BGR 0..255 input."""

    kind = "yunet"
    strides = (8, 16, 32)

    def blob(self, canvases: NDArray[np.uint8]) -> F32:
        return np.ascontiguousarray(canvases.transpose(0, 3, 1, 2), dtype=np.float32)

    def decode(self, outputs: list[F32], index: int) -> tuple[F32, F32, F32]:
        width, height = self.options.input_size
        n = len(self.strides)
        boxes, scores, points = [], [], []
        for level, stride in enumerate(self.strides):
            cls = outputs[level][index, :, 0].clip(0, 1)
            obj = outputs[level + n][index, :, 0].clip(0, 1)
            score = np.sqrt(cls * obj)
            keep = np.flatnonzero(score >= self.options.confidence_threshold)
            cols = math.ceil(width / stride)
            c, r = _grid(math.ceil(height / stride), cols)
            c, r = c[keep], r[keep]
            bbox = outputs[level + 2 * n][index, keep]
            kps = outputs[level + 3 * n][index, keep].reshape(-1, 5, 2)
            cx, cy = (c + bbox[:, 0]) * stride, (r + bbox[:, 1]) * stride
            w, h = np.exp(bbox[:, 2]) * stride, np.exp(bbox[:, 3]) * stride
            boxes.append(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1))
            points.append((kps + np.stack([c, r], axis=1)[:, None, :]) * stride)
            scores.append(score[keep])
        return _concat(boxes, scores, points)


class ScrfdDetector(Detector):
    """InsightFace SCRFD: distance regression from anchor centres; RGB (x - 127.5) / 128 input."""

    kind = "scrfd"

    def __init__(self, spec: DetectorSpec, session: ort.InferenceSession, options: DetectorOptions):
        super().__init__(spec, session, options)
        outputs = len(session.get_outputs())
        # 9 outputs: strides 8/16/32, 2 anchors a cell; 15: strides 8..128, 1 anchor a cell.
        self.strides = (8, 16, 32) if outputs == 9 else (8, 16, 32, 64, 128)
        self.anchors = 2 if outputs == 9 else 1
        coarsest = self.strides[-1]
        if any(side % coarsest for side in options.input_size):
            raise ModelLoadError(
                f"this SCRFD model has strides up to {coarsest}: the detection size "
                f"{options.input_size} must be a multiple of {coarsest}",
                path=str(spec.path),
            )
        # Exports without a batch axis give (anchors, k) outputs; insightface calls them unbatched.
        # Either kind may also fix the input batch at 1 (the base class's test): both then run
        # once per frame, stacked to (B, anchors, k) or (B, 1, anchors, k), which decode reshapes.
        self.batched = self.batched and len(session.get_outputs()[0].shape) == 3

    def blob(self, canvases: NDArray[np.uint8]) -> F32:
        rgb = canvases[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32)
        return np.ascontiguousarray((rgb - 127.5) / 128.0)

    def infer(self, blob: F32) -> list[F32]:
        if self.batched:
            return super().infer(blob)
        runs = [
            self.session.run(None, {self.input_name: blob[i : i + 1]}) for i in range(len(blob))
        ]
        return [np.stack([np.asarray(r[k]) for r in runs]) for k in range(len(runs[0]))]

    def decode(self, outputs: list[F32], index: int) -> tuple[F32, F32, F32]:
        width, height = self.options.input_size
        n = len(self.strides)
        boxes, scores, points = [], [], []
        for level, stride in enumerate(self.strides):
            score = outputs[level][index].reshape(-1)
            keep = np.flatnonzero(score >= self.options.confidence_threshold)
            c, r = _grid(height // stride, width // stride)
            centres = np.repeat(np.stack([c, r], axis=1) * stride, self.anchors, axis=0)[keep]
            dist = outputs[level + n][index].reshape(-1, 4)[keep] * stride
            kps = outputs[level + 2 * n][index].reshape(-1, 5, 2)[keep] * stride
            boxes.append(np.concatenate([centres - dist[:, :2], centres + dist[:, 2:]], axis=1))
            points.append(centres[:, None, :] + kps)
            scores.append(score[keep])
        return _concat(boxes, scores, points)


class RetinaFaceDetector(Detector):
    """RetinaFace-mnet0.25: SSD-style priors with variances 0.1/0.2; BGR minus mean input."""

    kind = "retinaface"
    strides = (8, 16, 32)
    min_sizes = ((16, 32), (64, 128), (256, 512))
    mean = np.array([104.0, 117.0, 123.0], np.float32)

    def __init__(self, spec: DetectorSpec, session: ort.InferenceSession, options: DetectorOptions):
        super().__init__(spec, session, options)
        self.priors = self._priors(*options.input_size)

    def _priors(self, width: int, height: int) -> F32:
        levels = []
        for stride, sizes in zip(self.strides, self.min_sizes, strict=True):
            c, r = _grid(math.ceil(height / stride), math.ceil(width / stride))
            centres = np.stack([(c + 0.5) * stride, (r + 0.5) * stride], axis=1)
            wh = np.array([[s, s] for s in sizes], np.float32)
            levels.append(
                np.concatenate(
                    [np.repeat(centres, len(sizes), axis=0), np.tile(wh, (len(centres), 1))], axis=1
                )
            )
        return np.concatenate(levels).astype(np.float32)  # (A, 4) cx, cy, w, h in input pixels

    def blob(self, canvases: NDArray[np.uint8]) -> F32:
        return np.ascontiguousarray((canvases.astype(np.float32) - self.mean).transpose(0, 3, 1, 2))

    def decode(self, outputs: list[F32], index: int) -> tuple[F32, F32, F32]:
        loc, conf, landmarks = (o[index] for o in outputs)
        score = conf[:, 1]
        keep = np.flatnonzero(score >= self.options.confidence_threshold)
        priors, loc = self.priors[keep], loc[keep]
        centre = priors[:, :2] + loc[:, :2] * 0.1 * priors[:, 2:]
        wh = priors[:, 2:] * np.exp(loc[:, 2:] * 0.2)
        xyxy = np.concatenate([centre - wh / 2, centre + wh / 2], axis=1)
        kps = priors[:, None, :2] + landmarks[keep].reshape(-1, 5, 2) * 0.1 * priors[:, None, 2:]
        return xyxy, score[keep], kps


def _concat(boxes: list[F32], scores: list[F32], points: list[F32]) -> tuple[F32, F32, F32]:
    return (
        np.concatenate(boxes).astype(np.float32).reshape(-1, 4),
        np.concatenate(scores).astype(np.float32),
        np.concatenate(points).astype(np.float32).reshape(-1, 5, 2),
    )


DETECTORS: dict[str, type[Detector]] = {
    cls.kind: cls for cls in (YuNetDetector, ScrfdDetector, RetinaFaceDetector)
}
