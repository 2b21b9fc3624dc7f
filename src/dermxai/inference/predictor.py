"""The one Predictor behind the CLI, the app and the API: bundle in, validated image in, calibrated answer out.

Preprocessing is the training one (``resize_cover`` then ``to_batch``, both read from the bundle's config).
Predictions run on ONNX Runtime when the bundle holds a ``model.onnx`` exported from its weights (see
``dermxai export``), else on PyTorch; the PyTorch model is loaded only when needed (no ONNX, or a CAM), so
the prediction path never imports torch. CAMs run one at a time under a lock, because CAM hooks on the model
are not thread-safe; on PyTorch, predictions take the same lock, since a forward pass running while hooks are
registered would feed them.
"""

from __future__ import annotations

import threading
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from dermxai.data.labels import CLASS_NAMES, MALIGNANT
from dermxai.inference.feature_gate import FeatureGate, load_gate
from dermxai.inference.inputs import MAX_BYTES, MAX_PIXELS, read_image, to_rgb
from dermxai.inference.onnx_backend import OnnxBackend, TorchBackend, load_backend
from dermxai.inference.ood import abstain_reasons, energy
from dermxai.inference.similar import FeatureIndex, SimilarCase, load_index, read_thumbnail
from dermxai.models.bundle import BundleError, load_bundle, validate_bundle, weights_digest
from dermxai.preprocessing import cover_box, resize_cover, to_array, to_batch


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
    label: str | None = None  # the decision rule's class (None: the most probable one)
    uncertain_reasons: list[str] = field(default_factory=list)  # why the answer is uncertain (it is still given)
    similar: list[SimilarCase] = field(default_factory=list)  # the most similar confirmed training lesions

    @property
    def top_class(self) -> str:
        """The served class: the decision rule's (balanced accuracy), not always the most probable one."""
        return self.label or self.most_probable

    @property
    def most_probable(self) -> str:
        return max(self.probabilities, key=self.probabilities.get)

    @property
    def confidence(self) -> float:
        return self.probabilities[self.top_class]

    @property
    def malignant_flag(self) -> bool | None:
        return None if self.malignant_threshold is None else self.malignant_score >= self.malignant_threshold

    @property
    def abstain(self) -> bool:
        """No answer: only the out-of-distribution gate withholds (an uncertain answer is still an answer)."""
        return bool(self.abstain_reasons)

    @property
    def uncertain(self) -> bool:
        return bool(self.uncertain_reasons)

    @property
    def differential(self) -> list[tuple[str, float]]:
        """The most probable classes that together hold :data:`DIFFERENTIAL_MASS`, and the served class."""
        ranked = sorted(self.probabilities.items(), key=lambda item: -item[1])
        chosen, mass = [], 0.0
        for name, probability in ranked:
            if mass >= DIFFERENTIAL_MASS and name != self.top_class:
                continue
            chosen.append((name, probability))
            mass += probability
        return chosen

    def to_dict(self) -> dict:
        """A JSON-ready summary (the API's response body)."""
        return {
            "model_id": self.model_id,
            "top_class": self.top_class,
            "top_class_name": CLASS_NAMES.get(self.top_class),
            "confidence": self.confidence,
            "most_probable_class": self.most_probable,
            "probabilities": self.probabilities,
            "malignant": {
                "score": self.malignant_score,
                "threshold": self.malignant_threshold,
                "flagged": self.malignant_flag,
                "classes": list(MALIGNANT),
            },
            "abstain": self.abstain,
            "abstain_reasons": self.abstain_reasons,
            "uncertain": self.uncertain,
            "uncertain_reasons": self.uncertain_reasons,
            "differential": [{"class": name, "probability": p} for name, p in self.differential],
            "similar_cases": [case.to_dict() for case in self.similar],
            "energy": self.energy,
            "out_of_distribution": self.out_of_distribution,
            "ood_score": self.ood_score,
        }


SIMILAR_CASES = 6  # similar confirmed training lesions returned with a prediction (bundles with an index)
DIFFERENTIAL_MASS = 0.9  # the differential: the most probable classes that together hold this much
COLORMAP = "turbo"  # the heatmaps' colours (see colour_scale)
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
    label: str | None = None,
    uncertain_reasons: list[str] | None = None,
    similar: list[SimilarCase] | None = None,
) -> Prediction:
    """A Prediction from calibrated probabilities in ``classes`` order (``label``: the decision rule's class)."""
    probs = {c: float(p) for c, p in zip(classes, probabilities)}
    malignant = sum(probs[c] for c in MALIGNANT if c in probs)
    return Prediction(
        model_id,
        probs,
        float(malignant),
        threshold,
        reasons,
        energy_score,
        out_of_distribution,
        ood_score,
        label,
        uncertain_reasons or [],
        similar or [],
    )


@dataclass(frozen=True)
class Explanation:
    """A prediction with its class activation map (at the model's input size) and the upright image."""

    prediction: Prediction
    cam: np.ndarray
    image: Image.Image
    method: str
    target_class: str

    def overlay(self, opacity: float = 0.6, width: int = 480, colormap: str = COLORMAP) -> Image.Image:
        """The CAM over the whole image at its own aspect ratio, ``width`` pixels wide.

        Each pixel's opacity is ``opacity`` times its CAM value, so regions the model ignored keep their own
        colours and the lesion stays visible under the heat. When the model saw a centre crop (the upload's
        aspect differs from the model's), the parts it did not see are dimmed and the crop is outlined.
        """
        import matplotlib

        height = max(1, round(width * self.image.height / self.image.width))
        base = np.asarray(self.image.resize((width, height), Image.BILINEAR), dtype=np.float32)
        scale = width / self.image.width
        left, top, right, bottom = (round(v * scale) for v in cover_box(self.image.size, self.cam.shape))
        box_w, box_h = max(1, right - left), max(1, bottom - top)
        cam = np.zeros((height, width), np.float32)
        cam[top : top + box_h, left : left + box_w] = np.asarray(
            Image.fromarray(self.cam.astype(np.float32), "F").resize((box_w, box_h), Image.BILINEAR)
        )[: height - top, : width - left]
        cam = np.clip(cam, 0, 1)
        heat = matplotlib.colormaps[colormap](cam)[..., :3] * 255
        alpha = (opacity * cam)[..., None]
        drawn = (1 - alpha) * base + alpha * heat
        if (box_w, box_h) != (width, height):
            seen = np.zeros((height, width, 1), np.float32)
            seen[top : top + box_h, left : left + box_w] = 1
            drawn = drawn * (0.45 + 0.55 * seen)
        image = Image.fromarray(np.uint8(np.clip(drawn, 0, 255)))
        if (box_w, box_h) != (width, height):
            ImageDraw.Draw(image).rectangle((left, top, left + box_w - 1, top + box_h - 1), outline="white", width=2)
        return image


def model_id(folder: Path) -> str:
    """The bundle folder's name and a short hash of its weights: names exactly which model answered."""
    return f"{folder.resolve().name}-{weights_digest(folder)[:10]}"


class Predictor:
    """A loaded bundle: validate, preprocess, predict with calibration and abstention, explain.

    The bundle is checked when loaded (config, layers named in it, gate, and one forward pass whose outputs
    must fit the classes and the gate): a broken bundle raises BundleError or ValueError here, never at the
    first request. On ONNX Runtime, predictions take no lock (its sessions are thread-safe) and never wait for
    a heatmap; heatmaps run one at a time on the PyTorch model, which is loaded once, outside any request's lock
    when :meth:`warm` is called at start-up.
    """

    def __init__(
        self, bundle: str | Path, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS, prefer_onnx: bool = True
    ) -> None:
        self.folder = Path(bundle)
        self.config = validate_bundle(self.folder)
        self.gate: FeatureGate | None = load_gate(self.folder)
        self.index: FeatureIndex | None = load_index(self.folder)
        self.backend: OnnxBackend | TorchBackend = load_backend(self.folder, prefer_onnx=prefer_onnx)
        if (
            (self.gate is not None or self.index is not None)
            and isinstance(self.backend, OnnxBackend)
            and len(self.backend.session.get_outputs()) < 2
        ):
            # a graph exported before the gate existed has no features output: serve on PyTorch (re-export it)
            self.backend = load_backend(self.folder, prefer_onnx=False)
        self.model_id = model_id(self.folder)
        self.classes: list[str] = list(self.config.classes)
        self.max_bytes, self.max_pixels = max_bytes, max_pixels
        self._cam_lock = threading.Lock()  # CAM hooks on the PyTorch model are not thread-safe
        self._load_lock = threading.Lock()
        # predictions on the PyTorch model share the CAM lock (a forward pass would feed registered CAM hooks)
        self._predict_lock = self._cam_lock if isinstance(self.backend, TorchBackend) else nullcontext()
        self._check_outputs()

    def _check_outputs(self) -> None:
        """One forward pass of a blank image: logits must fit the classes, features the gate, all finite."""
        logits, features = self.outputs(np.zeros((1, *self.config.size, 3), dtype=np.uint8))
        where = f"{self.folder}"
        if logits.shape != (1, len(self.classes)) or not np.isfinite(logits).all():
            raise BundleError(
                f"{where}: the model gives {logits.shape[-1]} logits (finite: {bool(np.isfinite(logits).all())}) "
                f"for {len(self.classes)} classes"
            )
        if self.gate is not None and (features is None or features.shape[-1] != self.gate.dimension):
            got = "none" if features is None else features.shape[-1]
            raise BundleError(f"{where}: the gate expects {self.gate.dimension} features, the model gives {got}")
        thresholds = None if self.gate is None else self.gate.class_thresholds
        if thresholds is not None and len(thresholds) != len(self.classes):
            raise BundleError(
                f"{where}: the gate has thresholds for {len(thresholds)} classes, the model answers {len(self.classes)}"
            )
        if self.index is not None and (features is None or features.shape[-1] != self.index.dimension):
            got = "none" if features is None else features.shape[-1]
            raise BundleError(
                f"{where}: the feature index expects {self.index.dimension} features, the model gives {got}"
            )

    @property
    def model(self):
        """The PyTorch model (for CAMs and evaluation), loaded once on first use when predictions run on ONNX."""
        if isinstance(self.backend, TorchBackend):
            return self.backend.model
        with self._load_lock:
            if not hasattr(self, "_torch_model"):
                self._torch_model = load_bundle(self.folder)[0]
        return self._torch_model

    def thumbnail(self, image_id: str) -> bytes | None:
        """The JPEG thumbnail of a similar case's training image (None when the bundle has none)."""
        return read_thumbnail(self.folder, image_id)

    @property
    def heatmaps_ready(self) -> bool:
        """Whether the PyTorch model for heatmaps is loaded."""
        return isinstance(self.backend, TorchBackend) or hasattr(self, "_torch_model")

    def warm(self) -> None:
        """Load the PyTorch model for heatmaps now (servers call it at start-up, off the request path)."""
        _ = self.model

    def load(self, data: bytes | Image.Image) -> Image.Image:
        """Upright RGB image from untrusted bytes (validated; raises InvalidImage) or an upright PIL image."""
        return read_image(data, self.max_bytes, self.max_pixels) if isinstance(data, bytes) else to_rgb(data)

    def outputs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw logits (N, C) and gate features (N, D) or None of uint8 images (N, H, W, 3) at the input size."""
        batch = to_array(images, self.config)
        with self._predict_lock:
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
        probs = self.config.served_probabilities(logits[None])[0]
        answer = int(adjusted.argmax())
        label = self.classes[answer]
        unsure = abstain_reasons(adjusted, self.config.temperature, self.config.abstain)
        most_probable = self.classes[int(probs.argmax())]
        if most_probable != label:
            unsure.append(f"{most_probable} is more probable than its answer, {label}")
        ood_score, outside, similar = None, False, []
        if self.gate is not None and features is not None:
            ood_score = float(self.gate.scores(features[None])[0])
            outside = bool(self.gate.withheld(features[None], np.array([answer]))[0])
        if self.index is not None and features is not None and not outside:
            similar = self.index.nearest(features[None], SIMILAR_CASES)[0]
        return make_prediction(
            self.model_id,
            self.classes,
            probs,
            self.config.malignant_threshold,
            [OOD_REASON] if outside else [],
            float(energy(adjusted, self.config.temperature)),
            ood_score,
            outside,
            label,
            unsure,
            similar,
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
        model = self.model  # loaded (once) before taking the lock
        with self._cam_lock:
            cams, _ = explain(
                model,
                self.config.target_layer(),
                to_batch(resized, self.config),
                method,
                [self.classes.index(target)],
            )
        return Explanation(prediction, cams[0], image, method, target)
