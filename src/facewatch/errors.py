"""Exceptions raised by facewatch.

Every error facewatch raises on purpose derives from :class:`FacewatchError`, so callers can
catch one root. Errors carry the data that explains them as attributes, not only in text::

    FacewatchError
    ├── ConfigError               settings that cannot be used (names the key)
    ├── ImageError                bytes that are not a usable image
    │   └── ImageTooLargeError    pixel count above the configured limit
    ├── NoFaceError               an image that must hold a face holds none
    ├── ModelError
    │   ├── ModelLoadError        missing, corrupt or unsuitable model file / pack
    │   ├── ModelDownloadError    pack could not be fetched or failed its checksum
    │   └── ProviderFallbackError GPU asked for, session fell back to CPU
    ├── StreamError               a video source that failed (closed, stalled, lost)
    │   ├── StreamOpenError       a source that cannot be opened (names the url)
    │   ├── DecodeError           data from a source that cannot be decoded
    │   └── OfferError            a WebRTC offer that cannot be answered
    └── WatchlistError            the watchlist store or index
        ├── StoreError            the database cannot be reached or migrated
        ├── PersonNotFoundError   no person with that id (or name)
        └── EnrollmentRejected    no photo of an enrollment was usable (reasons per photo)
"""

from __future__ import annotations

from collections.abc import Sequence


class FacewatchError(Exception):
    """Root of every error facewatch raises on purpose."""


class ConfigError(FacewatchError):
    """Settings that cannot be used; ``key`` names the offending setting."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


class ImageError(FacewatchError):
    """Input bytes or arrays that are not a usable image."""

    def __init__(self, message: str, *, source: str | None = None) -> None:
        super().__init__(f"{source}: {message}" if source else message)
        self.source = source
        self.message = message


class ImageTooLargeError(ImageError):
    """The image has more pixels than ``limit``; refused before it is decoded."""

    def __init__(
        self,
        pixels: int,
        limit: int,
        *,
        size: tuple[int, int] | None = None,
        source: str | None = None,
    ) -> None:
        shown = f"{size[0]}x{size[1]} = {pixels}" if size else f"{pixels}"
        super().__init__(f"image is {shown} pixels, above the limit of {limit}", source=source)
        self.pixels = pixels
        self.size = size
        self.limit = limit


class NoFaceError(FacewatchError):
    """An image that must hold a face (to verify, to enroll) holds none.

    ``index`` is the position of that image among the ones given.
    """

    def __init__(self, message: str, *, index: int) -> None:
        super().__init__(message)
        self.index = index


class ModelError(FacewatchError):
    """Anything wrong with models or inference sessions."""


class ModelLoadError(ModelError):
    """A model file or pack that is missing, corrupt or not what it claims to be."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


class ModelDownloadError(ModelError):
    """A model pack that could not be fetched, or whose checksum did not match."""

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(f"{url}: {message}")
        self.url = url


class ProviderFallbackError(ModelError):
    """The session does not run on the execution providers that were asked for."""

    def __init__(self, requested: Sequence[str], actual: Sequence[str], hint: str = "") -> None:
        text = (
            f"requested execution providers {list(requested)} but the session uses {list(actual)}"
        )
        super().__init__(f"{text}. {hint}".strip())
        self.requested = list(requested)
        self.actual = list(actual)


class StreamError(FacewatchError):
    """A video source that failed: it cannot be opened, stalled, ended early or was lost."""


class StreamOpenError(StreamError):
    """A source that cannot be opened (no such file, refused, not a video, ...).

    ``url`` is the source with any credentials replaced by ``***``; ``reason`` says why.
    """

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot open {url}: {reason}")
        self.url = url
        self.reason = reason


class DecodeError(StreamError):
    """Data from a source that cannot be demuxed or decoded (one packet or frame).

    ``url`` is the source with any credentials replaced by ``***``; ``reason`` says why.
    """

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot decode {url}: {reason}")
        self.url = url
        self.reason = reason


class OfferError(StreamError):
    """A WebRTC offer that cannot be answered: not an offer, unreadable SDP, or no video in it."""


class WatchlistError(FacewatchError):
    """Problems with the watchlist store or index."""


class StoreError(WatchlistError):
    """The watchlist database cannot be reached, migrated or written."""


class PersonNotFoundError(WatchlistError):
    """No person matches ``person`` (an id or a name)."""

    def __init__(self, person: int | str) -> None:
        super().__init__(f"no person {person!r} in the watchlist")
        self.person = person


class EnrollmentRejected(WatchlistError):
    """No photo of an enrollment could be used; ``rejected`` holds (source, reason, detail)."""

    def __init__(self, rejected: Sequence[tuple[str, str, str]]) -> None:
        reasons = "; ".join(f"{source}: {reason}" for source, reason, _ in rejected)
        super().__init__(f"no usable photo ({reasons})")
        self.rejected = list(rejected)
