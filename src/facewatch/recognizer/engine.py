"""The face engine: batches of frames in, faces with landmarks, quality and embeddings out.

One engine holds one detector session and one recognizer session and may be shared by many
threads: ONNX Runtime sessions run concurrently, the engine keeps no per-call state, and at most
``max_workers`` inference calls run at once.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from facewatch.config import EngineSettings
from facewatch.errors import FacewatchError, ModelLoadError, NoFaceError
from facewatch.images import validate_array
from facewatch.pipeline.types import Faces
from facewatch.recognizer.align import align_faces, frontal, sharpness
from facewatch.recognizer.convert import one_line
from facewatch.recognizer.detector import DETECTORS, Detections, Detector, DetectorOptions
from facewatch.recognizer.embedder import Embedder
from facewatch.recognizer.packs import ModelPack, resolve_pack
from facewatch.recognizer.refine import Window, refine_window, same_face
from facewatch.recognizer.session import check_input, open_session

log = logging.getLogger(__name__)

F32 = NDArray[np.float32]
#: Stages whose time is spent inside ONNX Runtime; everything else is engine overhead.
INFERENCE_STAGES = ("detect.infer", "refine.infer", "embed.infer")


class StageTimes:
    """Thread-safe running totals of seconds and calls per stage."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seconds: dict[str, float] = {}
        self._calls: dict[str, int] = {}

    @contextmanager
    def measure(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            with self._lock:
                self._seconds[stage] = self._seconds.get(stage, 0.0) + elapsed
                self._calls[stage] = self._calls.get(stage, 0) + 1

    def snapshot(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {k: {"seconds": v, "calls": self._calls[k]} for k, v in self._seconds.items()}

    def reset(self) -> None:
        with self._lock:
            self._seconds.clear()
            self._calls.clear()


@contextmanager
def first_use(path: Path, role: str) -> Iterator[None]:
    """Turn any failure of a model's first use (reading its shapes, a first inference) into a
    :class:`ModelLoadError` naming the file: ONNX Runtime and numpy raise their own types."""
    try:
        yield
    except FacewatchError:
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"the {role} model loads but cannot run ({one_line(exc)}); the file is damaged or "
            f"not a {role} of the expected kind: replace it or choose another with --{role} / "
            f"FACE_AI_{role.upper()}",
            path=str(path),
        ) from exc


@dataclass(frozen=True, slots=True)
class Verification:
    """Whether two faces are the same person at the pack's threshold."""

    same: bool
    similarity: float
    threshold: float


class FaceEngine:
    """Detect -> align -> embed on batches of BGR frames; see the module docstring."""

    def __init__(
        self, pack: ModelPack, detector: Detector, embedder: Embedder, settings: EngineSettings
    ) -> None:
        self.pack = pack
        self.detector = detector
        self.embedder = embedder
        self.settings = settings
        self.times = StageTimes()
        self._slots = threading.BoundedSemaphore(settings.max_workers)
        self._detectors = {detector.options.input_size: detector}
        self._detectors_lock = threading.Lock()

    @classmethod
    def load(cls, settings: EngineSettings, pack: ModelPack | None = None) -> FaceEngine:
        """Resolve the pack, open both sessions on the configured providers, warm them up.

        Raises:
            ModelLoadError, ModelDownloadError: the models cannot be had.
            ProviderFallbackError: a GPU was asked for and the sessions run on the CPU.
        """
        pack = pack or resolve_pack(settings)
        det_session, rec_session = (
            open_session(
                path,
                settings.providers,
                allow_cpu_fallback=settings.allow_cpu_fallback,
                intra_op_threads=settings.thread_pool_size,
                cpu_memory_arena=settings.cpu_memory_arena,
            )
            for path in (pack.detector.path, pack.recognizer.path)
        )
        options = DetectorOptions(
            input_size=settings.detection_size,
            confidence_threshold=settings.confidence_threshold,
            nms_threshold=settings.nms_threshold,
            min_face_size=settings.min_face_size,
            max_batch=settings.batch_size,
        )
        with first_use(pack.detector.path, "detector"):
            check_input(det_session, None, role="detector", path=str(pack.detector.path))
            detector = DETECTORS[pack.detector.kind](pack.detector, det_session, options)
        with first_use(pack.recognizer.path, "recognizer"):
            size = pack.recognizer.input_size
            check_input(rec_session, size, role="recognizer", path=str(pack.recognizer.path))
            embedder = Embedder(pack.recognizer, rec_session, settings.embed_batch_size)
        engine = cls(pack, detector, embedder, settings)
        if settings.warmup:
            engine.warm_up()
        log.info(
            "engine ready: pack %s (%s + %s), %d-d embeddings, providers %s",
            pack.name,
            pack.detector.name,
            pack.recognizer.name,
            engine.embedding_dim,
            engine.providers,
        )
        return engine

    def warm_up(self) -> None:
        """One inference per model, so the first real frame does not pay for lazy set-up.

        Raises:
            ModelLoadError: a model loads but cannot run (damaged graph, unexpected outputs).
        """
        width, height = self.settings.detection_size
        with first_use(self.pack.detector.path, "detector"):
            self.detector.detect([np.zeros((height, width, 3), np.uint8)])
        crop_width, crop_height = self.pack.recognizer.input_size
        with first_use(self.pack.recognizer.path, "recognizer"):
            self.embedder.embed(np.zeros((1, crop_height, crop_width, 3), np.uint8))

    # --- facts ---------------------------------------------------------------------------------

    @property
    def embedding_dim(self) -> int:
        return self.embedder.dim

    @property
    def match_threshold(self) -> float:
        """Cosine similarity at which two faces are the same person (settings override the pack)."""
        if self.settings.match_threshold is not None:
            return self.settings.match_threshold
        return self.pack.recognizer.match_threshold

    @property
    def providers(self) -> dict[str, list[str]]:
        """Execution providers each session actually runs on."""
        return {
            "detector": self.detector.session.get_providers(),
            "recognizer": self.embedder.session.get_providers(),
        }

    def describe(self) -> dict[str, Any]:
        return {
            **self.pack.describe(),
            "embedding_dim": self.embedding_dim,
            "match_threshold": self.match_threshold,
            "providers": self.providers,
            "detection_size": list(self.settings.detection_size),
        }

    # --- work ----------------------------------------------------------------------------------

    def detect(self, images: Sequence[NDArray[np.uint8]]) -> list[Faces]:
        """Faces (boxes, landmarks, scores, quality) in each BGR photo; no embeddings.

        Photos are detected at the settings' size, then every face's landmarks are found again
        at the photo's own resolution (see :mod:`facewatch.recognizer.refine`).
        """
        frames = [validate_array(image) for image in images]
        found = self._refine(frames, self._detect(frames))
        faces, _ = self._describe_faces(frames, found)
        return faces

    def detect_aligned(
        self,
        images: Sequence[NDArray[np.uint8]],
        input_size: tuple[int, int] | None = None,
        *,
        refine: bool = False,
    ) -> tuple[list[Faces], list[NDArray[np.uint8]]]:
        """Faces of each frame (no embeddings) and their aligned crops, for embedding later.

        Args:
            images: BGR frames of any sizes.
            input_size: detector input (width, height) for this call; default: the settings'.
            refine: find every face's landmarks again at the frame's own resolution (one more
                detector run per face, on a window around it); see :meth:`refine_aligned` to
                refine only the faces that will be embedded.

        Returns:
            One ``Faces`` per image and, per image, its (N, h, w, 3) aligned crops (h, w: the
            recognizer's input), row i being face i.
        """
        frames = [validate_array(image) for image in images]
        found = self._detect(frames, input_size)
        if refine:
            found = self._refine(frames, found)
        return self._describe_faces(frames, found)

    def refine_aligned(
        self, image: NDArray[np.uint8], faces: Faces
    ) -> tuple[Faces, NDArray[np.uint8]]:
        """Some faces of one frame, with landmarks found again at the frame's own resolution.

        For a pipeline that detects on a downscaled frame: it refines only the faces it embeds,
        at one detector run on a window of about three face sides square each.

        Args:
            image: the BGR frame ``faces`` were found in.
            faces: faces of that frame (boxes and landmarks in its pixels); embeddings dropped.

        Returns:
            The faces with refined landmarks (a face not found again keeps its own) and their
            (N, h, w, 3) aligned crops.
        """
        frame = validate_array(image)
        found = Detections(faces.xyxy, faces.score, faces.kps)
        described, crops = self._describe_faces([frame], self._refine([frame], [found]))
        return described[0], crops[0]

    def embed(self, images: Sequence[NDArray[np.uint8]]) -> list[Faces]:
        """Faces of each photo with embeddings: every face of the batch in one embedding call.

        Landmarks are refined at each photo's own resolution, as in :meth:`detect`.
        """
        frames = [validate_array(image) for image in images]
        found = self._refine(frames, self._detect(frames))
        faces, crops = self._describe_faces(frames, found)
        width, height = self.pack.recognizer.input_size
        embeddings = self._embed(
            np.concatenate(crops) if crops else np.zeros((0, height, width, 3), np.uint8),
            flip=True,
        )
        out, start = [], 0
        for item in faces:
            stop = start + len(item)
            out.append(
                Faces(
                    item.xyxy,
                    item.kps,
                    item.score,
                    item.sharpness,
                    item.frontal,
                    embeddings[start:stop],
                )
            )
            start = stop
        return out

    def embed_crops(self, crops: NDArray[np.uint8], *, flip: bool = False) -> F32:
        """(N, 112, 112, 3) aligned BGR crops -> (N, D) L2-normalised embeddings.

        ``flip``: average each crop's embedding with its mirror image's, as :meth:`embed` does.
        """
        return self._embed(crops, flip=flip)

    def _embed(self, crops: NDArray[np.uint8], *, flip: bool) -> F32:
        """Embeddings of (N, h, w, 3) crops; with ``flip``, of each crop and its mirror image,
        summed and normalised again (one inference call of 2N crops).

        Flip averaging is used for photos (enrollment, identify, verify): on faces_scale it
        raised rank-1 and DIR at FPIR 1 % (benchmarks/identification.py) for twice the
        embedding work. Video keeps one embedding per crop: the pipeline embeds many more.
        """
        batch = np.concatenate([crops, crops[:, :, ::-1]]) if flip and len(crops) else crops
        with self.times.measure("embed.prepare"):
            blob = self.embedder.blob(batch)
        with self._slots, self.times.measure("embed.infer"):
            raw = self.embedder.infer(blob)
        with self.times.measure("embed.normalise"):
            embeddings = self.embedder.normalise(raw)
            if batch is not crops:
                embeddings = self.embedder.normalise(
                    embeddings[: len(crops)] + embeddings[len(crops) :]
                )
            return embeddings

    def verify(self, image_a: NDArray[np.uint8], image_b: NDArray[np.uint8]) -> Verification:
        """Compare the largest face of each image.

        Raises:
            NoFaceError: an image has no face (``index`` says which).
        """
        faces = self.embed([image_a, image_b])
        for index, (label, item) in enumerate(zip(("first", "second"), faces, strict=True)):
            if not len(item):
                raise NoFaceError(f"no face found in the {label} image", index=index)
        a = faces[0].embedding[faces[0].largest()]  # type: ignore[index]
        b = faces[1].embedding[faces[1].largest()]  # type: ignore[index]
        similarity = float(np.dot(a, b))
        return Verification(similarity >= self.match_threshold, similarity, self.match_threshold)

    # --- steps ---------------------------------------------------------------------------------

    def _detector_for(self, input_size: tuple[int, int] | None) -> Detector:
        """The detector for an input size: the same session, decoded for that size."""
        if input_size is None:
            return self.detector
        with self._detectors_lock:
            detector = self._detectors.get(input_size)
            if detector is None:
                options = dataclasses.replace(self.detector.options, input_size=input_size)
                detector = type(self.detector)(self.detector.spec, self.detector.session, options)
                self._detectors[input_size] = detector
            return detector

    def _detect(
        self, frames: list[NDArray[np.uint8]], input_size: tuple[int, int] | None = None
    ) -> list[Detections]:
        detector = self._detector_for(input_size)
        found: list[Detections] = []
        step = detector.options.max_batch
        for start in range(0, len(frames), step):
            chunk = frames[start : start + step]
            with self.times.measure("detect.prepare"):
                blob, scales = detector.prepare(chunk)
            with self._slots, self.times.measure("detect.infer"):
                outputs = detector.infer(blob)
            with self.times.measure("detect.decode"):
                found.extend(detector.postprocess(outputs, scales, [f.shape for f in chunk]))
        return found

    def _refine(self, frames: list[NDArray[np.uint8]], found: list[Detections]) -> list[Detections]:
        """The same faces, each as detected again on a window around it at full resolution
        (:func:`refine_window`): box, score and landmarks from the second run, which sees the
        face's own pixels on the whole image's grid. Windows of one input size share a batch. A
        face the second run does not find (too small without the first run's upscaling) keeps
        its first detection."""
        windows: dict[tuple[int, int], list[tuple[int, int, Window]]] = {}
        for index, (frame, det) in enumerate(zip(frames, found, strict=True)):
            height, width = frame.shape[:2]
            for row in range(len(det.score)):
                window = refine_window(det.xyxy[row], (width, height))
                windows.setdefault(window.input_size, []).append((index, row, window))
        if not windows:
            return found
        refined = [(det.xyxy.copy(), det.score.copy(), det.kps.copy()) for det in found]
        for size, jobs in windows.items():
            detector = self._detector_for(size)
            step = detector.options.max_batch
            for start in range(0, len(jobs), step):
                chunk = jobs[start : start + step]
                cuts = [frames[i][w.y0 : w.y1, w.x0 : w.x1] for i, _, w in chunk]
                with self.times.measure("refine.prepare"):
                    blob, scales = detector.prepare(cuts, upscale=False)
                with self._slots, self.times.measure("refine.infer"):
                    outputs = detector.infer(blob)
                with self.times.measure("refine.decode"):
                    again = detector.postprocess(outputs, scales, [c.shape for c in cuts])
                for (index, row, window), redone in zip(chunk, again, strict=True):
                    offset = np.array([window.x0, window.y0], np.float32)
                    boxes = redone.xyxy + np.tile(offset, 2)
                    match = same_face(boxes, found[index].xyxy[row])
                    if match is None:
                        continue
                    xyxy, score, kps = refined[index]
                    xyxy[row] = boxes[match]
                    score[row] = redone.score[match]
                    kps[row] = redone.kps[match] + offset
        return [Detections(xyxy, score, kps) for xyxy, score, kps in refined]

    def _describe_faces(
        self, frames: list[NDArray[np.uint8]], found: list[Detections]
    ) -> tuple[list[Faces], list[NDArray[np.uint8]]]:
        size = self.pack.recognizer.input_size
        faces, crops = [], []
        with self.times.measure("align"):
            for frame, det in zip(frames, found, strict=True):
                aligned = align_faces(frame, det.kps, size)
                crops.append(aligned)
                faces.append(
                    Faces(det.xyxy, det.kps, det.score, sharpness(aligned), frontal(det.kps))
                )
        return faces, crops
