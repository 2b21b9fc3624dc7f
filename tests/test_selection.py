"""Checkpoint selection on what is served: argmax and served-rule selection pick different epochs on a toy run."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dermxai.models.registry import Architecture
from dermxai.training.config import AugmentConfig, TrainConfig
from dermxai.training.module import Classifier
from dermxai.training.run import AtomicCheckpoint

TRAIN_COUNTS = np.array([20, 20, 40, 10, 40, 400, 10])  # a skewed training prior, as in HAM10000


def scripted_logits(seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """Validation labels and two epochs' logits.

    Epoch 0 is unbiased but noisy: fair at argmax, nothing for logit adjustment to fix. Epoch 1 separates the
    classes well but has learnt the skewed prior: poor at argmax (it calls nearly everything nv), best once
    adjusted. Argmax selection must keep epoch 0, served selection epoch 1.
    """
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(7), 30)
    eye = np.eye(7)[labels]
    unbiased = eye * 1.0 + rng.normal(0, 0.8, (len(labels), 7))
    prior_bound = eye * 3.0 + rng.normal(0, 0.5, (len(labels), 7)) + 1.5 * np.log(TRAIN_COUNTS / TRAIN_COUNTS.sum())
    return labels, [unbiased, prior_bound]


class ScriptedModel(nn.Module):
    """Returns the scripted logits of the current epoch for image i (all of whose pixels are i)."""

    def __init__(self, tables: list[np.ndarray]) -> None:
        super().__init__()
        self.tables = torch.tensor(np.stack(tables), dtype=torch.float32)
        self.bias = nn.Parameter(torch.zeros(7))  # something to optimise
        self.epoch = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = (x[:, 0, 0, 0] * 255).round().long()
        return self.tables[self.epoch][index] + self.bias * 0


class FollowEpoch(L.Callback):
    def on_train_epoch_start(self, trainer: L.Trainer, module: Classifier) -> None:
        module.model.epoch = trainer.current_epoch


@pytest.mark.parametrize("select_on, best_epoch", [("argmax", 0), ("served", 1)])
def test_checkpoint_selection_follows_the_figure_that_is_served(tmp_path, select_on, best_epoch):
    labels, tables = scripted_logits()
    images = torch.arange(len(labels), dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 4, 4, 3).contiguous()
    data = TensorDataset(images, torch.as_tensor(labels))
    arch = Architecture("scripted", "timm", "scripted", "bias", "bias", mean=(0, 0, 0), std=(1, 1, 1))
    config = TrainConfig(epochs=2, select_on=select_on, augment=AugmentConfig(enabled=False))
    module = Classifier(ScriptedModel(tables), arch, config, nn.CrossEntropyLoss(), TRAIN_COUNTS)
    checkpoint = AtomicCheckpoint(dirpath=tmp_path, filename="best", monitor=config.monitor, mode="max")
    trainer = L.Trainer(
        max_epochs=2,
        callbacks=[FollowEpoch(), checkpoint],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
    )
    trainer.fit(module, DataLoader(data, batch_size=70), DataLoader(data, batch_size=70))
    metrics = trainer.logged_metrics
    assert torch.load(checkpoint.best_model_path, weights_only=True)["epoch"] == best_epoch
    # the figures behind the choice: on epoch 1, argmax is worse and the served rule better than on epoch 0
    assert float(metrics["val/tau"]) > 0 and float(metrics["val/served_balanced_accuracy"]) > 0.8
