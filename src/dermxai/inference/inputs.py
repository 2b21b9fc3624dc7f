"""Validation of untrusted images: bytes in, a plain RGB ``PIL.Image`` out, or one ``InvalidImage``.

The format is read from the content (never the file name), the size is limited in bytes before decoding
and in pixels before any pixel is decoded (so a decompression bomb is refused from its header), the EXIF
orientation is applied, the first frame of an animation is taken, and every mode is brought to 8-bit RGB:
transparency is composited onto white, 16-bit and 32-bit greyscale are rescaled (not clipped), CMYK and
palette images are converted.

Decoding is bounded by what the header says, so no small file can cost gigabytes: a JPEG is decoded at
the smallest DCT scale whose longest side still reaches :data:`DECODE_SIDE` (libjpeg's draft mode; a
progressive JPEG still holds its full-size coefficients, 2 bytes a pixel per channel, and is costed so); any
other format is decoded at full size only when that takes at most :data:`MAX_DECODED_BYTES` (Pillow's
storage for its mode: 1 byte a pixel for L/P, 2 for 16-bit, 4 for everything else), then reduced to
:data:`DECODE_SIDE` before any conversion. At most one such large decode runs at a time, and the memory is
handed back to the system after it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import math
import struct
import threading
import warnings
from contextlib import nullcontext

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_BYTES = 20 * 1024 * 1024
"""Default limit on an upload's size: 20 MiB (a 50-megapixel phone JPEG is about 15 MiB)."""
MAX_PIXELS = 60_000_000
"""Default limit on width x height: a 60-megapixel RGB image decodes to 180 MB."""
DECODE_SIDE = 1024
"""Longest side an upload is decoded or reduced to (the model sees 200 pixels; heatmaps keep 1024)."""
MAX_DECODED_BYTES = 96 * 1024 * 1024
"""Most memory a full-size decode may take (a non-JPEG): e.g. 24 MP RGB(A), 48 MP 16-bit grey, 96 MP grey."""
LARGE_DECODE_BYTES = 16 * 1024 * 1024
"""Decodes above this size take turns (one at a time); smaller ones run side by side."""
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
    scale = min(1.0, DECODE_SIDE / max(width, height))
    wanted = (max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale)))
    jpeg = image.format in ("JPEG", "MPO")
    if jpeg:
        # a progressive JPEG keeps every DCT coefficient of the full image (2 bytes each) whatever the scale
        full_cost = width * height * len(image.getbands()) * 2 if image.info.get("progressive") else 0
        image.draft(image.mode, wanted)  # libjpeg decodes at 1/2, 1/4 or 1/8 scale, still >= wanted
        cost = max(full_cost, math.prod(image.size) * 4)
    else:
        cost = width * height * _bytes_per_pixel(image.mode)
        if cost > MAX_DECODED_BYTES:
            raise InvalidImage(
                f"The {image.format} image is {width}x{height} pixels in mode {image.mode}: decoding it would "
                f"take {_mib(cost)}, the limit is {_mib(MAX_DECODED_BYTES)} (send a JPEG, or a smaller image).",
                "too_many_pixels",
            )
    try:
        with _LARGE_DECODES if cost > LARGE_DECODE_BYTES else nullcontext():
            if jpeg:
                _check_jpeg_stream(data, wanted)
            image.load()  # the first frame of an animation
            orientation = _orientation(image)  # after the decode: a PNG's getexif() would decode it outside the bound
            small = _reduce(image, wanted)
            del image
            _release_memory()
        upright = small.transpose(_TRANSPOSE[orientation]) if orientation in _TRANSPOSE else small
    except InvalidImage:
        raise
    except BROKEN as error:
        raise _corrupt(error) from None
    return to_rgb(upright)


_LARGE_DECODES = threading.BoundedSemaphore(1)
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
"""EXIF orientation -> the transpose that makes the image upright (as ``ImageOps.exif_transpose``)."""


def _bytes_per_pixel(mode: str) -> int:
    """Bytes Pillow stores per pixel of ``mode``."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1: upright), read before decoding; a damaged EXIF block counts as upright."""
    try:
        return int(image.getexif().get(0x0112, 1))
    except BROKEN:
        return 1


def _reduce(image: Image.Image, wanted: tuple[int, int]) -> Image.Image:
    """``image`` shrunk to about ``wanted`` (box average where Pillow has it for the mode, else nearest)."""
    factor = max(1, image.size[0] // wanted[0], image.size[1] // wanted[1])
    if factor == 1:
        return image
    try:
        return image.reduce(factor)
    except ValueError:  # palette and 16-bit modes: no box reduce
        return image.resize((image.size[0] // factor, image.size[1] // factor), Image.Resampling.NEAREST)


def _release_memory() -> None:
    """Return freed heap memory to the system (glibc keeps it otherwise); a no-op where there is no glibc."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _load_libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _load_libc()


def _check_jpeg_stream(data: bytes, wanted: tuple[int, int]) -> None:
    """Refuse a JPEG whose entropy-coded data are corrupt: Pillow decodes those silently into garbage.

    libjpeg-turbo (through simplejpeg, strict mode) reports "Corrupt JPEG data"; other complaints (colour
    spaces simplejpeg does not convert, for instance) are left to Pillow's decoder. It reads every
    coefficient but decodes at the reduced scale, so the check costs no more memory than the decode.
    """
    import simplejpeg

    try:
        simplejpeg.decode_jpeg(
            data, strict=True, fastdct=True, fastupsample=True, min_width=wanted[0], min_height=wanted[1]
        )
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
    values = np.asarray(image, dtype=np.float32)
    peak = float(values.max(initial=0))
    full_scale = 1.0 if image.mode == "F" and peak <= 1 else 255.0 if peak <= 255 else 65535.0
    return Image.fromarray(np.clip(values * np.float32(255 / full_scale) + 0.5, 0, 255).astype(np.uint8), "L")


def _corrupt(error: Exception) -> InvalidImage:
    return InvalidImage(f"The image file is damaged or incomplete and cannot be read ({error}).", "corrupt")


def _mib(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MiB"
