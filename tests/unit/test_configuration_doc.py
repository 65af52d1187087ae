"""docs/configuration.md: it is what the settings model renders, the same on every machine, and
the values it shows (defaults, example environment values) are read back as it says."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from facewatch.config import load_settings, settings_reference_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
REGENERATE = "regenerate with `facewatch config --markdown > docs/configuration.md`"
#: A table row of the reference: key, environment names, default, description.
ROW = re.compile(r"^\| `(?P<key>[a-z0-9_.]+)` \| (?P<env>[^|]+) \| (?P<default>[^|]+) \| ")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("FACE_AI_", "MILVUS_")):
            monkeypatch.delenv(name)


def reference_rows() -> list[dict[str, Any]]:
    rows = []
    for line in settings_reference_markdown().splitlines():
        found = ROW.match(line)
        if found:
            env = re.findall(r"`([A-Z0-9_]+)`", found["env"])
            rows.append({"key": found["key"], "env": env, "default": found["default"].strip()})
    return rows


def setting(key: str) -> Any:
    value: Any = load_settings()
    for part in key.split("."):
        value = getattr(value, part)
    return value


def test_the_page_is_what_the_settings_model_renders() -> None:
    assert DOC.is_file(), f"docs/configuration.md is missing: {REGENERATE}"
    assert DOC.read_text(encoding="utf-8") == settings_reference_markdown(), (
        f"docs/configuration.md differs from the settings model: {REGENERATE}"
    )


def test_the_page_does_not_depend_on_the_machine(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pages = []
    for user in ("alice", "bob"):
        monkeypatch.setenv("HOME", str(tmp_path / user))
        monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / user / "data"))
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / user / "cache"))
        pages.append(settings_reference_markdown())
    assert pages[0] == pages[1]
    assert str(tmp_path) not in pages[0]


def test_every_setting_is_on_the_page() -> None:
    from facewatch.config import describe_settings

    assert [row["key"] for row in reference_rows()] != []
    assert sorted(row["key"] for row in reference_rows()) == [
        row["key"] for row in describe_settings()
    ]


def literal_defaults() -> list[tuple[str, str, str]]:
    """(key, environment name, default as shown) for every default the page writes as a value."""
    cases = []
    for row in reference_rows():
        shown = row["default"]
        if shown.startswith("`") and shown.endswith("`"):
            for name in row["env"]:
                cases.append((row["key"], name, shown.strip("`")))
    return cases


@pytest.mark.parametrize(("key", "env", "shown"), literal_defaults())
def test_each_default_as_shown_is_read_back_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, key: str, env: str, shown: str
) -> None:
    default = setting(key)
    monkeypatch.setenv(env, shown)
    assert setting(key) == default


@pytest.mark.parametrize(
    ("env", "text", "key", "expected"),
    [
        # The value forms the page's introduction promises.
        ("FACE_AI_PROVIDERS", "cuda,cpu", "engine.providers", ["cuda", "cpu"]),
        (
            "FACE_AI_SERVER__CORS_ORIGINS",
            "https://a.example,https://b.example",
            "server.cors_origins",
            ["https://a.example", "https://b.example"],
        ),
        ("FACE_AI_DETECTION_SIZE", "640,640", "engine.detection_size", (640, 640)),
        ("FACE_AI_DEBUG", "yes", "debug", True),
        ("FACE_AI_MQTT__ENABLED", "on", "mqtt.enabled", True),
        ("FACE_AI_MQTT__TLS", "0", "mqtt.tls", False),
        ("FACE_AI_MQTT__QOS", "2", "mqtt.qos", 2),
        (
            "FACE_AI_MODEL_SHA256",
            "buffalo_l=" + "a" * 64,
            "engine.download_sha256",
            {"buffalo_l": "a" * 64},
        ),
    ],
)
def test_environment_values_are_read_as_the_page_says(
    monkeypatch: pytest.MonkeyPatch, env: str, text: str, key: str, expected: Any
) -> None:
    monkeypatch.setenv(env, text)
    assert setting(key) == expected


def test_a_nested_variable_wins_over_the_file_and_a_milvus_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "facewatch.yaml"
    config.write_text("engine:\n  batch_size: 8\n  nms_threshold: 0.3\n")
    monkeypatch.setenv("FACE_AI_ENGINE__NMS_THRESHOLD", "0.45")
    monkeypatch.setenv("MILVUS_HOST", "milvus-a")
    monkeypatch.setenv("FACE_AI_WATCHLIST__MILVUS_HOST", "milvus-b")
    settings = load_settings(config)
    assert settings.engine.batch_size == 8  # from the file
    assert settings.engine.nms_threshold == 0.45  # the variable wins over the file
    assert settings.watchlist.milvus_host == "milvus-b"
