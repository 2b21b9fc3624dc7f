"""``dermxai evaluate``, ``calibrate``, ``gate``, ``compare``, ``leak`` and ``export``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from dermxai.app.commands import rate_table
from dermxai.cli.base import _command_line, app, clear_errors, console
from dermxai.options import BundleOption, DataOption, ImagesOption
from dermxai.training.config import TrainConfig


@app.command("evaluate")
@clear_errors
def evaluate_command(
    ctx: typer.Context,
    model: BundleOption,
    out: Annotated[Path, typer.Option("--out", help="Folder for metrics.json, predictions.csv, report.md, plots.")],
    data: Annotated[Path | None, typer.Option("--data", help="Dataset folder (with --split and --subset).")] = None,
    split: Annotated[Path | None, typer.Option("--split", help="Split CSV.")] = None,
    subset: Annotated[str, typer.Option(help="Split subset to evaluate: test (once per model) or val.")] = "test",
    images: ImagesOption = None,
    labels: Annotated[
        Path | None, typer.Option("--labels", help="ISIC 2018 Task 3 or image_id,dx CSV (with --images).")
    ] = None,
    tta: Annotated[bool, typer.Option("--tta", help="Average over flips (and 90-degree turns when square).")] = False,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals.")] = 1000,
    seed: int = 0,
    batch_size: int = 64,
    cache: Annotated[
        Path | None, typer.Option(help="Image cache folder (default: decode the images directly).")
    ] = None,
    allow_leaky_split: Annotated[
        bool, typer.Option(help="Evaluate on a split whose subsets share lesions or images (the report says so).")
    ] = False,
) -> None:
    """Score a bundle: metrics with lesion-bootstrap CIs, calibration, operating point, subgroups, report."""
    from dermxai.data.audit import leak_finding
    from dermxai.data.splits import read_split
    from dermxai.evaluation.evaluate import evaluate, from_labels, from_split
    from dermxai.models.bundle import validate_bundle

    if bootstrap < 1:
        raise ValueError(f"--bootstrap must be at least 1, not {bootstrap}")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, not {batch_size}")
    validate_bundle(model)  # a broken bundle fails now, before any image is read
    leak = None
    if labels is not None and data is None and split is None:
        eval_set = from_labels(labels, images)
    elif data is not None and split is not None and labels is None:
        eval_set = from_split(data, split, subset, images)
        leak = leak_finding(eval_set.full_table, read_split(split, eval_set.full_table))
        if leak and not allow_leaky_split:
            raise ValueError(f"{split} is a leaky split: {leak}; refused (pass --allow-leaky-split to use it)")
    else:
        raise ValueError("give either --data DIR --split SPLIT.csv [--subset test] or --images DIR --labels CSV")
    metrics = evaluate(
        model,
        eval_set,
        out,
        tta=tta,
        n_bootstrap=bootstrap,
        seed=seed,
        batch_size=batch_size,
        cache_dir=cache,
        command=_command_line(ctx),
        leak=leak,
    )
    from dermxai.evaluation.report import with_ci

    console.print(
        f"{metrics['n']} images: accuracy {with_ci(metrics, 'accuracy')}, balanced accuracy "
        f"{with_ci(metrics, 'balanced_accuracy')}, macro AUC {with_ci(metrics, 'macro_auc')}, "
        f"ECE {with_ci(metrics, 'ece')} -> {out}/report.md"
    )


@app.command("calibrate")
@clear_errors
def calibrate_command(
    model: Annotated[Path, typer.Option("--model", help="Model bundle folder (its config.json is updated).")],
    data: DataOption,
    split: Annotated[Path, typer.Option("--split", help="Split CSV; only its val subset is used.")],
    images: ImagesOption = None,
    target_sensitivity: Annotated[
        float, typer.Option(help="Malignant sensitivity the threshold must reach on val.")
    ] = 0.90,
    batch_size: int = 64,
    cache: Annotated[
        Path | None, typer.Option(help="Image cache folder (default: decode the images directly).")
    ] = None,
) -> None:
    """Fit temperature scaling and the malignant threshold on validation; store them in the bundle."""
    from dermxai.evaluation.calibration import calibrate_bundle, calibration_warning

    config = calibrate_bundle(
        model, data, split, target_sensitivity, images=images, cache_dir=cache, batch_size=batch_size
    )
    c = config.calibration
    if "tau" in c:
        by_tau = ", ".join(f"{t}: {v:.3f}" for t, v in c["val_bacc_by_tau"].items())
        console.print(f"decision rule: logit adjustment tau {c['tau']:g} (val balanced accuracy by tau: {by_tau})")
    warning = calibration_warning(c)
    console.print(
        f"temperature {config.temperature:.3f}{' and class bias' if config.probability_bias else ''} "
        f"(val ECE {c['ece_before']:.3f} -> {c['ece_after']:.3f}, class-balanced {c['balanced_ece_after']:.3f}, "
        f"label most probable {c.get('label_is_most_probable', 1):.0%}, "
        f"NLL {c['nll_before']:.3f} -> {c['nll_after']:.3f}); malignant threshold "
        f"{config.malignant_threshold:.3f} (val sensitivity {c['val_sensitivity']:.3f}, "
        f"specificity {c['val_specificity']:.3f}) -> {model}/config.json"
    )
    if warning:
        console.print(f"[yellow]{warning}[/] (added to {model}/MODEL_CARD.md)", highlight=False)


@app.command("gate")
@clear_errors
def gate_command(
    model: BundleOption,
    data: DataOption,
    split: Annotated[
        Path,
        typer.Option(
            "--split",
            help="Split CSV: fitted on train (+ variants) and val, measured on test (unless --validation-only).",
        ),
    ],
    images: ImagesOption = None,
    write: Annotated[
        bool, typer.Option("--write", help="Store the gate in the bundle (ood_gate.npz, config.json).")
    ] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Write the measured report as JSON here.")] = None,
    crops: Annotated[int, typer.Option(help="Crops per source image of the non-dermoscopic set.")] = 6,
    thresholds_only: Annotated[
        bool,
        typer.Option(
            "--thresholds-only",
            help="Keep the bundle's gate as fitted on train; refit only its thresholds on val (minutes, not an hour).",
        ),
    ] = False,
    measure_only: Annotated[
        bool,
        typer.Option("--measure-only", help="Fit nothing: measure the bundle's gate as served (ONNX when it has one)."),
    ] = False,
    validation_only: Annotated[
        bool,
        typer.Option(
            "--validation-only",
            help="Do not open the test split (for a candidate not yet chosen); the AUROC is then validation's.",
        ),
    ] = False,
) -> None:
    """Fit the out-of-distribution gate on train/val and measure what it withholds (test, shifted, non-dermoscopic)."""
    from dermxai.evaluation.gate import fit_bundle_gate, fit_bundle_thresholds, gate_report
    from dermxai.evaluation.ood_set import non_dermoscopic_set
    from dermxai.inference.predictor import Predictor
    from dermxai.models.bundle import update_config

    if measure_only and (write or thresholds_only):
        raise ValueError("--measure-only fits nothing: it cannot be combined with --write or --thresholds-only")
    predictor = Predictor(model)  # fitted and measured on what is served (the ONNX graph when current, int8 or not)
    if measure_only:
        if predictor.gate is None:
            raise ValueError(f"{model} has no gate to measure: run `dermxai gate --write` first")
        gate, record = predictor.gate, dict(predictor.config.ood_gate or {})
    elif thresholds_only:
        if predictor.gate is None:
            raise ValueError(f"{model} has no gate to refit: run `dermxai gate` without --thresholds-only")
        gate, refitted = fit_bundle_thresholds(predictor, predictor.gate, data, split, images=images)
        record = {**(predictor.config.ood_gate or {}), **refitted, "gate_layer": predictor.config.feature_layer()}
    else:
        gate, record = fit_bundle_gate(predictor, data, split, images=images)
    measured = gate_report(
        predictor, gate, data, split, non_dermoscopic_set(crops), images=images, read_test=not validation_only
    )
    report = {"gate": record, **measured}
    inside = "val" if validation_only else "test"
    if write:
        gate.save(model)
        update_config(model, gate_layer=record["gate_layer"], ood_gate=record)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
    thresholds = (
        f"threshold {gate.threshold:.3f}"
        if gate.class_thresholds is None
        else f"thresholds {gate.class_thresholds.min():.3f}-{gate.class_thresholds.max():.3f} by answered class"
    )
    title = f"Out-of-distribution gate of {model} ({thresholds}, {1 - report['withheld']['dermoscopy: val split']['share']:.1%} of val accepted)"
    rates = {name: (row["n"], row["share"]) for name, row in report["withheld"].items()}
    console.print(rate_table(title, "withheld", rates))
    for subset, rows in report["withheld_by_class"].items():
        shares = {name: (row["n"], row["share"]) for name, row in rows.items() if isinstance(row, dict)}
        console.print(
            rate_table(
                f"Withheld by diagnosis, {subset} (worst {rows['worst_over_all']}x the overall share)",
                "withheld",
                shares,
            )
        )
    console.print(
        f"AUROC, {inside} dermoscopy vs not dermoscopy: {report[f'auroc_{inside}_vs_not_dermoscopy']:.3f}"
        + (f"; gate written to {model}" if write else "")
    )


@app.command("index")
@clear_errors
def index_command(
    model: BundleOption,
    data: DataOption,
    split: Annotated[Path, typer.Option("--split", help="Split CSV: indexed on train, chosen and measured on val.")],
    images: ImagesOption = None,
) -> None:
    """Index the training images for similar confirmed cases (features, diagnoses, thumbnails) in the bundle."""
    from dermxai.evaluation.similar_cases import fit_bundle_index
    from dermxai.inference.predictor import Predictor
    from dermxai.models.bundle import update_config

    predictor = Predictor(model)  # the features that are served (the ONNX graph when current, int8 or not)
    index, record = fit_bundle_index(predictor, data, split, images=images, folder=model)
    index.save(model)
    update_config(model, similar_cases=record)
    console.print(
        f"Indexed {record['n_train']} training images in {model} ({record['components']} axes, chosen on val). "
        f"Validation balanced accuracy of the {record['k']} nearest lesions' vote: "
        f"{record['val_knn_balanced_accuracy']:.3f}; a query takes {record['query_ms']:.2f} ms.",
        highlight=False,
    )


@app.command("shifted")
@clear_errors
def shifted_command(
    model: BundleOption,
    data: DataOption,
    split: Annotated[Path, typer.Option("--split", help="Split CSV: its validation images are shifted.")],
    images: ImagesOption = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write the report as JSON here.")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N validation images (a quick look).")] = None,
) -> None:
    """Balanced accuracy of the served answer on validation images under acquisition shifts (resampling, JPEG, ...)."""
    from dermxai.evaluation.shifts import shifted_report
    from dermxai.inference.predictor import Predictor

    report = shifted_report(Predictor(model), data, split, images=images, limit=limit)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
    rates = {name: (report["n"], row["balanced_accuracy"]) for name, row in report["shifts"].items()}
    console.print(rate_table(f"Shifted validation of {model} (served label)", "balanced accuracy", rates))


@app.command("compare")
@clear_errors
def compare_command(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run folders (with metrics.json and/or bundle/).")],
    out: Annotated[Path, typer.Option("--out", help="Markdown table to write.")],
) -> None:
    """One table of several evaluated models: the source study's columns plus CIs, calibration, provenance."""
    from dermxai.evaluation.compare import compare_table

    text = compare_table(run_dirs)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    console.print(text, markup=False, highlight=False)


@app.command("leak")
@clear_errors
def leak_command(
    data: DataOption,
    out: Annotated[Path, typer.Option("--out", help="Folder for every arm's data, run, evaluation and leak.md.")],
    arch: str = "efficientnet_lite0",
    weights: str = "imagenet",
    height: int = 75,
    width: int = 100,
    epochs: int = 15,
    batch_size: int = 64,
    seed: int = 0,
    arms: Annotated[
        str, typer.Option(help="Comma-separated arms: lesion, image, oversample_plain, oversample_augmented.")
    ] = "lesion,image,oversample_plain,oversample_augmented",
    limit_train_batches: Annotated[
        float, typer.Option(help="Fraction (<=1) or number (>1) of batches per epoch (default: the honest arm's).")
    ] = 1.0,
    image_split: Annotated[
        Path | None, typer.Option(help="Existing image-level split (default: made with --seed).")
    ] = None,
    lesion_split: Annotated[
        Path | None, typer.Option(help="Existing lesion-grouped split (default: made with --seed).")
    ] = None,
    bootstrap: int = 1000,
    accelerator: str = "auto",
    progress: bool = True,
) -> None:
    """Train one recipe on the honest split and on each leaky one; show what each mistake adds (leak.md)."""
    from dermxai.evaluation.leak import LEAK_RECIPE, run_leak

    config = TrainConfig.from_dict(
        {
            **LEAK_RECIPE,
            "arch": arch,
            "weights": weights,
            "height": height,
            "width": width,
            "epochs": epochs,
            "batch_size": batch_size,
            "seed": seed,
            "limit_train_batches": int(limit_train_batches) if limit_train_batches > 1 else limit_train_batches,
        }
    )
    run_leak(
        data,
        out,
        config,
        splits={"image": image_split, "lesion": lesion_split},
        arms=[arm.strip() for arm in arms.split(",") if arm.strip()],
        n_bootstrap=bootstrap,
        accelerator=accelerator,
        progress=progress,
    )
    console.print((out / "leak.md").read_text(), markup=False, highlight=False)


@app.command("export")
@clear_errors
def export_command(
    model: BundleOption,
    onnx: Annotated[
        Path | None, typer.Option("--onnx", help="ONNX file to write (default: BUNDLE/model.onnx, used by serving).")
    ] = None,
    check_images: Annotated[
        Path | None,
        typer.Option("--check-images", help="Images for the parity check (default: the installed example images)."),
    ] = None,
    opset: int = 18,
    int8: Annotated[
        bool,
        typer.Option(
            "--int8",
            help="Then quantize the graph to int8 (ranges from training images), kept only if it answers as "
            "float32 does on validation. Needs --data and --split, and a CPU whose int8 kernels are exact "
            "(x86 with VNNI, or not x86).",
        ),
    ] = False,
    data: Annotated[Path | None, typer.Option("--data", help="Dataset folder, for --int8.")] = None,
    split: Annotated[Path | None, typer.Option("--split", help="Split CSV, for --int8 (train and val).")] = None,
    images: ImagesOption = None,
    min_agreement: Annotated[
        float, typer.Option(help="--int8: share of val images whose served label must not change.")
    ] = 0.9,
    max_drop: Annotated[float, typer.Option(help="--int8: largest allowed fall of val balanced accuracy.")] = 0.01,
) -> None:
    """Export a bundle to ONNX (dynamic batch) after checking ONNX Runtime matches PyTorch within 1e-4;
    with --int8, then quantize it (then re-run calibrate, gate and index: they are fitted on what is served)."""
    from dermxai.export import export_onnx

    if int8 and (data is None or split is None or onnx is not None):
        raise ValueError("--int8 needs --data and --split (ranges from train, the check on val), and no --onnx")
    report = export_onnx(model, onnx, check_images, opset)
    console.print(
        f"{report.path}: parity on {report.checked_on}: max probability difference "
        f"{report.max_prob_diff:.1e} (max logit difference {report.max_logit_diff:.1e})"
    )
    if int8:
        from dermxai.quantize import quantize_on_split

        record = quantize_on_split(model, data, split, images=images, min_agreement=min_agreement, max_drop=max_drop)
        latency, mib = record["p50_ms_graph_single_image"], record["onnx_mib"]
        console.print(
            f"{report.path}: int8 ({mib['float32']} -> {mib['int8']} MiB, one image {latency['float32']} -> "
            f"{latency['int8']} ms): served label unchanged on {record['val_label_agreement']:.1%} of "
            f"{record['val_images']} val images, val balanced accuracy {record['val_bacc_served']['float32']:.3f} "
            f"-> {record['val_bacc_served']['int8']:.3f}. Re-run calibrate, gate --thresholds-only and index.",
            highlight=False,
        )
