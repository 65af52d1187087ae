"""Shared fixtures: the real face data set and a loaded engine on the offline default pack."""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis.configuration import set_hypothesis_home_dir

from facewatch.config import EngineSettings, load_settings
from facewatch.recognizer.engine import FaceEngine

REPO = Path(__file__).resolve().parents[1]
FACES_ENV = "FACEWATCH_TEST_FACES"
FACES_SCALE_ENV = "FACEWATCH_TEST_FACES_SCALE"

# Hypothesis keeps caches beside its example database; none of it belongs in the checkout.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "facewatch-hypothesis")


def faces_root() -> Path:
    """Where the shared face data lives: $FACEWATCH_TEST_FACES or ../shared/data/faces."""
    return Path(os.environ.get(FACES_ENV) or REPO.parent / "shared" / "data" / "faces")


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    root = faces_root()
    if not (root / "SOURCES.md").is_file():
        pytest.skip(f"shared face data not found at {root} (set {FACES_ENV} to its folder)")
    return root


@pytest.fixture(scope="session")
def faces_scale_dir() -> Path:
    """The watchlist-sized set: $FACEWATCH_TEST_FACES_SCALE or ../shared/data/faces_scale."""
    root = Path(os.environ.get(FACES_SCALE_ENV) or REPO.parent / "shared" / "data" / "faces_scale")
    if not (root / "SOURCES.md").is_file():
        pytest.skip(f"faces_scale data not found at {root} (set {FACES_SCALE_ENV} to its folder)")
    return root


@pytest.fixture(scope="session")
def read_csv(faces_dir: Path):  # type: ignore[no-untyped-def]
    """Rows of a CSV under the face data folder, as dicts."""

    def read(relative: str) -> list[dict[str, str]]:
        with (faces_dir / relative).open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))

    return read


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def engine_settings(model_cache: Path) -> EngineSettings:
    """Default engine settings on the CPU, with converted models cached for this test session."""
    return load_settings(engine={"cache_dir": model_cache, "providers": ["cpu"]}).engine


@pytest.fixture(scope="session")
def engine(engine_settings: EngineSettings) -> FaceEngine:
    """The offline default pack (YuNet + SFace), loaded once per test session."""
    return FaceEngine.load(engine_settings)
