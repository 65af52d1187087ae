"""An RTSP server for the tests: each mount serves a video file's own H.264, looped in real time.

Run by Debian's python3, which has PyGObject (the project's virtualenv does not); the tests drive
it through :mod:`rtsp_server`. By hand::

    /usr/bin/python3 tests/integration/rtsp_serve.py --port 8554 cam=video.mp4 [NAME=FILE ...]
    /usr/bin/python3 tests/integration/rtsp_serve.py --check    # exit 1, naming what is missing

At start-up each file's video is demuxed once into memory, neither decoded nor re-encoded::

    filesrc ! parsebin ! h264parse ! appsink  (video/x-h264, avc, one access unit per buffer)

A thread per mount then replays those buffers forever, as a camera would, from start-up to
exit: it waits on the clock for each buffer's decoding time and pushes it (new timestamps, same
memory) into the appsrc of the mount's RTSP media::

    appsrc is-live=true ! rtph264pay

Timestamps go on growing from one loop to the next (the next loop starts where the last frame
of this one ends), so a client sees one endless stream. A media pipeline takes the replay's
start as its base time, so the timestamps are its running times. All clients of a mount see the
same frames at the same time, as from one camera; each has a small media pipeline of its own
(see ``serve``). A client decodes from the next key frame, at the latest one loop after it
connects (most of the test clips have a single key frame).

Once it listens, it writes one line to stdout (``listening on 127.0.0.1:PORT``). It stops on
SIGTERM or SIGINT, or when its stdin is a pipe and that pipe closes (the test process called
``stop()`` or died).
"""

from __future__ import annotations

import argparse
import os
import signal
import stat
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

try:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer
except (ImportError, ValueError) as exc:
    sys.exit(f"gst-rtsp-server is not usable from {sys.executable}: {exc}")

#: Elements used here and the Debian package that brings each.
ELEMENTS = {
    "filesrc": "libgstreamer1.0-0",
    "parsebin": "gstreamer1.0-plugins-base",
    "appsrc": "gstreamer1.0-plugins-base",
    "appsink": "gstreamer1.0-plugins-base",
    "qtdemux": "gstreamer1.0-plugins-good",
    "matroskademux": "gstreamer1.0-plugins-good",
    "rtph264pay": "gstreamer1.0-plugins-good",
    "h264parse": "gstreamer1.0-plugins-bad",
}
#: What a media's appsrc may hold while its stream waits for a client's PLAY; older buffers are
#: dropped, so a media never lags behind the replay nor grows.
QUEUE_NS = Gst.SECOND // 2
MEDIA_LAUNCH = (
    "( appsrc name=src is-live=true format=time min-latency=0 max-bytes=0"
    f" max-time={QUEUE_NS} leaky-type=downstream"
    " ! rtph264pay name=pay0 pt=96 )"
)
READ_TIMEOUT_S = 30
POLL_NS = Gst.SECOND // 10


@dataclass(frozen=True, slots=True)
class Clip:
    """A file's H.264 access units in decoding order, with times relative to the clip's start.

    Attributes:
        caps: ``video/x-h264, stream-format=avc, alignment=au`` with ``codec_data``.
        frames: ``(pts_ns, dts_ns, buffer)``; 0 <= dts <= pts.
        length_ns: from the first frame shown to the end of the last: one loop.
    """

    caps: Gst.Caps
    frames: list[tuple[int, int, Gst.Buffer]]
    length_ns: int


def read_clip(path: Path) -> Clip:
    """Demux ``path``'s first H.264 video track into memory (raises SystemExit on failure)."""
    if not path.is_file():
        raise SystemExit(f"{path}: no such file")
    pipeline = Gst.Pipeline.new("read")
    source = Gst.ElementFactory.make("filesrc")
    source.set_property("location", str(path))
    demux = Gst.ElementFactory.make("parsebin")
    parse = Gst.ElementFactory.make("h264parse")
    # SPS and PPS in front of each key frame, for clients that join late. Not rtph264pay's
    # config-interval: it repeats them before each slice of a multi-slice IDR frame, which makes
    # FFmpeg's parser split that frame in two and its decoder show it twice.
    parse.set_property("config-interval", -1)
    sink = Gst.ElementFactory.make("appsink")
    # avc with codec_data: the SDP carries sprop-parameter-sets before any key frame is sent.
    sink.set_property("caps", Gst.Caps.from_string("video/x-h264,stream-format=avc,alignment=au"))
    sink.set_property("sync", False)
    for element in (source, demux, parse, sink):
        pipeline.add(element)
    source.link(demux)
    parse.link(sink)

    def on_pad_added(_demux: Gst.Element, pad: Gst.Pad) -> None:
        caps = pad.get_current_caps() or pad.query_caps(None)
        target = parse.get_static_pad("sink")
        # Audio and other tracks stay unlinked: the demuxer goes on while one pad is linked.
        if caps.get_structure(0).get_name() == "video/x-h264" and not target.is_linked():
            pad.link(target)

    demux.connect("pad-added", on_pad_added)
    samples: list[Gst.Sample] = []
    error = None
    deadline = time.monotonic() + READ_TIMEOUT_S
    pipeline.set_state(Gst.State.PLAYING)
    try:
        while True:
            sample = sink.emit("try-pull-sample", POLL_NS)
            if sample is not None:
                samples.append(sample)
            elif sink.get_property("eos"):  # the end reached and every sample pulled
                break
            elif (error := pipeline.get_bus().pop_filtered(Gst.MessageType.ERROR)) is not None:
                break  # no EOS comes after an error
            elif time.monotonic() > deadline:
                raise SystemExit(f"{path}: not read in {READ_TIMEOUT_S} s")
    finally:
        pipeline.set_state(Gst.State.NULL)
    problem = ""
    if error is not None:
        gerror, debug = error.parse_error()
        problem = f": {gerror.message} ({debug})"
    if not samples:
        raise SystemExit(f"{path}: no H.264 video read (is it an H.264 mp4 or mkv?){problem}")
    if problem:
        raise SystemExit(f"{path}{problem}")
    return _timeline(samples)


def _timeline(samples: list[Gst.Sample]) -> Clip:
    buffers = [sample.get_buffer() for sample in samples]
    pts = [buffer.pts for buffer in buffers]
    if Gst.CLOCK_TIME_NONE in pts:
        raise SystemExit("a video frame has no presentation time")
    shown = sorted(pts)
    frame_ns = int(statistics.median(b - a for a, b in pairwise(shown))) if pts[1:] else 0
    frame_ns = frame_ns or Gst.SECOND // 30
    dts = [buffer.dts for buffer in buffers]
    if Gst.CLOCK_TIME_NONE in dts:
        # Matroska has no decoding times: give frame i the i-th presentation time, moved back by
        # the largest reordering delay, so that dts <= pts and dts only grows.
        delay = max(max(s - p for s, p in zip(shown, pts, strict=True)), 0)
        dts = [s - delay for s in shown]
    zero = min(dts)
    end = max(
        p + (b.duration if b.duration != Gst.CLOCK_TIME_NONE else frame_ns)
        for p, b in zip(pts, buffers, strict=True)
    )
    frames = [(p - zero, d - zero, b) for p, d, b in zip(pts, dts, buffers, strict=True)]
    return Clip(caps=samples[0].get_caps(), frames=frames, length_ns=end - shown[0])


class Replay:
    """Pushes one clip, looped, in real time into every appsrc attached to its mount."""

    def __init__(self, name: str, path: Path, clip: Clip) -> None:
        self.name = name
        self.path = path
        self._clip = clip
        self._clock = Gst.SystemClock.obtain()
        self._start_ns = 0
        self._lock = threading.Lock()
        self._sources: dict[Gst.Element, bool] = {}  # appsrc -> caps already set
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"replay-{name}", daemon=True)

    def start(self, start_ns: int) -> None:
        """Play the clip's first frame at clock time ``start_ns`` (ns of the system clock)."""
        self._start_ns = start_ns
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)

    def attach(self, media: GstRtspServer.RTSPMedia) -> None:
        """Feed a new media of this mount until it is unprepared."""
        element = media.get_element()
        pipeline = element.get_parent()
        # Same clock, base time fixed at the replay's start: our timestamps are running times.
        pipeline.use_clock(self._clock)
        pipeline.set_start_time(Gst.CLOCK_TIME_NONE)
        pipeline.set_base_time(self._start_ns)
        appsrc = element.get_by_name("src")
        with self._lock:
            self._sources[appsrc] = False
        media.connect("unprepared", lambda _media: self._detach(appsrc))

    def _detach(self, appsrc: Gst.Element) -> None:
        with self._lock:
            self._sources.pop(appsrc, None)

    def _run(self) -> None:
        offset = 0
        while True:
            for pts, dts, buffer in self._clip.frames:
                wait_ns = self._start_ns + offset + dts - self._clock.get_time()
                if self._stopping.wait(max(wait_ns, 0) / Gst.SECOND):
                    return
                self._push(buffer, offset + pts, offset + dts)
            offset += self._clip.length_ns

    def _push(self, buffer: Gst.Buffer, pts: int, dts: int) -> None:
        with self._lock:
            sources = list(self._sources.items())
        for appsrc, has_caps in sources:
            if not has_caps:
                appsrc.set_property("caps", self._clip.caps)
                with self._lock:
                    if appsrc in self._sources:
                        self._sources[appsrc] = True
            out = buffer.copy()  # new metadata, same memory: no frame data is copied
            out.pts = pts
            out.dts = dts
            appsrc.emit("push-buffer", out)  # FLUSHING once the media stops: nothing to do


def check() -> list[str]:
    """What this machine lacks to serve, one line per element naming its Debian package."""
    return [
        f"GStreamer element {name!r} missing (Debian package {package})"
        for name, package in ELEMENTS.items()
        if Gst.ElementFactory.find(name) is None
    ]


def parse_mount(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or "/" in name:
        raise argparse.ArgumentTypeError(f"expected NAME=FILE, got {text!r}")
    return name, Path(path)


def serve(port: int, mounts: list[tuple[str, Path]]) -> int:
    replays = [Replay(name, path, read_clip(path)) for name, path in mounts]

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    points = server.get_mount_points()
    for replay in replays:
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(MEDIA_LAUNCH)
        # The replay is what clients share. A shared media (set_shared(True)) would save a
        # payloader per client, but gst-rtsp-server 1.22 answers 503 to a client that comes while
        # the last one's media is being unprepared (half of back-to-back DESCRIBEs here): a
        # reconnecting reader, or the first reader after start()'s own DESCRIBE, would flake.
        factory.set_shared(False)
        factory.connect("media-configure", lambda _factory, media, r=replay: r.attach(media))
        points.add_factory(f"/{replay.name}", factory)
    if server.attach(None) == 0:
        raise SystemExit(f"cannot listen on 127.0.0.1:{port}")
    print(f"listening on 127.0.0.1:{port}", flush=True)  # what RtspServer.start() waits for

    start_ns = Gst.SystemClock.obtain().get_time()
    for replay in replays:
        replay.start(start_ns)
        print(f"serving {replay.path} at rtsp://127.0.0.1:{port}/{replay.name}", file=sys.stderr)

    loop = GLib.MainLoop()

    def quit_loop(*_args: object) -> bool:
        loop.quit()
        return GLib.SOURCE_REMOVE

    def on_stdin(fd: int, _condition: GLib.IOCondition) -> bool:
        return GLib.SOURCE_CONTINUE if os.read(fd, 4096) else quit_loop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, quit_loop)
    if stat.S_ISFIFO(os.fstat(0).st_mode):
        condition = GLib.IOCondition.IN | GLib.IOCondition.HUP
        GLib.io_add_watch(0, GLib.PRIORITY_DEFAULT, condition, on_stdin)
    loop.run()

    # Close the clients (their media pipelines stop with them), then the replays.
    server.client_filter(lambda _server, _client: GstRtspServer.RTSPFilterResult.REMOVE)
    for replay in replays:
        replay.stop()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="check what serving needs, then exit")
    parser.add_argument("--port", type=int, default=8554)
    parser.add_argument("mounts", nargs="*", type=parse_mount, metavar="NAME=FILE")
    args = parser.parse_args()
    Gst.init(None)
    if args.check:
        problems = check()
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    if not args.mounts:
        parser.error("give at least one NAME=FILE")
    return serve(args.port, args.mounts)


if __name__ == "__main__":
    sys.exit(main())
