"""Recognizer: aligned crops in, L2-normalised embeddings out, many faces per inference call."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from facewatch.errors import ModelLoadError
from facewatch.recognizer.packs import RecognizerSpec

F32 = NDArray[np.float32]


class Embedder:
    """Runs one recognizer model on batches of aligned crops."""

    def __init__(self, spec: RecognizerSpec, session: ort.InferenceSession, max_batch: int):
        self.spec = spec
        self.session = session
        self.max_batch = max_batch
        output = session.get_outputs()[0].shape
        if len(session.get_outputs()) != 1 or len(output) != 2:
            raise ModelLoadError(
                f"the recognizer's outputs are {[o.shape for o in session.get_outputs()]}; a "
                "recognizer has one (N, D) embedding output: choose another model with "
                "--recognizer / FACE_AI_RECOGNIZER",
                path=str(spec.path),
            )
        self.input_name = session.get_inputs()[0].name
        batch_dim = session.get_inputs()[0].shape[0]
        self.batched = not isinstance(batch_dim, int) or batch_dim != 1
        dim = output[-1]
        if not isinstance(dim, int):
            dim = int(self._run(np.zeros((1, 3, *spec.input_size[::-1]), np.float32)).shape[-1])
        self.dim: int = int(dim)

    def blob(self, crops: NDArray[np.uint8]) -> F32:
        """(N, h, w, 3) BGR crops -> (N, 3, h, w) model input."""
        pixels = crops[..., ::-1] if self.spec.rgb else crops
        data = pixels.transpose(0, 3, 1, 2).astype(np.float32)
        if self.spec.mean or self.spec.std != 1.0:
            data = (data - self.spec.mean) / self.spec.std
        return np.ascontiguousarray(data)

    def _run(self, blob: F32) -> F32:
        if self.batched:
            return np.asarray(self.session.run(None, {self.input_name: blob})[0], np.float32)
        return np.concatenate(
            [
                np.asarray(self.session.run(None, {self.input_name: blob[i : i + 1]})[0])
                for i in range(len(blob))
            ]
        ).astype(np.float32)

    def infer(self, blob: F32) -> F32:
        """Raw embeddings of a prepared blob, ``max_batch`` crops per call."""
        if len(blob) == 0:
            return np.zeros((0, self.dim), np.float32)
        parts = [
            self._run(blob[i : i + self.max_batch]) for i in range(0, len(blob), self.max_batch)
        ]
        return np.concatenate(parts)

    @staticmethod
    def normalise(raw: F32) -> F32:
        """Rows scaled to unit L2 norm (zero rows stay zero)."""
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        return (raw / np.where(norms > 0, norms, 1)).astype(np.float32)

    def embed(self, crops: NDArray[np.uint8]) -> F32:
        """(N, h, w, 3) aligned BGR crops -> (N, D) L2-normalised embeddings."""
        return self.normalise(self.infer(self.blob(crops)))
