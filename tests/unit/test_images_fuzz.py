"""Fuzzing image decoding (``facewatch.images``) with hypothesis.

Whatever the bytes (arbitrary, valid images of every accepted format with bytes changed, cut or
inserted, wrong magic bytes, headers declaring huge sizes over tiny payloads), decoding gives
either an (H, W, 3) uint8 BGR array within the pixel limit or an :class:`ImageError` with a
message; never another exception. Memory stays bounded: Pillow never decodes an image declaring
more pixels than the limit (every ``load`` is recorded), and the Python memory one decode takes
stays within a fixed multiple of the limit.

Examples are derandomized and bounded so that runs are deterministic and quick.
"""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from facewatch.errors import ImageError, ImageTooLargeError
from facewatch.images import ACCEPTED_FORMATS, decode_image
from tests_support import png_header_only

#: Pixel limit of every decode here: 1000 x 1000.
LIMIT = 1_000_000
#: Python memory one decode may take at its peak, per allowed pixel: an image at the limit takes
#: 6 bytes a pixel (its RGB copy and the BGR array), 24 for 16-bit and float images (a float64
#: working copy); a decompression bomb decoded past the limit would take far more.
PEAK_BYTES_PER_PIXEL = 48


def fuzz(examples: int) -> settings:
    """Deterministic, bounded hypothesis settings with no example database on disk."""
    return settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# --- what every outcome must be -----------------------------------------------------------------


def _classes_with_own_load() -> list[type[ImageFile.ImageFile]]:
    Image.init()
    found: list[type[ImageFile.ImageFile]] = [ImageFile.ImageFile]
    stack = list(ImageFile.ImageFile.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if "load" in vars(cls):
            found.append(cls)
    return found


@contextmanager
def decoded_sizes() -> Iterator[list[int]]:
    """Pixel counts of the images Pillow decodes meanwhile (each ``load`` call, as it starts)."""
    sizes: list[int] = []
    patches = []
    for cls in _classes_with_own_load():
        original = vars(cls)["load"]

        def spy(self: Any, *args: Any, _original: Callable[..., Any] = original) -> Any:
            sizes.append(self.size[0] * self.size[1])
            return _original(self, *args)

        patches.append(mock.patch.object(cls, "load", spy))
    for patch in patches:
        patch.start()
    try:
        yield sizes
    finally:
        for patch in reversed(patches):
            patch.stop()


@pytest.fixture(scope="module")
def loads() -> Iterator[list[int]]:
    """Every decode of the module recorded (see :func:`decoded_sizes`); tests clear it."""
    with decoded_sizes() as sizes:
        yield sizes


@contextmanager
def python_memory_peak() -> Iterator[list[int]]:
    """The peak of Python memory allocated meanwhile, in bytes (one item once the block ends).

    Traced only around the decode: tracing hypothesis's own work would slow it several times.
    """
    peak: list[int] = []
    already = tracemalloc.is_tracing()  # e.g. python -X tracemalloc: leave it running
    if already:
        tracemalloc.reset_peak()
    else:
        tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    try:
        yield peak
        peak.append(tracemalloc.get_traced_memory()[1] - before)
    finally:
        if not already:
            tracemalloc.stop()


def decode_or_refuse(data: bytes, loads: list[int]) -> np.ndarray | None:
    """Decode ``data`` and check the outcome; the image, or None when refused."""
    loads.clear()
    with python_memory_peak() as peak:
        try:
            image = decode_image(data, max_pixels=LIMIT, source="fuzz.bin")
        except ImageError as exc:
            image = None
            assert exc.message.strip()
            assert str(exc).startswith("fuzz.bin: ")
            if isinstance(exc, ImageTooLargeError):
                assert exc.pixels > exc.limit == LIMIT
    assert all(pixels <= LIMIT for pixels in loads), loads
    assert peak[0] <= PEAK_BYTES_PER_PIXEL * LIMIT, peak
    if image is not None:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert image.shape[0] >= 1 and image.shape[1] >= 1
        assert image.shape[0] * image.shape[1] <= LIMIT
        assert image.flags.c_contiguous
    return image


# --- valid images of every accepted format, made here -------------------------------------------


def picture(mode: str, size: tuple[int, int] = (40, 30)) -> Image.Image:
    """A synthetic picture (gradients and noise) in ``mode``."""
    width, height = size
    rng = np.random.default_rng(11)
    x = np.linspace(0, 255, width, dtype=np.float64)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.float64)[:, None].repeat(width, 1)
    noise = rng.integers(0, 40, (height, width))
    rgb = np.stack([x, y, (x + y) / 2 + noise], axis=2).clip(0, 255).astype(np.uint8)
    base = Image.fromarray(rgb)
    if mode == "RGBA":
        alpha = Image.fromarray(y.astype(np.uint8))
        base.putalpha(alpha)
        return base
    if mode == "I;16":
        return Image.fromarray((x * 257).astype(np.uint16))
    if mode == "F":
        return Image.fromarray((x / 255).astype(np.float32))
    return base.convert(mode)


def encoded(image: Image.Image, fmt: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def animated_gif() -> bytes:
    frames = [picture("P"), picture("P").transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    return encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=40)


def oriented_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: decoding turns it upright
    return encoded(picture("RGB"), "JPEG", exif=exif.tobytes())


SAMPLES: dict[str, bytes] = {
    "jpeg-rgb": encoded(picture("RGB"), "JPEG", quality=80),
    "jpeg-grey-progressive": encoded(picture("L"), "JPEG", progressive=True),
    "jpeg-cmyk": encoded(picture("CMYK"), "JPEG"),
    "jpeg-exif-rotated": oriented_jpeg(),
    "png-rgb": encoded(picture("RGB"), "PNG"),
    "png-rgba": encoded(picture("RGBA"), "PNG"),
    "png-palette": encoded(picture("P"), "PNG"),
    "png-16bit": encoded(picture("I;16"), "PNG"),
    "png-1bit": encoded(picture("1"), "PNG"),
    "webp-lossy": encoded(picture("RGB"), "WEBP", quality=60),
    "webp-lossless-rgba": encoded(picture("RGBA"), "WEBP", lossless=True),
    "bmp-rgb": encoded(picture("RGB"), "BMP"),
    "bmp-palette": encoded(picture("P"), "BMP"),
    "tiff-rgb-lzw": encoded(picture("RGB"), "TIFF", compression="tiff_lzw"),
    "tiff-cmyk-deflate": encoded(picture("CMYK"), "TIFF", compression="tiff_adobe_deflate"),
    "tiff-float": encoded(picture("F"), "TIFF"),
    "tiff-16bit-packbits": encoded(picture("I;16"), "TIFF", compression="packbits"),
    "gif-animated": animated_gif(),
}


@pytest.mark.parametrize("name", list(SAMPLES))
def test_every_sample_decodes_upright_at_its_size(name: str, loads: list[int]) -> None:
    image = decode_or_refuse(SAMPLES[name], loads)
    assert image is not None
    assert image.shape == ((40, 30, 3) if name == "jpeg-exif-rotated" else (30, 40, 3))


def test_the_decode_spy_sees_pixels_being_decoded() -> None:
    # The bound checked in every fuzz example means something only if loads are seen.
    with decoded_sizes() as sizes:
        decode_image(SAMPLES["webp-lossy"], max_pixels=LIMIT)
        decode_image(SAMPLES["tiff-rgb-lzw"], max_pixels=LIMIT)
        decode_image(SAMPLES["png-rgb"], max_pixels=LIMIT)
    assert len(sizes) >= 3 and set(sizes) == {40 * 30}


# --- arbitrary bytes and wrong magic ------------------------------------------------------------

MAGICS = [
    b"\xff\xd8\xff",
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    b"II*\x00",
    b"MM\x00*",
    b"BM",
    b"%PDF-1.7\n",
    b"%!PS-Adobe-3.0 EPSF-3.0\n",
    b"\x00\x00\x01\x00",  # ICO
    b"8BPS",  # PSD
    b"P6\n",  # PPM
    b"<svg",
]


@fuzz(100)
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes(data: bytes, loads: list[int]) -> None:
    decode_or_refuse(data, loads)


@fuzz(100)
@given(magic=st.sampled_from(MAGICS), rest=st.binary(max_size=512))
def test_known_magic_bytes_followed_by_anything(
    magic: bytes, rest: bytes, loads: list[int]
) -> None:
    decode_or_refuse(magic + rest, loads)


@fuzz(60)
@given(name=st.sampled_from(sorted(SAMPLES)), magic=st.sampled_from(MAGICS))
def test_a_valid_image_behind_the_wrong_magic_bytes(
    name: str, magic: bytes, loads: list[int]
) -> None:
    data = SAMPLES[name]
    decode_or_refuse(magic + data[len(magic) :], loads)


# --- mutated and truncated valid images ---------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A sample with a few bytes changed, inserted or deleted, mostly in its headers."""
    data = bytearray(SAMPLES[draw(st.sampled_from(sorted(SAMPLES)))])
    edits = draw(st.integers(1, 4))
    for _ in range(edits):
        size = len(data)
        where = draw(st.one_of(st.integers(0, min(96, size - 1)), st.integers(0, size - 1)))
        kind = draw(st.sampled_from(["set", "xor", "insert", "delete"]))
        chunk = draw(st.binary(min_size=1, max_size=8))
        if kind == "set":
            data[where : where + len(chunk)] = chunk
        elif kind == "xor":
            data[where] ^= chunk[0] or 0xFF
        elif kind == "insert":
            data[where:where] = chunk
        elif size > 1:
            del data[where : where + len(chunk)]
    return bytes(data)


@fuzz(200)
@given(data=mutated())
def test_mutated_valid_images(data: bytes, loads: list[int]) -> None:
    decode_or_refuse(data, loads)


@fuzz(80)
@given(name=st.sampled_from(sorted(SAMPLES)), cut=st.floats(0.0, 1.0, exclude_max=True))
def test_truncated_valid_images(name: str, cut: float, loads: list[int]) -> None:
    data = SAMPLES[name]
    image = decode_or_refuse(data[: int(cut * len(data))], loads)
    # Cut in its first half, no sample holds all its pixels: it is refused, not returned with a
    # grey band standing in for the rest. (Cut late, some are whole: PNG's end chunk, or the
    # first frame of a GIF.)
    if cut < 0.5:
        assert image is None


# --- declared sizes over tiny payloads (decompression bombs) ------------------------------------


def gif_bomb(width: int, height: int, frame: tuple[int, int] | None = None) -> bytes:
    """A GIF whose screen (or only frame) declares ``width`` x ``height`` over a few bytes."""
    frame_w, frame_h = frame or (width, height)
    screen = struct.pack("<HHBBB", width, height, 0, 0, 0)
    image = b"," + struct.pack("<HHHHB", 0, 0, frame_w, frame_h, 0)
    return b"GIF89a" + screen + image + b"\x02\x02\x4c\x01\x00;"


def tiff_bomb(width: int, height: int) -> bytes:
    """A TIFF declaring ``width`` x ``height`` greyscale pixels in one strip of a few bytes."""
    entries = [
        (256, 4, width),
        (257, 4, height),
        (258, 3, 8),
        (259, 3, 1),
        (262, 3, 1),
        (273, 4, 8 + 2 + 9 * 12 + 4),  # the strip follows the directory
        (277, 3, 1),
        (278, 4, height),
        (279, 4, 4),
    ]
    packed = b"".join(
        struct.pack("<HHII", tag, kind, 1, value)
        if kind == 4
        else struct.pack("<HHIHH", tag, kind, 1, value, 0)
        for tag, kind, value in entries
    )
    ifd = struct.pack("<H", len(entries)) + packed + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00" * 4


def bmp_bomb(width: int, height: int) -> bytes:
    dib = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54 + 16, 0, 0, 54) + dib + b"\x00" * 16


def jpeg_bomb(width: int, height: int) -> bytes:
    start_of_frame = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + start_of_frame + b"\xff\xd9"


def webp_bomb(width: int, height: int) -> bytes:
    canvas = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    chunk = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00" + canvas
    body = b"WEBP" + chunk
    return b"RIFF" + struct.pack("<I", len(body)) + body


BOMBS: dict[str, tuple[Callable[[int, int], bytes], int]] = {
    # builder, largest side the format can declare
    "png": (png_header_only, 2**31 - 1),
    "gif": (gif_bomb, 2**16 - 1),
    "gif-huge-frame-on-tiny-screen": (lambda w, h: gif_bomb(1, 1, (w, h)), 2**16 - 1),
    "tiff": (tiff_bomb, 2**32 - 1),
    "bmp": (bmp_bomb, 2**31 - 1),
    "jpeg": (jpeg_bomb, 2**16 - 1),
    "webp": (webp_bomb, 2**24),
}


@st.composite
def declared_sizes(draw: st.DrawFn) -> tuple[str, bytes, int]:
    kind = draw(st.sampled_from(sorted(BOMBS)))
    build, largest = BOMBS[kind]
    side = st.one_of(st.integers(1, 4096), st.integers(1, largest))
    width, height = draw(side), draw(side)
    return kind, build(width, height), width * height


@fuzz(120)
@given(bomb=declared_sizes())
def test_declared_sizes_over_tiny_payloads(bomb: tuple[str, bytes, int], loads: list[int]) -> None:
    kind, data, declared = bomb
    image = decode_or_refuse(data, loads)
    if declared > LIMIT:
        assert image is None, kind


@pytest.mark.parametrize("kind", sorted(BOMBS))
def test_a_100k_square_declaration_is_refused_as_too_large(kind: str) -> None:
    build, largest = BOMBS[kind]
    side = min(100_000, largest)
    with pytest.raises(ImageTooLargeError) as caught:
        decode_image(build(side, side), max_pixels=LIMIT)
    assert caught.value.pixels > LIMIT


def test_a_real_compressed_bomb_is_refused_before_decoding() -> None:
    # 3000 x 3000 black RGB: 27 MB of pixels in about 27 kB of zlib.
    width = height = 3000
    row = b"\x00" + b"\x00" * (3 * width)

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + payload))
        return struct.pack(">I", len(payload)) + kind + payload + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height, 9))
        + chunk(b"IEND", b"")
    )
    assert len(data) < 100_000
    with decoded_sizes() as sizes, pytest.raises(ImageTooLargeError) as caught:
        decode_image(data, max_pixels=LIMIT)
    assert caught.value.size == (width, height)
    assert sizes == []
    # The same file decodes under a limit that allows it: the refusal came from the size.
    assert decode_image(data, max_pixels=width * height).shape == (height, width, 3)


def test_accepted_formats_are_the_fuzzed_ones() -> None:
    fuzzed = {name.split("-")[0].upper() for name in SAMPLES}
    assert fuzzed == set(ACCEPTED_FORMATS)
