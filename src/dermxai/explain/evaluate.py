"""Score a bundle's CAMs against lesion masks on one split subset, next to uniform and Gaussian chance maps.

For every image with a mask: in-mask energy, pointing game, deletion and insertion AUCs (pixels replaced by
a blurred copy of the image) and stability under flips/rotations. Means carry 95% CIs from a bootstrap that
resamples lesion groups. Writes ``explain_metrics.json``, ``explain_per_image.csv`` and ``explain_report.md``.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageFilter

from dermxai.data.index import load_dataset
from dermxai.data.splits import read_split
from dermxai.explain import scores
from dermxai.explain.io import read_mask, read_model_input
from dermxai.inference.cams import check_method, explain
from dermxai.models.bundle import BundleConfig, load_bundle
from dermxai.preprocessing import to_batch

METRICS = ("in_mask_energy", "pointing_game", "deletion_auc", "insertion_auc")
BLUR_SHARE = 0.1  # Gaussian blur radius of the "removed" image, as a share of the longer input side
SLOW_METHODS = ("scorecam",)  # a forward pass per target-layer channel: capped by ``slow_limit``, no stability
BASELINES = ("uniform", "gaussian")


def probabilities(logits: torch.Tensor, config: BundleConfig) -> np.ndarray:
    """Served class probabilities (the bundle's decision rule and temperature)."""
    return config.served_probabilities(logits.detach().float().cpu().numpy())


def blurred(image: np.ndarray) -> np.ndarray:
    """The "removed" version of an image: a Gaussian blur of radius ``BLUR_SHARE`` x its longer side."""
    radius = BLUR_SHARE * max(image.shape[:2])
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)))


def class_probability(model: torch.nn.Module, config: BundleConfig, target: int, batch_size: int = 64) -> Callable:
    """A function: uint8 images (N, H, W, 3) -> calibrated probability of class ``target``."""

    def run(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return np.concatenate(
                [
                    probabilities(
                        model(
                            to_batch(images[i : i + batch_size], config).contiguous(memory_format=torch.channels_last)
                        ),
                        config,
                    )[:, target]
                    for i in range(0, len(images), batch_size)
                ]
            )

    return run


def select_images(
    data: Path, split: Path, subset: str, limit: int | None, seed: int, images: Path | None = None
) -> pd.DataFrame:
    """The subset's images that have a lesion mask, in a seeded random order (classes mixed), first ``limit``."""
    table = load_dataset(data, images)
    assignment = read_split(split, table)
    if subset not in set(assignment["split"]):
        raise ValueError(f"{split}: no images in subset {subset!r}")
    chosen = table.merge(assignment[["image_id", "lesion_group", "split"]], on="image_id")
    chosen = chosen[chosen["split"].eq(subset) & chosen["mask_path"].notna()].sort_values("image_id")
    if chosen.empty:
        raise ValueError(f"no {subset} images with a lesion mask (ISIC_<id>_segmentation.png) under {data}")
    chosen = chosen.iloc[np.random.default_rng(seed).permutation(len(chosen))]
    return chosen.head(limit) if limit else chosen


@dataclass(frozen=True)
class Sample:
    """One image as the model sees it, with its mask, its blurred copy and the predicted (explained) class."""

    row: pd.Series
    image: np.ndarray
    blank: np.ndarray
    mask: np.ndarray
    target: int
    probability: float


def score_batch(
    model: torch.nn.Module,
    config: BundleConfig,
    rows: pd.DataFrame,
    methods: list[str],
    slow_left: int,
    steps: int,
    seed: int,
) -> list[dict]:
    """Per-image records for one batch: every method (slow ones while ``slow_left``) and both baselines.

    ``steps=0`` scores localisation only (in-mask energy, pointing game): no deletion/insertion curves and
    no stability, about 10x faster, for choosing a layer and method.
    """
    images = np.stack([read_model_input(p, config.size) for p in rows["path"]])
    batch = to_batch(images, config)
    with torch.no_grad():
        logits = model(batch).float().numpy()
    probs, labels = config.served_probabilities(logits), config.served_labels(logits)
    samples = [
        Sample(
            rows.iloc[n],
            images[n],
            blurred(images[n]),
            read_mask(rows.iloc[n]["mask_path"], config.size),
            int(labels[n]),
            float(probs[n, labels[n]]),
        )
        for n in range(len(rows))
    ]
    records = []
    for method in methods:
        count = min(slow_left, len(rows)) if method in SLOW_METHODS else len(rows)
        if count == 0:
            continue
        targets = [s.target for s in samples[:count]]
        cams, _ = explain(model, config.target_layer(), batch[:count], method, targets)
        unstable = (
            _stability(model, config, images[:count], cams, method, targets)
            if steps and method not in SLOW_METHODS
            else {}
        )
        for n, sample in enumerate(samples[:count]):
            records.append(
                _record(model, config, sample, method, cams[n], steps, seed)
                | {f"stability_{t}": v[n] for t, v in unstable.items()}
            )
    height, width = images.shape[1:3]
    chance = {"uniform": scores.uniform_map(height, width), "gaussian": scores.gaussian_map(height, width)}
    for sample in samples:
        for name, saliency in chance.items():
            records.append(_record(model, config, sample, f"baseline:{name}", saliency, steps, seed))
    return records


def _record(
    model, config: BundleConfig, sample: Sample, method: str, saliency: np.ndarray, steps: int, seed: int
) -> dict:
    """One image's scores for one map (``steps=0``: no deletion/insertion curves)."""
    deletion, insertion = (
        scores.deletion_insertion_auc(
            class_probability(model, config, sample.target), sample.image, sample.blank, saliency, steps, seed
        )
        if steps
        else (np.nan, np.nan)
    )
    row = sample.row
    return {
        "image_id": row["image_id"],
        "lesion_group": row["lesion_group"],
        "dx": row["dx"],
        "method": method,
        "predicted": config.classes[sample.target],
        "probability": sample.probability,
        "mask_share": float(sample.mask.mean()),
        "in_mask_energy": scores.in_mask_energy(saliency, sample.mask),
        "pointing_game": scores.pointing_game(saliency, sample.mask),
        "deletion_auc": deletion,
        "insertion_auc": insertion,
    }


def _stability(model, config, images, cams, method, targets) -> dict[str, list[float]]:
    """Correlation between each CAM and the CAM of the transformed image, transformed back."""
    result = {}
    for name in scores.stability_transforms(*images.shape[1:3]):
        forward, inverse = scores.TRANSFORMS[name]
        moved = np.stack([np.ascontiguousarray(forward(image)) for image in images])
        moved_cams, _ = explain(model, config.target_layer(), to_batch(moved, config), method, targets)
        result[name] = [scores.pearson(inverse(m), c) for m, c in zip(moved_cams, cams)]
    return result


def summarise(table: pd.DataFrame, methods: list[str], n_boot: int, seed: int) -> dict:
    """Bootstrap means per method, per class, for the baselines, and paired CAM-minus-Gaussian differences."""

    def stats(part: pd.DataFrame) -> dict:
        return {m: scores.bootstrap_mean(*_scored(part, m), n_boot, seed) for m in METRICS}

    per_method = {}
    gaussian = table[table["method"].eq("baseline:gaussian")].set_index("image_id")
    for method in methods:
        part = table[table["method"].eq(method)]
        if part.empty:
            continue
        stability_columns = [c for c in part if c.startswith("stability_") and part[c].notna().any()]
        paired = part.set_index("image_id")
        difference = paired[list(METRICS)] - gaussian.loc[paired.index, list(METRICS)]
        vs = {
            m: scores.bootstrap_mean(*_scored(difference.assign(lesion_group=paired["lesion_group"]), m), n_boot, seed)
            for m in METRICS
        }
        per_method[method] = {
            "n_images": len(part),
            **stats(part),
            "minus_gaussian": vs,
            "stability": {
                c.removeprefix("stability_"): scores.bootstrap_mean(
                    part[c].to_numpy(), part["lesion_group"].to_numpy(), n_boot, seed
                )
                for c in stability_columns
            },
            "per_class": {dx: {"n": len(g), **stats(g)} for dx, g in part.groupby("dx")},
        }
    primary = next(iter(per_method))
    images = table[table["method"].eq(primary)]["image_id"]
    baselines = {}
    for name in BASELINES:
        part = table[table["method"].eq(f"baseline:{name}") & table["image_id"].isin(images)]
        baselines[name] = stats(part)
    baselines["gaussian"]["parameters"] = {
        "centre": "image centre",
        "sigma_y": f"{scores.GAUSSIAN_SIGMA} x height",
        "sigma_x": f"{scores.GAUSSIAN_SIGMA} x width",
        "normalised": "sums to 1 over the input pixels",
    }
    head = per_method[primary]
    return {
        "method": primary,
        "methods": list(per_method),
        "n_images": head["n_images"],
        **{m: head[m] for m in METRICS},
        "per_method": per_method,
        "per_class": head["per_class"],
        "baselines": baselines,
        "stability": head["stability"],
    }


def _scored(part: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Values of ``metric`` that were scored (not NaN) and their lesion groups."""
    kept = part[metric].notna().to_numpy()
    return part[metric].to_numpy(dtype=np.float64)[kept], part["lesion_group"].to_numpy()[kept]


def score_explanations(
    bundle: Path,
    data: Path,
    split: Path,
    subset: str,
    methods: list[str],
    out: Path,
    limit: int | None = None,
    slow_limit: int = 10,
    steps: int = 16,
    n_boot: int = 1000,
    seed: int = 0,
    batch_size: int = 8,
    images: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    layer: str | None = None,
    faithfulness: bool = True,
) -> dict:
    """Score ``methods`` on ``subset`` of ``split`` and write the metrics, per-image table and report to ``out``.

    ``layer`` overrides the bundle's CAM target layer (a module path such as ``blocks.5``).
    """
    methods = [check_method(m) for m in dict.fromkeys(methods)]
    if steps < 2:
        raise ValueError("--steps must be at least 2")
    start = time.perf_counter()
    scored_steps = steps if faithfulness else 0
    model, config = load_bundle(bundle)
    if layer:
        config = config.replace(cam_layer=layer)
    model = model.to(memory_format=torch.channels_last)  # about 1.3x faster convolutions on CPU
    chosen = select_images(Path(data), Path(split), subset, limit, seed, images)
    records: list[dict] = []
    slow_left = slow_limit
    for first in range(0, len(chosen), batch_size):
        rows = chosen.iloc[first : first + batch_size]
        records += score_batch(model, config, rows, methods, slow_left, scored_steps, seed)
        slow_left = max(0, slow_left - len(rows))
        if progress:
            progress(min(first + batch_size, len(chosen)), len(chosen))
    table = pd.DataFrame(records)
    result = summarise(table, methods, n_boot, seed)
    command = (
        f"dermxai explain-score --model {bundle} --data {data} --split {split} --subset {subset} "
        + " ".join(f"--method {m}" for m in methods)
        + (f" --limit {limit}" if limit else "")
        + f" --scorecam-limit {slow_limit} --steps {steps} --bootstrap {n_boot} --seed {seed} --out {out}"
        + (f" --layer {layer}" if layer else "")
        + ("" if faithfulness else " --localisation-only")
    )
    result["provenance"] = _provenance(
        command,
        bundle,
        config,
        data,
        split,
        subset,
        limit,
        slow_limit,
        scored_steps,
        n_boot,
        seed,
        time.perf_counter() - start,
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "explain_per_image.csv", index=False)
    (out / "explain_metrics.json").write_text(json.dumps(result, indent=2))
    (out / "explain_report.md").write_text(report(result))
    return result


def _provenance(command, bundle, config, data, split, subset, limit, slow_limit, steps, n_boot, seed, wall) -> dict:
    from importlib.metadata import version

    return {
        "command": command,
        "bundle": str(bundle),
        "arch": config.arch,
        "input": list(config.size),
        "weights": config.weights,
        "cam_layer": config.target_layer(),
        "temperature": config.temperature,
        "split_fingerprint": config.split_fingerprint,
        "data": str(data),
        "split": str(split),
        "subset": subset,
        "limit": limit,
        "slow_methods_limit": {m: slow_limit for m in SLOW_METHODS},
        "order": f"images with a mask, sorted by id, shuffled with seed {seed}",
        "removal": f"pixels replaced by a Gaussian blur (radius {BLUR_SHARE} x longer input side) of the image",
        "steps": steps,
        "faithfulness_scored": bool(steps),
        "target": "the predicted class; served probabilities",
        "bootstrap": {"n": n_boot, "seed": seed, "unit": "lesion_group of the split file", "ci": "percentile 95%"},
        "wall_time_s": round(wall, 1),
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "versions": {p: version(p) for p in ("torch", "timm", "grad-cam", "numpy")},
    }


def fmt(stat: dict) -> str:
    if stat["mean"] is None:
        return "n/a"
    return f"{stat['mean']:.3f} [{stat['ci95'][0]:.3f}, {stat['ci95'][1]:.3f}]"


def report(result: dict) -> str:
    """A short Markdown report: methods next to the chance baselines, stability, per class."""
    p = result["provenance"]
    lines = [
        f"# Explanations vs lesion masks: {p['arch']} ({p['input'][0]}x{p['input'][1]}), {p['subset']} subset",
        "",
        f"Data `{p['data']}`, split `{p['split']}`; {p['order']}; limit {p['limit']}. "
        f"Means with 95% CIs (bootstrap over lesion groups, n={p['bootstrap']['n']}). "
        f"Deletion/insertion: {p['steps']} steps, {p['removal']}; CAM of the predicted class. "
        f"Wall time {p['wall_time_s']} s.",
        "",
        "| map | images | in-mask energy | pointing game | deletion AUC (lower better) | insertion AUC |",
        "|---|---|---|---|---|---|",
    ]
    rows = [(m, r) for m, r in result["per_method"].items()]
    rows += [(f"chance: {b}", r | {"n_images": result["n_images"]}) for b, r in result["baselines"].items()]
    for name, r in rows:
        lines.append(f"| {name} | {r['n_images']} | " + " | ".join(fmt(r[m]) for m in METRICS) + " |")
    lines += [
        "",
        "Gaussian baseline: centred, sigma = 0.25 x height and 0.25 x width. Paired difference "
        "method minus Gaussian (in-mask energy, pointing game):",
        "",
    ]
    for m, r in result["per_method"].items():
        lines.append(
            f"- {m}: {fmt(r['minus_gaussian']['in_mask_energy'])}, {fmt(r['minus_gaussian']['pointing_game'])}"
        )
    lines += ["", "Stability (Pearson r between the CAM and the CAM of the transformed image, transformed back):", ""]
    for m, r in result["per_method"].items():
        lines.append(f"- {m}: " + ", ".join(f"{t} {fmt(s)}" for t, s in r["stability"].items()))
    lines += ["", f"Per true class ({result['method']}): in-mask energy, pointing game", ""]
    for dx, r in result["per_class"].items():
        lines.append(f"- {dx} (n={r['n']}): {fmt(r['in_mask_energy'])}, {fmt(r['pointing_game'])}")
    return "\n".join(lines) + "\n"
