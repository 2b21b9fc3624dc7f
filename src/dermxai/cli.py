"""The ``dermxai`` command line: one typer app, sub-commands grouped by job."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dermxai import __version__
from dermxai.data.errors import DatasetError
from dermxai.training.config import TrainConfig

app = typer.Typer(help="Honest skin-lesion classification on HAM10000.", no_args_is_help=True)
data_app = typer.Typer(help="Datasets: split, audit, cache, duplicates, download.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console(soft_wrap=True)  # messages keep paths whole; tables still fit the terminal
errors = Console(stderr=True, soft_wrap=True)

DataOption = Annotated[Path, typer.Option("--data", help="Dataset folder (HAM10000 layout) or label CSV.")]
ImagesOption = Annotated[Path | None, typer.Option("--images", help="Image folder, when --data is a CSV elsewhere.")]
HashOption = Annotated[
    int, typer.Option("--hash-distance", help="pHash distance at or below which images are near-duplicates.")
]
ReviewedOption = Annotated[
    Path | None,
    typer.Option("--duplicates", help="Reviewed near-duplicate pairs CSV (default: the HAM10000 one shipped)."),
]
DEFAULT_HASH_DISTANCE = 0  # = dermxai.data.splits.DEFAULT_HASH_DISTANCE (a test checks), not imported: pandas is slow


def clear_errors(command: Callable) -> Callable:
    """Turn expected failures (bad data, bad arguments) into one red line and exit code 2."""

    @wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (DatasetError, ValueError, OSError) as error:
            errors.print(f"[bold red]error:[/] {error}", highlight=False)
            raise typer.Exit(2) from None

    return run


@app.callback(invoke_without_command=True)
def main(version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False) -> None:
    """dermxai: classify dermoscopic images into the seven HAM10000 diagnoses, honestly evaluated."""
    if version:
        console.print(f"dermxai {__version__}")
        raise typer.Exit()


@data_app.command("split")
@clear_errors
def data_split(
    data: DataOption,
    out: Annotated[Path, typer.Option("--out", help="Split CSV to write (image_id,lesion_group,split).")],
    images: ImagesOption = None,
    seed: int = 0,
    val: float = 0.15,
    test: float = 0.15,
    strategy: Annotated[str, typer.Option(help="'lesion' (grouped, honest) or 'image' (random, leaky).")] = "lesion",
    hash_distance: HashOption = DEFAULT_HASH_DISTANCE,
    duplicates: ReviewedOption = None,
) -> None:
    """Write a train/val/test split: lesion-grouped, near-duplicates merged, stratified by diagnosis."""
    from dermxai.data import load_dataset
    from dermxai.data.splits import class_shares, grouped_split, honest_groups, image_split, write_split

    table = load_dataset(data, images)
    if strategy == "image":
        split = image_split(table, val, test, seed)
    elif strategy == "lesion":
        groups = honest_groups(table, hash_distance, duplicates)
        merged = table["lesion_id"].nunique() - groups.nunique()
        console.print(
            f"{table['lesion_id'].nunique()} lesion ids -> {groups.nunique()} groups "
            f"({merged} merged by near-duplicate pairs)"
        )
        split = grouped_split(table, groups, val, test, seed)
    else:
        raise ValueError(f"--strategy must be 'lesion' or 'image', not {strategy!r}")
    write_split(split, out)
    shares = class_shares(table, split)
    report = Table(title=f"{out}  ({strategy}-level split, seed {seed})")
    report.add_column("dx")
    for column in shares.columns:
        report.add_column(
            f"{column} (n={len(split) if column == 'all' else (split['split'] == column).sum()})", justify="right"
        )
    for dx, row in shares.iterrows():
        report.add_row(dx, *(f"{100 * v:.2f}%" for v in row))
    console.print(report)
    deviation = shares.drop(columns="all").sub(shares["all"], axis=0).abs().max().max()
    console.print(f"largest class-share deviation from overall: {100 * deviation:.2f} percentage points")


@data_app.command("audit")
@clear_errors
def data_audit(
    data: DataOption,
    split: Annotated[Path, typer.Option("--split", help="Split CSV to audit.")],
    images: ImagesOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full report as JSON.")] = False,
    hash_distance: HashOption = DEFAULT_HASH_DISTANCE,
    duplicates: ReviewedOption = None,
) -> None:
    """Report lesions and near-duplicates crossing splits; exit 1 when anything leaks."""
    from dermxai.data import load_dataset
    from dermxai.data.audit import audit_split
    from dermxai.data.duplicates import perceptual_hashes, read_reviewed_pairs
    from dermxai.data.splits import read_split

    table = load_dataset(data, images)
    assignment = read_split(split, table)
    hashes = perceptual_hashes(table["path"].tolist())
    report = audit_split(table, assignment, hashes, hash_distance, read_reviewed_pairs(duplicates))
    if as_json:
        print(json.dumps(report, indent=2, default=str))
    else:
        _print_audit(report)
    if not report["leak_free"]:
        raise typer.Exit(1)


def _print_audit(report: dict) -> None:
    summary = Table(title="Leakage audit")
    for column in ("splits", "images of lesions in both", "near-duplicate pairs across", "copies of one image across"):
        summary.add_column(column, justify="right" if column != "splits" else "left")
    for pair, rows in report["lesion_crossings"].items():
        summary.add_row(
            pair,
            str(len(rows)),
            str(len(report["near_duplicate_crossings"][pair])),
            str(len(report["twin_crossings"][pair])),
        )
    console.print(summary)
    for pair, rows in report["twin_crossings"].items():
        for row in rows[:10]:
            console.print(f"  same image in {pair} ({row['kind']}): {row['image_a']} = {row['image_b']}")
    for pair, rows in report["near_duplicate_crossings"].items():
        for row in rows[:10]:
            console.print(
                f"  near-duplicate {pair}: {row['image_a']} ({row['lesion_a']}) ~ "
                f"{row['image_b']} ({row['lesion_b']}), hash distance {row['hash_distance']}"
            )
    test_n = report["split_sizes"]["test"]
    console.print(
        f"{report['test_images_with_train_sibling']} of {test_n} test images "
        f"({100 * report['test_share_with_train_sibling']:.1f}%) have a same-lesion sibling in train"
    )
    console.print(f"{report['test_images_with_train_twin']} of {test_n} test images have a copy of themselves in train")
    console.print("[green]no leakage found[/]" if report["leak_free"] else "[bold red]LEAKAGE FOUND[/]")


@data_app.command("cache")
@clear_errors
def data_cache(
    data: DataOption,
    out: Annotated[Path, typer.Option("--out", help="Cache folder.")],
    images: ImagesOption = None,
    height: int = 150,
    width: int = 200,
) -> None:
    """Decode every image once into a memory-mapped uint8 array (skipped when the fingerprint matches)."""
    import time

    from dermxai.data import load_dataset
    from dermxai.data.cache import build_cache

    table = load_dataset(data, images)
    start = time.perf_counter()
    cache = build_cache(table, out, (height, width))
    console.print(
        f"{out}: {cache.images.shape} uint8, fingerprint {cache.fingerprint[:12]}, {time.perf_counter() - start:.1f} s"
    )


@data_app.command("duplicates")
@clear_errors
def data_duplicates(
    data: DataOption,
    out: Annotated[Path, typer.Option("--out", help="Folder for candidates.csv and contact sheets.")],
    images: ImagesOption = None,
    embeddings: Annotated[bool, typer.Option(help="Require CNN-embedding similarity too (slow on CPU).")] = True,
    per_sheet: int = 48,
) -> None:
    """Find near-duplicate candidates under different lesion ids and draw contact sheets to review."""
    from dermxai.data import load_dataset
    from dermxai.data.duplicates import candidate_pairs, cnn_embeddings, contact_sheet, perceptual_hashes

    table = load_dataset(data, images)
    hashes = perceptual_hashes(table["path"].tolist())
    vectors = cnn_embeddings(table["path"].tolist()) if embeddings else None
    pairs = candidate_pairs(table, hashes, vectors)
    out.mkdir(parents=True, exist_ok=True)
    pairs.to_csv(out / "candidates.csv", index=False)
    for n, start in enumerate(range(0, len(pairs), per_sheet)):
        contact_sheet(pairs.iloc[start : start + per_sheet], table, out / f"sheet_{n:02d}.png")
    console.print(
        f"{len(pairs)} candidate pairs under different lesion ids -> {out}/candidates.csv "
        f"and {-(-len(pairs) // per_sheet)} contact sheet(s)"
    )


@data_app.command("download")
def data_download(
    dest: Annotated[Path, typer.Option("--dest", help="Folder to download and unpack HAM10000 into.")],
    server: Annotated[str, typer.Option(help="Dataverse installation.")] = "https://dataverse.harvard.edu",
) -> None:
    """Fetch HAM10000 (images, metadata, lesion masks) from Harvard Dataverse, resumably, checksums verified."""
    from dermxai.data.download import DownloadError, download_ham10000

    try:
        saved = download_ham10000(dest, server=server)
    except DownloadError as error:
        errors.print(f"[bold red]error:[/] {error}", highlight=False)
        raise typer.Exit(2) from None
    console.print(f"{len(saved)} file(s) verified and unpacked into {dest}")


@app.command("train")
@clear_errors
def train_command(
    data: DataOption,
    split: Annotated[Path, typer.Option("--split", help="Split CSV from `dermxai data split`.")],
    out: Annotated[Path, typer.Option("--out", help="Run folder: checkpoints, logs, bundle.")],
    arch: Annotated[
        str, typer.Option(help="resnet18, densenet121, efficientnet_b0, efficientnet_lite0 or any timm name.")
    ] = "efficientnet_lite0",
    weights: Annotated[str, typer.Option(help="imagenet, none, or a weights file.")] = "imagenet",
    images: ImagesOption = None,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 1e-3,
    backbone_lr_scale: float = 0.1,
    freeze_epochs: int = 0,
    height: int = 150,
    width: int = 200,
    loss: Annotated[str, typer.Option(help="ce or focal.")] = "ce",
    class_weighted: Annotated[bool, typer.Option(help="Inverse-frequency class weights in the loss.")] = True,
    class_weight_power: Annotated[
        float, typer.Option(help="Class weights (1/count)**power: 1 inverse, 0.5 sqrt-inverse.")
    ] = TrainConfig.class_weight_power,
    ema_decay: Annotated[
        float, typer.Option(help="EMA of the weights, validated and shipped (0: off; e.g. 0.999).")
    ] = TrainConfig.ema_decay,
    precision: Annotated[
        str,
        typer.Option(
            help="auto, 32-true, bf16-mixed or 16-mixed (auto: bf16 on CPUs with AVX512-BF16/AMX, mixed on GPUs)."
        ),
    ] = TrainConfig.precision,
    balanced_sampler: Annotated[bool, typer.Option(help="Draw class-balanced batches.")] = False,
    label_smoothing: float = 0.0,
    patience: int = 5,
    augment: Annotated[
        bool, typer.Option(help="Random flips, rotations, crops and colour jitter on each batch.")
    ] = True,
    seed: int = 0,
    limit_train_batches: Annotated[
        float, typer.Option(help="Fraction (<=1) or number (>1) of batches per epoch.")
    ] = 1.0,
    cache: Annotated[Path | None, typer.Option(help="Image cache folder (default under ~/.cache/dermxai).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint.")] = False,
    accelerator: str = "auto",
    devices: Annotated[str, typer.Option(help="Devices per node (number or 'auto').")] = "1",
    num_nodes: int = 1,
    strategy: Annotated[str, typer.Option(help="auto, ddp, ddp_spawn, ...")] = "auto",
    progress: bool = True,
    max_minutes: Annotated[
        float | None,
        typer.Option(help="Stop after this many minutes; the bundle is still written from the best epoch."),
    ] = None,
) -> None:
    """Fine-tune a backbone on the train split, select on validation balanced accuracy, write a bundle."""
    from dermxai.models.pretrained import PretrainedWeightsUnavailable
    from dermxai.training.config import AugmentConfig
    from dermxai.training.module import NonFiniteLoss
    from dermxai.training.run import train

    config = TrainConfig(
        arch=arch,
        weights=weights,
        height=height,
        width=width,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        backbone_lr_scale=backbone_lr_scale,
        freeze_epochs=freeze_epochs,
        loss=loss,
        class_weighted=class_weighted,
        class_weight_power=class_weight_power,
        ema_decay=ema_decay,
        precision=precision,
        balanced_sampler=balanced_sampler,
        label_smoothing=label_smoothing,
        patience=patience,
        seed=seed,
        augment=AugmentConfig(enabled=augment),
        limit_train_batches=int(limit_train_batches) if limit_train_batches > 1 else limit_train_batches,
    )
    last = out / "checkpoints" / "last.ckpt"
    try:
        bundle = train(
            data,
            split,
            out,
            config,
            images=images,
            cache_dir=cache,
            resume=resume,
            accelerator=accelerator,
            devices=int(devices) if devices.isdigit() else devices,
            num_nodes=num_nodes,
            strategy=strategy,
            progress=progress,
            max_minutes=max_minutes,
        )
    except (DatasetError, ValueError, FileNotFoundError, FileExistsError, PretrainedWeightsUnavailable) as error:
        errors.print(f"[bold red]error:[/] {error}", highlight=False)
        raise typer.Exit(2) from None
    except (NonFiniteLoss, OSError) as error:
        kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
        errors.print(f"[bold red]training stopped:[/] {error}; {kept} (continue with --resume)", highlight=False)
        raise typer.Exit(1) from None
    if bundle:
        console.print(f"bundle written to {bundle}")


@app.command("experiment")
def experiment_command(
    config_file: Annotated[Path, typer.Argument(help="YAML: data, split, out, models, recipe (TrainConfig fields).")],
    accelerator: str = "auto",
    devices: str = "1",
    progress: bool = True,
) -> None:
    """Train several architectures with one recipe, one run folder each (ready for evaluate and compare)."""
    import yaml

    from dermxai.training.run import train

    try:
        spec = yaml.safe_load(config_file.read_text())
        recipe = spec.get("recipe", {})
        for arch in spec["models"]:
            out = Path(spec["out"]) / arch
            config = TrainConfig.from_dict({**recipe, "arch": arch})
            resume = (out / "checkpoints" / "last.ckpt").is_file()
            if (out / "bundle").is_dir():
                console.print(f"{arch}: bundle already in {out}, skipped")
                continue
            console.print(f"{arch}: training into {out}" + (" (resuming)" if resume else ""))
            train(
                Path(spec["data"]),
                Path(spec["split"]),
                out,
                config,
                resume=resume,
                accelerator=accelerator,
                devices=int(devices) if devices.isdigit() else devices,
                progress=progress,
            )
    except (OSError, KeyError, ValueError, yaml.YAMLError, DatasetError) as error:
        errors.print(f"[bold red]error:[/] {config_file}: {type(error).__name__}: {error}", highlight=False)
        raise typer.Exit(2) from None


def _command_line(ctx: typer.Context) -> str:
    """The command as typed, rebuilt from the options that differ from their defaults (for provenance)."""
    words = ["dermxai", ctx.info_name or ""]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if value == param.default or value is None:
            continue
        flag = param.opts[0]
        if isinstance(value, bool):
            words.append(flag if value else (param.secondary_opts or [flag])[0])
        elif isinstance(value, (list, tuple)):
            words += [str(v) for v in value]
        else:
            words += [flag, str(value)]
    return " ".join(words)


@app.command("evaluate")
@clear_errors
def evaluate_command(
    ctx: typer.Context,
    model: Annotated[Path, typer.Option("--model", help="Model bundle folder.")],
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
) -> None:
    """Score a bundle: metrics with lesion-bootstrap CIs, calibration, operating point, subgroups, report."""
    from dermxai.evaluation.evaluate import evaluate, from_labels, from_split

    if labels is not None and data is None and split is None:
        eval_set = from_labels(labels, images)
    elif data is not None and split is not None and labels is None:
        eval_set = from_split(data, split, subset, images)
    else:
        raise ValueError("give either --data DIR --split SPLIT.csv [--subset test] or --images DIR --labels CSV")
    if bootstrap < 1:
        raise ValueError(f"--bootstrap must be at least 1, not {bootstrap}")
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
    from dermxai.evaluation.calibration import calibrate_bundle

    config = calibrate_bundle(
        model, data, split, target_sensitivity, images=images, cache_dir=cache, batch_size=batch_size
    )
    c = config["calibration"]
    if "tau" in c:
        eces = c.get("val_ece_by_tau", {})
        by_tau = ", ".join(f"{t}: {v:.3f}/{eces.get(t, float('nan')):.3f}" for t, v in c["val_bacc_by_tau"].items())
        console.print(
            f"decision rule: logit adjustment tau {c['tau']:g} (val balanced accuracy / ECE by tau: {by_tau})"
        )
    console.print(
        f"temperature {config['temperature']:.3f} (val ECE {c['ece_before']:.3f} -> {c['ece_after']:.3f}, "
        f"NLL {c['nll_before']:.3f} -> {c['nll_after']:.3f}); malignant threshold "
        f"{config['thresholds']['malignant']:.3f} (val sensitivity {c['val_sensitivity']:.3f}, "
        f"specificity {c['val_specificity']:.3f}) -> {model}/config.json"
    )


@app.command("gate")
@clear_errors
def gate_command(
    model: Annotated[Path, typer.Option("--model", help="Model bundle folder.")],
    data: DataOption,
    split: Annotated[
        Path, typer.Option("--split", help="Split CSV: fitted on train (+ variants) and val, measured on test.")
    ],
    images: ImagesOption = None,
    write: Annotated[
        bool, typer.Option("--write", help="Store the gate in the bundle (ood_gate.npz, config.json).")
    ] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Write the measured report as JSON here.")] = None,
    crops: Annotated[int, typer.Option(help="Crops per source image of the non-dermoscopic set.")] = 6,
) -> None:
    """Fit the out-of-distribution gate on train/val and measure what it withholds (test, shifted, non-dermoscopic)."""
    from dermxai.evaluation.calibration import write_config
    from dermxai.evaluation.gate import fit_bundle_gate, gate_report
    from dermxai.evaluation.ood_set import non_dermoscopic_set
    from dermxai.inference.predictor import Predictor

    predictor = Predictor(model, prefer_onnx=False)  # features of the weights themselves, whatever the graph
    gate, record = fit_bundle_gate(predictor, data, split, images=images)
    report = {"gate": record, **gate_report(predictor, gate, data, split, non_dermoscopic_set(crops), images=images)}
    if write:
        gate.save(model)
        write_config(model, {**predictor.config, "gate_layer": record["gate_layer"], "ood_gate": record})
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
    table = Table(
        title=f"Out-of-distribution gate of {model} (threshold {gate.threshold:.3f}, "
        f"{record['val_accept_rate']:.1%} of val accepted)"
    )
    for column in ("images", "n", "withheld"):
        table.add_column(column, justify="left" if column == "images" else "right")
    for name, row in report["withheld"].items():
        table.add_row(name, str(row["n"]), f"{row['share']:.1%}")
    console.print(table)
    console.print(
        f"AUROC, test dermoscopy vs not dermoscopy: {report['auroc_test_vs_not_dermoscopy']:.3f}"
        + (f"; gate written to {model}" if write else "")
    )


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
    from dermxai.models.pretrained import PretrainedWeightsUnavailable

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
    try:
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
    except PretrainedWeightsUnavailable as error:
        raise ValueError(str(error)) from None
    console.print((out / "leak.md").read_text(), markup=False, highlight=False)


from dermxai.app import commands as front_ends  # noqa: E402  (predict, abstention, app, serve)

app.command("predict")(clear_errors(front_ends.predict_command))
app.command("abstention")(clear_errors(front_ends.abstention_command))
app.command("app")(clear_errors(front_ends.app_command))
app.command("serve")(clear_errors(front_ends.serve_command))


from dermxai.explain import commands as explain_commands  # noqa: E402

app.command("explain")(clear_errors(explain_commands.explain_command))
app.command("explain-compare", cls=explain_commands.ManyValues)(clear_errors(explain_commands.explain_compare_command))
app.command("explain-score")(clear_errors(explain_commands.explain_score_command))


@app.command("export")
@clear_errors
def export_command(
    model: Annotated[Path, typer.Option("--model", help="Model bundle folder.")],
    onnx: Annotated[
        Path | None, typer.Option("--onnx", help="ONNX file to write (default: BUNDLE/model.onnx, used by serving).")
    ] = None,
    check_images: Annotated[
        Path | None,
        typer.Option("--check-images", help="Images for the parity check (default: the committed fixture)."),
    ] = None,
    opset: int = 18,
) -> None:
    """Export a bundle to ONNX (dynamic batch) after checking ONNX Runtime matches PyTorch within 1e-4."""
    from dermxai.export import export_onnx

    report = export_onnx(model, onnx, check_images, opset)
    console.print(
        f"{report.path}: parity on {report.checked_on}: max probability difference "
        f"{report.max_prob_diff:.1e} (max logit difference {report.max_logit_diff:.1e})"
    )


if __name__ == "__main__":
    app()
