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

from dermxai.data.labels import CLASS_NAMES, MALIGNANT
from dermxai.inference.feature_gate import FeatureGate, load_gate
from dermxai.inference.inputs import MAX_BYTES, MAX_PIXELS, read_image, to_rgb
from dermxai.inference.onnx_backend import OnnxBackend, TorchBackend, load_backend
from dermxai.inference.ood import abstain_reasons, calibrated_probabilities, energy
from dermxai.models.bundle import load_bundle, read_config, weights_digest
from dermxai.preprocessing import resize_cover, to_array, to_batch


@dataclass(frozen=True)
class Prediction:
    """Calibrated probabilities for one image, with the malignant score and the abstention decision."""

    model_id: str
    probabilities: dict[str, float]
    malignant_score: float
    malignant_threshold: float | None  # None: the bundle has no validated threshold, so no flag
    abstain_reasons: list[str] = field(default_factory=list)
    energy: float | None = None
    out_of_distribution: bool = False  # the feature gate found the image unlike dermoscopy of one lesion
    ood_score: float | None = None

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
            "model_id": self.model_id,
            "top_class": self.top_class,
            "top_class_name": CLASS_NAMES.get(self.top_class),
            "confidence": self.confidence,
            "probabilities": self.probabilities,
            "malignant": {
                "score": self.malignant_score,
                "threshold": self.malignant_threshold,
                "flagged": self.malignant_flag,
                "classes": list(MALIGNANT),
            },
            "abstain": self.abstain,
            "abstain_reasons": self.abstain_reasons,
            "energy": self.energy,
            "out_of_distribution": self.out_of_distribution,
            "ood_score": self.ood_score,
        }


EXPLANATION_SIDE = 1024  # longest side of the image an Explanation keeps (caches hold Explanations)
OOD_REASON = (
    "this does not look like a dermoscopic image of a single skin lesion: its colours and textures are "
    "unlike every image the model was trained on, so any diagnosis would be a guess"
)


def make_prediction(
    model_id: str,
    classes: list[str],
    probabilities: np.ndarray,
    threshold: float | None,
    reasons: list[str],
    energy_score: float | None = None,
    ood_score: float | None = None,
    out_of_distribution: bool = False,
) -> Prediction:
    """A Prediction from calibrated probabilities in ``classes`` order."""
    probs = {c: float(p) for c, p in zip(classes, probabilities)}
    malignant = sum(probs[c] for c in MALIGNANT if c in probs)
    return Prediction(
        model_id, probs, float(malignant), threshold, reasons, energy_score, out_of_distribution, ood_score
    )


@dataclass(frozen=True)
class Explanation:
    """A prediction with its class activation map (at the model's input size) and the upright image."""

    prediction: Prediction
    cam: np.ndarray
    image: Image.Image
    method: str
    target_class: str

    def overlay(self, opacity: float = 0.6, width: int = 480, colormap: str = "turbo") -> Image.Image:
        """The CAM over the image, cropped as the model saw it, ``width`` pixels wide.

        Each pixel's opacity is ``opacity`` times its CAM value, so regions the model ignored keep their own
        colours and the lesion stays visible under the heat.
        """
        import matplotlib

        height = round(width * self.cam.shape[0] / self.cam.shape[1])
        base = resize_cover(self.image, (height, width)).astype(np.float32)
        cam = np.clip(
            np.asarray(Image.fromarray(self.cam.astype(np.float32), "F").resize((width, height), Image.BILINEAR)), 0, 1
        )
        heat = matplotlib.colormaps[colormap](cam)[..., :3] * 255
        alpha = (opacity * cam)[..., None]
        return Image.fromarray(np.uint8(np.clip((1 - alpha) * base + alpha * heat, 0, 255)))


def model_id(folder: Path) -> str:
    """The bundle folder's name and a short hash of its weights: names exactly which model answered."""
    return f"{folder.resolve().name}-{weights_digest(folder)[:10]}"


class Predictor:
    """A loaded bundle: validate, preprocess, predict with calibration and abstention, explain."""

    def __init__(
        self, bundle: str | Path, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS, prefer_onnx: bool = True
    ) -> None:
        self.folder = Path(bundle)
        self.config = read_config(self.folder)
        self.gate: FeatureGate | None = load_gate(self.folder)
        self.backend: OnnxBackend | TorchBackend = load_backend(self.folder, prefer_onnx=prefer_onnx)
        if (
            self.gate is not None
            and isinstance(self.backend, OnnxBackend)
            and len(self.backend.session.get_outputs()) < 2
        ):
            # a graph exported before the gate existed has no features output: serve on PyTorch (re-export it)
            self.backend = load_backend(self.folder, prefer_onnx=False)
        self.model_id = model_id(self.folder)
        self.classes: list[str] = list(self.config.classes)
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

    def outputs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw logits (N, C) and gate features (N, D) or None of uint8 images (N, H, W, 3) at the input size."""
        batch = to_array(images, self.config)
        with self._lock:
            return self.backend.outputs(batch)

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Raw logits (N, C) of preprocessed uint8 images (N, H, W, 3) at the bundle's input size."""
        return self.outputs(images)[0]

    def interpret(self, logits: np.ndarray, features: np.ndarray | None = None) -> Prediction:
        """Served prediction (decision rule, then calibration), malignant score and abstention from raw logits.

        ``features``: the image's gate features; when the bundle has a gate and they are out of its range, the
        prediction is withheld as out-of-distribution, before and above every other reason.
        """
        adjusted = self.config.decision_logits(logits[None])[0]
        probs = calibrated_probabilities(adjusted, self.config.temperature)
        reasons = abstain_reasons(adjusted, self.config.temperature, self.config.abstain)
        ood_score, outside = None, False
        if self.gate is not None and features is not None:
            ood_score = float(self.gate.scores(features[None])[0])
            outside = ood_score > self.gate.threshold
            if outside:
                reasons.insert(0, OOD_REASON)
        return make_prediction(
            self.model_id,
            self.classes,
            probs,
            self.config.malignant_threshold,
            reasons,
            float(energy(adjusted, self.config.temperature)),
            ood_score,
            outside,
        )

    def predict(self, data: bytes | Image.Image) -> Prediction:
        """The served prediction for one image (bytes are validated first)."""
        array = resize_cover(self.load(data), self.config.size)
        logits, features = self.outputs(array[None])
        return self.interpret(logits[0], None if features is None else features[0])

    def explain(
        self, data: bytes | Image.Image, method: str | None = None, target_class: str | None = None
    ) -> Explanation:
        """The served prediction (gate, decision rule, calibration) and the CAM of ``target_class``.

        The CAM's default target is the served label, so a heatmap always explains the class shown beside it;
        the default method is the bundle's ``cam_method`` (Grad-CAM when it has none).
        """
        method = method or self.config.cam_method
        from dermxai.inference.cams import explain

        if target_class is not None and target_class not in self.classes:
            raise ValueError(f"unknown class {target_class!r}: use one of {', '.join(self.classes)}")
        image = self.load(data)
        resized = resize_cover(image, self.config.size)[None]
        image.thumbnail((EXPLANATION_SIDE, EXPLANATION_SIDE))  # kept for overlays: bounded, whatever the upload
        logits, features = self.outputs(resized)
        prediction = self.interpret(logits[0], None if features is None else features[0])
        target = target_class or prediction.top_class  # the served label, after the decision rule
        with self._lock:
            cams, _ = explain(
                self.model,
                self.config.target_layer(),
                to_batch(resized, self.config),
                method,
                [self.classes.index(target)],
            )
        return Explanation(prediction, cams[0], image, method, target)
