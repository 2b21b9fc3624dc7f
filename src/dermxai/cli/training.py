"""``dermxai train`` and ``dermxai experiment``."""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Annotated

import typer

from dermxai.cli.base import app, clear_errors, console, errors
from dermxai.data.errors import DatasetError
from dermxai.options import DataOption, ImagesOption
from dermxai.training.config import TrainConfig


@app.command("train")
@clear_errors
def train_command(
    data: DataOption,
    split: Annotated[Path, typer.Option("--split", help="Split CSV from `dermxai data split`.")],
    out: Annotated[Path, typer.Option("--out", help="Run folder: checkpoints, logs, bundle.")],
    arch: Annotated[
        str, typer.Option(help="resnet18, densenet121, efficientnet_b0, efficientnet_lite0 or any timm name.")
    ] = TrainConfig.arch,
    weights: Annotated[str, typer.Option(help="imagenet, none, or a weights file.")] = TrainConfig.weights,
    images: ImagesOption = None,
    epochs: int = TrainConfig.epochs,
    batch_size: int = TrainConfig.batch_size,
    lr: float = TrainConfig.lr,
    backbone_lr_scale: float = TrainConfig.backbone_lr_scale,
    freeze_epochs: int = TrainConfig.freeze_epochs,
    height: int = TrainConfig.height,
    width: int = TrainConfig.width,
    loss: Annotated[str, typer.Option(help="ce or focal.")] = TrainConfig.loss,
    class_weighted: Annotated[
        bool, typer.Option(help="Inverse-frequency class weights in the loss.")
    ] = TrainConfig.class_weighted,
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
    balanced_sampler: Annotated[bool, typer.Option(help="Draw class-balanced batches.")] = TrainConfig.balanced_sampler,
    label_smoothing: float = TrainConfig.label_smoothing,
    patience: int = TrainConfig.patience,
    augment: Annotated[
        str,
        typer.Option(
            help="full: flips, turns, rotation, crops and colour jitter; light: flips, turns and brightness; medium: light plus mild crops, shifts and colour jitter; robust: light plus JPEG re-encoding and sensor noise; none."
        ),
    ] = "full",
    colour_constancy: Annotated[
        str | None,
        typer.Option(help="shades_of_gray: divide out each image's colour cast, in training and when served."),
    ] = None,
    mixup: Annotated[
        float, typer.Option("--mixup", "--mixup-alpha", help="Mixup's Beta(alpha, alpha) parameter (0: off; e.g. 0.4).")
    ] = TrainConfig.mixup_alpha,
    cutmix: Annotated[
        float,
        typer.Option("--cutmix", "--cutmix-alpha", help="CutMix's Beta(alpha, alpha) parameter (0: off; e.g. 1.0)."),
    ] = TrainConfig.cutmix_alpha,
    mix_prob: Annotated[
        float, typer.Option(help="Share of batches mixed (with --mixup/--cutmix).")
    ] = TrainConfig.mix_prob,
    select_on: Annotated[
        str,
        typer.Option(
            help="Checkpoint selection on validation: served (logit-adjusted balanced accuracy, tau refitted "
            "every epoch), argmax (plain balanced accuracy) or auc (macro AUC)."
        ),
    ] = TrainConfig.select_on,
    seed: int = TrainConfig.seed,
    limit_train_batches: Annotated[
        float, typer.Option(help="Fraction (<=1) or number (>1) of batches per epoch.")
    ] = 1.0,
    teacher: Annotated[
        Path | None,
        typer.Option(help="Distil from this bundle (e.g. an ensemble): its flip-averaged soft targets join the loss."),
    ] = None,
    distill_weight: Annotated[
        float, typer.Option(help="Share of the teacher's soft term in the loss (with --teacher).")
    ] = TrainConfig.distill_weight,
    distill_temperature: Annotated[
        float, typer.Option(help="Temperature softening teacher and student in the soft term.")
    ] = TrainConfig.distill_temperature,
    teacher_flips: Annotated[
        bool, typer.Option(help="Average the teacher over the four flips of each image.")
    ] = TrainConfig.teacher_flips,
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
    allow_leaky_split: Annotated[
        bool, typer.Option(help="Train on a split whose subsets share lesions or images (refused otherwise).")
    ] = False,
) -> None:
    """Fine-tune a backbone on the train split, select the epoch on validation (--select-on), write a bundle."""
    from dermxai.training.config import augment_preset
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
        augment=augment_preset(augment),
        colour_constancy=colour_constancy,
        mixup_alpha=mixup,
        cutmix_alpha=cutmix,
        mix_prob=mix_prob,
        select_on=select_on,
        teacher=None if teacher is None else str(teacher),
        distill_weight=distill_weight,
        distill_temperature=distill_temperature,
        teacher_flips=teacher_flips,
        limit_train_batches=int(limit_train_batches) if 1 < limit_train_batches < math.inf else limit_train_batches,
    )
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file: give a folder for the run")
    if max_minutes is not None and not max_minutes > 0:
        raise ValueError(f"--max-minutes must be above 0, not {max_minutes}")
    if not (devices == "auto" or (devices.isdigit() and int(devices) >= 1)):
        raise ValueError(f"--devices must be a positive number or 'auto', not {devices!r}")
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
            allow_leaky_split=allow_leaky_split,
        )
    except (DatasetError, ValueError, FileNotFoundError, FileExistsError) as error:  # incl. missing weights
        errors.print(f"[bold red]error:[/] {error}", highlight=False)
        raise typer.Exit(2) from None
    except pickle.UnpicklingError as error:  # a checkpoint that is not a plain one (refused, never unpickled)
        errors.print(f"[bold red]error:[/] {last} is refused: not a plain checkpoint ({error})", highlight=False)
        raise typer.Exit(2) from None
    except (NonFiniteLoss, OSError) as error:
        kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
        errors.print(f"[bold red]training stopped:[/] {error}; {kept} (continue with --resume)", highlight=False)
        raise typer.Exit(1) from None
    if bundle:
        console.print(f"bundle written to {bundle}")


@app.command("experiment")
@clear_errors
def experiment_command(
    config_file: Annotated[Path, typer.Argument(help="YAML: data, split, out, models, recipe (TrainConfig fields).")],
    accelerator: str = "auto",
    devices: str = "1",
    progress: bool = True,
) -> None:
    """Train several architectures with one recipe, one run folder each (ready for evaluate and compare)."""
    from dermxai.training.experiment import run_experiment

    run_experiment(
        config_file,
        accelerator=accelerator,
        devices=int(devices) if devices.isdigit() else devices,
        progress=progress,
        log=console.print,
    )


@app.command("ensemble")
@clear_errors
def ensemble_command(
    members: Annotated[
        list[Path], typer.Argument(help="Two or more bundles (one with --flips) with the same classes and input size.")
    ],
    out: Annotated[Path, typer.Option("--out", help="The ensemble bundle folder to write.")],
    explain_member: Annotated[
        int, typer.Option(help="Index of the member whose layers give the heatmaps (and the gate's features).")
    ] = 0,
    gate_member: Annotated[
        list[int] | None,
        typer.Option(
            "--gate-member",
            help="Index of a member whose features feed the gate, repeatable (features joined); default: --explain-member.",
        ),
    ] = None,
    gate_only: Annotated[
        list[Path] | None,
        typer.Option(
            "--gate-only",
            help="A bundle that feeds the gate's features without voting (repeatable; indices after the members).",
        ),
    ] = None,
    flips: Annotated[
        bool, typer.Option(help="Also average over the four flips of the input (served TTA; one member allowed).")
    ] = False,
) -> None:
    """Combine bundles into one ensemble bundle (mean of logits); then calibrate, gate and export it as any bundle."""
    from dermxai.models.ensemble import make_ensemble

    bundle = make_ensemble(members, out, explain_member, flips, gate_members=gate_member, gate_only=gate_only or ())
    console.print(
        f"ensemble of {len(members)} written to {bundle}; next: dermxai calibrate --model {bundle} ..., "
        f"dermxai gate --model {bundle} ... --write, dermxai export --model {bundle}"
    )
