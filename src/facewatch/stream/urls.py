"""Stream URLs: what kind of source a URL names, and how to show it without its secrets.

No I/O here: whether a file exists is checked by the manager when a stream is added.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

SourceKind = Literal["rtsp", "http", "file", "webrtc"]

#: The URL that names a stream whose frames a WebRTC peer pushes.
WEBRTC_URL = "webrtc"

_SCHEMES: dict[str, SourceKind] = {
    "rtsp": "rtsp",
    "rtsps": "rtsp",
    "http": "http",
    "https": "http",
    "file": "file",
}
SUPPORTED = "rtsp://, rtsps://, http://, https://, file://, a file path or 'webrtc'"

# user:password@ (or user@) between the scheme and the host.
_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@")
# Query parameters that cameras use to carry credentials (?user=admin&password=...).
_SECRET_PARAM = re.compile(
    r"(?P<key>[?&](?:password|passwd|pass|pwd|token|secret|key|auth|user|username)=)[^&#]*",
    re.IGNORECASE,
)


def source_kind(url: str) -> SourceKind:
    """The kind of source ``url`` names.

    Raises:
        ValueError: for an empty URL or a scheme we do not read.
    """
    url = url.strip()
    if not url:
        raise ValueError("url must not be empty")
    if url == WEBRTC_URL:
        return "webrtc"
    scheme = urlsplit(url).scheme.lower()
    # One letter before ':' is a Windows drive (C:\clips\a.mp4), not a scheme.
    if len(scheme) <= 1:
        return "file"
    if scheme not in _SCHEMES:
        raise ValueError(f"unsupported scheme {scheme!r}: use {SUPPORTED}")
    return _SCHEMES[scheme]


def file_path(url: str) -> Path:
    """The local path of a file source (a plain path or a ``file://`` URL)."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme.lower() != "file":
        return Path(url).expanduser()
    if parts.netloc in ("", "localhost"):
        return Path(unquote(parts.path))
    # file://clips/a.mp4: people mean the relative path clips/a.mp4.
    return Path(unquote(parts.netloc + parts.path))


def redact_url(url: str) -> str:
    """``url`` with credentials replaced by ``***``: safe for logs, statuses and errors.

    ``rtsp://admin:pw@cam/1`` becomes ``rtsp://***@cam/1``, and the values of query
    parameters like ``password=`` become ``***`` too.
    """
    url = _USERINFO.sub(r"\g<scheme>***@", url, count=1)
    return _SECRET_PARAM.sub(r"\g<key>***", url)
