"""``leak``: the same recipe trained on a random image-level split and on the lesion-grouped split.

Each model is evaluated on its own split's test images. The image-level test set shares lesions with its
training set (the audit counts how many test images have a same-lesion sibling in train), so its figures
are inflated; the table shows by how much. Default recipe: EfficientNet-Lite0 (ImageNet) at 75x100 for 2
epochs, a run of roughly 15 minutes per split on a 2-core CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

from dermxai.data import load_dataset
from dermxai.data.audit import audit_split
from dermxai.data.duplicates import read_reviewed_pairs
from dermxai.data.splits import grouped_split, image_split, lesion_groups, read_split, write_split
from dermxai.evaluation.evaluate import evaluate, from_split
from dermxai.evaluation.report import fmt
from dermxai.training.config import TrainConfig

LEAK_RECIPE = {
    "arch": "efficientnet_lite0",
    "weights": "imagenet",
    "height": 75,
    "width": 100,
    "epochs": 2,
    "batch_size": 64,
    "lr": 1e-3,
    "backbone_lr_scale": 0.3,
    "patience": 100,
}
SPLITS = {"image": "random image-level split (leaky)", "lesion": "lesion-grouped split (honest)"}
ROWS = (("accuracy", "Accuracy"), ("balanced_accuracy", "Balanced accuracy"), ("macro_auc", "Macro AUC"))


def make_splits(data: Path, out: Path, seed: int, given: dict[str, Path | None]) -> dict[str, Path]:
    """Split files for both strategies: the given ones, else new ones (seed ``seed``) under ``out/splits``."""
    table = load_dataset(data)
    paths = {}
    for name in SPLITS:
        if given.get(name):
            read_split(given[name], table)
            paths[name] = Path(given[name])
            continue
        paths[name] = out / "splits" / f"{name}.csv"
        if not paths[name].is_file():
            split = (
                image_split(table, seed=seed)
                if name == "image"
                else grouped_split(table, lesion_groups(table, read_reviewed_pairs()), seed=seed)
            )
            write_split(split, paths[name])
    return paths


def run_leak(
    data: Path,
    out: Path,
    config: TrainConfig,
    *,
    splits: dict[str, Path | None] | None = None,
    n_bootstrap: int = 1000,
    accelerator: str = "auto",
    progress: bool = True,
) -> dict:
    """Train (or reuse) and evaluate one model per split; write ``leak.json`` and ``leak.md`` in ``out``."""
    from dermxai.training.run import default_cache_dir, train

    out.mkdir(parents=True, exist_ok=True)
    paths = make_splits(data, out, config.seed, splits or {})
    table = load_dataset(data)
    results = {}
    for name, split_path in paths.items():
        run_dir = out / name
        if not (run_dir / "bundle" / "config.json").is_file():
            train(
                data,
                split_path,
                run_dir,
                config,
                resume=(run_dir / "checkpoints" / "last.ckpt").is_file(),
                accelerator=accelerator,
                progress=progress,
            )
        metrics = evaluate(
            run_dir / "bundle",
            from_split(data, split_path, "test"),
            run_dir / "eval",
            n_bootstrap=n_bootstrap,
            seed=config.seed,
            cache_dir=default_cache_dir(data, config.height, config.width),
            command=f"dermxai leak --data {data} --out {out}",
        )
        audit = audit_split(table, read_split(split_path, table))
        results[name] = {
            "split": str(split_path),
            "test_n": metrics["n"],
            "test_share_with_train_sibling": audit["test_share_with_train_sibling"],
            "test_images_with_train_sibling": audit["test_images_with_train_sibling"],
            **{k: metrics[k] for k, _ in ROWS},
            "ci95": {k: metrics["ci95"][k] for k, _ in ROWS},
        }
    summary = {"data": str(data), "recipe": config.to_dict(), "results": results}
    (out / "leak.json").write_text(json.dumps(summary, indent=2))
    (out / "leak.md").write_text(leak_markdown(summary))
    return summary


def leak_markdown(summary: dict) -> str:
    """One table: each split's test figures (95% CI) next to its audit figure."""
    r = summary["recipe"]
    lines = [
        "# The leak, shown",
        "",
        f"Same recipe ({r['arch']}, {r['weights']} weights, {r['height']}x{r['width']}, {r['epochs']} epochs, "
        f"seed {r['seed']}) trained on each split of `{summary['data']}` and evaluated on that split's test images.",
        "",
        "| Split | Test images | Test images with a same-lesion sibling in train | "
        + " | ".join(label for _, label in ROWS)
        + " |",
        "|---|---|---|" + "---|" * len(ROWS),
    ]
    for name, res in summary["results"].items():
        cells = [f"{fmt(res[k])} [{fmt(res['ci95'][k][0])}, {fmt(res['ci95'][k][1])}]" for k, _ in ROWS]
        lines.append(
            f"| {SPLITS[name]} | {res['test_n']} | {res['test_images_with_train_sibling']} "
            f"({100 * res['test_share_with_train_sibling']:.1f}%) | " + " | ".join(cells) + " |"
        )
    lines += [
        "",
        "95% intervals: bootstrap over lesions. A leaky row above the honest one is what an image-level "
        "split adds once the model has learned to recognise individual lesions (it saw other photos of them "
        "in training); a recipe too short to memorise lesions can show no gap, or differences in either "
        "direction from its unsettled decision biases.",
    ]
    return "\n".join(lines) + "\n"
