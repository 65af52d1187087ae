"""One engine shared by many threads gives the same answers as one caller."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from facewatch.config import EngineSettings
from facewatch.images import read_image
from facewatch.recognizer.engine import FaceEngine

IMAGES = (
    "identities/barack_obama/1.jpg",
    "identities/joe_biden/1.jpg",
    "groups/fr_two_people.jpg",
    "groups/faceapi_bbt4.jpg",
    "identities/rose_leslie/1.jpg",
    "groups/fr_kit_with_rose.jpg",
)


def test_concurrent_callers_get_the_serial_results(faces_dir: Path, engine: FaceEngine) -> None:
    frames = [read_image(faces_dir / p) for p in IMAGES]
    expected = engine.embed(frames)
    # Each task embeds a different rotation of the list, so batches differ between callers.
    jobs = [frames[i:] + frames[:i] for i in range(len(frames))] * 2

    def run(batch: list[np.ndarray]) -> list[np.ndarray]:
        return [f.embedding for f in engine.embed(batch)]  # type: ignore[misc]

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(run, jobs))
    for shift, got in zip(list(range(len(frames))) * 2, results, strict=True):
        for k, embedding in enumerate(got):
            want = expected[(k + shift) % len(frames)].embedding
            assert want is not None and embedding.shape == want.shape
            np.testing.assert_allclose(embedding, want, atol=1e-4)


def test_frames_of_odd_sizes(engine: FaceEngine) -> None:
    tiny = np.zeros((1, 1, 3), np.uint8)
    tall = np.full((2000, 31, 3), 90, np.uint8)
    wide = np.full((17, 3000, 3), 200, np.uint8)
    grey = np.zeros((50, 60), np.uint8)
    results = engine.embed([tiny, tall, wide, grey])
    assert [len(f) for f in results] == [0, 0, 0, 0]
    assert all(
        f.embedding is not None and f.embedding.shape == (0, engine.embedding_dim) for f in results
    )


def test_an_engine_without_the_memory_arena_gives_the_same_answers(
    faces_dir: Path, engine: FaceEngine, engine_settings: EngineSettings
) -> None:
    lean = FaceEngine.load(engine_settings.model_copy(update={"cpu_memory_arena": False}))
    for session in (lean.detector.session, lean.embedder.session):
        assert session.get_session_options().enable_cpu_mem_arena is False
    for session in (engine.detector.session, engine.embedder.session):
        assert session.get_session_options().enable_cpu_mem_arena is True
    frames = [read_image(faces_dir / p) for p in IMAGES]
    for ours, theirs in zip(lean.embed(frames), engine.embed(frames), strict=True):
        np.testing.assert_allclose(ours.xyxy, theirs.xyxy, atol=1e-3)
        np.testing.assert_allclose(ours.embedding, theirs.embedding, atol=1e-4)
