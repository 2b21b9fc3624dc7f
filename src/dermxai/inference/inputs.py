"""Validation of untrusted images: bytes in, a plain RGB ``PIL.Image`` out, or one ``InvalidImage``.

The format is read from the content (never the file name), the size is limited in bytes before decoding
and in pixels before any pixel is decoded (so a decompression bomb is refused from its header), the EXIF
orientation is applied, the first frame of an animation is taken, and every mode is brought to 8-bit RGB:
transparency is composited onto white, 16-bit and 32-bit greyscale are rescaled (not clipped), CMYK and
palette images are converted.
"""

from __future__ import annotations

import io
import struct
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_BYTES = 20 * 1024 * 1024
"""Default limit on an upload's size: 20 MiB (a 50-megapixel phone JPEG is about 15 MiB)."""
MAX_PIXELS = 60_000_000
"""Default limit on width x height: a 60-megapixel RGB image decodes to 180 MB."""
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO")
"""Formats accepted, as Pillow names them (MPO: multi-picture JPEGs some phone cameras write)."""
BROKEN = (OSError, SyntaxError, ValueError, EOFError, struct.error)
"""What Pillow raises on a damaged or truncated file."""


class InvalidImage(ValueError):
    """An upload that cannot be used, with a message meant for the person who sent it.

    ``reason`` names the failure for callers that map it to a code (the HTTP API): ``empty``,
    ``too_many_bytes``, ``not_an_image``, ``unsupported_format``, ``too_many_pixels`` or ``corrupt``.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def read_image(data: bytes, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Validate and decode ``data`` into an upright 8-bit RGB image (first frame of an animation)."""
    if not data:
        raise InvalidImage("The file is empty.", "empty")
    if len(data) > max_bytes:
        raise InvalidImage(f"The file is {_mib(len(data))}; the limit is {_mib(max_bytes)}.", "too_many_bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is checked below
            image = Image.open(io.BytesIO(data))  # reads the header only
    except UnidentifiedImageError:
        raise InvalidImage(
            "This file is not an image (use a JPEG, PNG, WebP, GIF, BMP or TIFF photo).", "not_an_image"
        ) from None
    except Image.DecompressionBombError:
        raise InvalidImage(f"The image has too many pixels; the limit is {max_pixels:,}.", "too_many_pixels") from None
    except BROKEN as error:
        raise _corrupt(error) from None
    if image.format not in FORMATS:
        raise InvalidImage(
            f"{image.format} images are not supported (use JPEG, PNG, WebP, GIF, BMP or TIFF).", "unsupported_format"
        )
    width, height = image.size
    if width * height > max_pixels:
        raise InvalidImage(
            f"The image is {width}x{height} pixels; the limit is {max_pixels:,} pixels.", "too_many_pixels"
        )
    if width < 1 or height < 1:
        raise InvalidImage("The image has no pixels.", "corrupt")
    if image.format == "JPEG":
        _check_jpeg_stream(data)
    try:
        image.load()  # the first frame of an animation
        upright = ImageOps.exif_transpose(image)
    except BROKEN as error:
        raise _corrupt(error) from None
    return to_rgb(upright)


def _check_jpeg_stream(data: bytes) -> None:
    """Refuse a JPEG whose entropy-coded data are corrupt: Pillow decodes those silently into garbage.

    libjpeg-turbo (through simplejpeg, strict mode) reports "Corrupt JPEG data"; other complaints (colour
    spaces simplejpeg does not convert, for instance) are left to Pillow's decoder.
    """
    import simplejpeg

    try:
        simplejpeg.decode_jpeg(data, strict=True, fastdct=True, fastupsample=True)
    except ValueError as error:
        if "Corrupt JPEG data" in str(error) or "premature end" in str(error).lower():
            raise InvalidImage(f"The JPEG file is damaged ({error}).", "corrupt") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Bring any Pillow mode to 8-bit RGB without losing the picture (see the module docstring)."""
    if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        image = _to_8bit_grey(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _to_8bit_grey(image: Image.Image) -> Image.Image:
    """Rescale a high-bit-depth greyscale image to 0-255: by its container's range, not by clipping."""
    values = np.asarray(image, dtype=np.float64)
    peak = float(values.max(initial=0))
    full_scale = 1.0 if image.mode == "F" and peak <= 1 else 255.0 if peak <= 255 else 65535.0
    return Image.fromarray(np.clip(values / full_scale * 255 + 0.5, 0, 255).astype(np.uint8), "L")


def _corrupt(error: Exception) -> InvalidImage:
    return InvalidImage(f"The image file is damaged or incomplete and cannot be read ({error}).", "corrupt")


def _mib(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MiB"
