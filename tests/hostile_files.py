"""Small files that decode to gigabytes, and what ``read_image`` must answer to each (shared by the memory
test and ``benchmarks/bench_hostile_rss.py``)."""

from __future__ import annotations

import io

from PIL import Image

SIDE = 7745  # 59.98 MP: just under MAX_PIXELS, so only the decode budget can stop it


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


CASES = {
    "float TIFF, deflate, 60 MP": (
        lambda: encoded(Image.new("F", (SIDE, SIDE)), "TIFF", compression="tiff_deflate"),
        "refused too_many_pixels",
    ),
    "16-bit grey PNG, 60 MP": (lambda: encoded(Image.new("I;16", (SIDE, SIDE)), "PNG"), "refused too_many_pixels"),
    "RGBA PNG, 60 MP": (lambda: encoded(Image.new("RGBA", (SIDE, SIDE)), "PNG"), "refused too_many_pixels"),
    "RGB JPEG, 60 MP": (
        lambda: encoded(Image.merge("RGB", [Image.linear_gradient("L").resize((9000, 6600))] * 3), "JPEG", quality=90),
        "ok 1125x825",
    ),
    "progressive RGB JPEG 4:4:4, 60 MP": (
        lambda: encoded(
            Image.merge("RGB", [Image.linear_gradient("L").resize((9000, 6600))] * 3),
            "JPEG",
            quality=90,
            progressive=True,
            subsampling=0,
        ),
        "ok 1125x825",
    ),
    "RGBA PNG, 23 MP (largest accepted)": (lambda: encoded(Image.new("RGBA", (4800, 4800)), "PNG"), "ok 1200x1200"),
    "float TIFF, 23 MP (largest accepted)": (
        lambda: encoded(Image.new("F", (4800, 4800)), "TIFF", compression="tiff_deflate"),
        "ok 1200x1200",
    ),
}
