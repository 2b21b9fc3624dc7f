"""The ``explain``, ``explain-compare`` and ``explain-score`` commands (registered in ``dermxai.cli``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperCommand

from dermxai.options import ModelOption

METHOD_HELP = "CAM method: gradcam, gradcam++, hirescam, layercam, xgradcam, eigencam or scorecam."
MethodOption = Annotated[str | None, typer.Option("--method", help=METHOD_HELP + " Default: the model's.")]
PER_ROW = 4  # panels per row of an --all-methods figure


class ManyValues(TyperCommand):
    """Let ``--models A B C`` stand for ``--models A --models B --models C`` (likewise ``--images``)."""

    many = ("--models", "--images")

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        expanded, current = [], None
        for token in args:
            if token.startswith("-"):
                current = token if token in self.many else None
                expanded.append(token)
            elif current and expanded[-1] != current:
                expanded += [current, token]
            else:
                expanded.append(token)
        return super().parse_args(ctx, expanded)


def _explain_file(predictor, image: Path, method: str, target_class: str | None):
    """(model-input pixels, Explanation) of an image file, through the shared Predictor (validated input)."""
    from dermxai.preprocessing import resize_cover

    if not image.is_file():
        raise FileNotFoundError(f"{image}: no such image file")
    explanation = predictor.explain(image.read_bytes(), method, target_class)
    return resize_cover(explanation.image, predictor.config.size), explanation


def _caption(name: str, explanation) -> str:
    """``name: class (p=0.83)``, the probability being the calibrated one of the explained class."""
    p = explanation.prediction.probabilities[explanation.target_class]
    return f"{name}: {explanation.target_class} (p={p:.2f})"


def explain_command(
    image: Annotated[Path, typer.Argument(help="Image file (JPEG, PNG, WebP, ...).")],
    out: Annotated[Path, typer.Option("--out", help="PNG figure to write.")],
    model: ModelOption = None,
    method: MethodOption = None,
    class_name: Annotated[
        str | None, typer.Option("--class", help="Class to explain, e.g. mel (default: the predicted one).")
    ] = None,
    all_methods: Annotated[bool, typer.Option("--all-methods", help="One panel per CAM method.")] = False,
    mask: Annotated[
        Path | None,
        typer.Option("--mask", help="Lesion mask to outline (default: <id>_segmentation.png beside the image)."),
    ] = None,
) -> None:
    """Draw the image, its CAM overlay and the predicted class with its calibrated probability."""
    from dermxai.explain.figures import Panel, panel_grid
    from dermxai.explain.io import mask_next_to, read_mask
    from dermxai.inference.bundles import default_bundle
    from dermxai.inference.cams import METHODS, check_method
    from dermxai.inference.predictor import Predictor

    predictor = Predictor(model or default_bundle())
    methods = list(METHODS) if all_methods else [check_method(method or predictor.config.cam_method)]
    mask = mask or mask_next_to(image)
    outline = read_mask(mask, predictor.config.size) if mask else None
    panels = []
    for m in methods:
        pixels, explanation = _explain_file(predictor, image, m, class_name)
        panels.append(Panel(pixels, _caption(m, explanation), explanation.cam, outline))
    panels.insert(0, Panel(pixels, "input" + (" (mask outlined)" if outline is not None else ""), mask=outline))
    top = explanation.prediction
    title = (
        f"{image.name} - {predictor.config.arch}: predicted {top.top_class}, calibrated probability "
        f"{top.confidence:.2f} (T={predictor.config.temperature:.2f})"
    )
    rows = [panels[i : i + PER_ROW] for i in range(0, len(panels), PER_ROW)]
    typer.echo(f"{top.top_class} {top.confidence:.3f} -> {panel_grid(rows, out, title)}")


def explain_compare_command(
    models: Annotated[list[Path], typer.Option("--models", help="Model bundles, one column each (--models A B C).")],
    images: Annotated[list[Path], typer.Option("--images", help="Images, one row each (--images X Y Z).")],
    out: Annotated[Path, typer.Option("--out", help="PNG figure to write.")],
    data: Annotated[
        Path | None, typer.Option("--data", help="Dataset folder to find lesion masks in (by image id).")
    ] = None,
    method: MethodOption = None,
) -> None:
    """Grid of CAMs: rows are images, columns are models, lesion mask outlined where one exists."""
    from dermxai.explain.figures import Panel, panel_grid
    from dermxai.explain.io import image_id_of, mask_next_to, read_mask
    from dermxai.inference.cams import check_method
    from dermxai.inference.predictor import Predictor

    if method:
        check_method(method)
    masks: dict[str, Path] = {}
    if data is not None:
        from dermxai.data.index import load_dataset

        table = load_dataset(data)
        masks = dict(zip(table["image_id"], table["mask_path"].where(table["mask_path"].notna(), None)))
    predictors = [(_label(path), Predictor(path)) for path in models]
    rows, outlined = [], 0
    for image in images:
        mask = masks.get(image_id_of(image)) or mask_next_to(image)
        outlined += mask is not None
        row = []
        for n, (label, predictor) in enumerate(predictors):
            pixels, explanation = _explain_file(predictor, image, method, None)
            outline = read_mask(mask, predictor.config.size) if mask else None
            if n == 0:
                row.append(Panel(pixels, image.stem, mask=outline))
            row.append(Panel(pixels, _caption(label, explanation), explanation.cam, outline))
        rows.append(row)
    shown = method or "each model's CAM method"
    title = f"{shown} of the predicted class (calibrated probability); white line: lesion mask"
    figure = panel_grid(rows, out, title)
    typer.echo(f"{len(images)} image(s) x {len(models)} model(s), lesion masks for {outlined} -> {figure}")


def _label(bundle: Path) -> str:
    """A column title: the bundle folder's name, or its run folder's for ``RUN/bundle``."""
    bundle = bundle.resolve()
    return bundle.parent.name if bundle.name == "bundle" else bundle.name


def explain_score_command(
    data: Annotated[Path, typer.Option("--data", help="Dataset folder (HAM10000 layout, with masks).")],
    split: Annotated[Path, typer.Option("--split", help="Split CSV (image_id,lesion_group,split).")],
    out: Annotated[
        Path,
        typer.Option("--out", help="Folder for explain_metrics.json, explain_report.md and explain_per_image.csv."),
    ],
    model: ModelOption = None,
    subset: Annotated[str, typer.Option("--subset", help="train, val or test.")] = "test",
    method: Annotated[
        list[str] | None,
        typer.Option(
            "--method",
            help="CAM method, repeatable (--method gradcam --method layercam); the first is the headline "
            "(default: the model's).",
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="At most this many images (seeded random order).")
    ] = None,
    slow_limit: Annotated[
        int,
        typer.Option("--scorecam-limit", help="At most this many images for scorecam (a forward pass per channel)."),
    ] = 10,
    steps: Annotated[int, typer.Option("--steps", help="Deletion/insertion steps.")] = 16,
    bootstrap: Annotated[int, typer.Option("--bootstrap", help="Bootstrap resamples for the 95% CIs.")] = 1000,
    seed: int = 0,
    layer: Annotated[
        str | None,
        typer.Option("--layer", help="CAM target layer (module path, e.g. blocks.5; default: the bundle's)."),
    ] = None,
    localisation_only: Annotated[
        bool,
        typer.Option(
            "--localisation-only",
            help="Score in-mask energy and pointing game only (no deletion/insertion, stability).",
        ),
    ] = False,
) -> None:
    """Score CAMs against lesion masks (in-mask energy, pointing game, deletion/insertion, stability) vs chance."""
    from dermxai.explain.evaluate import fmt, score_explanations
    from dermxai.inference.bundles import default_bundle
    from dermxai.models.bundle import read_config

    if limit is not None and limit < 1:
        raise ValueError("--limit must be at least 1")
    bundle = model or default_bundle()
    result = score_explanations(
        bundle,
        data,
        split,
        subset,
        method or [read_config(bundle).cam_method],
        out,
        limit=limit,
        slow_limit=slow_limit,
        steps=steps,
        n_boot=bootstrap,
        seed=seed,
        progress=lambda done, total: typer.echo(f"  {done}/{total} images", err=True),
        layer=layer,
        faithfulness=not localisation_only,
    )
    gaussian = result["baselines"]["gaussian"]
    typer.echo(
        f"{result['method']} on {result['n_images']} {subset} image(s): in-mask energy "
        f"{fmt(result['in_mask_energy'])} (Gaussian {fmt(gaussian['in_mask_energy'])}), pointing game "
        f"{fmt(result['pointing_game'])} (Gaussian {fmt(gaussian['pointing_game'])}) -> {out}"
    )
