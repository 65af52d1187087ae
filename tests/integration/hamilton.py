"""The watchlist for ``fr_short_hamilton_clip.mp4``: its performers, its audience, distractors.

Import the fixtures into a test module with
``from hamilton import enrolled as enrolled, watch_settings as watch_settings``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from facewatch.config import EngineSettings, Settings, load_settings
from facewatch.recognizer.engine import FaceEngine
from facewatch.watchlist.service import Photo, Watchlist

HAMILTON = "videos/fr_short_hamilton_clip.mp4"  # 640x360, 29.97 fps, 275 frames, 10 s
HAMILTON_FRAMES = 275
PERFORMERS = {"lin_manuel_miranda", "alex_lacamoire"}
#: In the audience of the clip: may be named, never wrongly.
ALSO_IN_CLIP = {"barack_obama"}
DISTRACTORS = [
    "joe_biden",
    "bradley_cooper",
    "john_lennon",
    "eric_clapton",
    "angelina_jolie",
    "anthony_hopkins",
    "bbt_sheldon",
    "bbt_leonard",
    "bbt_howard",
    "bbt_raj",
]


@pytest.fixture(scope="module")
def watch_settings(
    tmp_path_factory: pytest.TempPathFactory, engine_settings: EngineSettings
) -> Settings:
    """Settings with a data directory of the test module's own."""
    return load_settings(
        data_dir=tmp_path_factory.mktemp("pipeline-data"),
        engine=engine_settings.model_dump(),
        watchlist={"snapshot_interval_s": 0},
    )


@pytest.fixture(scope="module")
def enrolled(watch_settings: Settings, engine: FaceEngine, faces_dir: Path) -> dict[int, str]:
    """Performers, Obama and distractors enrolled from all their photos; id -> name."""
    names: dict[int, str] = {}
    with Watchlist.open(watch_settings, engine) as watchlist:
        for name in sorted(PERFORMERS | ALSO_IN_CLIP) + DISTRACTORS:
            folder = faces_dir / "identities" / name
            photos = [Photo(str(p), p.read_bytes()) for p in sorted(folder.iterdir())]
            result = watchlist.enroll({"name": name}, photos, largest=True)
            names[result.person.id] = name
    return names
