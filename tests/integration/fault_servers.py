"""Misbehaving video sources on 127.0.0.1 for the camera-fault tests, and clips to feed them.

* :class:`FaultServer`: a TCP server (port 0) that answers every connection as it is told,
  on a thread per connection: an HTTP response whose body is given bytes (a clip, a damaged
  clip, garbage), raw bytes with no HTTP at all, or silence (it accepts, reads what comes and
  never answers).
* :class:`BlackHole`: a listening port whose accept queue is full and never drained, so a new
  connection gets no answer at all, as from a host that went away.
* :class:`RtspDamager`: a relay in front of a real RTSP server that spoils the media packets
  it carries when told to.
* :func:`make_ts_clip`: an MPEG-TS made with PyAV from the first frames of a clip, in segments
  of given sizes (a camera that changes resolution), with silent audio if asked;
  :func:`damage_ts` and :func:`truncate_ts` spoil the middle of one the way a bad link does;
  :func:`garbage`, :func:`synced_garbage` (valid packets, no stream) and :func:`audio_only_ts`
  are what a source may send instead of video.

All of it lives on threads of its own, so it keeps serving whatever the test's event loop does.
"""

from __future__ import annotations

import io
import random
import socket
import socketserver
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.container
import numpy as np

#: An MPEG-TS packet is 188 bytes and starts with this sync byte.
TS_PACKET = 188
TS_SYNC = 0x47
#: Bytes of an RTP header without CSRCs or extensions.
RTP_HEADER = 12


@dataclass(frozen=True, slots=True)
class HttpBody:
    """``200 OK`` and a body without a length: ``first`` once, then ``then`` over and over
    until the client goes (with no ``then``, the connection closes: a stream that ended)."""

    first: bytes
    then: bytes = b""
    chunk: int = 64 * 1024


@dataclass(frozen=True, slots=True)
class RawBytes:
    """``data`` written as it is, with no HTTP status line, over and over until the client
    goes: whatever the client asked, it gets this."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Silence:
    """The connection is accepted and what the client sends is read; nothing is ever sent."""


Behaviour = HttpBody | RawBytes | Silence


class FaultServer:
    """A loopback TCP server answering every new connection with :attr:`behaviour`.

    Attributes:
        port: its TCP port on 127.0.0.1.
        behaviour: how every new connection is answered.
        connections: connections accepted so far.
    """

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.connections = 0
        self._closing = threading.Event()
        self._lock = threading.Lock()
        fault = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with fault._lock:
                    fault.connections += 1
                    behaviour = fault.behaviour
                fault._answer(self.request, behaviour)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fault-server"
        )
        self._thread.start()

    def url(self, scheme: str, path: str = "cam") -> str:
        """``{scheme}://127.0.0.1:{port}/{path}``."""
        return f"{scheme}://127.0.0.1:{self.port}/{path}"

    def close(self) -> None:
        """Stop accepting and end every connection (idempotent)."""
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _answer(self, conn: socket.socket, behaviour: Behaviour) -> None:
        conn.settimeout(0.1)
        try:
            if isinstance(behaviour, Silence):
                while not self._closing.is_set():
                    try:
                        if not conn.recv(4096):
                            return  # the client hung up
                    except TimeoutError:
                        continue
                return
            self._read_request(conn)
            if isinstance(behaviour, HttpBody):
                conn.sendall(
                    b"HTTP/1.0 200 OK\r\nContent-Type: video/mp2t\r\nConnection: close\r\n\r\n"
                )
                self._send_body(conn, behaviour.first, behaviour.chunk)
                while behaviour.then and not self._closing.is_set():
                    self._send_body(conn, behaviour.then, behaviour.chunk)
            else:
                while not self._closing.is_set():
                    self._send(conn, behaviour.data)
        except OSError:
            return  # the client went away: that is its right

    def _read_request(self, conn: socket.socket) -> None:
        """Whatever the client says first (an HTTP or RTSP request), up to a blank line."""
        request = b""
        while b"\r\n\r\n" not in request and not self._closing.is_set():
            try:
                chunk = conn.recv(4096)
            except TimeoutError:
                continue
            if not chunk:
                raise ConnectionResetError("client closed before its request ended")
            request += chunk

    def _send_body(self, conn: socket.socket, data: bytes, chunk: int) -> None:
        for start in range(0, len(data), chunk):
            self._send(conn, data[start : start + chunk])

    def _send(self, conn: socket.socket, data: bytes) -> None:
        """``sendall`` that gives up when the server closes, even with a reader that stalls."""
        view = memoryview(data)
        while view and not self._closing.is_set():
            try:
                sent = conn.send(view)
            except TimeoutError:
                continue
            view = view[sent:]


class BlackHole:
    """A port on 127.0.0.1 that is listened on but never accepted from, its queue full.

    Linux keeps ``backlog + 1`` finished handshakes waiting; once those are taken (by our own
    connections here) it drops every new SYN, so a client's connect gets no answer until it
    gives up by itself.
    """

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(0)
        self.port: int = self._listener.getsockname()[1]
        self._fillers: list[socket.socket] = []
        for _ in range(8):  # more than the queue holds: the rest stay half open
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", self.port))
            self._fillers.append(filler)

    def url(self, scheme: str, path: str = "cam") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/{path}"

    def close(self) -> None:
        for sock in (*self._fillers, self._listener):
            sock.close()


@contextmanager
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    try:
        yield hole
    finally:
        hole.close()


class RtspDamager:
    """A TCP relay on 127.0.0.1 (port 0) in front of an RTSP server that spoils video on demand.

    Clients must use RTSP over TCP: the relay reads what the server sends as RTSP replies and
    interleaved frames (``$``, channel, 16-bit length, an RTP packet). After :meth:`damage`,
    it writes random bytes over the payloads of the next RTP packets on channel 0 (the first
    stream's media), leaving their RTP headers intact, as a bad link would spoil the data and
    not the packet order.

    Attributes:
        port: its port on 127.0.0.1.
        spoiled: RTP packets spoiled so far.
    """

    def __init__(self, target_port: int, *, seed: int) -> None:
        self.target_port = target_port
        self.spoiled = 0
        self._to_spoil = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        relay = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                relay._relay(self.request)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="rtsp-damager"
        )
        self._thread.start()

    def url(self, path: str) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{path}"

    def damage(self, packets: int) -> None:
        """Spoil the payloads of the next ``packets`` media packets."""
        with self._lock:
            self._to_spoil += packets

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _relay(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
        except OSError:
            return
        with upstream:
            forward = threading.Thread(
                target=self._pump, args=(client, upstream), name="rtsp-damager-up", daemon=True
            )
            forward.start()
            try:
                self._carry_replies(upstream, client)
            except OSError:
                pass
            finally:
                _shut(client)
                _shut(upstream)
                forward.join(5)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            _shut(sink)

    def _carry_replies(self, upstream: socket.socket, client: socket.socket) -> None:
        """Server to client, message by message, spoiling media packets when asked."""
        upstream.settimeout(None)
        reader = upstream.makefile("rb")
        while not self._closing.is_set():
            first = reader.read(1)
            if not first:
                return
            if first == b"$":
                header = reader.read(3)
                channel, length = header[0], int.from_bytes(header[1:3], "big")
                packet = bytearray(reader.read(length))
                if channel == 0 and len(packet) > RTP_HEADER + 2:
                    self._maybe_spoil(packet)
                client.sendall(first + header + packet)
                continue
            message = first + reader.readline()
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b"\n", b""):
                message += line
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            client.sendall(message + line + reader.read(length))

    def _maybe_spoil(self, packet: bytearray) -> None:
        with self._lock:
            if not self._to_spoil:
                return
            self._to_spoil -= 1
            self.spoiled += 1
            # The first two payload bytes (H.264 NAL or fragment headers) stay: the decoder gets
            # slices whose data is wrong, as from bit errors, rather than no slices at all.
            start = RTP_HEADER + 2
            packet[start:] = self._rng.randbytes(len(packet) - start)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def make_ts_clip(
    source: Path,
    sizes_wh: Sequence[tuple[int, int]],
    frames_per_size: int,
    *,
    rate: int = 30,
    gop: int = 15,
    audio: bool = False,
) -> bytes:
    """An H.264 MPEG-TS of the first frames of ``source``, ``frames_per_size`` at each size.

    Each size is a segment with its own encoder (and so its own SPS, starting with a key
    frame), concatenated as a camera that changes resolution sends them; timestamps run on
    across segments at ``rate`` frames/s. A key frame every ``gop`` frames. With ``audio``,
    each segment also carries as much silent AAC, on the PID :func:`audio_only_ts` uses.
    """
    with av.open(str(source)) as clip:
        frames = [
            frame
            for _, frame in zip(
                range(frames_per_size * len(sizes_wh)), clip.decode(video=0), strict=False
            )
        ]
    if len(frames) < frames_per_size * len(sizes_wh):
        raise ValueError(f"{source} has only {len(frames)} frames")
    segments = []
    for index, size in enumerate(sizes_wh):
        start = index * frames_per_size
        segments.append(
            _encode_segment(
                frames[start : start + frames_per_size], size, start, rate, gop, audio=audio
            )
        )
    return b"".join(segments)


def audio_only_ts(seconds: float, *, first_s: float = 0.0) -> bytes:
    """An MPEG-TS of ``seconds`` of silent AAC and nothing else, starting at ``first_s``: what
    a camera whose video encoder hung goes on sending."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mpegts") as out:
        _mux_silence(out, _silent_stream(out), seconds, first_s)
    return buffer.getvalue()


#: Silent audio: mono AAC at this rate, in frames of this many samples.
_AUDIO_RATE = 16_000
_AUDIO_FRAME = 1024


def _silent_stream(out: av.container.OutputContainer) -> av.AudioStream:
    """A mono AAC stream; added first to ``out``, so always on PID 0x100."""
    stream = out.add_stream("aac", rate=_AUDIO_RATE)
    stream.layout = "mono"
    return stream


def _mux_silence(
    out: av.container.OutputContainer, stream: av.AudioStream, seconds: float, first_s: float
) -> None:
    first = round(first_s * _AUDIO_RATE)
    for start in range(0, round(seconds * _AUDIO_RATE), _AUDIO_FRAME):
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, _AUDIO_FRAME), np.float32), format="flt", layout="mono"
        )
        frame.sample_rate = _AUDIO_RATE
        frame.pts = first + start
        frame.time_base = Fraction(1, _AUDIO_RATE)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def _encode_segment(
    frames: Sequence[av.VideoFrame],
    size_wh: tuple[int, int],
    first_pts: int,
    rate: int,
    gop: int,
    *,
    audio: bool,
) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mpegts") as out:
        # Every stream is added before the first packet is muxed (which writes the header).
        silence = _silent_stream(out) if audio else None
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height = size_wh
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
        for offset, frame in enumerate(frames):
            scaled = frame.reformat(width=size_wh[0], height=size_wh[1], format="yuv420p")
            scaled.pts = first_pts + offset
            scaled.time_base = Fraction(1, rate)
            out.mux(stream.encode(scaled))
        out.mux(stream.encode(None))
        if silence is not None:
            _mux_silence(out, silence, len(frames) / rate, first_pts / rate)
    return buffer.getvalue()


def damage_ts(data: bytes, *, seed: int, hits: int = 40, length: int = 50) -> bytes:
    """``data`` with ``hits`` runs of ``length`` random bytes written over its middle third.

    TS packet headers in the way are spoiled too, as a flipped bit would spoil them.
    """
    rng = random.Random(seed)
    damaged = bytearray(data)
    third = len(data) // 3
    for _ in range(hits):
        at = rng.randrange(third, 2 * third - length)
        damaged[at : at + length] = rng.randbytes(length)
    return bytes(damaged)


def truncate_ts(data: bytes, *, seed: int, every: int = 7) -> bytes:
    """``data`` with every ``every``-th TS packet of its middle third cut short (a random
    length of it kept), as from a link that loses the tails of packets."""
    rng = random.Random(seed)
    packets = [data[i : i + TS_PACKET] for i in range(0, len(data), TS_PACKET)]
    third = len(packets) // 3
    out = bytearray()
    for index, packet in enumerate(packets):
        if third <= index < 2 * third and index % every == 0:
            packet = packet[: rng.randrange(4, TS_PACKET - 4)]
        out += packet
    return bytes(out)


def garbage(size: int, *, seed: int) -> bytes:
    """``size`` random bytes (the same for the same seed)."""
    return random.Random(seed).randbytes(size)


def synced_garbage(packets: int, *, seed: int) -> bytes:
    """MPEG-TS packets with valid headers and random payloads: a demuxer stays in sync and
    finds no stream in them."""
    rng = random.Random(seed)
    out = bytearray()
    for counter in range(packets):
        pid = rng.randrange(0x20, 0x1FFF)
        header = bytes((TS_SYNC, (pid >> 8) & 0x1F, pid & 0xFF, 0x10 | (counter & 0x0F)))
        out += header + rng.randbytes(TS_PACKET - len(header))
    return bytes(out)
