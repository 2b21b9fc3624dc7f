"""Knowledge distillation: a teacher bundle's soft targets for the training images, and the loss that uses them.

A student trained on an ensemble's averaged outputs (Hinton et al. 2015) serves one model's latency while
learning what several members, and their flip averaging, agree on. The teacher is any bundle (typically a
``dermxai ensemble``); its targets are the log of its softmax averaged over the four flips of each training
image (``flips``), computed once and kept in the run folder (a resumed run trains on the same ones) and in the
dataset's cache folder (the next student of the same teacher skips the teacher's pass: over 18 minutes for v6
on a 2-core EPYC).
The student keeps its own augmentation: flips and turns of an image keep its teacher target (the teacher was
trained to be invariant to them).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dermxai.models.bundle import load_bundle
from dermxai.preprocessing import colour_correct, standardise, to_unit

TARGETS_FILE = "teacher_targets.npz"


def teacher_fingerprint(teacher: Path, flips: bool) -> str:
    """What the targets depend on besides the images: the teacher's weights and config, and the flips."""
    digest = hashlib.sha256()
    for name in ("model.safetensors", "config.json"):
        digest.update((teacher / name).read_bytes())
    digest.update(b"flips" if flips else b"plain")
    return digest.hexdigest()[:16]


def teacher_log_probs(
    teacher: Path,
    images: np.ndarray,
    classes: tuple[str, ...],
    flips: bool = True,
    bf16: bool = False,
    batch_size: int = 64,
) -> np.ndarray:
    """Log-probabilities (N, C) of ``teacher`` on uint8 NHWC images, averaged over the 4 flips when ``flips``
    (under bfloat16 autocast when ``bf16``: about twice as fast on CPUs with AVX512-BF16).

    Images are resized (bilinear) to the teacher's input size when it differs; the teacher must answer ``classes``.
    """
    model, config = load_bundle(teacher)
    if tuple(config.classes) != tuple(classes):
        raise ValueError(f"--teacher {teacher} answers {list(config.classes)}, the student learns {list(classes)}")
    mean = torch.tensor(config.mean).view(1, 3, 1, 1)
    std = torch.tensor(config.std).view(1, 3, 1, 1)
    out = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for start in range(0, len(images), batch_size):
            x = to_unit(torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])))
            if tuple(x.shape[-2:]) != tuple(config.size):
                x = F.interpolate(x, size=tuple(config.size), mode="bilinear", align_corners=False)
            x = standardise(colour_correct(x, config.colour_constancy), mean, std)
            views = [x, x.flip(3), x.flip(2), x.flip(2, 3)] if flips else [x]
            probs = torch.stack([model(v).float().softmax(1) for v in views]).mean(0)
            out.append(probs.clamp_min(1e-8).log())
    return torch.cat(out).numpy() if out else np.zeros((0, len(classes)), dtype=np.float32)


def cached_teacher_targets(
    run: Path,
    teacher: Path,
    image_ids: list[str],
    images: np.ndarray,
    classes: tuple[str, ...],
    flips: bool,
    bf16: bool = False,
    shared: Path | None = None,
) -> np.ndarray:
    """The teacher's targets for ``image_ids``, from ``run/teacher_targets.npz`` when it holds these, else from
    ``shared`` (the dataset's cache folder: every run with this teacher, these images and this precision finds
    them there), else computed; written to both (a resumed run reuses them; another teacher or other images
    recompute them)."""
    teacher = Path(teacher)
    if not (teacher / "config.json").is_file():
        raise FileNotFoundError(f"--teacher {teacher} is not a bundle folder (no config.json)")
    fingerprint = teacher_fingerprint(teacher, flips)
    path = Path(run) / TARGETS_FILE
    copies = [path]
    if shared is not None:
        copies.append(Path(shared) / f"teacher_{fingerprint}_{'bf16' if bf16 else 'fp32'}.npz")
    kept = {copy: _kept_targets(copy, fingerprint, image_ids) for copy in copies}
    log_probs = next((targets for targets in kept.values() if targets is not None), None)
    if log_probs is None:
        log_probs = teacher_log_probs(teacher, images, classes, flips, bf16).astype(np.float32)
        if not np.isfinite(log_probs).all():
            raise ValueError(f"--teacher {teacher} gives non-finite outputs on the training images")
    for copy, targets in kept.items():
        if targets is None:
            _write_targets(copy, log_probs, image_ids, fingerprint)
    return log_probs


def _kept_targets(path: Path, fingerprint: str, image_ids: list[str]) -> np.ndarray | None:
    """The targets ``path`` holds for this teacher and these images, or None (absent, other or unreadable)."""
    try:
        with np.load(path, allow_pickle=False) as kept:
            if str(kept["fingerprint"]) == fingerprint and kept["image_ids"].tolist() == list(image_ids):
                return kept["log_probs"]
    except (OSError, KeyError, ValueError):
        return None
    return None


def _write_targets(path: Path, log_probs: np.ndarray, image_ids: list[str], fingerprint: str) -> None:
    """Write the targets atomically (a partial file of this process first, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npz")
    np.savez(partial, log_probs=log_probs, image_ids=np.array(image_ids), fingerprint=np.array(fingerprint))
    partial.replace(path)


class DistillationLoss(nn.Module):
    """``(1 - weight) * hard(logits, labels) + weight * T^2 * KL(teacher_T || student_T)``.

    ``T`` softens both distributions (the T^2 keeps the gradient scale of the hard term); the KL of each image is
    weighted by its label's class weight (``class_weight``; none: equal), as the hard term weights it.
    """

    def __init__(
        self, hard: nn.Module, weight: float, temperature: float, class_weight: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        self.hard, self.weight, self.temperature = hard, weight, temperature
        self.register_buffer("class_weight", class_weight)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        target = (teacher.float() / t).log_softmax(1)
        kl = (target.exp() * (target - (logits.float() / t).log_softmax(1))).sum(1) * t * t
        weights = self.class_weight[labels] if self.class_weight is not None else torch.ones_like(kl)
        soft = (weights * kl).sum() / weights.sum().clamp_min(1e-12)
        return (1 - self.weight) * self.hard(logits, labels) + self.weight * soft
