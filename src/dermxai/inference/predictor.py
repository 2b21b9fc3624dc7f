"""The one Predictor behind the CLI, the app and the API: bundle in, validated image in, calibrated answer out.

Preprocessing is the training one (``resize_cover`` then ``to_batch``, both read from the bundle's config).
Predictions run on ONNX Runtime when the bundle holds a ``model.onnx`` exported from its weights (see
``dermxai export``), else on PyTorch; the PyTorch model is loaded only when needed (no ONNX, or a CAM), so
the prediction path never imports torch. The model is shared: every use of it runs under one lock, because
CAM hooks on the model are not thread-safe and an ordinary forward pass running while they are registered
would feed them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from dermxai.data.cache import resize_cover
from dermxai.data.labels import CLASS_NAMES, MALIGNANT
from dermxai.inference.inputs import MAX_BYTES, MAX_PIXELS, read_image, to_rgb
from dermxai.inference.ood import abstain_reasons, calibrated_probabilities, energy
from dermxai.inference.onnx_backend import OnnxBackend, TorchBackend, load_backend, weights_digest
from dermxai.inference.preprocess import to_array, to_batch
from dermxai.models.bundle import load_bundle, read_config


@dataclass(frozen=True)
class Prediction:
    """Calibrated probabilities for one image, with the malignant score and the abstention decision."""

    model_id: str
    probabilities: dict[str, float]
    malignant_score: float
    malignant_threshold: float | None  # None: the bundle has no validated threshold, so no flag
    abstain_reasons: list[str] = field(default_factory=list)
    energy: float | None = None

    @property
    def top_class(self) -> str:
        return max(self.probabilities, key=self.probabilities.get)

    @property
    def confidence(self) -> float:
        return self.probabilities[self.top_class]

    @property
    def malignant_flag(self) -> bool | None:
        return None if self.malignant_threshold is None else self.malignant_score >= self.malignant_threshold

    @property
    def abstain(self) -> bool:
        return bool(self.abstain_reasons)

    def to_dict(self) -> dict:
        """A JSON-ready summary (the API's response body)."""
        return {
            "model_id": self.model_id, "top_class": self.top_class, "top_class_name": CLASS_NAMES.get(self.top_class),
            "confidence": self.confidence, "probabilities": self.probabilities,
            "malignant": {"score": self.malignant_score, "threshold": self.malignant_threshold,
                          "flagged": self.malignant_flag, "classes": list(MALIGNANT)},
            "abstain": self.abstain, "abstain_reasons": self.abstain_reasons, "energy": self.energy,
        }


def make_prediction(model_id: str, classes: list[str], probabilities: np.ndarray, threshold: float | None,
                    reasons: list[str], energy_score: float | None = None) -> Prediction:
    """A Prediction from calibrated probabilities in ``classes`` order."""
    probs = {c: float(p) for c, p in zip(classes, probabilities)}
    malignant = sum(probs[c] for c in MALIGNANT if c in probs)
    return Prediction(model_id, probs, float(malignant), threshold, reasons, energy_score)


@dataclass(frozen=True)
class Explanation:
    """A prediction with its class activation map (at the model's input size) and the upright image."""

    prediction: Prediction
    cam: np.ndarray
    image: Image.Image
    method: str
    target_class: str

    def overlay(self, opacity: float = 0.45, width: int = 480, colormap: str = "jet") -> Image.Image:
        """The CAM blended over the image, cropped as the model saw it, ``width`` pixels wide."""
        import matplotlib

        height = round(width * self.cam.shape[0] / self.cam.shape[1])
        base = resize_cover(self.image, (height, width)).astype(np.float32)
        cam = np.asarray(Image.fromarray(self.cam.astype(np.float32), "F").resize((width, height), Image.BILINEAR))
        heat = matplotlib.colormaps[colormap](np.clip(cam, 0, 1))[..., :3] * 255
        return Image.fromarray(np.uint8(np.clip((1 - opacity) * base + opacity * heat, 0, 255)))


def model_id(folder: Path) -> str:
    """The bundle folder's name and a short hash of its weights: names exactly which model answered."""
    return f"{folder.resolve().name}-{weights_digest(folder)[:10]}"


class Predictor:
    """A loaded bundle: validate, preprocess, predict with calibration and abstention, explain."""

    def __init__(self, bundle: str | Path, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS,
                 prefer_onnx: bool = True) -> None:
        self.folder = Path(bundle)
        self.config = read_config(self.folder)
        self.backend: OnnxBackend | TorchBackend = load_backend(self.folder, prefer_onnx=prefer_onnx)
        self.model_id = model_id(self.folder)
        self.classes: list[str] = list(self.config["classes"])
        self.temperature = float(self.config.get("temperature", 1.0))
        self.threshold: float | None = (self.config.get("thresholds") or {}).get("malignant")
        self.abstain_params: dict | None = self.config.get("abstain") or None
        self.size = (int(self.config["height"]), int(self.config["width"]))
        self.max_bytes, self.max_pixels = max_bytes, max_pixels
        self._lock = threading.Lock()

    @property
    def model(self):
        """The PyTorch model (for CAMs and evaluation), loaded on first use when predictions run on ONNX."""
        if isinstance(self.backend, TorchBackend):
            return self.backend.model
        if not hasattr(self, "_torch_model"):
            self._torch_model = load_bundle(self.folder)[0]
        return self._torch_model

    def load(self, data: bytes | Image.Image) -> Image.Image:
        """Upright RGB image from untrusted bytes (validated; raises InvalidImage) or an upright PIL image."""
        return read_image(data, self.max_bytes, self.max_pixels) if isinstance(data, bytes) else to_rgb(data)

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Raw logits (N, C) of preprocessed uint8 images (N, H, W, 3) at the bundle's input size."""
        batch = to_array(images, self.config)
        with self._lock:
            return self.backend.logits(batch)

    def interpret(self, logits: np.ndarray) -> Prediction:
        """Calibrated prediction, malignant score and abstention from one image's logits."""
        probs = calibrated_probabilities(logits, self.temperature)
        reasons = abstain_reasons(logits, self.temperature, self.abstain_params)
        return make_prediction(self.model_id, self.classes, probs, self.threshold, reasons,
                               float(energy(logits, self.temperature)))

    def predict(self, data: bytes | Image.Image) -> Prediction:
        """The calibrated prediction for one image (bytes are validated first)."""
        array = resize_cover(self.load(data), self.size)
        return self.interpret(self.logits(array[None])[0])

    def explain(self, data: bytes | Image.Image, method: str = "gradcam",
                target_class: str | None = None) -> Explanation:
        """Prediction and CAM from one forward pass; the CAM is for ``target_class`` (default: the top class)."""
        from dermxai.explain.cams import explain

        if target_class is not None and target_class not in self.classes:
            raise ValueError(f"unknown class {target_class!r}: use one of {', '.join(self.classes)}")
        image = self.load(data)
        batch = to_batch(resize_cover(image, self.size)[None], self.config)
        targets = None if target_class is None else [self.classes.index(target_class)]
        with self._lock:
            cams, logits = explain(self.model, self.config, batch, method, targets)
        prediction = self.interpret(logits[0].numpy())
        return Explanation(prediction, cams[0], image, method, target_class or prediction.top_class)


class Ensemble:
    """Several predictors averaged on their calibrated probabilities (same classes, any input sizes)."""

    def __init__(self, predictors: list[Predictor]) -> None:
        if len(predictors) < 2:
            raise ValueError("an ensemble needs at least two models")
        if any(p.classes != predictors[0].classes for p in predictors):
            raise ValueError("ensemble members must predict the same classes in the same order")
        self.members = predictors
        self.classes = predictors[0].classes
        self.model_id = "ensemble:" + "+".join(p.model_id for p in predictors)

    def load(self, data: bytes | Image.Image) -> Image.Image:
        return self.members[0].load(data)

    def predict(self, data: bytes | Image.Image) -> Prediction:
        """Mean of the members' calibrated probabilities; abstains when any member does.

        An ensemble has no malignant threshold of its own (none was chosen on validation for it).
        """
        image = self.load(data)
        answers = [member.predict(image) for member in self.members]
        probs = np.mean([[a.probabilities[c] for c in self.classes] for a in answers], axis=0)
        reasons = [f"{a.model_id}: {r}" for a in answers for r in a.abstain_reasons]
        return make_prediction(self.model_id, self.classes, probs, None, reasons)
