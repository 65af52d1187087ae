"""Decoding untrusted image bytes into BGR arrays, by content, with a pixel budget."""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

from facewatch.errors import ImageError, ImageTooLargeError

#: Large enough for a 16K panorama; a decompression bomb declares far more.
DEFAULT_MAX_PIXELS = 50_000_000

BGRImage = NDArray[np.uint8]


#: Image formats decoded (Pillow names); anything else is "not an image".
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")


def decode_image(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, source: str | None = None
) -> BGRImage:
    """Decode image bytes (JPEG, PNG, WebP, BMP, TIFF, GIF...) into an (H, W, 3) BGR uint8 array.

    The format is sniffed from the content, never from a file name. The declared size is checked
    against ``max_pixels`` before any pixel is decoded, so a decompression bomb costs nothing.
    Alpha is dropped, grey and palette images become colour, 16-bit images are scaled to 8 bits
    and EXIF orientation is applied.

    Raises:
        ImageTooLargeError: more than ``max_pixels`` pixels.
        ImageError: empty, truncated, corrupt or unsupported data.
    """
    if not data:
        raise ImageError("empty file", source=source)
    with warnings.catch_warnings():
        # Our own limit replaces Pillow's global one (whose warning would be an error in tests).
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        # Pillow warns about damaged metadata it skips (corrupt EXIF, TIFF tags past the end of
        # the file); in untrusted bytes that is expected, and the outcome says all that matters.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        try:
            # Only the formats we document: Pillow would otherwise also try EPS (Ghostscript),
            # PSD, ICO and others, each more parser surface for hostile uploads.
            with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageTooLargeError(
                        width * height, max_pixels, size=(width, height), source=source
                    )
                if width < 1 or height < 1:
                    raise ImageError(f"image has no pixels ({width}x{height})", source=source)
                img.load()
                oriented = ImageOps.exif_transpose(img)
                return _to_bgr(oriented, source)
        except ImageError:
            raise
        except UnidentifiedImageError:
            raise ImageError("not an image (unrecognised format)", source=source) from None
        except Image.DecompressionBombError as exc:
            # Pillow's own bomb guard fires inside open(), before our check sees the size.
            declared = re.search(r"\((\d+) pixels\)", str(exc))
            pixels = int(declared.group(1)) if declared else max_pixels + 1
            raise ImageTooLargeError(pixels, max_pixels, source=source) from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise ImageError(f"corrupt or truncated image ({exc})", source=source) from None


def read_image(path: Path | str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> BGRImage:
    """Read and decode an image file; see :func:`decode_image`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageError("no such file", source=str(path)) from None
    except IsADirectoryError:
        raise ImageError("is a directory, not an image", source=str(path)) from None
    except OSError as exc:
        raise ImageError(f"cannot read ({exc.strerror})", source=str(path)) from None
    return decode_image(data, max_pixels=max_pixels, source=str(path))


def _to_bgr(img: Image.Image, source: str | None) -> BGRImage:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        grey = np.clip(array * (255.0 / peak), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        # Transparent pixels have arbitrary colour; composite on white as viewers show them.
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    if img.mode != "RGB":
        try:
            img = img.convert("RGB")
        except (ValueError, OSError) as exc:
            raise ImageError(f"unsupported colour mode {mode} ({exc})", source=source) from None
    rgb = np.asarray(img, dtype=np.uint8)
    return np.ascontiguousarray(rgb[:, :, ::-1])


def validate_array(image: NDArray[np.generic], *, source: str | None = None) -> BGRImage:
    """Check that an in-memory frame is an (H, W, 3) uint8 BGR image and return it contiguous."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"expected a numpy array, got {type(image).__name__}", source=source)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ImageError(f"expected an (H, W, 3) image, got shape {image.shape}", source=source)
    if image.dtype != np.uint8:
        raise ImageError(f"expected uint8 pixels, got {image.dtype}", source=source)
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ImageError(f"image has no pixels ({image.shape})", source=source)
    return np.ascontiguousarray(image[:, :, :3])
