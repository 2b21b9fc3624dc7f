"""evaluate, calibrate, compare and leak end to end on the committed fixture with a tiny bundle."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from dermxai.cli import app
from dermxai.data import load_dataset
from dermxai.data.labels import CLASSES
from dermxai.evaluation.contract import MALIGNANT, PER_CLASS, REQUIRED, check_metrics
from dermxai.models.bundle import BundleConfig, load_bundle, read_config, save_bundle
from dermxai.models.registry import create_model

runner = CliRunner()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """An untrained resnet18 at 32x48 saved as a bundle (as `train` would, minus the training)."""
    torch.manual_seed(0)
    model, arch = create_model("resnet18", "none", len(CLASSES))
    config = BundleConfig(
        "resnet18",
        tuple(CLASSES),
        32,
        48,
        arch.mean,
        arch.std,
        weights="none",
        seed=0,
        epochs_trained=3,
        best_epoch=2,
        val_bacc=0.2,
        train_time_s=90.0,
        dataset_fingerprint="f",
        split_fingerprint="s",
    )
    return save_bundle(tmp_path_factory.mktemp("model") / "bundle", model, config)


@pytest.fixture(scope="module")
def split_file(tmp_path_factory, fixture_table) -> Path:
    """Lesion-grouped halves: val and test (no train needed to evaluate)."""
    lesions = sorted(fixture_table["lesion_id"].unique())
    val = set(lesions[::2])
    path = tmp_path_factory.mktemp("split") / "split.csv"
    pd.DataFrame(
        {
            "image_id": fixture_table["image_id"],
            "lesion_group": fixture_table["lesion_id"],
            "split": fixture_table["lesion_id"].map(lambda lesion: "val" if lesion in val else "test"),
        }
    ).to_csv(path, index=False)
    return path


def evaluate(*args: str) -> object:
    return runner.invoke(app, ["evaluate", *args, "--bootstrap", "50"])


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, bundle, fixture_dir, split_file) -> Path:
    out = tmp_path_factory.mktemp("eval")
    result = evaluate("--model", str(bundle), "--data", str(fixture_dir), "--split", str(split_file), "--out", str(out))
    assert result.exit_code == 0, result.output
    return out


def test_metrics_json_honours_the_contract_and_agrees_with_the_predictions(evaluated, split_file):
    metrics = json.loads((evaluated / "metrics.json").read_text())
    check_metrics(metrics)
    assert set(REQUIRED) <= set(metrics) and metrics["classes"] == list(CLASSES)
    assert all(set(v) == set(PER_CLASS) for v in metrics["per_class"].values())
    assert set(metrics["malignant"]) == set(MALIGNANT) and metrics["malignant"]["threshold"] == 0.5
    split = pd.read_csv(split_file)
    predictions = pd.read_csv(evaluated / "predictions.csv")
    assert metrics["n"] == len(predictions) == (split["split"] == "test").sum()
    assert set(predictions["image_id"]) == set(split.loc[split["split"] == "test", "image_id"])
    assert metrics["accuracy"] == pytest.approx((predictions["predicted"] == predictions["dx"]).mean())
    probs = predictions[[f"prob_{c}" for c in CLASSES]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-4)
    assert (predictions["predicted"] == [CLASSES[k] for k in probs.argmax(1)]).all()
    assert metrics["bootstrap"]["unit"] == "lesion" and metrics["bootstrap"]["resamples"] == 50
    for key, (lo, hi) in metrics["ci95"].items():
        if lo is not None and metrics.get(key) is not None:
            assert lo <= hi
    p = metrics["provenance"]
    assert (p["arch"], p["height"], p["width"], p["weights"], p["epochs_trained"], p["train_time_s"]) == (
        "resnet18",
        32,
        48,
        "none",
        3,
        90.0,
    )
    assert p["evaluated_on"]["subset"] == "test" and "evaluate" in p["command"]
    assert sum(r["n"] for r in metrics["subgroups"]["sex"]) == metrics["n"]


def test_report_references_plots_that_exist(evaluated):
    text = (evaluated / "report.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(images) == 4 and all((evaluated / name).stat().st_size > 1000 for name in images)
    assert "| Balanced accuracy (mean recall) |" in text and "### age band" in text


def test_labels_csv_in_both_layouts_give_the_same_result(tmp_path, bundle, fixture_dir, fixture_table):
    plain, isic = tmp_path / "plain.csv", tmp_path / "isic.csv"
    fixture_table[["image_id", "dx"]].to_csv(plain, index=False)
    one_hot = pd.DataFrame({"image": fixture_table["image_id"]})
    for c in ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"):
        one_hot[c] = (fixture_table["dx"] == c.lower()).astype(float)
    one_hot.to_csv(isic, index=False)
    results = []
    for labels in (plain, isic):
        out = tmp_path / labels.stem
        result = evaluate(
            "--model", str(bundle), "--images", str(fixture_dir / "images"), "--labels", str(labels), "--out", str(out)
        )
        assert result.exit_code == 0, result.output
        results.append(json.loads((out / "metrics.json").read_text()))
    assert results[0]["n"] == results[1]["n"] == len(fixture_table)
    assert results[0]["confusion_matrix"] == results[1]["confusion_matrix"]
    assert results[0]["bootstrap"]["unit"] == "image"  # no lesion ids in these CSVs


def test_tta_is_recorded_and_changes_the_probabilities(tmp_path, bundle, fixture_dir, split_file, evaluated):
    result = evaluate(
        "--model", str(bundle), "--data", str(fixture_dir), "--split", str(split_file), "--out", str(tmp_path), "--tta"
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["tta"] is True and metrics["tta_views"] == 4  # 32x48 is not square
    plain = pd.read_csv(evaluated / "predictions.csv")
    assert not np.allclose(pd.read_csv(tmp_path / "predictions.csv")["prob_mel"], plain["prob_mel"])


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing bundle", "not a model bundle"),
        ("no such subset", "no images in subset 'train'"),
        ("unknown image", "image not found"),
        ("both sources", "give either"),
    ],
)
def test_bad_inputs_give_clear_errors(tmp_path, bundle, fixture_dir, split_file, case, message):
    args = {
        "missing bundle": [
            "--model",
            str(tmp_path / "nothing"),
            "--data",
            str(fixture_dir),
            "--split",
            str(split_file),
        ],
        "no such subset": [
            "--model",
            str(bundle),
            "--data",
            str(fixture_dir),
            "--split",
            str(split_file),
            "--subset",
            "train",
        ],
        "both sources": ["--model", str(bundle), "--data", str(fixture_dir), "--labels", str(split_file)],
    }
    if case == "unknown image":
        labels = tmp_path / "labels.csv"
        labels.write_text("image_id,dx\nISIC_0024307,mel\nISIC_9999999,nv\n")
        args[case] = ["--model", str(bundle), "--images", str(fixture_dir), "--labels", str(labels)]
    result = runner.invoke(app, ["evaluate", *args[case], "--out", str(tmp_path / "out")])
    text = " ".join(result.output.split())  # rich wraps long lines
    assert result.exit_code == 2 and "error:" in text and message in text, result.output


def test_calibrate_writes_temperature_and_threshold_into_the_bundle(tmp_path, bundle, fixture_dir, split_file):
    copy = shutil.copytree(bundle, tmp_path / "bundle")
    before = read_config(copy)
    result = runner.invoke(
        app,
        [
            "calibrate",
            "--model",
            str(copy),
            "--data",
            str(fixture_dir),
            "--split",
            str(split_file),
            "--target-sensitivity",
            "0.8",
        ],
    )
    assert result.exit_code == 0, result.output
    _, config = load_bundle(copy)
    fitted = ("temperature", "thresholds", "calibration", "abstain")
    assert config.replace(**{k: getattr(before, k) for k in fitted}) == before  # nothing else changed
    assert config.abstain["temperature"] == config.temperature  # the app's step runs after the temperature
    c = config.calibration
    assert config.temperature > 0 and c["nll_after"] <= c["nll_before"] + 1e-9
    assert c["val_sensitivity"] >= 0.8 and c["n_val"] == (pd.read_csv(split_file)["split"] == "val").sum()
    assert not list(copy.glob("*.partial"))
    out = tmp_path / "eval"
    assert (
        evaluate(
            "--model",
            str(copy),
            "--data",
            str(fixture_dir),
            "--split",
            str(split_file),
            "--subset",
            "val",
            "--out",
            str(out),
        ).exit_code
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["temperature"] == pytest.approx(config.temperature)
    assert metrics["malignant"]["threshold"] == pytest.approx(config.malignant_threshold)
    assert metrics["malignant"]["sensitivity"] >= 0.8  # same data it was fitted on
    bad = runner.invoke(
        app,
        [
            "calibrate",
            "--model",
            str(copy),
            "--data",
            str(fixture_dir),
            "--split",
            str(split_file),
            "--target-sensitivity",
            "1.5",
        ],
    )
    assert bad.exit_code == 2 and "(0, 1]" in " ".join(bad.output.split())


def test_compare_renders_one_row_per_run_with_cis_and_the_cam_column(tmp_path, evaluated, bundle):
    first, second, untrained = tmp_path / "resnet", tmp_path / "lite", tmp_path / "bare"
    shutil.copytree(evaluated, first)
    metrics = json.loads((evaluated / "metrics.json").read_text())
    metrics["accuracy"], metrics["ci95"]["accuracy"] = 0.8123, [0.7, 0.9]
    metrics["provenance"].update(
        arch="efficientnet_lite0",
        height=112,
        width=150,
        weights="imagenet",
        train_time_s=7200,
        train_hardware="2-core CPU",
    )
    second.mkdir()
    (second / "metrics.json").write_text(json.dumps(metrics))
    (second / "explain_metrics.json").write_text(
        json.dumps(
            {
                "in_mask_energy": {"mean": 0.61, "ci95": [0.55, 0.66]},
                "baselines": {"gaussian": {"in_mask_energy": {"mean": 0.42, "ci95": [0.4, 0.45]}}},
            }
        )
    )
    shutil.copytree(bundle, untrained / "bundle")
    table = tmp_path / "table.md"
    result = runner.invoke(app, ["compare", str(first), str(second), str(untrained), "--out", str(table)])
    assert result.exit_code == 0, result.output
    text = table.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 4 and "CAM in-mask energy (Gaussian baseline)" in rows[0]
    lite = next(r for r in rows if r.startswith("| lite"))
    assert "0.812 [0.700, 0.900]" in lite and "112x150" in lite and "2.0 h" in lite and "2-core CPU" in lite
    assert "0.610 [0.550, 0.660] (0.420 [0.400, 0.450])" in lite
    assert "not evaluated" in next(r for r in rows if r.startswith("| bare"))
    missing = runner.invoke(app, ["compare", str(tmp_path / "nowhere"), "--out", str(table)])
    assert missing.exit_code == 2 and "no such run folder" in " ".join(missing.output.split())


def imbalanced_copy(fixture_dir: Path, folder: Path) -> Path:
    """The fixture with nv and mel whole and two images of every other class, as HAM10000 is imbalanced."""
    shutil.copytree(fixture_dir / "images", folder / "images")
    metadata = pd.read_csv(fixture_dir / "HAM10000_metadata.csv", dtype=str)
    kept = metadata[metadata["dx"].isin(["nv", "mel"]) | (metadata.groupby("dx").cumcount() < 2)]
    kept.to_csv(folder / "HAM10000_metadata.csv", index=False)
    return folder


def test_leak_trains_every_arm_and_writes_the_table(tmp_path, fixture_dir, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "leak"
    fixture_dir = imbalanced_copy(fixture_dir, tmp_path / "data")
    args = ["--arch", "resnet18", "--weights", "none", "--height", "32", "--width", "32", "--epochs", "1"]
    result = runner.invoke(
        app,
        ["leak", "--data", str(fixture_dir), "--out", str(out), *args, "--batch-size", "8", "--bootstrap", "20"]
        + ["--accelerator", "cpu", "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "leak.json").read_text())
    results = summary["results"]
    assert set(results) == {"image", "lesion", "oversample_plain", "oversample_augmented"}
    for name in results:
        check_metrics(json.loads((out / name / "eval" / "metrics.json").read_text()))
    honest = results["lesion"]
    assert honest["test_images_with_train_sibling"] == honest["test_images_with_train_copy"] == 0
    assert results["image"]["test_images_with_train_copy"] == 0
    plain, augmented = results["oversample_plain"], results["oversample_augmented"]
    oversampled = load_dataset(out / "data" / "oversample_plain")
    assert oversampled["dx"].value_counts().nunique() == 1  # every class copied up to the majority count
    assert plain["train_n"] > honest["train_n"] and plain["steps_per_epoch"] == summary["steps_per_epoch"]
    assert 0 < plain["test_images_with_train_copy"] <= plain["test_images_with_identical_train_file"]
    assert augmented["test_images_with_train_copy"] > 0 == augmented["test_images_with_identical_train_file"]
    text = (out / "leak.md").read_text()
    assert "oversampled with plain copies, then split by image" in text and "source study (reported)" in text
    assert (out / "leak.png").stat().st_size > 10_000


def test_undefined_figures_are_null_not_nan(tmp_path, bundle, fixture_dir, fixture_table):
    labels = tmp_path / "nv.csv"
    fixture_table.loc[fixture_table["dx"] == "nv", ["image_id", "dx"]].to_csv(labels, index=False)
    result = evaluate(
        "--model", str(bundle), "--images", str(fixture_dir), "--labels", str(labels), "--out", str(tmp_path / "out")
    )
    assert result.exit_code == 0, result.output
    text = (tmp_path / "out" / "metrics.json").read_text()
    metrics = json.loads(text)  # strict JSON: no NaN
    assert "NaN" not in text and metrics["malignant"]["sensitivity"] is None and metrics["macro_auc"] is None
    assert metrics["per_class"]["nv"]["auc"] is None and metrics["ci95"]["malignant_sensitivity"] == [None, None]


def test_shifted_validation_scores_the_served_label_under_every_shift(bundle, split_file, fixture_dir, tmp_path):
    from dermxai.evaluation.shifts import SHIFTS

    out = tmp_path / "shifted.json"
    result = runner.invoke(
        app,
        ["shifted", "--model", str(bundle), "--data", str(fixture_dir), "--split", str(split_file), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert list(report["shifts"]) == ["unchanged", *SHIFTS]
    assert report["n"] == (pd.read_csv(split_file)["split"] == "val").sum()
    scores = [row["balanced_accuracy"] for row in report["shifts"].values()]
    assert all(0 <= s <= 1 for s in scores)


def test_gate_of_a_candidate_can_be_measured_without_opening_the_test_split(bundle, tmp_path, fixture_dir):
    """`dermxai gate --validation-only` never opens a test image (here they are unreadable): its report has no test
    rows, and its AUROC is validation dermoscopy against the non-dermoscopic set."""
    data = Path(shutil.copytree(fixture_dir, tmp_path / "data"))
    split = tmp_path / "split.csv"
    made = runner.invoke(app, ["data", "split", "--data", str(data), "--out", str(split)])
    assert made.exit_code == 0, made.output
    table = pd.read_csv(split)
    for image_id in table.loc[table["split"] == "test", "image_id"]:
        for path in data.glob(f"images/*/{image_id}.jpg"):
            path.write_bytes(b"not a JPEG")
    common = ["gate", "--model", str(bundle), "--data", str(data), "--split", str(split), "--crops", "1"]
    measured = runner.invoke(app, [*common, "--validation-only", "--out", str(tmp_path / "gate.json")])
    assert measured.exit_code == 0, measured.output
    report = json.loads((tmp_path / "gate.json").read_text())
    assert "dermoscopy: test split" not in report["withheld"] and "test" not in report["withheld_by_class"]
    assert 0 <= report["auroc_val_vs_not_dermoscopy"] <= 1 and "auroc_test_vs_not_dermoscopy" not in report
    assert "AUROC, val dermoscopy" in measured.output
    opened = runner.invoke(app, common)  # without the flag the unreadable test images are opened
    assert opened.exit_code == 2 and "cannot identify image file" in opened.output


def test_gate_fits_measures_and_refits_only_its_thresholds(bundle, tmp_path, fixture_dir, fixture_table):
    """`dermxai gate` end to end on the fixture: the class means on train, thresholds by answered class on val, a
    report per diagnosis; `--thresholds-only` keeps the fitted means and refits the same thresholds from val."""
    from dermxai.assets import EXAMPLES
    from dermxai.inference.feature_gate import load_gate
    from dermxai.inference.predictor import Predictor

    folder = Path(shutil.copytree(bundle, tmp_path / "gated"))
    split = tmp_path / "split.csv"
    made = runner.invoke(app, ["data", "split", "--data", str(fixture_dir), "--out", str(split)])
    assert made.exit_code == 0, made.output
    common = ["gate", "--model", str(folder), "--data", str(fixture_dir), "--split", str(split), "--crops", "1"]
    first = runner.invoke(app, [*common, "--write", "--out", str(tmp_path / "gate.json")])
    assert first.exit_code == 0, first.output
    report = json.loads((tmp_path / "gate.json").read_text())
    assert list(report["gate"]["class_thresholds"]) == list(CLASSES)
    n_test = int((pd.read_csv(split)["split"] == "test").sum())
    assert report["withheld_by_class"]["test"]["all"]["n"] == n_test
    assert 0 <= report["withheld"]["not dermoscopy: all"]["share"] <= 1
    fitted = load_gate(folder)
    refit = runner.invoke(app, [*common, "--thresholds-only", "--write"])
    assert refit.exit_code == 0, refit.output
    again = load_gate(folder)
    assert np.array_equal(again.class_means, fitted.class_means)
    assert np.allclose(again.class_thresholds, fitted.class_thresholds)  # the same validation images
    assert read_config(folder).ood_gate["n_train"] == report["gate"]["n_train"]  # the first fit's record is kept
    measured = runner.invoke(app, [*common, "--measure-only", "--out", str(tmp_path / "measured.json")])
    assert measured.exit_code == 0, measured.output
    assert json.loads((tmp_path / "measured.json").read_text())["class_thresholds"] == pytest.approx(
        dict(zip(CLASSES, again.class_thresholds))
    )
    assert runner.invoke(app, [*common, "--measure-only", "--write"]).exit_code == 2
    answer = Predictor(folder).predict(next(EXAMPLES.glob("*.jpg")).read_bytes())
    assert answer.ood_score is not None and isinstance(answer.out_of_distribution, bool)
    bare = Path(shutil.copytree(bundle, tmp_path / "bare"))
    refused = runner.invoke(app, ["gate", "--model", str(bare), *common[3:], "--thresholds-only"])
    assert refused.exit_code == 2 and "no gate to refit" in refused.output
