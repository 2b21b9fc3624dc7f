"""The LightningModule: model, loss, metrics, optimiser and schedule (no device or file-system logic)."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import torch
from timm.utils import ModelEmaV3
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassAUROC

from dermxai.data.labels import CLASSES
from dermxai.models.registry import Architecture
from dermxai.preprocessing import colour_correct, standardise, to_unit
from dermxai.probabilities import balanced_accuracy_of, choose_tau
from dermxai.training.augment import augment_batch
from dermxai.training.config import TrainConfig
from dermxai.training.mixing import mix_batch


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN or infinite loss."""


class Classifier(L.LightningModule):
    """Fine-tunes a backbone with a new head; a validation figure (``config.select_on``) drives model selection.

    Every validation pass logs balanced accuracy at argmax, the macro AUC, and the balanced accuracy of the
    served rule (logit adjustment with tau refitted on this pass, :func:`dermxai.probabilities.choose_tau`;
    needs ``train_counts``). With ``config.ema_decay > 0`` an exponential moving average of the weights
    (timm's ``ModelEmaV3``) is kept beside the trained model, validated in its place, checkpointed with it and
    shipped in the bundle.
    """

    def __init__(
        self,
        model: nn.Module,
        arch: Architecture,
        config: TrainConfig,
        loss: nn.Module,
        train_counts: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        model = model.to(memory_format=torch.channels_last)
        self.model, self.arch, self.config, self.loss = model, arch, config, loss
        self.ema = ModelEmaV3(model, decay=config.ema_decay, use_warmup=True) if config.ema_decay > 0 else None
        self.register_buffer("mean", torch.tensor(arch.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(arch.std).view(1, 3, 1, 1), persistent=False)
        self.train_bacc = MulticlassAccuracy(len(CLASSES), average="macro")
        self.val_bacc = MulticlassAccuracy(len(CLASSES), average="macro")
        self.val_acc = MulticlassAccuracy(len(CLASSES), average="micro")
        self.val_auc = MulticlassAUROC(len(CLASSES), average="macro")
        self.train_counts = train_counts
        self.val_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.head_prefix = arch.classifier.rpartition(".")[0] or arch.classifier

    @property
    def final_model(self) -> nn.Module:
        """The weights that are validated and shipped: the EMA when kept, else the trained model."""
        return self.ema.module if self.ema is not None else self.model

    def unit(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images (N, H, W, 3) as the model's [0, 1] input (N, 3, H, W), colour-corrected as served."""
        return colour_correct(to_unit(images), self.config.colour_constancy)

    def forward(self, images: torch.Tensor, model: nn.Module | None = None) -> torch.Tensor:
        """Logits of [0, 1] float images (N, 3, H, W), standardised here as serving does (``preprocessing``)."""
        return (model or self.model)(standardise(images, self.mean, self.std))

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        images, labels, *teacher = batch  # teacher: soft targets when distilling
        seed = self.config.seed * 1_000_003 + self.global_step * 97 + self.global_rank
        generator = torch.Generator(device=images.device).manual_seed(seed)
        x = self.unit(images)
        if self.config.augment.enabled:
            x = augment_batch(x, self.config.augment, generator)
        config = self.config
        x, mix = mix_batch(x, config.mixup_alpha, config.cutmix_alpha, config.mix_prob, seed)
        logits = self(x)
        loss = self.loss(logits, labels, *teacher) if mix is None else mix.combine(self.loss, logits, labels, *teacher)
        if not torch.isfinite(loss):
            raise NonFiniteLoss(f"loss became {loss.item()} at epoch {self.current_epoch}, step {self.global_step}")
        self.train_bacc(logits, labels if mix is None or mix.lam >= 0.5 else labels[mix.partner])
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/balanced_accuracy", self.train_bacc, on_step=False, on_epoch=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self(self.unit(images), self.final_model)
        self.val_bacc(logits, labels)
        self.val_acc(logits, labels)
        self.val_auc.update(logits, labels)
        self.val_outputs.append((logits.detach().float().cpu(), labels.cpu()))
        self.log("val/loss", nn.functional.cross_entropy(logits, labels), on_epoch=True)
        self.log("val/balanced_accuracy", self.val_bacc, on_epoch=True, prog_bar=True)
        self.log("val/accuracy", self.val_acc, on_epoch=True)
        self.log("val/macro_auc", self.val_auc, on_epoch=True)

    def on_validation_epoch_end(self) -> None:
        logits = torch.cat([o[0] for o in self.val_outputs]).numpy()
        labels = torch.cat([o[1] for o in self.val_outputs]).numpy()
        self.val_outputs.clear()
        if self.train_counts is None or (np.asarray(self.train_counts) <= 0).any():
            tau, score = 0.0, balanced_accuracy_of(logits, labels)
        else:
            tau, scores = choose_tau(logits, labels, self.train_counts)
            score = scores[tau]
        self.log("val/served_balanced_accuracy", score, prog_bar=True)
        self.log("val/tau", tau)

    def on_train_epoch_start(self) -> None:
        frozen = self.current_epoch < self.config.freeze_epochs
        for name, parameter in self.model.named_parameters():
            if not name.startswith(self.head_prefix):
                parameter.requires_grad_(not frozen)

    def configure_optimizers(self):
        head = [p for n, p in self.model.named_parameters() if n.startswith(self.head_prefix)]
        backbone = [p for n, p in self.model.named_parameters() if not n.startswith(self.head_prefix)]
        optimizer = torch.optim.AdamW(
            [
                {"params": backbone, "lr": self.config.lr * self.config.backbone_lr_scale},
                {"params": head, "lr": self.config.lr},
            ],
            weight_decay=self.config.weight_decay,
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = max(1, int(total * self.config.warmup_epochs / max(1, self.config.epochs)))

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
