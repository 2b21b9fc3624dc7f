"""Files installed with the package: the default model bundle and the six example images.

They live inside the package so that a non-editable ``pip install`` (a wheel, a Space, a container) finds
them; the repository's ``examples`` is a link to the same folder.
"""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent
DEFAULT_MODEL = ASSETS / "default_model"
EXAMPLES = ASSETS / "examples"


def example_images() -> list[Path]:
    """The example images, sorted by name (``<dx>_<image id>.jpg``)."""
    return sorted(EXAMPLES.glob("*.jpg"))
