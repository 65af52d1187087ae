"""Settings: one pydantic-settings root, read from the environment and an optional YAML file.

Precedence, highest first: arguments to :func:`load_settings`, environment variables, the YAML
file (``--config`` or ``FACE_AI_CONFIG``), defaults.

Environment names: every setting has a nested name ``FACE_AI_<SECTION>__<FIELD>`` (for example
``FACE_AI_ENGINE__NMS_THRESHOLD``); the names that deployments of this kind of system already use
(``FACE_AI_MODEL_NAME``, ``FACE_AI_DETECTION_SIZE``, ...) are honoured as flat aliases, listed in
:data:`ENV_ALIASES`. An unknown ``FACE_AI_*`` variable, an unknown YAML key or an invalid value
stops start-up with a :class:`~facewatch.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import ipaddress
import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.config import JsonDict
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from facewatch.errors import ConfigError

ENV_PREFIX = "FACE_AI_"
CONFIG_FILE_ENV = "FACE_AI_CONFIG"

#: Flat environment names kept for compatibility, mapped to their place in :class:`Settings`.
ENV_ALIASES: dict[str, tuple[str, ...]] = {
    "FACE_AI_MODEL_NAME": ("engine", "model_name"),
    "FACE_AI_DETECTOR": ("engine", "detector"),
    "FACE_AI_RECOGNIZER": ("engine", "recognizer"),
    "FACE_AI_PROVIDERS": ("engine", "providers"),
    "FACE_AI_ALLOW_CPU_FALLBACK": ("engine", "allow_cpu_fallback"),
    "FACE_AI_DETECTION_SIZE": ("engine", "detection_size"),
    "FACE_AI_MIN_FACE_SIZE": ("engine", "min_face_size"),
    "FACE_AI_CONFIDENCE_THRESHOLD": ("engine", "confidence_threshold"),
    "FACE_AI_NMS_THRESHOLD": ("engine", "nms_threshold"),
    "FACE_AI_MATCH_THRESHOLD": ("engine", "match_threshold"),
    "FACE_AI_MAX_WORKERS": ("engine", "max_workers"),
    "FACE_AI_BATCH_SIZE": ("engine", "batch_size"),
    "FACE_AI_EMBED_BATCH_SIZE": ("engine", "embed_batch_size"),
    "FACE_AI_THREAD_POOL_SIZE": ("engine", "thread_pool_size"),
    "FACE_AI_MODELS_DIR": ("engine", "models_dir"),
    "FACE_AI_CACHE_DIR": ("engine", "cache_dir"),
    "FACE_AI_ALLOW_DOWNLOAD": ("engine", "allow_download"),
    "FACE_AI_MODEL_DOWNLOAD_URL": ("engine", "download_url"),
    "FACE_AI_MODEL_SHA256": ("engine", "download_sha256"),
    "FACE_AI_MAX_IMAGE_PIXELS": ("engine", "max_image_pixels"),
    "FACE_AI_LOG_LEVEL": ("log_level",),
    "FACE_AI_DEBUG": ("debug",),
    "FACE_AI_DATA_DIR": ("data_dir",),
    "FACE_AI_DATABASE_URL": ("watchlist", "database_url"),
    "FACE_AI_INDEX_BACKEND": ("watchlist", "backend"),
    "FACE_AI_ASGI_HOST": ("server", "host"),
    "FACE_AI_ASGI_PORT": ("server", "port"),
}

#: Names outside our prefix that deployments of Milvus-backed face search already set.
FOREIGN_ENV_ALIASES: dict[str, tuple[str, ...]] = {
    "MILVUS_HOST": ("watchlist", "milvus_host"),
    "MILVUS_PORT": ("watchlist", "milvus_port"),
    "MILVUS_COLLECTION_NAME": ("watchlist", "milvus_collection_name"),
    "MILVUS_DIMENSION": ("watchlist", "milvus_dimension"),
}

_config_file: ContextVar[Path | None] = ContextVar("facewatch_config_file", default=None)

Provider = Literal["auto", "cpu", "cuda", "tensorrt"]


def _xdg(var: str, fallback: str) -> Path:
    return Path(os.environ.get(var) or Path.home() / fallback)


#: Field metadata key: how the settings reference shows a default that depends on the machine
#: (the home folder, XDG variables), so the page reads the same wherever it is generated.
SHOWN_DEFAULT = "shown_default"


def _shown_default(text: str) -> JsonDict:
    return {SHOWN_DEFAULT: text}


class Section(BaseModel):
    """Base of every settings section: unknown keys are errors, values are re-validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=True)


class EngineSettings(Section):
    """The face engine: model pack, execution providers, detection and batching."""

    model_name: str = Field(
        "yunet_sface",
        description="Model pack: a built-in name (yunet_sface, retinaface_sface), an "
        "InsightFace pack name (buffalo_l, buffalo_s, antelopev2, ...) or a folder path.",
    )
    detector: str | None = Field(
        None, description="Detector taken from another pack (yunet, retinaface, buffalo_l, ...)."
    )
    recognizer: str | None = Field(
        None, description="Recognizer taken from another pack (sface, buffalo_l, ...)."
    )
    providers: list[Provider] = Field(
        default_factory=lambda: list[Provider](["auto"]),
        description="ONNX Runtime execution providers in order of preference: auto, cuda, "
        "tensorrt, cpu (ORT names like CUDAExecutionProvider are accepted). 'auto' uses the "
        "GPU when ONNX Runtime offers one.",
    )
    allow_cpu_fallback: bool = Field(
        False, description="Start on CPU when a GPU provider was asked for but is unusable."
    )
    detection_size: tuple[int, int] = Field(
        (640, 640), description="Detector input width,height in pixels (multiples of 32)."
    )
    min_face_size: int = Field(20, ge=1, description="Smallest face kept, in pixels (box side).")
    confidence_threshold: float = Field(
        0.5, gt=0.0, lt=1.0, description="Detection score below which faces are dropped."
    )
    nms_threshold: float = Field(
        0.4, gt=0.0, le=1.0, description="IoU for non-maximum suppression."
    )
    match_threshold: float | None = Field(
        None,
        ge=-1.0,
        le=1.0,
        description="Cosine similarity for 'same person'; default: the pack's.",
    )
    max_workers: int = Field(2, ge=1, le=64, description="Inference calls run at the same time.")
    batch_size: int = Field(16, ge=1, le=256, description="Frames per detection batch at most.")
    embed_batch_size: int = Field(
        64, ge=1, le=1024, description="Faces per embedding call at most."
    )
    thread_pool_size: int = Field(
        0, ge=0, le=256, description="ONNX Runtime intra-op threads per session (0: its default)."
    )
    cpu_memory_arena: bool = Field(
        True,
        description="ONNX Runtime's CPU memory arena: faster, but it keeps the memory of the "
        "largest batch it has seen (about 1.2 GB more resident at the default batch sizes on "
        "the offline pack). Off: less memory, about 5-20 % more CPU time per batch.",
    )
    models_dir: Path = Field(
        default_factory=lambda: Path.home() / ".insightface" / "models",
        description="Where InsightFace-format packs live (<models_dir>/<name>/*.onnx).",
        json_schema_extra=_shown_default("~/.insightface/models"),
    )
    cache_dir: Path = Field(
        default_factory=lambda: _xdg("XDG_CACHE_HOME", ".cache") / "facewatch",
        description="Where converted models are cached (in its converted/ folder).",
        json_schema_extra=_shown_default("$XDG_CACHE_HOME/facewatch, else ~/.cache/facewatch"),
    )
    allow_download: bool = Field(True, description="Download a missing InsightFace pack.")
    download_url: str = Field(
        "https://github.com/deepinsight/insightface/releases/download/v0.7",
        description="Base URL of pack archives (<url>/<name>.zip).",
    )
    download_sha256: dict[str, str] = Field(
        default_factory=dict,
        description="Expected SHA-256 of pack archives: one hex digest for any pack, or "
        "name=digest pairs separated by commas; downloads failing it are refused.",
    )
    max_image_pixels: int = Field(
        50_000_000, ge=1, description="Images with more pixels are refused before decoding."
    )
    warmup: bool = Field(True, description="Run one inference per model at load.")

    @field_validator("providers", mode="before")
    @classmethod
    def _split_providers(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part for part in (p.strip() for p in value.split(",")) if part]
        if isinstance(value, list):
            return [_PROVIDER_NAMES.get(str(v).lower(), str(v).lower()) for v in value]
        return value

    @field_validator("detection_size", mode="before")
    @classmethod
    def _split_size(cls, value: Any) -> Any:
        if isinstance(value, str):
            parts = value.replace("x", ",").split(",")
            if len(parts) != 2:
                raise ValueError("expected WIDTH,HEIGHT such as 640,640")
            return tuple(int(p.strip()) for p in parts)
        return value

    @field_validator("detection_size")
    @classmethod
    def _multiple_of_32(cls, value: tuple[int, int]) -> tuple[int, int]:
        if any(v < 32 or v > 4096 or v % 32 for v in value):
            raise ValueError("both sides must be multiples of 32 between 32 and 4096")
        return value

    @field_validator("download_sha256", mode="before")
    @classmethod
    def _parse_digests(cls, value: Any) -> Any:
        if value is None:
            return {}
        if isinstance(value, str):
            digests: dict[str, str] = {}
            for part in filter(None, (p.strip() for p in value.split(","))):
                name, _, digest = part.rpartition("=")
                digests[name] = digest
            return digests
        return value

    @field_validator("download_sha256")
    @classmethod
    def _hex_digests(cls, value: dict[str, str]) -> dict[str, str]:
        for name, digest in value.items():
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest.lower()):
                raise ValueError(f"{name or 'digest'}: must be 64 hexadecimal characters")
        return {name.strip(): digest.lower() for name, digest in value.items()}


_PROVIDER_NAMES = {
    "cudaexecutionprovider": "cuda",
    "tensorrtexecutionprovider": "tensorrt",
    "cpuexecutionprovider": "cpu",
    "gpu": "cuda",
}


class WatchlistSettings(Section):
    """The watchlist: its database, vector index and enrollment quality gates."""

    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the store (postgresql+psycopg://..., "
        "mysql+pymysql://...); default: SQLite file facewatch.db in the data directory.",
    )
    backend: Literal["faiss", "milvus"] = Field(
        "faiss", description="Vector index: faiss (in process) or milvus (a Milvus server)."
    )
    approximate_above: int = Field(
        100_000,
        ge=0,
        description="Templates above which the FAISS index becomes approximate "
        "(approximate_index).",
    )
    approximate_index: Literal["pq", "ivf"] = Field(
        "pq",
        description="Approximate FAISS index above approximate_above: pq (4-bit product-"
        "quantized scan of every row, re-ranked exactly) or ivf (inverted lists, nprobe cells).",
    )
    nprobe: int = Field(32, ge=1, le=65536, description="IVF cells searched per query.")
    use_gpu: bool = Field(True, description="Put the FAISS index on the GPU when FAISS sees one.")
    top_k: int = Field(5, ge=1, le=100, description="Candidate persons returned per face.")
    snapshot_interval_s: float = Field(
        30.0,
        ge=0.0,
        description="Seconds after a change before the index snapshot is saved (0: at once).",
    )
    milvus_uri: str | None = Field(
        None,
        description="Milvus URI (http://host:port, or a milvus-lite file ending in .db); "
        "default: http://<milvus_host>:<milvus_port>.",
    )
    milvus_host: str = Field("localhost", description="Milvus host (MILVUS_HOST).")
    milvus_port: int = Field(19530, ge=1, le=65535, description="Milvus port (MILVUS_PORT).")
    milvus_token: str = Field("", description="Milvus token (user:password) if it asks for one.")
    milvus_collection_name: str = Field(
        "watchlist",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,200}$",
        description="Milvus collection (MILVUS_COLLECTION_NAME); the model pack is appended "
        "so that packs never share one.",
    )
    milvus_dimension: int | None = Field(
        None,
        ge=1,
        description="Expected embedding dimension (MILVUS_DIMENSION); start-up fails when the "
        "model pack's differs.",
    )
    enroll_min_face_size: int = Field(
        40, ge=1, description="Smallest face side, in pixels, accepted for enrollment."
    )
    enroll_min_score: float = Field(
        0.5, gt=0.0, lt=1.0, description="Lowest detection score accepted for enrollment."
    )
    enroll_min_sharpness: float = Field(
        50.0,
        ge=0.0,
        description="Sharpness (Laplacian variance of the aligned face) below which an enrolled "
        "face gets the warning 'blurry' (is refused with enroll_strict_quality).",
    )
    enroll_min_frontal: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="Frontal-ness (0 profile .. 1 frontal) below which an enrolled face gets "
        "the warning 'not_frontal' (is refused with enroll_strict_quality).",
    )
    enroll_strict_quality: bool = Field(
        False,
        description="Refuse blurry and turned enrollment photos (too_blurry, not_frontal) "
        "instead of enrolling them with a warning.",
    )
    duplicate_similarity: float = Field(
        0.95,
        gt=0.0,
        le=1.0,
        description="Cosine similarity to one of the person's templates above which a photo "
        "is a duplicate.",
    )
    target_fpir: float = Field(
        0.01,
        gt=0.0,
        lt=1.0,
        description="False-positive identification rate wanted: the share of faces of people "
        "who are not enrolled that may get a name. The match threshold follows from the model "
        "pack's calibration and the number of enrolled persons; a set engine.match_threshold "
        "wins over it.",
    )


class PipelineSettings(Section):
    """The realtime pipeline: batching, tracking, when to embed, alerts."""

    batch_wait_ms: float = Field(
        15.0,
        ge=0.0,
        le=10_000.0,
        description="A detection batch leaves this long after its first frame if not full "
        "(full: FACE_AI_BATCH_SIZE frames).",
    )
    embed_wait_ms: float = Field(
        10.0,
        ge=0.0,
        le=10_000.0,
        description="An embedding batch leaves this long after its first face if not full.",
    )
    max_in_flight_batches: int = Field(
        2, ge=1, le=64, description="Detection batches queued for the embedding stage at most."
    )
    embed_interval_s: float = Field(
        2.0, gt=0.0, description="A track is re-embedded at most this often unless it improves."
    )
    embed_improve_ratio: float = Field(
        1.25,
        ge=1.0,
        description="A track is re-embedded at once when a face's quality reaches its best "
        "embedded quality times this.",
    )
    max_embeddings_per_track: int = Field(20, ge=1, description="Embeddings per track at most.")
    evidence_size: int = Field(
        5, ge=1, le=100, description="Best embeddings of a track that decide who it is."
    )
    match_margin: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Similarity by which the best person must beat the second to be named.",
    )
    track_max_age_s: float = Field(
        1.0, gt=0.0, description="A track unseen for this long has ended."
    )
    track_max_scale_change: float = Field(
        1.4,
        ge=1.0,
        description="A face's box may grow or shrink by at most this factor in 0.2 s (more "
        "over longer gaps) and stay the same track; a bigger jump starts a new track.",
    )
    scene_cut_difference: float = Field(
        0.07,
        ge=0.0,
        le=1.0,
        description="Mean grey difference (0..1) of consecutive frames' thumbnails at which a "
        "frame is a scene cut (also at least 3x the stream's recent differences); every track "
        "of the stream ends there. 0: no cut detection.",
    )
    scene_cut_colour_distance: float = Field(
        0.25,
        ge=0.0,
        le=1.0,
        description="Bhattacharyya distance (0..1) of consecutive frames' hue-saturation "
        "histograms at which a frame is a scene cut too (also at least 3x the stream's recent "
        "distances): catches cuts between shots of the same brightness. 0: grey test only.",
    )
    split_similarity: float | None = Field(
        None,
        ge=-1.0,
        le=1.0,
        description="A track whose new embedding is less similar than this to the track's own "
        "evidence is split: the old track ends, the face starts a new one. Default: the "
        "pack's (0.8 x its match threshold).",
    )
    cooldown_s: float = Field(
        30.0,
        ge=0.0,
        description="After a match for a person on a stream, new tracks of that person on that "
        "stream raise no new match for this long (0: off).",
    )
    unknown_events: bool = Field(
        False, description="Raise 'unknown' alerts for tracked faces nobody matches."
    )
    unknown_after_s: float = Field(
        2.0, ge=0.0, description="How long a track stays unmatched before it is 'unknown'."
    )
    snapshots: bool = Field(True, description="Save a JPEG of the face and frame per alert.")
    snapshot_quality: int = Field(85, ge=10, le=100, description="JPEG quality of snapshots.")
    shutdown_grace_s: float = Field(
        5.0, ge=0.0, description="At shutdown, frames in flight get this long to finish."
    )
    watchlist_refresh_s: float = Field(
        5.0,
        ge=0.0,
        description="How often to look for watchlist changes made by other processes "
        "(facewatch enroll, import, forget while the server runs), in seconds; 0: never.",
    )


class ServerSettings(Section):
    """The ASGI server: where it listens and what it accepts."""

    host: str = Field("127.0.0.1", description="Address to listen on (FACE_AI_ASGI_HOST).")
    port: int = Field(8000, ge=0, le=65535, description="Port (FACE_AI_ASGI_PORT); 0 picks one.")
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins allowed to call the API from a browser (CORS); none by default.",
    )
    max_upload_bytes: int = Field(
        20 * 1024 * 1024, ge=1024, description="Largest request body (one upload or a batch)."
    )
    max_batch_images: int = Field(64, ge=1, le=1024, description="Images per batch request.")
    public_url: str | None = Field(
        None,
        description="The URL users reach the server at. Not used yet: alert links "
        "(snapshot_url) are paths relative to the server.",
    )
    live_fps: float = Field(
        15.0, gt=0, le=60, description="Frames per second sent to a live view at most."
    )
    shutdown_grace_s: float = Field(
        5.0, ge=0, description="Seconds open requests and WebSockets get to finish at shutdown."
    )

    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Reverse proxies (IP addresses or networks such as 10.0.0.0/8) whose "
        "X-Forwarded-For and X-Forwarded-Proto headers are believed: behind them, the client "
        "address (login throttling, logs) is the one they forward. None by default: the "
        "headers are ignored, so a client cannot pick its own address.",
    )

    @field_validator("cors_origins", "trusted_proxies", mode="before")
    @classmethod
    def _split_lists(cls, value: Any) -> Any:
        # From the environment: comma-separated, like the other list settings.
        if isinstance(value, str):
            return [part for part in (p.strip() for p in value.split(",")) if part]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_addresses(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address or network (e.g. 10.0.0.5, 10.0.0.0/8)"
                ) from None
        return value


class AuthSettings(Section):
    """Accounts: sessions, tokens and login throttling."""

    session_ttl_s: float = Field(
        12 * 3600, gt=0, description="Seconds a UI session lasts without activity."
    )
    token_ttl_s: float = Field(3600, gt=0, description="Seconds a bearer token from login lasts.")
    cookie_secure: bool = Field(
        False, description="Send the session cookie over HTTPS only (set behind TLS)."
    )
    login_attempts: int = Field(
        5, ge=1, description="Failed logins allowed per user name and per address per window."
    )
    login_window_s: float = Field(300, gt=0, description="Window of the login limit, seconds.")
    min_password_length: int = Field(10, ge=8, description="Shortest password accepted.")


class MqttSettings(Section):
    """Publishing alerts to an MQTT broker (off by default)."""

    enabled: bool = Field(False, description="Publish every alert to the broker.")
    host: str = Field("127.0.0.1", description="Broker host.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port.")
    username: str | None = Field(None, description="User name, if the broker asks for one.")
    password: str | None = Field(None, description="Password, if the broker asks for one.")
    tls: bool = Field(False, description="Connect over TLS.")
    topic_prefix: str = Field(
        "facewatch", description="Topics: <prefix>/alerts/<stream>/<person id|unknown>."
    )
    qos: Literal[0, 1, 2] = Field(1, description="MQTT quality of service of alert messages.")
    client_id: str | None = Field(
        None, description="Client id; default facewatch-<host>-<pid>-<6 random hex digits>."
    )
    queue_size: int = Field(
        10000, ge=1, description="Alerts held while the broker is unreachable; oldest dropped."
    )

    @field_validator("qos", mode="before")
    @classmethod
    def _qos_number(cls, value: Any) -> Any:
        # The environment gives text; a Literal of ints does not take "1".
        if isinstance(value, str) and value.strip() in ("0", "1", "2"):
            return int(value)
        return value


class EventSettings(Section):
    """The event history kept in the store."""

    keep_days: float = Field(
        30, gt=0, description="Events older than this are deleted (their snapshots too)."
    )
    resume_limit: int = Field(
        1000, ge=0, description="Events replayed at most to a WebSocket client resuming."
    )
    write_queue: int = Field(
        10000, ge=1, description="Events waiting to be written while the store is slow."
    )


class Settings(BaseSettings):
    """Root of all facewatch settings."""

    model_config = SettingsConfigDict(extra="forbid", frozen=True)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", description="Logging level."
    )
    debug: bool = Field(False, description="Verbose diagnostics (tracebacks on errors).")
    data_dir: Path = Field(
        default_factory=lambda: _xdg("XDG_DATA_HOME", ".local/share") / "facewatch",
        description="Where facewatch keeps its database, index snapshots and snapshots.",
        json_schema_extra=_shown_default("$XDG_DATA_HOME/facewatch, else ~/.local/share/facewatch"),
    )
    engine: EngineSettings = Field(default_factory=EngineSettings)
    watchlist: WatchlistSettings = Field(default_factory=WatchlistSettings)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    events: EventSettings = Field(default_factory=EventSettings)

    @property
    def database_url(self) -> str:
        """The store's URL: the configured one, or SQLite in the data directory."""
        if self.watchlist.database_url:
            return self.watchlist.database_url
        return f"sqlite:///{self.data_dir.expanduser().resolve() / 'facewatch.db'}"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _EnvSource(settings_cls), _YamlSource(settings_cls))


def _setting_paths() -> dict[tuple[str, ...], str]:
    """Every setting's path and its nested environment name."""
    paths: dict[tuple[str, ...], str] = {}
    for name, field in Settings.model_fields.items():
        section = _section_model(field)
        if section is None:
            paths[(name,)] = f"{ENV_PREFIX}{name.upper()}"
            continue
        for sub in section.model_fields:
            paths[(name, sub)] = f"{ENV_PREFIX}{name.upper()}__{sub.upper()}"
    return paths


def _known_env_names() -> dict[str, tuple[str, ...]]:
    return {**ENV_ALIASES, **{name: path for path, name in _setting_paths().items()}}


def _section_model(field: FieldInfo) -> type[BaseModel] | None:
    annotation = field.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _set_path(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value


class _EnvSource(PydanticBaseSettingsSource):
    """Reads FACE_AI_* variables, flat aliases and nested names alike, as raw strings.

    Values are handed to the field validators untouched (no JSON decoding), so
    ``FACE_AI_DETECTION_SIZE=640,640`` works the same under either name.
    """

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ builds the whole mapping at once

    def __call__(self) -> dict[str, Any]:
        known = _known_env_names()
        values: dict[str, Any] = {}
        for name, foreign in FOREIGN_ENV_ALIASES.items():
            if name in os.environ:
                _set_path(values, foreign, os.environ[name])
        for name, raw in os.environ.items():
            if not name.startswith(ENV_PREFIX) or name == CONFIG_FILE_ENV:
                continue
            path = known.get(name)
            if path is None:
                raise ConfigError(name, "unknown setting (see `facewatch config` for the list)")
            _set_path(values, path, raw)
        return values


class _YamlSource(PydanticBaseSettingsSource):
    """Reads the YAML file named by ``load_settings(config_file=...)`` or FACE_AI_CONFIG."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError

    def __call__(self) -> dict[str, Any]:
        path = _config_file.get() or (
            Path(os.environ[CONFIG_FILE_ENV]) if os.environ.get(CONFIG_FILE_ENV) else None
        )
        if path is None:
            return {}
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(CONFIG_FILE_ENV, f"cannot read {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(CONFIG_FILE_ENV, f"{path} is not valid YAML: {exc}") from exc
        if loaded is None:
            return {}
        if not isinstance(loaded, dict):
            raise ConfigError(CONFIG_FILE_ENV, f"{path} must hold a mapping at the top level")
        return loaded


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings, turning every validation problem into a :class:`ConfigError`.

    Args:
        config_file: YAML file to read; defaults to ``$FACE_AI_CONFIG`` when set.
        **overrides: values that win over every other source (sections as dicts).
    """
    token = _config_file.set(config_file)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise _config_error(exc) from None
    finally:
        _config_file.reset(token)


def _config_error(exc: ValidationError) -> ConfigError:
    env_names = {path: name for name, path in {**FOREIGN_ENV_ALIASES, **ENV_ALIASES}.items()}
    labelled = []
    for error in exc.errors():
        path = tuple(str(part) for part in error["loc"])
        key = ".".join(path)
        # The longest prefix names the setting (engine.providers.0 -> FACE_AI_PROVIDERS).
        alias = next(
            (env_names[path[:n]] for n in range(len(path), 0, -1) if path[:n] in env_names), None
        )
        labelled.append((f"{key} ({alias})" if alias else key, error["msg"]))
    first_key, first_message = labelled[0]
    others = "".join(f"; {key}: {message}" for key, message in labelled[1:])
    return ConfigError(first_key, first_message + others)


def describe_settings() -> list[dict[str, Any]]:
    """Every setting with its environment names, default and description (for docs and CLI)."""
    rows: list[dict[str, Any]] = []
    for path in sorted(_setting_paths()):
        info = _field_info(path)
        default: Any = info.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            continue
        rows.append(
            {
                "key": ".".join(path),
                "env": _env_names(path),
                "default": default
                if isinstance(default, int | float | str | bool | None)
                else str(default),
                "description": info.description or "",
            }
        )
    return rows


def _field_info(path: tuple[str, ...]) -> FieldInfo:
    model: type[BaseModel] = Settings
    for part in path[:-1]:
        section = _section_model(model.model_fields[part])
        assert section is not None
        model = section
    return model.model_fields[path[-1]]


def _env_names(path: tuple[str, ...]) -> list[str]:
    """The environment names of a setting: its flat alias first (if any), then the nested one."""
    aliases = {path: name for name, path in {**FOREIGN_ENV_ALIASES, **ENV_ALIASES}.items()}
    nested = _setting_paths()[path]
    return list(dict.fromkeys(n for n in (aliases.get(path), nested) if n))


REFERENCE_INTRO = """\
# Configuration reference

<!-- Generated from the settings model (src/facewatch/config.py); do not edit by hand.
     Regenerate with: facewatch config --markdown > docs/configuration.md -->

Every setting of facewatch, with the environment variables that set it, its default and what it
does. `facewatch config` prints the same list as JSON lines, with the defaults of the machine it
runs on.

## Where settings come from

Highest first:

1. command-line flags: `--pack`, `--detector`, `--recognizer`, `--providers`, `--data-dir`, and
   `facewatch serve --host/--port`;
2. environment variables (`FACE_AI_*`, and the `MILVUS_*` names listed below);
3. the YAML file given with `--config FILE` or `FACE_AI_CONFIG` (see `configs/example.yaml`);
4. the defaults below.

Each setting is decided on its own: a file can set `engine.batch_size` while the environment
sets `FACE_AI_ENGINE__NMS_THRESHOLD`, and a variable wins over the same key in the file.

- **YAML**: the key path is the nesting, e.g. `engine.nms_threshold` is `nms_threshold:` under
  `engine:`; the top-level keys (`log_level`, `debug`, `data_dir`) stand alone.
- **Environment**: every setting has the nested name `FACE_AI_<SECTION>__<KEY>` (two
  underscores between section and key); many also have a flat name that existing deployments
  use (`FACE_AI_MODEL_NAME`, `FACE_AI_DATABASE_URL`, ...). Set one of the two, not both. A
  `FACE_AI_<SECTION>__<KEY>` variable wins over the `MILVUS_*` name of the same setting.
- **Values** from the environment are text: booleans are `true`/`false` (also `1`/`0`,
  `yes`/`no`, `on`/`off`); lists are comma-separated (`FACE_AI_PROVIDERS=cuda,cpu`,
  `FACE_AI_SERVER__CORS_ORIGINS=https://a.example,https://b.example`); sizes are `WIDTH,HEIGHT`
  (`640,640`); `FACE_AI_MODEL_SHA256` is one digest, or `name=digest` pairs separated by commas.
- An unknown `FACE_AI_*` variable, an unknown YAML key or a value out of range stops every
  command at start-up with a message naming the key.
"""


def settings_reference_markdown() -> str:
    """The configuration reference page (docs/configuration.md): every setting by section.

    Defaults that depend on the machine (home folder, XDG variables) are shown as the
    description their field carries under :data:`SHOWN_DEFAULT`, so the page is the same
    wherever and by whomever it is generated.
    """
    lines = [REFERENCE_INTRO]
    general = [name for name, f in Settings.model_fields.items() if _section_model(f) is None]
    lines += _reference_section(
        "General", "Logging and where facewatch keeps its data.", [(name,) for name in general]
    )
    for name, field_info in Settings.model_fields.items():
        section = _section_model(field_info)
        if section is None:
            continue
        summary = (section.__doc__ or "").strip().splitlines()[0]
        lines += _reference_section(
            f"`{name}`", summary, [(name, sub) for sub in section.model_fields]
        )
    return "\n".join(lines).rstrip() + "\n"


def _reference_section(title: str, summary: str, paths: list[tuple[str, ...]]) -> list[str]:
    rows = [
        f"## {title}",
        "",
        summary,
        "",
        "| Key | Environment | Default | Description |",
        "|---|---|---|---|",
    ]
    for path in paths:
        info = _field_info(path)
        env = ", ".join(f"`{name}`" for name in _env_names(path))
        default = _shown(info)
        rows.append(f"| `{'.'.join(path)}` | {env} | {default} | {_cell(info.description or '')} |")
    rows.append("")
    return rows


def _shown(info: FieldInfo) -> str:
    """A default as the reference shows it: the value as one would write it in a variable."""
    extra = info.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get(SHOWN_DEFAULT), str):
        return _cell(str(extra[SHOWN_DEFAULT]))
    value: Any = info.get_default(call_default_factory=True)
    if isinstance(value, Path):
        raise ValueError(f"{info.description!r}: a path default needs a shown default")
    if value is None or value == {} or value == []:
        return "*(none)*"
    if value == "":
        return "*(empty)*"
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, list | tuple):
        text = ",".join(str(item) for item in value)
    else:
        text = str(value)
    return f"`{text}`"


def _cell(text: str) -> str:
    """Plain text made safe inside a Markdown table cell."""
    for char in ("\\", "|", "<", "*"):
        text = text.replace(char, "\\" + char)
    return text
