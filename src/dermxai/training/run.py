"""``train``: from a dataset, a split and a recipe to a run folder with checkpoints, logs and a bundle."""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
import zipfile
from datetime import timedelta
from pathlib import Path

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from dermxai.data import load_dataset
from dermxai.data.audit import leak_finding
from dermxai.data.errors import DatasetError
from dermxai.data.labels import CLASSES
from dermxai.data.splits import read_split
from dermxai.machine import describe_machine
from dermxai.models.bundle import BundleConfig, save_bundle
from dermxai.models.registry import create_model
from dermxai.training.config import TrainConfig
from dermxai.training.datamodule import CachedDataModule
from dermxai.training.distill import DistillationLoss, cached_teacher_targets
from dermxai.training.losses import build_loss
from dermxai.training.module import Classifier
from dermxai.training.precision import resolve_precision


class AtomicCheckpoint(ModelCheckpoint):
    """Writes each checkpoint to a temporary file and renames it, so a crash never leaves a torn file."""

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        partial = f"{filepath}.partial"
        trainer.save_checkpoint(partial, self.save_weights_only)
        if trainer.is_global_zero:
            os.replace(partial, filepath)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath


class EpochTimer(Callback):
    """Logs the wall time of every training epoch as ``time/epoch_s``."""

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        module.log("time/epoch_s", time.perf_counter() - self.start, sync_dist=False)


def run_metrics(out: Path) -> pd.DataFrame:
    """Per-epoch metrics of a run, across its resumed parts (``logs/metrics.csv``, ``logs/resume_*/...``)."""
    parts = [pd.read_csv(f) for f in sorted((Path(out) / "logs").rglob("metrics.csv"), key=lambda f: f.stat().st_mtime)]
    if not parts:
        return pd.DataFrame()
    rows = pd.concat(parts, ignore_index=True).groupby("epoch", as_index=False).last()
    return rows.drop(columns="step", errors="ignore").sort_values("epoch").reset_index(drop=True)


def _csv_version(out: Path, resume: bool) -> str:
    """The first run logs to ``logs/``; each resume to a new ``logs/resume_N/`` so nothing is overwritten."""
    if not resume:
        return ""
    return f"resume_{len(list((out / 'logs').glob('resume_*'))) + 1}"


RECIPE_FILE = "recipe.json"
"""The recipe a run started with, in its folder: a resumed run must continue with the same one."""


def _check_recipe(out: Path, config: TrainConfig, resume: bool) -> None:
    """Record the recipe of a new run; refuse to resume one with a different recipe (naming what differs)."""
    path = out / RECIPE_FILE
    if resume and path.is_file():
        started = json.loads(path.read_text())
        changed = sorted(k for k, v in config.to_dict().items() if json.dumps(started.get(k)) != json.dumps(v))
        if changed:
            raise ValueError(
                f"--resume: this run started with other options ({', '.join(changed)} differ); "
                f"resume it with the options in {path}"
            )
    elif not resume:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config.to_dict(), indent=1))


def default_cache_dir(data: Path, height: int, width: int) -> Path:
    """Per-dataset, per-size cache folder under ``$XDG_CACHE_HOME/dermxai`` (or ``~/.cache/dermxai``)."""
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dermxai"
    key = hashlib.sha256(str(data.resolve()).encode()).hexdigest()[:12]
    return root / f"{key}_{height}x{width}"


def train(
    data: Path,
    split_path: Path,
    out: Path,
    config: TrainConfig,
    *,
    images: Path | None = None,
    cache_dir: Path | None = None,
    resume: bool = False,
    accelerator: str = "auto",
    devices: int | str = 1,
    num_nodes: int = 1,
    strategy: str = "auto",
    progress: bool = True,
    max_minutes: float | None = None,
    allow_leaky_split: bool = False,
) -> Path | None:
    """Fine-tune ``config.arch``; returns the bundle folder (on the main process; None elsewhere).

    ``max_minutes`` caps the wall time (Lightning's ``max_time``): training then stops after the current
    step and the bundle is still written from the best validated checkpoint. A split whose subsets share a
    lesion, a lesion group or a copy of one image is refused unless ``allow_leaky_split``.
    """
    out = Path(out)
    last = out / "checkpoints" / "last.ckpt"
    if resume and not last.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint to resume at {last}")
    if resume and not zipfile.is_zipfile(last):  # torch writes zip archives; a cut-off one has no directory
        raise ValueError(f"--resume: {last} is refused: not a complete checkpoint archive (cut off, or not torch's)")
    if not resume and last.is_file():
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    _check_recipe(out, config, resume)
    table = load_dataset(data, images)
    split = read_split(split_path, table)
    for subset in ("train", "val"):
        if not (split["split"] == subset).any():
            raise DatasetError(f"{split_path}: no {subset} images (training needs both train and val)")
    finding = leak_finding(table, split)
    if finding and not allow_leaky_split:
        raise DatasetError(f"{split_path} is a leaky split: {finding}; refused (pass --allow-leaky-split to use it)")
    if finding:
        warnings.warn(f"LEAKY SPLIT, allowed by --allow-leaky-split: {finding}", stacklevel=2)
    L.seed_everything(config.seed, workers=True, verbose=False)
    gpu = torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")
    size = (config.height, config.width)
    datamodule = CachedDataModule(
        table,
        split,
        cache_dir or default_cache_dir(Path(data), *size),
        size,
        config.batch_size,
        config.seed,
        config.balanced_sampler,
    )
    datamodule.setup()
    precision = resolve_precision(config.precision, gpu)
    model, arch = create_model(config.arch, config.weights, len(CLASSES))
    loss = build_loss(
        config.loss, datamodule.train_counts(), config.class_weighted, config.label_smoothing, config.class_weight_power
    )
    if config.teacher:
        train_images = datamodule.subset("train")
        datamodule.train_targets = cached_teacher_targets(
            out,
            Path(config.teacher),
            split.loc[split["split"] == "train", "image_id"].tolist(),
            train_images.images[train_images.rows],
            tuple(CLASSES),
            config.teacher_flips,
            bf16=precision.startswith("bf16"),
            shared=datamodule.cache_dir,
        )
        loss = DistillationLoss(loss, config.distill_weight, config.distill_temperature, getattr(loss, "weight", None))
    module = Classifier(model, arch, config, loss, datamodule.train_counts().numpy())
    # Two callbacks: Lightning writes a monitored `last` only when the best improves; resume needs every epoch.
    checkpoint = AtomicCheckpoint(
        dirpath=out / "checkpoints", filename="best", monitor=config.monitor, mode="max", enable_version_counter=False
    )
    every_epoch = AtomicCheckpoint(dirpath=out / "checkpoints", filename="last", enable_version_counter=False)
    callbacks = [
        checkpoint,
        every_epoch,
        EarlyStopping(config.monitor, mode="max", patience=config.patience),
        EpochTimer(),
    ]
    if progress:
        callbacks.append(RichProgressBar())
    trainer = L.Trainer(
        max_epochs=config.epochs,
        max_time=None if max_minutes is None else timedelta(minutes=max_minutes),
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        precision=precision,
        callbacks=callbacks,
        logger=[
            CSVLogger(out, name="logs", version=_csv_version(out, resume)),
            TensorBoardLogger(out, name="tb", version=""),
        ],
        use_distributed_sampler=False,
        limit_train_batches=config.limit_train_batches,
        log_every_n_steps=10,
        enable_progress_bar=progress,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resume else None)
    if not trainer.is_global_zero:
        return None
    best = checkpoint.best_model_path or str(last)
    best_checkpoint = torch.load(best, map_location="cpu", weights_only=True)
    module.load_state_dict(best_checkpoint["state_dict"])
    bundle_config = BundleConfig(
        arch=config.arch,
        classes=tuple(CLASSES),
        height=config.height,
        width=config.width,
        mean=arch.mean,
        std=arch.std,
        colour_constancy=config.colour_constancy,
        cam_layer=arch.cam_layer,
        weights=config.weights,
        seed=config.seed,
        epochs_trained=trainer.current_epoch,
        best_epoch=int(best_checkpoint["epoch"]),
        val_bacc=_finite(checkpoint.best_model_score),
        train_time_s=round(float(run_metrics(out)["time/epoch_s"].sum()), 1),
        recipe=config.to_dict(),
        precision=precision,
        dataset_fingerprint=datamodule.cache.fingerprint,
        split_fingerprint=hashlib.sha256(Path(split_path).read_bytes()).hexdigest()[:16],
        leaky_split=finding or None,
        hardware=describe_machine(),
        versions={"torch": torch.__version__, "lightning": L.__version__},
    )
    return save_bundle(out / "bundle", module.final_model, bundle_config)


def _finite(score: torch.Tensor | None) -> float | None:
    """A monitored score for JSON: rounded, or None when missing or not finite (a tiny validation set)."""
    return round(float(score), 4) if score is not None and math.isfinite(float(score)) else None
