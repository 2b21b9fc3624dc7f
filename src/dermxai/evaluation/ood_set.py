"""An offline evaluation set of images that are not dermoscopy of a single lesion, by kind.

Built from images that ship inside installed packages (scikit-image's sample data, matplotlib's sample
data), the project's own screenshots and rendered documents and charts, so it needs no internet. Each
source image gives several random crops at different scales (as a phone photo or screenshot would frame
it). Kinds: photographs, textures, documents, screenshots and charts, other medical images, skin without a
dermatoscope (faces). Used only to *measure* the out-of-distribution gate; its threshold is fitted on
validation dermoscopy alone.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw

SKIMAGE_FILES = {
    "photograph": [
        "astronaut.png",
        "coffee.png",
        "chelsea.png",
        "rocket.jpg",
        "motorcycle_left.png",
        "camera.png",
        "hubble_deep_field.jpg",
        "coins.png",
        "moon.png",
        "horse.png",
        "clock_motion.png",
    ],
    "texture": ["brick.png", "grass.png", "gravel.png", "color.png", "chessboard_RGB.png"],
    "document": ["page.png", "text.png", "logo.png"],
    "medical (not dermoscopy)": ["retina.jpg", "microaneurysms.png", "ihc.png", "cell.png", "phantom.png"],
}
SKIN_CROPS = {  # faces: skin photographed without a dermatoscope (fractions of width/height: left, top, right, bottom)
    "astronaut.png": (0.33, 0.05, 0.62, 0.42),
}
DOCUMENT_LINES = (
    "Invoice no. 2026-118",
    "Total due: 1,240.00 EUR",
    "Dear customer,",
    "Meeting notes",
    "Lorem ipsum dolor sit amet",
    "Page 3 of 12",
    "Patient information leaflet",
    "Terms and conditions",
)


def _skimage_dir() -> Path | None:
    try:
        import skimage
    except ImportError:
        return None
    return Path(skimage.__file__).parent / "data"


def _crops(image: Image.Image, rng: np.random.Generator, n: int) -> list[Image.Image]:
    """The whole image and ``n - 1`` random 4:3 crops of 35-90% of its shorter side."""
    image = image.convert("RGB")
    out = [image]
    w, h = image.size
    for _ in range(n - 1):
        side = int(min(w, h) * rng.uniform(0.35, 0.9))
        cw, ch = min(w, int(side * 4 / 3)), side
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        out.append(image.crop((left, top, left + cw, top + ch)))
    return out


def _document(rng: np.random.Generator) -> Image.Image:
    image = Image.new("RGB", (400, 300), tuple(int(v) for v in rng.integers(225, 256, 3)))
    draw = ImageDraw.Draw(image)
    for line in range(int(rng.integers(4, 11))):
        draw.text(
            (int(rng.integers(8, 60)), 12 + 26 * line),
            str(rng.choice(DOCUMENT_LINES)),
            fill=tuple(int(v) for v in rng.integers(0, 90, 3)),
            font_size=float(rng.uniform(13, 22)),
        )
    return image


def _chart(rng: np.random.Generator) -> Image.Image:
    """A rendered plot, like a screenshot of a report."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(4, 3), dpi=100)
    kind = int(rng.integers(0, 3))
    x = np.arange(12)
    if kind == 0:
        axes.plot(x, np.cumsum(rng.normal(size=12)), marker="o")
    elif kind == 1:
        axes.bar(x, rng.uniform(1, 10, 12), color=matplotlib.colormaps["tab10"](int(rng.integers(0, 10))))
    else:
        axes.imshow(rng.normal(size=(20, 20)), cmap=str(rng.choice(["viridis", "magma", "gray"])))
    axes.set_title("Quarterly figures")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return Image.open(buffer).convert("RGB")


def non_dermoscopic_set(
    crops_per_image: int = 6, seed: int = 0, screenshots: list[Path] | None = None
) -> dict[str, list[Image.Image]]:
    """Images by kind; kinds whose sources are missing (scikit-image not installed) are left out."""
    rng = np.random.default_rng(seed)
    kinds: dict[str, list[Image.Image]] = {}
    folder = _skimage_dir()
    if folder is not None and folder.is_dir():
        for kind, names in SKIMAGE_FILES.items():
            for name in names:
                if (folder / name).is_file():
                    with Image.open(folder / name) as image:
                        kinds.setdefault(kind, []).extend(_crops(image, rng, crops_per_image))
        for name, (left, top, right, bottom) in SKIN_CROPS.items():
            with Image.open(folder / name) as image:
                w, h = image.size
                face = image.crop((int(left * w), int(top * h), int(right * w), int(bottom * h)))
                kinds.setdefault("skin without dermatoscope", []).extend(_crops(face, rng, crops_per_image))
        if (folder / "lfw_subset.npy").is_file():
            faces = np.load(folder / "lfw_subset.npy")[:100:4]  # 25 grey 25x25 faces
            kinds.setdefault("skin without dermatoscope", []).extend(
                Image.fromarray(np.uint8(face * 255)).convert("RGB").resize((100, 100)) for face in faces
            )
    with Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg") as photo:
        photo = photo.convert("RGB")
        kinds.setdefault("photograph", []).extend(_crops(photo, rng, crops_per_image))
        w, h = photo.size
        face = photo.crop((int(0.3 * w), int(0.08 * h), int(0.72 * w), int(0.5 * h)))
        kinds.setdefault("skin without dermatoscope", []).extend(_crops(face, rng, crops_per_image))
    kinds.setdefault("document", []).extend(_document(rng) for _ in range(3 * crops_per_image))
    shots = [_chart(rng) for _ in range(3 * crops_per_image)]
    for path in screenshots or []:
        with Image.open(path) as image:
            shots.extend(_crops(image, rng, crops_per_image))
    kinds["screenshot or chart"] = shots
    return kinds
