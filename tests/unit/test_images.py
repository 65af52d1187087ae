"""Image decoding of untrusted bytes: sniffed formats, colour modes, limits, corrupt data."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facewatch.errors import ImageError, ImageTooLargeError
from facewatch.images import decode_image, read_image, validate_array
from tests_support import png_header_only


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def gradient(mode: str = "RGB") -> Image.Image:
    x = np.linspace(0, 255, 64, dtype=np.uint8)
    rgb = np.stack(
        [np.tile(x, (48, 1)), np.tile(x[::-1], (48, 1)), np.full((48, 64), 100, np.uint8)], 2
    )
    return Image.fromarray(rgb).convert(mode)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF"])
def test_formats_decode_to_bgr(fmt: str) -> None:
    image = decode_image(encode(gradient(), fmt))
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    # Channel order is BGR: the first column is red=0, green=255 in RGB terms.
    if fmt in ("PNG", "BMP", "TIFF"):
        assert image[0, 0].tolist() == [100, 255, 0]


def test_rgba_grey_palette_and_16_bit() -> None:
    rgba = gradient("RGBA")
    assert decode_image(encode(rgba, "PNG")).shape == (48, 64, 3)
    grey = decode_image(encode(gradient("L"), "PNG"))
    assert grey.shape == (48, 64, 3) and (grey[..., 0] == grey[..., 2]).all()
    assert decode_image(encode(gradient("P"), "PNG")).shape == (48, 64, 3)
    sixteen = Image.fromarray((np.arange(48 * 64).reshape(48, 64) * 21).astype(np.uint16))
    decoded = decode_image(encode(sixteen, "PNG"))
    assert decoded.shape == (48, 64, 3)
    assert decoded.max() > 200  # scaled from 16 bits, not clipped to black or white
    assert decoded[0, 0, 0] < decoded[-1, -1, 0]


def test_transparent_pixels_become_white() -> None:
    rgba = Image.new("RGBA", (8, 8), (10, 20, 30, 0))
    assert decode_image(encode(rgba, "PNG"))[0, 0].tolist() == [255, 255, 255]


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when shown
    data = encode(gradient(), "JPEG", exif=exif.tobytes())
    assert decode_image(data).shape == (64, 48, 3)


def test_wrong_extension_is_read_by_content(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(encode(gradient(), "PNG"))
    assert read_image(path).shape == (48, 64, 3)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"hello, I am text", "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "image"),
    ],
)
def test_garbage_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        decode_image(data)


def test_truncated_jpeg_is_refused() -> None:
    data = encode(gradient(), "JPEG")
    with pytest.raises(ImageError, match="corrupt or truncated"):
        decode_image(data[: len(data) // 3])


def test_huge_dimensions_are_refused_before_decoding() -> None:
    with pytest.raises(ImageTooLargeError) as caught:
        decode_image(png_header_only(60_000, 60_000), max_pixels=50_000_000)
    assert caught.value.pixels == 3_600_000_000 and "limit" in str(caught.value)
    with pytest.raises(ImageTooLargeError) as caught:
        decode_image(encode(gradient(), "PNG"), max_pixels=100)
    assert caught.value.size == (64, 48)
    with pytest.raises(ImageTooLargeError):  # under Pillow's own guard, above ours
        decode_image(png_header_only(9000, 9000), max_pixels=50_000_000)


def test_read_image_errors(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "absent.png")
    with pytest.raises(ImageError, match="directory"):
        read_image(tmp_path)


@pytest.mark.parametrize(
    ("array", "ok"),
    [
        (np.zeros((4, 4, 3), np.uint8), True),
        (np.zeros((4, 4), np.uint8), True),
        (np.zeros((4, 4, 4), np.uint8), True),
        (np.zeros((4, 4, 3), np.float32), False),
        (np.zeros((4, 4, 2), np.uint8), False),
        (np.zeros((0, 4, 3), np.uint8), False),
        (np.zeros(5, np.uint8), False),
    ],
)
def test_validate_array(array: np.ndarray, ok: bool) -> None:
    if ok:
        assert validate_array(array).shape == (4, 4, 3)
    else:
        with pytest.raises(ImageError):
            validate_array(array)
