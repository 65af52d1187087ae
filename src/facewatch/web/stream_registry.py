"""Configured streams that outlive the process: ``<data dir>/streams.json``, and the rule for
which local files may be read as video.

The file lists every stream added through the API (WebRTC streams excepted: their peer is
gone after a restart) with its full settings, credentials included, so it is written atomically
and readable by its owner only (0600). :func:`restore_streams` adds them back at start-up; a
stream that cannot be restored (its file has gone, a rule tightened) is logged and kept in the
file, so that it comes back once it can, until it is deleted through the API.

File sources, checked by :func:`vet_file_source` whenever a stream is added, changed or
restored: the path must be absolute, lead (after symlinks) to a regular file outside the data
directory and outside ``/proc``, ``/sys`` and ``/dev``, and FFmpeg must open it as one of the
video containers in :data:`VIDEO_CONTAINERS` (only those demuxers are even tried) with a video
track. Anything else, ``/etc/shadow`` or a playlist that points elsewhere included, is refused
with the reason.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import av.error
from pydantic import ValidationError

from facewatch.errors import FacewatchError, StreamOpenError
from facewatch.files import atomic_write, is_no_space
from facewatch.stream.av_source import VIDEO_CONTAINERS
from facewatch.stream.config import StreamConfig
from facewatch.stream.manager import Stream
from facewatch.stream.urls import file_path, redact_url
from facewatch.web.errors import ApiError

if TYPE_CHECKING:
    from facewatch.web.services import Services

log = logging.getLogger(__name__)

REGISTRY_FILE = "streams.json"
FORMAT = 1
#: Never read as video, whatever a path resolves to.
SYSTEM_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))
EXTRAS_KEY = "stream_registry"


def vet_file_source(config: StreamConfig, data_dir: Path) -> None:
    """Refuse a file source that is not a video file anyone may point the server at.

    Blocking (FFmpeg opens the file): call it from a worker thread. No-op for other sources.

    Raises:
        StreamOpenError: naming the reason.
    """
    if config.kind != "file":
        return
    shown = redact_url(config.url)
    path = file_path(config.url)
    if not path.is_absolute():
        raise StreamOpenError(shown, "a file source must be an absolute path")
    try:
        resolved = path.resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError):
        raise StreamOpenError(shown, f"no such file: {path}") from None
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        raise StreamOpenError(shown, f"cannot resolve {path}: {exc}") from None
    private = data_dir.expanduser().resolve()
    for root in (private, *SYSTEM_ROOTS):
        if resolved == root or resolved.is_relative_to(root):
            where = "the data directory" if root == private else str(root)
            raise StreamOpenError(shown, f"files under {where} cannot be streams")
    if not resolved.is_file():
        raise StreamOpenError(shown, f"not a regular file: {path}")
    try:
        with av.open(
            str(resolved),
            options={"format_whitelist": ",".join(VIDEO_CONTAINERS), "protocol_whitelist": "file"},
        ) as container:
            if not container.streams.video:
                raise StreamOpenError(shown, "the file has no video track")
    except StreamOpenError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, av.error.FFmpegError) else str(exc)
        raise StreamOpenError(
            shown,
            f"not a video file FFmpeg reads as one of the accepted containers ({reason})",
        ) from None


def persisted(stream: Stream) -> bool:
    """Whether a stream belongs in streams.json (WebRTC streams need a live peer: they do not)."""
    return stream.config.kind != "webrtc"


class StreamRegistry:
    """The streams.json of one server.

    Args:
        path: the file (``<data dir>/streams.json``).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        #: Entries read at start-up that could not be restored, by id: written back unchanged.
        self.unrestored: dict[str, dict[str, Any]] = {}
        self._lock = asyncio.Lock()

    def load(self) -> list[tuple[str, dict[str, Any]]]:
        """(id, settings) of each saved stream; a damaged file is moved aside and logged."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        try:
            document = json.loads(raw)
            entries = document["streams"]
            if not isinstance(entries, list):
                raise TypeError("'streams' is not a list")
            return [(str(entry["id"]), dict(entry["config"])) for entry in entries]
        except (ValueError, KeyError, TypeError) as exc:
            aside = self.path.with_name(f"{self.path.name}.damaged-{int(time.time())}")
            self.path.replace(aside)
            log.error("%s is damaged (%s): moved to %s; no stream restored", self.path, exc, aside)
            return []

    async def save(self, streams: list[Stream]) -> None:
        """Write the persisted streams of ``streams`` (and the unrestored ones), atomically."""
        async with self._lock:
            entries = [
                {"id": stream.id, "config": stream.config.model_dump(mode="json")}
                for stream in streams
                if persisted(stream)
            ]
            present = {entry["id"] for entry in entries}
            entries += [
                {"id": stream_id, "config": config}
                for stream_id, config in self.unrestored.items()
                if stream_id not in present
            ]
            document = {"format": FORMAT, "streams": entries}
            data = (json.dumps(document, indent=2) + "\n").encode()
            await asyncio.to_thread(atomic_write, self.path, data)

    def forget(self, stream_id: str) -> bool:
        """Drop an unrestored entry; True if there was one."""
        return self.unrestored.pop(stream_id, None) is not None


def registry_of(services: Services) -> StreamRegistry:
    """The server's registry (made on first use, kept in ``services.extras``)."""
    registry = services.extras.get(EXTRAS_KEY)
    if registry is None:
        path = services.settings.data_dir.expanduser() / REGISTRY_FILE
        registry = services.extras[EXTRAS_KEY] = StreamRegistry(path)
    assert isinstance(registry, StreamRegistry)
    return registry


async def save_streams(services: Services) -> None:
    """Persist the pipeline's streams now (after every change through the API).

    Raises:
        ApiError: 507 (data directory full) or 503 (another write error): the change is in
            effect but would be lost at a restart; the message says so.
    """
    try:
        await registry_of(services).save(services.pipeline.streams.list())
    except OSError as exc:
        reason = exc.strerror or str(exc)
        log.error("cannot save %s: %s", REGISTRY_FILE, reason)
        raise ApiError(
            507 if is_no_space(exc) else 503,
            "streams_not_saved",
            f"the change is in effect, but {REGISTRY_FILE} could not be written ({reason}): "
            "it would be lost at a restart. Free space in the data directory and repeat it.",
            reason=reason,
        ) from None


async def restore_streams(services: Services) -> list[str]:
    """Add back the streams of streams.json (call once at start-up); returns the ids restored.

    A stream that cannot be added is logged with the reason and kept in the file.
    """
    registry = registry_of(services)
    data_dir = services.settings.data_dir
    restored = []
    for stream_id, settings in await asyncio.to_thread(registry.load):
        try:
            config = StreamConfig.model_validate(settings)
            await asyncio.to_thread(vet_file_source, config, data_dir)
            await services.pipeline.add_stream(config, stream_id)
        except (ValidationError, FacewatchError, ValueError) as exc:
            shown = redact_url(str(settings.get("url", "?")))
            log.warning("stream %s (%s) not restored: %s", stream_id, shown, _reason(exc))
            registry.unrestored[stream_id] = settings
            continue
        restored.append(stream_id)
    if restored:
        log.info("restored %d stream(s) from %s", len(restored), registry.path)
    return restored


def _reason(exc: Exception) -> str:
    """Why, without the values (a pydantic message would repeat the URL and its password)."""
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
    return str(exc)
