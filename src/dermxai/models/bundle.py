"""Model bundles: ``model.safetensors`` + ``config.json`` + ``MODEL_CARD.md``; loading never unpickles.

``BundleConfig`` is the one contract of ``config.json``, as timm's ``PretrainedCfg`` is of a pretrained model:
every reader and writer goes through it. It is frozen (its dict fields are records: read them, never change
them in place); change a bundle with ``update_config`` or ``config.replace`` then ``write_config`` (checked,
then written atomically). Keys it does not know are kept in ``extra`` and written back, and configs written
before it (no ``version``) still load.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dermxai.preprocessing import COLOUR_CONSTANCY
from dermxai.probabilities import decision_logits, served_labels, served_probabilities

if TYPE_CHECKING:
    from torch import nn

ENSEMBLE_ARCH = "ensemble"
"""The ``arch`` of an ensemble bundle (its ``members`` name the architectures; see models/ensemble.py)."""

BUNDLE_VERSION = 2

GATE_LAYER_JOIN = "+"
"""Joins several layers in one ``gate_layer`` (e.g. two ensemble members'): their gate features are concatenated."""
"""Version 2 adds ``version`` itself; version 1 (no ``version`` key) may name ``wall_time_s`` for ``train_time_s``."""

CARD = """# {arch} for HAM10000 diagnosis ({note})

- Architecture: `{arch}` ({weights} initialisation), input {height}x{width}, classes {classes}.
- Trained by `dermxai train` for {epochs_trained} epoch(s) (best validation epoch {best_epoch}, validation
  balanced accuracy {val_bacc}), seed {seed}, training time {train_time} (sum of training epochs).
- Data: HAM10000 (CC BY-NC 4.0; Tschandl et al., Sci. Data 5, 180161, 2018), split fingerprint
  `{split_fingerprint}`. Non-commercial use only, with attribution.
- Not a medical device: for research and teaching. Phone photos are not dermoscopy.
"""


class BundleError(ValueError):
    """A bundle folder that cannot be used: a malformed config, or weights that do not fit it."""


REQUIRED = (
    ("arch", str, "a string"),
    ("classes", tuple, "a list"),
    ("height", int, "an integer"),
    ("width", int, "an integer"),
    ("mean", tuple, "a list"),
    ("std", tuple, "a list"),
)
"""The fields every config names: (field, type once loaded, what to call the type in an error)."""


@dataclass(frozen=True)
class BundleConfig:
    """What a bundle's ``config.json`` holds: the model's input contract, its served decision, provenance."""

    # the input and output contract (required)
    arch: str
    classes: tuple[str, ...]
    height: int
    width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    colour_constancy: str | None = None  # applied to the [0, 1] image before mean/std (see preprocessing)
    # what is served from the logits, fitted on validation by `dermxai calibrate` and `gate`
    temperature: float = 1.0
    logit_bias: tuple[float, ...] | None = None  # decision rule: logits + logit_bias (None: plain argmax)
    probability_bias: tuple[float, ...] | None = None  # calibration, fitted with the temperature (see probabilities)
    thresholds: dict[str, float] = field(default_factory=dict)  # "malignant": flag at this malignant score
    abstain: dict[str, Any] | None = None  # min_confidence, max_energy and how they were fitted
    calibration: dict[str, Any] = field(default_factory=dict)  # what calibration measured on validation
    gate_layer: str | None = None  # None: the architecture's default; "a+b": layers a and b, features joined
    ood_gate: dict[str, Any] | None = None  # how the out-of-distribution gate was fitted
    similar_cases: dict[str, Any] | None = None  # how the feature index of similar cases was fitted
    cam_layer: str | None = None  # None: the architecture's default
    cam_method: str = "gradcam"
    cam_choice: dict[str, Any] | None = None  # how cam_layer and cam_method were chosen
    # an ensemble (arch "ensemble"): one record per member (arch, mean, std, source, ...), logits averaged
    # (but those of a record with "votes": false, a gate-only member)
    members: tuple[dict[str, Any], ...] | None = None
    flip_tta: bool | None = None  # True: an ensemble also averages its logits over the four flips of the input
    onnx_int8: dict[str, Any] | None = None  # model.onnx is int8 (`dermxai export --int8`): how it was checked
    # provenance
    weights: str | None = None
    seed: int | None = None
    epochs_trained: int | None = None
    best_epoch: int | None = None
    val_bacc: float | None = None
    train_time_s: float | None = None
    recipe: dict[str, Any] | None = None
    precision: str | None = None
    dataset_fingerprint: str | None = None
    split_fingerprint: str | None = None
    leaky_split: str | None = None  # the audit's finding, when trained on a leaky split by --allow-leaky-split
    hardware: str | None = None
    versions: dict[str, str] | None = None
    storage: str | None = None
    checkpoint: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as they were
    version: int = BUNDLE_VERSION

    def __post_init__(self) -> None:
        for name in ("classes", "mean", "std", "logit_bias", "probability_bias", "members"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))  # JSON lists become tuples
        self._check_input()
        self._check_served()

    def _check_input(self) -> None:
        """The input and output contract: architecture, classes, size, normalisation."""
        for name, kind, what in REQUIRED:
            if not isinstance(getattr(self, name), kind) or isinstance(getattr(self, name), bool):
                raise BundleError(f"'{name}' must be {what}")
        if self.height < 8 or self.width < 8 or not (_numbers(self.mean, 3) and _numbers(self.std, 3)):
            raise BundleError("height and width must be >= 8, mean and std 3 finite numbers each")
        if min(self.std) <= 0:
            raise BundleError("'std' must be above 0 in every channel")
        records = self.members if isinstance(self.members, tuple) else ()
        constancies = [
            self.colour_constancy,
            *(m.get("colour_constancy") for m in records if isinstance(m, dict)),
        ]
        if any(c is not None and c not in COLOUR_CONSTANCY for c in constancies):
            raise BundleError(f"'colour_constancy' must be one of {', '.join(COLOUR_CONSTANCY)} (or absent)")
        if self.members is not None and self.colour_constancy is not None:
            raise BundleError(
                "an ensemble takes the image as it is: 'colour_constancy' belongs to its members' records"
            )
        names = [c for c in self.classes if isinstance(c, str) and c]
        if len(names) < 2 or len(set(names)) != len(self.classes):
            raise BundleError("'classes' must name at least two distinct classes")
        if (self.arch == ENSEMBLE_ARCH) != (self.members is not None):
            raise BundleError(f"'members' must be given exactly when 'arch' is {ENSEMBLE_ARCH!r}")
        if self.flip_tta and self.members is None:
            raise BundleError("'flip_tta' is served by ensemble bundles only (dermxai ensemble --flips)")
        if self.members is not None and not (
            len(self.members) >= (1 if self.flip_tta else 2)
            and all(
                isinstance(m, dict)
                and isinstance(m.get("arch"), str)
                and _numbers(m.get("mean"), 3)
                and _numbers(m.get("std"), 3)
                and ("height" in m) == ("width" in m)
                and all(isinstance(m.get(k, 1), int) and m.get(k, 1) > 0 for k in ("height", "width"))
                and isinstance(m.get("votes", True), bool)
                for m in self.members
            )
            and sum(m.get("votes", True) for m in self.members) >= (1 if self.flip_tta else 2)
        ):
            raise BundleError(
                "'members' must list two voting records (one with flip_tta) with 'arch', 'mean' and 'std' "
                "(and both or neither of a positive 'height' and 'width'; 'votes', where given, true or false)"
            )

    def _check_served(self) -> None:
        """What turns logits into the served answer: decision rule, temperature, thresholds, layers."""
        if not _numbers((self.temperature,), 1) or not self.temperature > 0:
            raise BundleError("'temperature' must be a finite number above 0")
        for name in ("logit_bias", "probability_bias"):
            value = getattr(self, name)
            if value is not None and not _numbers(value, len(self.classes)):
                raise BundleError(f"'{name}' must have one finite value per class")
        if (
            not isinstance(self.thresholds, dict)
            or not _numbers(tuple(self.thresholds.values()))
            or not all(0 <= v <= 1 for v in self.thresholds.values())
        ):
            raise BundleError("'thresholds' must map names to numbers between 0 and 1")
        if self.abstain is not None and not (
            isinstance(self.abstain, dict)
            and _numbers((self.abstain.get("min_confidence"), self.abstain.get("max_energy")))
        ):
            raise BundleError("'abstain' must hold numbers 'min_confidence' and 'max_energy'")
        if self.onnx_int8 is not None and not isinstance(self.onnx_int8, dict):
            raise BundleError("'onnx_int8' must be a JSON object (the int8 export's record)")
        for name in ("gate_layer", "cam_layer", "cam_method"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise BundleError(f"'{name}' must be a string")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BundleConfig:
        """A config from its JSON object (any version up to ``BUNDLE_VERSION``); BundleError when malformed."""
        if not isinstance(data, Mapping):
            raise BundleError("config.json must hold a JSON object")
        data = dict(data)
        version = data.pop("version", 1)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise BundleError(f"'version' must be a positive integer, not {version!r}")
        if version > BUNDLE_VERSION:
            raise BundleError(f"version {version} is newer than this dermxai reads ({BUNDLE_VERSION}): upgrade it")
        if "wall_time_s" in data:  # version 1's name for train_time_s
            data.setdefault("train_time_s", data.pop("wall_time_s"))
        for name, _, _ in REQUIRED:
            if name not in data:
                raise BundleError(f"'{name}' is missing")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra", "version"}
        optional = known - {name for name, _, _ in REQUIRED}
        fields = {
            key: value
            for key, value in data.items()
            if key in known and not (key in optional and value in (None, "", [], {}))  # unset: the default
        }  # version 1 wrote null, "", [] and {} for "none"
        return cls(**fields, extra={key: value for key, value in data.items() if key not in known})

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``config.json`` (fields left unset are omitted; unknown keys written back)."""
        out: dict[str, Any] = {"version": self.version}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.name in ("extra", "version") or value is None:
                continue
            out[item.name] = list(value) if isinstance(value, tuple) else value
        return {**out, **self.extra}

    def replace(self, **changes: Any) -> BundleConfig:
        """A copy with ``changes`` applied (checked like a loaded config)."""
        return dataclasses.replace(self, **changes)

    @property
    def size(self) -> tuple[int, int]:
        """The model's input (height, width)."""
        return self.height, self.width

    @property
    def malignant_threshold(self) -> float | None:
        """The malignant-score threshold chosen on validation; None when the bundle was never calibrated."""
        value = self.thresholds.get("malignant")
        return None if value is None else float(value)

    def decision_logits(self, logits: np.ndarray) -> np.ndarray:
        """Logits shifted by the bundle's decision rule (unchanged when it has none)."""
        return decision_logits(logits, self.logit_bias)

    def served_probabilities(self, logits: np.ndarray) -> np.ndarray:
        """The probabilities the bundle serves for logits (N, C) (see :mod:`dermxai.probabilities`)."""
        return served_probabilities(logits, self.logit_bias, self.temperature, self.probability_bias)

    def served_labels(self, logits: np.ndarray) -> np.ndarray:
        """The class index the bundle serves for each row of logits (N, C): its decision rule's argmax."""
        return served_labels(logits, self.logit_bias)

    def target_layer(self) -> str:
        """The CAM target layer: the bundle's ``cam_layer``, else its architecture's default."""
        from dermxai.models.registry import architecture

        return self.cam_layer or architecture(self.arch).cam_layer

    def feature_layer(self) -> str | None:
        """The layer feeding the out-of-distribution gate: the bundle's own, else its architecture's default."""
        if self.gate_layer:
            return self.gate_layer
        from dermxai.models.registry import REGISTRY

        entry = REGISTRY.get(self.arch)
        return entry.gate_layer if entry else None


def _numbers(values: Sequence | None, count: int | None = None) -> bool:
    """Whether ``values`` are all finite real numbers (not booleans, NaN or infinity), ``count`` of them when given."""
    if not isinstance(values, tuple | list) or (count is not None and len(values) != count):
        return False
    return all(isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def weights_digest(bundle_dir: str | Path) -> str:
    """SHA-256 of a bundle's ``model.safetensors``."""
    digest = hashlib.sha256()
    with open(Path(bundle_dir) / "model.safetensors", "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_bundle(folder: Path) -> bool:
    """Whether ``folder`` has the two files of a bundle (its config is checked when read)."""
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def read_config(folder: str | Path) -> BundleConfig:
    """A bundle's config, checked (no weights loaded, no torch imported); BundleError names what is wrong."""
    folder = Path(folder)
    if not is_bundle(folder):
        raise FileNotFoundError(f"{folder}: not a model bundle (needs config.json and model.safetensors)")
    try:
        data = json.loads((folder / "config.json").read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"{folder}/config.json is not valid JSON ({error})") from None
    try:
        return BundleConfig.from_dict(data)
    except BundleError as error:
        raise BundleError(f"{folder}/config.json: {error}") from None


CLASSES_KEY = "dermxai.classes"
"""Metadata key of ``model.safetensors``: the class names, in output order, the weights were trained for."""


def weights_metadata(config: BundleConfig) -> dict[str, str]:
    """What ``model.safetensors`` records of its config (checked at load: a config cannot relabel the outputs)."""
    return {CLASSES_KEY: json.dumps(list(config.classes))}


def validate_bundle(folder: str | Path) -> BundleConfig:
    """A bundle's config, checked against its weights (their header only: no torch): the CAM and gate layers
    must be layers that hold weights. BundleError names what is wrong, in one line."""
    from safetensors import SafetensorError, safe_open

    folder = Path(folder)
    config = read_config(folder)
    try:
        with safe_open(folder / "model.safetensors", framework="numpy") as weights:
            names, metadata = set(weights.keys()), weights.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise BundleError(f"{folder}/model.safetensors cannot be read ({error})") from None
    trained = metadata.get(CLASSES_KEY)
    if trained is not None and json.loads(trained) != list(config.classes):
        raise BundleError(
            f"{folder}/config.json names the classes {', '.join(config.classes)} but the weights were trained "
            f"for {', '.join(json.loads(trained))}"
        )
    prefixes = {name.rsplit(".", i)[0] for name in names for i in range(1, name.count(".") + 1)}
    named = [("cam_layer", config.cam_layer)] if config.cam_layer else []
    named += [("gate_layer", layer) for layer in gate_layers(config.gate_layer)] if config.gate_layer else []
    for field_name, layer in named:
        if layer not in prefixes:
            raise BundleError(f"{folder}/config.json: {field_name} {layer!r} is not a layer of {config.arch}")
    return config


def gate_layers(gate_layer: str) -> list[str]:
    """The layers a ``gate_layer`` names, in order: one, or several joined by :data:`GATE_LAYER_JOIN`."""
    return [layer.strip() for layer in gate_layer.split(GATE_LAYER_JOIN)]


def write_config(folder: str | Path, config: BundleConfig) -> None:
    """Replace ``folder/config.json`` atomically (write a temporary file, then rename)."""
    partial = Path(folder) / f"config.json.{os.getpid()}.{threading.get_ident()}.partial"  # one per writer
    try:
        partial.write_text(json.dumps(config.to_dict(), indent=2, default=str))
        os.replace(partial, Path(folder) / "config.json")
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def update_config(folder: str | Path, **changes: Any) -> BundleConfig:
    """Read a bundle's config, apply ``changes`` and write it back atomically; the new config."""
    config = read_config(folder).replace(**changes)
    write_config(folder, config)
    return config


def save_bundle(folder: str | Path, model: nn.Module, config: BundleConfig, note: str = "research model") -> Path:
    """Write the bundle folder: weights, ``config.json`` and a model card."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, folder / "model.safetensors", metadata=weights_metadata(config))
    write_config(folder, config)
    train_time = "unknown" if config.train_time_s is None else f"{config.train_time_s:.0f} s"
    fields = dataclasses.asdict(config) | {"classes": ", ".join(config.classes), "train_time": train_time}
    leak = f"**LEAKY SPLIT** (trained with --allow-leaky-split): {config.leaky_split}\n\n" if config.leaky_split else ""
    (folder / "MODEL_CARD.md").write_text(leak + CARD.format(note=note, **fields))
    return folder


def load_bundle(folder: str | Path) -> tuple[nn.Module, BundleConfig]:
    """The model (eval mode) and config of a bundle folder; BundleError when the weights do not fit it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from dermxai.models.ensemble import build_ensemble
    from dermxai.models.registry import create_model

    folder = Path(folder)
    config = read_config(folder)
    if config.members is not None:
        model = build_ensemble(config.members, (config.mean, config.std), len(config.classes), config.flip_tta)
    else:
        model, _ = create_model(config.arch, weights="none", num_classes=len(config.classes))
    try:
        model.load_state_dict(load_file(folder / "model.safetensors"))
    except (SafetensorError, RuntimeError, OSError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise BundleError(
            f"{folder}/model.safetensors does not fit {config.arch} with {len(config.classes)} classes: {first}"
        ) from None
    return model.eval(), config
