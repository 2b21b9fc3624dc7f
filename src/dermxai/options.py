"""Command-line options shared by several commands, defined once (typer annotations; imported by every CLI module)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DataOption = Annotated[Path, typer.Option("--data", help="Dataset folder (HAM10000 layout) or label CSV.")]
ImagesOption = Annotated[Path | None, typer.Option("--images", help="Image folder, when --data is a CSV elsewhere.")]
ModelOption = Annotated[
    Path | None, typer.Option("--model", help="Model bundle (default: $DERMXAI_MODEL or the installed default model).")
]
BundleOption = Annotated[Path, typer.Option("--model", help="Model bundle folder.")]
HashOption = Annotated[
    int, typer.Option("--hash-distance", help="pHash distance at or below which images are near-duplicates.")
]
ReviewedOption = Annotated[
    Path | None,
    typer.Option("--duplicates", help="Reviewed near-duplicate pairs CSV (default: the HAM10000 one shipped)."),
]
