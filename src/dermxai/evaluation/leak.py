"""``leak``: one recipe trained on four splits, mistake by mistake, each evaluated on its own test images.

Arms: the honest lesion-grouped split; a random image-level split (same-lesion photos cross); and
oversample-then-split, minority classes copied up to the majority count **before** a random image-level
split, with plain copies and with augmented copies (so copies of one image sit in train and test). Every arm
gets the same optimiser steps (an epoch is the honest training set's batch count), seed and evaluation; the
audit counts, per arm, test images with a same-lesion sibling, a copy of the same image, and a byte-identical
file in train.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from dermxai.data import load_dataset
from dermxai.data.audit import audit_split
from dermxai.data.oversample import oversample, read_copies
from dermxai.data.splits import grouped_split, honest_groups, image_split, read_split, write_split
from dermxai.evaluation.evaluate import evaluate, from_split
from dermxai.evaluation.report import fmt, plt
from dermxai.models.bundle import is_bundle
from dermxai.training.config import TrainConfig

LEAK_RECIPE = {
    "arch": "efficientnet_lite0",
    "weights": "imagenet",
    "height": 75,
    "width": 100,
    "epochs": 15,
    "batch_size": 64,
    "lr": 1e-3,
    "backbone_lr_scale": 0.3,
    "patience": 100,
}
ARMS = {
    "lesion": "lesion-grouped split (honest)",
    "image": "random image-level split",
    "oversample_plain": "oversampled with plain copies, then split by image",
    "oversample_augmented": "oversampled with augmented copies, then split by image",
}
ROWS = (
    ("accuracy", "Accuracy"),
    ("balanced_accuracy", "Balanced accuracy"),
    ("macro_f1", "Macro F1"),
    ("macro_auc", "Macro AUC"),
)
SHORT = {
    "lesion": "lesion-grouped\n(honest)",
    "image": "random\nimage-level",
    "oversample_plain": "oversampled (plain\ncopies), then split",
    "oversample_augmented": "oversampled (augmented\ncopies), then split",
}
SOURCE_STUDY_ACCURACY = 0.97  # reported for ResNet18, DenseNet121 and EfficientNet-B0 (random split, oversampled)


def prepare_arms(data: Path, out: Path, seed: int, given: dict[str, Path | None], arms: list[str]) -> dict:
    """Data folder and split file of each arm: given splits, else new ones (seed ``seed``) under ``out``."""
    table = load_dataset(data)
    prepared = {}
    for name in arms:
        arm_data, arm_table = data, table
        if name.startswith("oversample_"):
            arm_data = oversample(table, out / "data" / name, name.removeprefix("oversample_"), seed=seed)
            arm_table = load_dataset(arm_data)
        split_path = Path(given[name]) if given.get(name) else out / "splits" / f"{name}.csv"
        if given.get(name):
            read_split(split_path, arm_table)
        elif not split_path.is_file():
            split = (
                grouped_split(arm_table, honest_groups(arm_table), seed=seed)
                if name == "lesion"
                else image_split(arm_table, seed=seed)
            )
            write_split(split, split_path)
        prepared[name] = {"data": arm_data, "split": split_path}
    return prepared


def run_leak(
    data: Path,
    out: Path,
    config: TrainConfig,
    *,
    splits: dict[str, Path | None] | None = None,
    arms: list[str] | None = None,
    n_bootstrap: int = 1000,
    accelerator: str = "auto",
    progress: bool = True,
) -> dict:
    """Train (or reuse) and evaluate one model per arm; write ``leak.json``, ``leak.md`` and ``leak.png``."""
    from dermxai.training.run import default_cache_dir, train

    arms = arms or list(ARMS)
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        raise ValueError(f"unknown leak arm(s) {', '.join(unknown)}; choose from {', '.join(ARMS)}")
    out.mkdir(parents=True, exist_ok=True)
    prepared = prepare_arms(data, out, config.seed, splits or {}, arms)
    lesion = prepared.get("lesion") or prepare_arms(data, out, config.seed, splits or {}, ["lesion"])["lesion"]
    honest = read_split(lesion["split"])
    steps = math.ceil((honest["split"] == "train").sum() / config.batch_size)
    results = {}
    for name, arm in prepared.items():
        run_dir = out / name
        arm_config = config
        if config.limit_train_batches == 1.0:
            arm_config = TrainConfig.from_dict({**config.to_dict(), "limit_train_batches": steps})
        if not is_bundle(run_dir / "bundle"):
            train(
                arm["data"],
                arm["split"],
                run_dir,
                arm_config,
                resume=(run_dir / "checkpoints" / "last.ckpt").is_file(),
                accelerator=accelerator,
                progress=progress,
                allow_leaky_split=name != "lesion",  # the leaky arms are the point of this study
            )
        metrics = evaluate(
            run_dir / "bundle",
            from_split(arm["data"], arm["split"], "test"),
            run_dir / "eval",
            n_bootstrap=n_bootstrap,
            seed=config.seed,
            cache_dir=default_cache_dir(arm["data"], config.height, config.width),
            command=f"dermxai leak --data {data} --out {out}",
        )
        results[name] = {
            "data": str(arm["data"]),
            "split": str(arm["split"]),
            "train_n": int((read_split(arm["split"])["split"] == "train").sum()),
            "steps_per_epoch": steps if arm_config.limit_train_batches == steps else None,
            "test_n": metrics["n"],
            **copies_in_train(arm["data"], arm["split"]),
            **{k: metrics[k] for k, _ in ROWS},
            "ci95": {k: metrics["ci95"][k] for k, _ in ROWS},
        }
    summary = {
        "data": str(data),
        "recipe": config.to_dict(),
        "steps_per_epoch": steps,
        "source_study_accuracy": SOURCE_STUDY_ACCURACY,
        "results": results,
    }
    (out / "leak.json").write_text(json.dumps(summary, indent=2))
    (out / "leak.md").write_text(leak_markdown(summary))
    plot_leak(summary, out / "leak.png")
    return summary


def copies_in_train(data: Path, split_path: Path) -> dict:
    """The audit's counts for one arm: test images with a same-lesion sibling, a copy, an identical file in train."""
    table = load_dataset(data)
    split = read_split(split_path, table)
    audit = audit_split(table, split)
    source = read_copies(data)
    origin = split["image_id"].map(lambda image_id: source.get(image_id, image_id))
    in_train = set(origin[split["split"] == "train"])
    test = split["split"] == "test"
    return {
        "test_images_with_train_sibling": audit["test_images_with_train_sibling"],
        "test_images_with_train_copy": int(origin[test].isin(in_train).sum()),
        "test_images_with_identical_train_file": audit["test_images_with_train_twin"],
    }


def leak_markdown(summary: dict) -> str:
    """One table, mistake by mistake: each arm's test figures (95% CI) next to its audit counts."""
    r = summary["recipe"]
    lines = [
        "# The leak, shown",
        "",
        f"Same recipe ({r['arch']}, {r['weights']} weights, {r['height']}x{r['width']}, {r['epochs']} epochs of "
        f"{summary['steps_per_epoch']} steps of {r['batch_size']} images, seed {r['seed']}) trained on each arm "
        f"built from `{summary['data']}` and evaluated on that arm's own test images.",
        "",
        "| Arm | Test images | same-lesion sibling in train | copy of the same image in train | "
        "byte-identical file in train | " + " | ".join(label for _, label in ROWS) + " |",
        "|---|---|---|---|---|" + "---|" * len(ROWS),
    ]
    for name, res in summary["results"].items():
        n = res["test_n"]
        counts = [
            f"{res[k]} ({100 * res[k] / max(1, n):.1f}%)"
            for k in (
                "test_images_with_train_sibling",
                "test_images_with_train_copy",
                "test_images_with_identical_train_file",
            )
        ]
        cells = [f"{fmt(res[k])} [{fmt(res['ci95'][k][0])}, {fmt(res['ci95'][k][1])}]" for k, _ in ROWS]
        lines.append(f"| {ARMS[name]} | {n} | " + " | ".join(counts + cells) + " |")
    lines += [
        f"| source study (reported) | | | | | ~{summary['source_study_accuracy']:.2f} | not reported | | |",
        "",
        "95% intervals: bootstrap over lesions (copies stay with their lesion). Every arm trains for the same "
        "number of optimiser steps, so an oversampled arm sees each copy fewer times than the honest arm sees "
        "each image, not more.",
    ]
    return "\n".join(lines) + "\n"


def plot_leak(summary: dict, path: Path) -> None:
    """Accuracy and balanced accuracy of each arm with 95% CIs, and the source study's reported accuracy."""
    names = list(summary["results"])
    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.38
    for offset, (key, label) in zip((-width / 2, width / 2), ROWS[:2]):
        values = [summary["results"][n][key] for n in names]
        lows = [v - summary["results"][n]["ci95"][key][0] for n, v in zip(names, values)]
        highs = [summary["results"][n]["ci95"][key][1] - v for n, v in zip(names, values)]
        ax.bar([i + offset for i in range(len(names))], values, width, yerr=[lows, highs], capsize=3, label=label)
    ax.axhline(summary["source_study_accuracy"], color="black", linestyle="--", linewidth=1)
    ax.text(len(names) - 0.5, summary["source_study_accuracy"] + 0.01, "source study accuracy", ha="right", fontsize=8)
    ax.set_xticks(range(len(names)), [SHORT[n] for n in names])
    ax.tick_params(axis="x", labelsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test figure (own split)")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
