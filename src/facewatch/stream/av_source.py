"""RTSP, HTTP(S) and file sources, demuxed and decoded by PyAV (FFmpeg) on the calling thread.

Only the first video stream is decoded; audio and data packets are never read into Python.
PyAV's blocking calls cannot be cancelled from another thread: an FFmpeg call returns when
data comes, when the socket times out (``timeout`` option, in microseconds) or when PyAV's
open/read timeout fires, so :meth:`AvSource.interrupt` takes effect between packets and a
stalled network read returns within ``read_timeout_s``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator

import av
import av.error
import numpy as np
from av.codec.context import Flags
from av.container import InputContainer
from av.packet import Packet
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from facewatch.errors import DecodeError, StreamError, StreamOpenError
from facewatch.stream.config import StreamConfig
from facewatch.stream.source import RawFrame
from facewatch.stream.urls import file_path, redact_url

logger = logging.getLogger(__name__)


def av_options(config: StreamConfig) -> dict[str, str]:
    """FFmpeg format options for ``config``'s source (empty for files)."""
    socket_timeout_us = str(round(config.read_timeout_s * 1_000_000))
    if config.kind == "rtsp":
        return {
            "rtsp_transport": config.rtsp_transport,
            "timeout": socket_timeout_us,
            # Drop the packets read while probing the stream instead of handing them over
            # first: they are seconds old on a camera, and decoding starts fresh without them.
            "fflags": "nobuffer",
        }
    if config.kind == "http":
        # No nobuffer here: an HTTP source is often a plain clip, which would lose its first
        # key frame (and so its first seconds) with the probed packets.
        return {"timeout": socket_timeout_us}
    return {}


def _reason(exc: BaseException) -> str:
    """The message of ``exc`` without the URL FFmpeg puts in it (it may hold a password)."""
    if isinstance(exc, av.error.FFmpegError):
        return exc.strerror or type(exc).__name__
    return str(exc) or type(exc).__name__


class AvSource:
    """One PyAV connection to ``config.url``; see :class:`~facewatch.stream.source.FrameSource`.

    Args:
        config: the stream's settings (url, transport, timeouts).
    """

    def __init__(self, config: StreamConfig) -> None:
        self._config = config
        self._target = str(file_path(config.url)) if config.kind == "file" else config.url
        self.url = redact_url(config.url)
        self._container: InputContainer | None = None
        self._packets: Iterator[Packet[VideoStream]] | None = None
        self._video: VideoStream | None = None
        self._decoded: deque[VideoFrame] = deque()
        self._interrupted = False
        self._flushed = False

    def open(self) -> None:
        config = self._config
        try:
            container = av.open(
                self._target,
                mode="r",
                container_options=av_options(config),
                timeout=(config.open_timeout_s, config.read_timeout_s),
            )
        except (av.error.FFmpegError, OSError) as exc:
            # `from None`: the chained FFmpeg message repeats the URL, credentials included.
            raise StreamOpenError(self.url, _reason(exc)) from None
        if not container.streams.video:
            container.close()
            raise StreamOpenError(self.url, "no video stream")
        video = container.streams.video[0]
        # FFmpeg picks frame and/or slice threads for the codec; these are C threads.
        video.thread_type = "AUTO"
        if not config.is_file:
            video.codec_context.flags |= Flags.low_delay
        self._container = container
        self._video = video
        self._packets = container.demux(video)
        logger.debug(
            "opened %s: %s %dx%d", self.url, video.codec_context.name, video.width, video.height
        )

    def read(self) -> RawFrame | None:
        while not self._decoded:
            if self._interrupted or self._packets is None or self._flushed:
                return None
            packet = self._next_packet()
            if packet is None:
                continue
            try:
                self._decoded.extend(packet.decode())
            except av.error.FFmpegError as exc:
                raise DecodeError(self.url, _reason(exc)) from None
        frame = self._decoded.popleft()
        try:
            image = frame.to_ndarray(format="bgr24")
        except (av.error.FFmpegError, ValueError) as exc:
            raise DecodeError(self.url, _reason(exc)) from None
        return RawFrame(image=image.astype(np.uint8, copy=False), pts_s=frame.time)

    def _next_packet(self) -> Packet[VideoStream] | None:
        """The next packet of the video stream; None once the end of the input is flushed."""
        assert self._packets is not None
        assert self._container is not None and self._video is not None
        try:
            packet = next(self._packets)
        except StopIteration:
            self._flushed = True
            return None
        except av.error.InvalidDataError as exc:
            # A corrupt packet ends PyAV's demux generator; a fresh one reads on from here.
            self._packets = self._container.demux(self._video)
            raise DecodeError(self.url, _reason(exc)) from None
        except av.error.ExitError:
            raise StreamError(
                f"{self.url}: no data for {self._config.read_timeout_s:g} s"
            ) from None
        except (av.error.FFmpegError, OSError) as exc:
            raise StreamError(f"{self.url}: {_reason(exc)}") from None
        return packet

    def interrupt(self) -> None:
        self._interrupted = True

    def close(self) -> None:
        packets, self._packets = self._packets, None
        close_packets = getattr(packets, "close", None)
        if close_packets is not None:
            close_packets()  # runs the generator's clean-up before its container goes
        self._decoded.clear()
        if self._container is not None:
            container, self._container = self._container, None
            container.close()
