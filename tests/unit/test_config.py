"""Settings: environment aliases, nested names, YAML, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from facewatch.config import ENV_ALIASES, describe_settings, load_settings
from facewatch.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("FACE_AI_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    settings = load_settings()
    assert settings.engine.model_name == "yunet_sface"
    assert settings.engine.detection_size == (640, 640)
    assert settings.engine.min_face_size == 20
    assert settings.engine.confidence_threshold == 0.5
    assert settings.engine.providers == ["auto"]


@pytest.mark.parametrize(
    ("env", "value", "path", "expected"),
    [
        ("FACE_AI_MODEL_NAME", "buffalo_l", ("engine", "model_name"), "buffalo_l"),
        ("FACE_AI_DETECTION_SIZE", "320,256", ("engine", "detection_size"), (320, 256)),
        ("FACE_AI_DETECTION_SIZE", "480x480", ("engine", "detection_size"), (480, 480)),
        ("FACE_AI_MIN_FACE_SIZE", "40", ("engine", "min_face_size"), 40),
        ("FACE_AI_CONFIDENCE_THRESHOLD", "0.7", ("engine", "confidence_threshold"), 0.7),
        (
            "FACE_AI_PROVIDERS",
            "CUDAExecutionProvider,CPUExecutionProvider",
            ("engine", "providers"),
            ["cuda", "cpu"],
        ),
        ("FACE_AI_PROVIDERS", "tensorrt, cuda", ("engine", "providers"), ["tensorrt", "cuda"]),
        ("FACE_AI_MAX_WORKERS", "4", ("engine", "max_workers"), 4),
        ("FACE_AI_BATCH_SIZE", "32", ("engine", "batch_size"), 32),
        ("FACE_AI_THREAD_POOL_SIZE", "2", ("engine", "thread_pool_size"), 2),
        ("FACE_AI_LOG_LEVEL", "debug", ("log_level",), "DEBUG"),
        ("FACE_AI_DEBUG", "true", ("debug",), True),
        ("FACE_AI_ENGINE__NMS_THRESHOLD", "0.3", ("engine", "nms_threshold"), 0.3),
        ("FACE_AI_ENGINE__DETECTION_SIZE", "320,320", ("engine", "detection_size"), (320, 320)),
        ("FACE_AI_WATCHLIST__TARGET_FPIR", "0.001", ("watchlist", "target_fpir"), 0.001),
    ],
)
def test_environment_names(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, path: tuple[str, ...], expected: object
) -> None:
    monkeypatch.setenv(env, value)
    node: object = load_settings()
    for part in path:
        node = getattr(node, part)
    assert node == expected


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("FACE_AI_DETECTION_SIZE", "641,640", "FACE_AI_DETECTION_SIZE"),
        ("FACE_AI_DETECTION_SIZE", "640", "FACE_AI_DETECTION_SIZE"),
        ("FACE_AI_MIN_FACE_SIZE", "0", "FACE_AI_MIN_FACE_SIZE"),
        ("FACE_AI_CONFIDENCE_THRESHOLD", "1.5", "FACE_AI_CONFIDENCE_THRESHOLD"),
        ("FACE_AI_MAX_WORKERS", "many", "FACE_AI_MAX_WORKERS"),
        ("FACE_AI_PROVIDERS", "quantum", "FACE_AI_PROVIDERS"),
        ("FACE_AI_LOG_LEVEL", "loud", "FACE_AI_LOG_LEVEL"),
        ("FACE_AI_MODEL_SHA256", "abc", "FACE_AI_MODEL_SHA256"),
        ("FACE_AI_MODEL_NAEM", "buffalo_l", "FACE_AI_MODEL_NAEM"),
        ("FACE_AI_ENGINE__BOGUS", "1", "FACE_AI_ENGINE__BOGUS"),
        ("FACE_AI_WATCHLIST__TARGET_FPIR", "0", "watchlist.target_fpir"),
        ("FACE_AI_WATCHLIST__TARGET_FPIR", "1", "watchlist.target_fpir"),
    ],
)
def test_bad_environment_names_the_key(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, named: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert named in str(caught.value)


def test_yaml_file_and_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "facewatch.yaml"
    config.write_text("log_level: WARNING\nengine:\n  batch_size: 8\n  min_face_size: 30\n")
    settings = load_settings(config)
    assert settings.engine.batch_size == 8
    assert settings.log_level == "WARNING"
    monkeypatch.setenv("FACE_AI_BATCH_SIZE", "4")  # environment wins over the file
    assert load_settings(config).engine.batch_size == 4
    assert load_settings(config).engine.min_face_size == 30
    monkeypatch.setenv("FACE_AI_CONFIG", str(config))
    assert load_settings().engine.min_face_size == 30


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("engine:\n  batch_sise: 8\n", "engine.batch_sise"),
        ("enigne:\n  batch_size: 8\n", "enigne"),
        ("engine:\n  batch_size: -1\n", "engine.batch_size"),
        ("- a list\n", "FACE_AI_CONFIG"),
        ("engine: [unclosed\n", "FACE_AI_CONFIG"),
    ],
)
def test_bad_yaml_names_the_key(tmp_path: Path, text: str, named: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    assert named in str(caught.value)


def test_missing_yaml_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "absent.yaml")


def test_every_alias_points_at_a_real_setting() -> None:
    described = {row["key"] for row in describe_settings()}
    for name, path in ENV_ALIASES.items():
        assert ".".join(path) in described, name


def test_example_config_loads() -> None:
    example = Path(__file__).resolve().parents[2] / "configs" / "example.yaml"
    assert load_settings(example).engine.model_name == "yunet_sface"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("A" * 64, {"": "a" * 64}),
        (
            f"buffalo_l={'b' * 64}, antelopev2={'c' * 64}",
            {"buffalo_l": "b" * 64, "antelopev2": "c" * 64},
        ),
    ],
)
def test_pack_checksums(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: dict[str, str]
) -> None:
    monkeypatch.setenv("FACE_AI_MODEL_SHA256", value)
    assert load_settings().engine.download_sha256 == expected
