"""Figures of explanations (matplotlib, Agg): one image with its CAMs, and an images x models grid."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402

CMAP = "jet"
ALPHA = 0.45
PANEL = 3.0  # inches per panel


@dataclass(frozen=True)
class Panel:
    """One picture: the model-input image, optionally a CAM over it and the lesion mask outline."""

    image: np.ndarray
    title: str
    cam: np.ndarray | None = None
    mask: np.ndarray | None = None


def _draw(ax: plt.Axes, panel: Panel) -> None:
    ax.imshow(panel.image)
    if panel.cam is not None:
        ax.imshow(panel.cam, cmap=CMAP, alpha=ALPHA, vmin=0, vmax=1)
    if panel.mask is not None and panel.mask.any() and not panel.mask.all():
        ax.contour(panel.mask.astype(float), levels=[0.5], colors="white", linewidths=1.2)
    ax.set_title(panel.title, fontsize=9)
    ax.axis("off")


def panel_grid(rows: list[list[Panel]], out: str | Path, title: str = "", row_labels: list[str] | None = None) -> Path:
    """Draw panels row by row with one shared CAM colour bar and save a PNG."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    height, width = rows[0][0].image.shape[:2]
    aspect = height / width
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(PANEL * n_cols + 0.8, PANEL * aspect * n_rows + 0.9), squeeze=False
    )
    for r, row in enumerate(rows):
        for c in range(n_cols):
            if c < len(row):
                _draw(axes[r, c], row[c])
            else:
                axes[r, c].axis("off")
        if row_labels:
            axes[r, 0].text(
                -0.06,
                0.5,
                row_labels[r],
                transform=axes[r, 0].transAxes,
                rotation=90,
                ha="right",
                va="center",
                fontsize=9,
            )
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap=CMAP), ax=axes.ravel().tolist(), fraction=0.025, pad=0.02)
    bar.set_label("CAM relevance (scaled to [0, 1] per image)", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out
