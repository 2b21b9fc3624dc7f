"""Which layer's statistics should the out-of-distribution gate read? A probe, run once to choose.

    python experiments/ood_layer_probe.py BUNDLE LAYER [LAYER ...]    # e.g. src/dermxai/assets/default_model blocks.3 blocks.4 blocks.5

A LAYER may join several with "+" (e.g. members.1.blocks.5+members.3.blocks.5): their features concatenated.

For each layer (and the penultimate features, "cam"): the gate `dermxai gate` serves (inference/feature_gate.py),
fitted as evaluation/gate.py fits it: class-conditional PPCA-Mahalanobis on pooled mean/std features of 1,500
training images plus one random acquisition variant of each, labelled by diagnosis; thresholds per class the
bundle answers (its decision rule), 95% kept of 1,000 validation images, rare answers looser. Printed per layer:
share withheld of the other validation images (held out from the thresholds), of each kind of the offline
non-dermoscopic set, and of 150 validation images under each fixed acquisition change; AUROC of held-out
validation dermoscopy against the non-dermoscopic set. The test split is not read, so a layer may be chosen on
these figures.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dermxai.evaluation.evaluate import from_split
from dermxai.evaluation.gate import acquisition_variant
from dermxai.evaluation.metrics import binary_auc
from dermxai.evaluation.ood_set import non_dermoscopic_set
from dermxai.evaluation.shifts import ACQUISITION_SHIFTS
from dermxai.inference.feature_gate import fit_gate, fit_threshold
from dermxai.models.bundle import load_bundle
from dermxai.models.features import pooled_mean_std
from dermxai.preprocessing import resize_cover, to_batch

DATA, SPLIT = Path("../shared/data/ham10000"), Path("splits/ham10000_seed0.csv")
THRESHOLD_IMAGES = 1000  # validation images the threshold is set on; the rest are held out to measure it


def main(bundle: str, layers: list[str]) -> None:
    model, config = load_bundle(bundle)
    size = (config.height, config.width)
    seen: dict[str, torch.Tensor] = {}
    parts_of = {layer: layer.split("+") for layer in layers}
    for name in {*[part for parts in parts_of.values() for part in parts], config.cam_layer}:
        model.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o))

    def features(images: list[Image.Image]) -> dict[str, np.ndarray]:
        """Each layer's features, and under "answers" the class the bundle's decision rule answers."""
        parts: dict[str, list[np.ndarray]] = {}
        for start in range(0, len(images), 64):
            pixels = np.stack([resize_cover(image, size) for image in images[start : start + 64]])
            with torch.inference_mode():
                logits = model(to_batch(pixels, config)).float().numpy()
            parts.setdefault("answers", []).append(config.decision_logits(logits).argmax(1))
            parts.setdefault("cam", []).append(seen[config.cam_layer].float().mean((2, 3)).numpy())
            for name in layers:
                pooled = [pooled_mean_std(seen[part]).numpy() for part in parts_of[name]]
                parts.setdefault(name, []).append(np.concatenate(pooled, 1))
        return {name: np.concatenate(chunks) for name, chunks in parts.items()}

    def split_images(subset: str, n: int) -> tuple[list[Image.Image], np.ndarray]:
        rows = from_split(DATA, SPLIT, subset).table.sample(frac=1, random_state=0).head(n)
        labels = rows["dx"].map(list(config.classes).index).to_numpy()
        return [Image.open(p).convert("RGB") for p in rows["path"]], labels

    rng = np.random.default_rng(1)
    train_images, train_labels = split_images("train", 1500)
    train, variants = features(train_images), features([acquisition_variant(im, rng) for im in train_images])
    val_images = split_images("val", THRESHOLD_IMAGES + 1000)[0]  # all of them, shuffled
    val, held_out = features(val_images[:THRESHOLD_IMAGES]), features(val_images[THRESHOLD_IMAGES:])
    shifted = {name: features([shift(im) for im in val_images[:150]]) for name, shift in ACQUISITION_SHIFTS.items()}
    outside = {
        kind: features(images)
        for kind, images in non_dermoscopic_set(6, 0, sorted(Path("docs/figures").glob("*.png"))).items()
    }
    for layer in ["cam", *layers]:
        gate = fit_gate(np.concatenate([train[layer], variants[layer]]), labels=np.r_[train_labels, train_labels])
        gate = fit_threshold(gate, val[layer], answered=val["answers"], n_classes=len(config.classes))

        def withheld(f: dict[str, np.ndarray], layer: str = layer) -> np.ndarray:
            return gate.withheld(f[layer], f["answers"])

        scores = np.concatenate([gate.scores(f[layer]) for f in outside.values()])
        held_out_scores = gate.scores(held_out[layer])
        auroc = binary_auc(
            np.r_[np.zeros(len(held_out_scores), bool), np.ones(len(scores), bool)], np.r_[held_out_scores, scores]
        )
        row = {
            "held-out val": np.mean(withheld(held_out)),
            "AUROC": auroc,
            "not dermoscopy": np.mean(np.concatenate([withheld(f) for f in outside.values()])),
        }
        row |= {kind: np.mean(withheld(f)) for kind, f in outside.items()}
        row |= {name: np.mean(withheld(f)) for name, f in shifted.items()}
        print(layer, {key: round(float(value), 3) for key, value in row.items()}, flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1], sys.argv[2:])
