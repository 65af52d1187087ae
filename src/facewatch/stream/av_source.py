"""RTSP, HTTP(S) and file sources, demuxed and decoded by PyAV (FFmpeg) on the calling thread.

Only the first video stream is decoded; the demuxer is told to discard the others (audio,
data), and whatever of them still comes is skipped. PyAV's blocking calls cannot be cancelled
from another thread: an FFmpeg call returns when data comes, when the socket times out
(``timeout`` option, in microseconds) or when PyAV's open/read timeout fires, so
:meth:`AvSource.interrupt` takes effect between packets and a stalled network read returns
within ``read_timeout_s``. A live source that goes on sending but no video for that long
(its video stopped, or it sends what no demuxer makes sense of) fails the same way.

Files are read only with the demuxers of :data:`VIDEO_CONTAINERS` and only from the local
file system: a playlist, an image or a text file named like a video is refused at open.

A frame the decoder had to patch up (error concealment after damaged or missing data) is
reported as a :class:`~facewatch.errors.DecodeError`, like a packet it could not decode: the
stream counts it and skips it.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator
from typing import cast

import av
import av.error
import numpy as np
from av.codec.context import Flags
from av.container import InputContainer
from av.packet import Packet
from av.stream import Discard, Stream
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from facewatch.errors import DecodeError, StreamError, StreamOpenError
from facewatch.stream.config import StreamConfig
from facewatch.stream.source import RawFrame
from facewatch.stream.urls import file_path, redact_url

logger = logging.getLogger(__name__)

#: FFmpeg demuxers a file source may be read with: video containers and raw video streams.
#: Image, playlist (hls, concat) and text demuxers are never tried.
VIDEO_CONTAINERS = (
    "mov,mp4,m4a,3gp,3g2,mj2",
    "matroska,webm",
    "avi",
    "gif",
    "mpegts",
    "mpeg",
    "flv",
    "asf",
    "ogg",
    "h264",
    "hevc",
    "m4v",
    "ivf",
    "nut",
    "mxf",
)


def av_options(config: StreamConfig) -> dict[str, str]:
    """FFmpeg format options for ``config``'s source."""
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
    # A file is read as one of the video containers and may not reach beyond the local file
    # system (a playlist naming URLs or other files).
    return {"format_whitelist": ",".join(VIDEO_CONTAINERS), "protocol_whitelist": "file"}


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
        self._packets: Iterator[Packet[Stream]] | None = None
        self._video: VideoStream | None = None
        self._decoded: deque[VideoFrame] = deque()
        self._interrupted = False
        self._flushed = False
        self._video_seen_at = 0.0  # monotonic time of the last video packet

    def open(self) -> None:
        config = self._config
        started = time.monotonic()
        try:
            container = av.open(
                self._target,
                mode="r",
                container_options=av_options(config),
                timeout=(config.open_timeout_s, config.read_timeout_s),
            )
        except av.error.ExitError:
            # PyAV's open timeout fired: nothing came, or nothing in which FFmpeg found video.
            raise StreamOpenError(
                self.url,
                f"timed out after {config.open_timeout_s:g} s: no answer, or no video in it",
            ) from None
        except (av.error.FFmpegError, OSError) as exc:
            # `from None`: the chained FFmpeg message repeats the URL, credentials included.
            raise StreamOpenError(self.url, self._open_failure(exc, started)) from None
        if not container.streams.video:
            container.close()
            raise StreamOpenError(self.url, "no video stream")
        video = container.streams.video[0]
        for other in container.streams:
            if other.index != video.index:
                other.discard = Discard.all
        # FFmpeg picks frame and/or slice threads for the codec; these are C threads.
        video.thread_type = "AUTO"
        if not config.is_file:
            video.codec_context.flags |= Flags.low_delay
        self._container = container
        self._video = video
        self._packets = container.demux()
        self._video_seen_at = time.monotonic()
        logger.debug(
            "opened %s: %s %dx%d", self.url, video.codec_context.name, video.width, video.height
        )

    def _open_failure(self, exc: BaseException, started: float) -> str:
        """Why opening failed, in words a person can act on."""
        config = self._config
        reason = _reason(exc)
        if config.is_file:
            if isinstance(exc, av.error.ArgumentError):
                # What FFmpeg says when the format it found is not on the whitelist.
                accepted = ", ".join(name.replace(",", "/") for name in VIDEO_CONTAINERS)
                return f"not a video file: its format is none of the accepted ({accepted})"
            if isinstance(exc, av.error.InvalidDataError):
                return f"not a video file FFmpeg can read ({reason})"
            return reason
        waited = time.monotonic() - started
        if waited >= min(config.open_timeout_s, config.read_timeout_s) and (
            "timed out" not in reason.lower()
        ):
            # An RTSP server that never answers ends in "Invalid data" once the socket times
            # out; the time it took tells what happened.
            return f"timed out after {waited:.1f} s ({reason})"
        return reason

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
        if frame.is_corrupt:
            raise DecodeError(self.url, "damaged frame (the decoder concealed missing data)")
        try:
            image = frame.to_ndarray(format="bgr24")
        except (av.error.FFmpegError, ValueError) as exc:
            raise DecodeError(self.url, _reason(exc)) from None
        return RawFrame(image=image.astype(np.uint8, copy=False), pts_s=frame.time)

    def _next_packet(self) -> Packet[VideoStream] | None:
        """The next packet of the video stream; None once the end of the input is flushed, or
        for a packet of another stream (the caller checks for an interrupt and asks again)."""
        assert self._packets is not None
        assert self._container is not None and self._video is not None
        config = self._config
        try:
            packet = next(self._packets)
        except StopIteration:
            self._flushed = True
            return None
        except av.error.InvalidDataError as exc:
            # A corrupt packet ends PyAV's demux generator; a fresh one reads on from here.
            self._packets = self._container.demux()
            raise DecodeError(self.url, _reason(exc)) from None
        except av.error.ExitError:
            # PyAV's read timeout: no packet of the video for that long, data or not.
            raise StreamError(f"{self.url}: no video for {config.read_timeout_s:g} s") from None
        except (av.error.FFmpegError, OSError) as exc:
            raise StreamError(f"{self.url}: {_reason(exc)}") from None
        now = time.monotonic()
        # By its stream: the flush packets PyAV makes at the end all carry stream_index 0.
        if packet.stream.index == self._video.index:
            self._video_seen_at = now
            return cast("Packet[VideoStream]", packet)
        if not config.is_file and now - self._video_seen_at > config.read_timeout_s:
            raise StreamError(
                f"{self.url}: no video for {config.read_timeout_s:g} s (other data goes on)"
            )
        return None

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
