"""The training recipe: one dataclass, readable like a list of ingredients, saved with every run (no torch)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from dermxai.preprocessing import COLOUR_CONSTANCY

PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed")  # Lightning's names; auto: see training/precision.py
SELECTIONS = {  # --select-on: the validation figure that picks the checkpoint and drives early stopping
    "served": "val/served_balanced_accuracy",  # balanced accuracy of the served rule, tau refitted every epoch
    "argmax": "val/balanced_accuracy",
    "auc": "val/macro_auc",
}


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random transforms (``enabled=False`` turns augmentation off)."""

    enabled: bool = True
    max_rotation_deg: float = 15.0
    scale: tuple[float, float] = (0.8, 1.0)  # fraction of the image side kept (random resized crop)
    max_translate: float = 0.1  # fraction of the half-side
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    jpeg_probability: float = 0.0  # share of images re-encoded as JPEG (another clinic's files)
    jpeg_quality: tuple[int, int] = (30, 90)  # its quality, drawn per image
    noise_std: float = 0.0  # Gaussian pixel noise, each image's sigma drawn in [0, noise_std] ([0, 1] units)

    @property
    def rigid(self) -> bool:
        """Only flips and right-angle turns: no rotation jitter, scaling or shift (no resampling needed)."""
        return self.max_rotation_deg == 0 and tuple(self.scale) == (1.0, 1.0) and self.max_translate == 0


AUGMENT_PRESETS = {
    "full": AugmentConfig(),
    # the reference loop's light recipe: flips, right-angle turns and brightness only
    "light": AugmentConfig(max_rotation_deg=0, scale=(1.0, 1.0), max_translate=0, contrast=0, saturation=0),
    # between the two: turns, mild scale/shift jitter and colour jitter (the shifts external data show), no rotation
    "medium": AugmentConfig(max_rotation_deg=0, scale=(0.85, 1.0), max_translate=0.05, contrast=0.1, saturation=0.1),
    # light plus what other sources' files show: JPEG re-encoding and sensor noise (the models flip on +-1 grey level)
    "robust": AugmentConfig(
        max_rotation_deg=0,
        scale=(1.0, 1.0),
        max_translate=0,
        contrast=0,
        saturation=0,
        jpeg_probability=0.5,
        noise_std=0.02,
    ),
    "none": AugmentConfig(enabled=False),
}


def augment_preset(name: str) -> AugmentConfig:
    """The augmentation recipe called ``name`` (one of :data:`AUGMENT_PRESETS`)."""
    if name not in AUGMENT_PRESETS:
        raise ValueError(f"--augment must be one of {', '.join(AUGMENT_PRESETS)}, not {name!r}")
    return AUGMENT_PRESETS[name]


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
    class_weight_power: float = 1.0  # weights (1 / class count) ** power: 1 inverse, 0.5 square-root inverse
    balanced_sampler: bool = False
    label_smoothing: float = 0.0
    ema_decay: float = 0.0  # exponential moving average of the weights (0: off); validation and the bundle use it
    patience: int = 5  # early stopping on the selection figure
    select_on: str = "served"  # served | argmax | auc (see SELECTIONS)
    precision: str = "auto"  # auto | 32-true | bf16-mixed | 16-mixed (Lightning's names; see training/precision.py)
    seed: int = 0
    limit_train_batches: float | int = 1.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    colour_constancy: str | None = None  # e.g. shades_of_gray: applied before augmentation, and when served
    # Mixing pairs of images (training/mixing.py): mixup (Zhang et al. 2018) and/or CutMix (Yun et al. 2019)
    mixup_alpha: float = 0.0  # Beta(alpha, alpha) mixing weight; 0: off
    cutmix_alpha: float = 0.0  # Beta(alpha, alpha) kept area; 0: off (both on: one or the other per batch)
    mix_prob: float = 0.5  # share of the batches that are mixed
    # Knowledge distillation (training/distill.py): a teacher bundle's flip-averaged soft targets mixed into the loss
    teacher: str | None = None  # bundle folder (e.g. an ensemble); None: no distillation
    distill_weight: float = 0.5  # share of the soft (teacher) term in the loss
    distill_temperature: float = 2.0  # softens teacher and student distributions in the soft term
    teacher_flips: bool = True  # teacher targets averaged over the four flips of each image

    def __post_init__(self) -> None:
        checks = [
            (
                self.height >= 16 and self.width >= 16,
                f"--height/--width must be at least 16 pixels, not {self.height}x{self.width}",
            ),
            (self.epochs >= 1, f"--epochs must be at least 1, not {self.epochs}"),
            (self.batch_size >= 2, f"--batch-size must be at least 2, not {self.batch_size}"),
            (self.lr > 0, f"--lr must be positive, not {self.lr}"),
            (self.backbone_lr_scale >= 0, f"--backbone-lr-scale must be >= 0, not {self.backbone_lr_scale}"),
            (
                0 <= self.freeze_epochs <= self.epochs,
                f"--freeze-epochs must be between 0 and --epochs, not {self.freeze_epochs}",
            ),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, not {self.weight_decay}"),
            (0 <= self.label_smoothing < 1, f"--label-smoothing must be in [0, 1), not {self.label_smoothing}"),
            (0 <= self.ema_decay < 1, f"--ema-decay must be in [0, 1), not {self.ema_decay}"),
            (self.class_weight_power >= 0, f"--class-weight-power must be >= 0, not {self.class_weight_power}"),
            (
                self.precision in PRECISIONS,
                f"--precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}",
            ),
            (
                self.select_on in SELECTIONS,
                f"--select-on must be one of {', '.join(SELECTIONS)}, not {self.select_on!r}",
            ),
            (0 <= self.distill_weight <= 1, f"--distill-weight must be in [0, 1], not {self.distill_weight}"),
            (
                0 < self.distill_temperature < math.inf,
                f"--distill-temperature must be a positive finite number, not {self.distill_temperature}",
            ),
            (self.patience >= 1, f"--patience must be at least 1, not {self.patience}"),
            (
                self.colour_constancy is None or self.colour_constancy in COLOUR_CONSTANCY,
                f"--colour-constancy must be one of {', '.join(COLOUR_CONSTANCY)}, not {self.colour_constancy!r}",
            ),
            (
                0 <= self.mixup_alpha < math.inf and 0 <= self.cutmix_alpha < math.inf,
                f"--mixup and --cutmix must be finite numbers >= 0, not {self.mixup_alpha}, {self.cutmix_alpha}",
            ),
            (0 <= self.mix_prob <= 1, f"--mix-prob must be in [0, 1], not {self.mix_prob}"),
            (
                0 < self.limit_train_batches < math.inf,
                f"--limit-train-batches must be a positive finite number, not {self.limit_train_batches}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def monitor(self) -> str:
        """The logged validation figure that selects the checkpoint."""
        return SELECTIONS[self.select_on]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(sorted(unknown))}")
        values = dict(values)
        if isinstance(values.get("augment"), str):
            values["augment"] = augment_preset(values["augment"])
        elif isinstance(values.get("augment"), dict):
            values["augment"] = AugmentConfig(
                **{k: tuple(v) if isinstance(v, list) else v for k, v in values["augment"].items()}
            )
        return cls(**values)
