"""The frame source protocol: what a stream's decode thread reads from.

A source is opened, read and closed on one thread (the stream's own); only
:meth:`FrameSource.interrupt` is called from elsewhere. Kinds:
:mod:`~facewatch.stream.av_source` (RTSP, HTTP, files via PyAV) and
:mod:`~facewatch.stream.push` (frames pushed by a WebRTC peer, see
:mod:`~facewatch.stream.webrtc`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True, slots=True)
class RawFrame:
    """A decoded image as a source gives it, before the stream numbers and stamps it.

    Attributes:
        image: (H, W, 3) uint8 BGR pixels.
        pts_s: the source's presentation time in seconds, None when it has none.
        skipped: frames the source itself decoded and dropped just before this one (a push
            source whose reader fell behind); they count as decoded and dropped "queue_full".
    """

    image: NDArray[np.uint8]
    pts_s: float | None
    skipped: int = 0


class FrameSource(Protocol):
    """One connection to a video source; a new one is made for every (re)connect."""

    def open(self) -> None:
        """Connect and find the video; returns within the source's open timeout.

        Raises:
            StreamOpenError: the source cannot be opened.
        """

    def read(self) -> RawFrame | None:
        """The next frame; None at the end of the input (or once interrupted).

        Returns within the source's read timeout.

        Raises:
            DecodeError: one packet or frame could not be decoded; the next read goes on.
            StreamError: the source failed (stalled, lost, corrupt); reopen it to go on.
        """

    def interrupt(self) -> None:
        """Ask a blocked :meth:`open` or :meth:`read` to return soon (any thread)."""

    def close(self) -> None:
        """Release the connection (idempotent)."""
