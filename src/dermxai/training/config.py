"""The training recipe: one dataclass, readable like a list of ingredients, saved with every run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from dermxai.training.augment import AugmentConfig


@dataclass
class TrainConfig:
    """Everything a run depends on besides the data."""

    arch: str = "efficientnet_lite0"
    weights: str = "imagenet"  # imagenet | none | PATH
    height: int = 150
    width: int = 200
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3  # head learning rate
    backbone_lr_scale: float = 0.1  # backbone learning rate = lr * this
    freeze_epochs: int = 0  # epochs with the backbone frozen before fine-tuning it
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    # Imbalance recipe: the winner on validation balanced accuracy in experiments/imbalance_probe.py
    # (shuffled batches + class-weighted cross-entropy, 0.552; see README "Class imbalance").
    loss: str = "ce"  # ce | focal
    class_weighted: bool = True
    balanced_sampler: bool = False
    label_smoothing: float = 0.0
    patience: int = 5  # early stopping on validation balanced accuracy
    seed: int = 0
    limit_train_batches: float | int = 1.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(sorted(unknown))}")
        values = dict(values)
        if isinstance(values.get("augment"), dict):
            values["augment"] = AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v
                                                 for k, v in values["augment"].items()})
        return cls(**values)
