"""Scene cuts on real video: a flashing video ends tracks and never stops the pipeline."""

from __future__ import annotations

import asyncio
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from hamilton import watch_settings as watch_settings  # a fixture

from facewatch.config import Settings
from facewatch.images import read_image
from facewatch.pipeline.runner import Pipeline
from facewatch.recognizer.engine import FaceEngine
from facewatch.stream.config import StreamConfig
from facewatch.watchlist.service import Watchlist

FPS = 25
FRAMES = 50


def flashing_clip(photo: Path, target: Path) -> Path:
    """A 2 s clip of one face that flashes: every other frame bright white, from frame 10 on."""
    image = read_image(photo)
    canvas = np.zeros((360, 640, 3), np.uint8)
    scale = min(640 / image.shape[1], 360 / image.shape[0])
    resized = cv2.resize(image, (int(image.shape[1] * scale), int(image.shape[0] * scale)))
    canvas[: resized.shape[0], : resized.shape[1]] = resized
    with av.open(str(target), "w") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = 640, 360, "yuv420p"
        for i in range(FRAMES):
            flash = i >= 10 and i % 2 == 1
            pixels = np.full_like(canvas, 255) if flash else canvas
            for packet in video.encode(av.VideoFrame.from_ndarray(pixels, format="bgr24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
    return target


@pytest.mark.slow
async def test_a_flashing_video_ends_tracks_and_the_pipeline_goes_on(
    watch_settings: Settings, engine: FaceEngine, faces_dir: Path, tmp_path: Path
) -> None:
    clip = flashing_clip(faces_dir / "identities" / "barack_obama" / "1.jpg", tmp_path / "f.mp4")
    # Every frame is to be processed: the drain at close may take long on a busy machine.
    pipeline_settings = watch_settings.pipeline.model_copy(update={"shutdown_grace_s": 300})
    settings = watch_settings.model_copy(update={"pipeline": pipeline_settings})
    with Watchlist.open(settings, engine) as watchlist:
        async with Pipeline(settings, engine, watchlist) as pipeline:
            await pipeline.add_stream(StreamConfig(url=str(clip), name="flash"))
            async with asyncio.timeout(300):
                await pipeline.streams.wait_all_ended()
        summary = pipeline.summary()
    stream = summary["streams"]["flash"]
    assert stream["frames_processed"] == FRAMES and stream["state"] == "ended"
    assert summary["stage_errors"] == {}
    # The flashing starts as cuts (the face's track ends at each), then becomes the normal.
    assert summary["scene_cuts"] >= 2, summary
    assert summary["track_breaks"].get("cut", 0) >= 1, summary
