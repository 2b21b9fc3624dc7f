"""``dermxai predict --format isic`` writes the ISIC 2018 Task 3 submission format; its balanced multi-class
accuracy (the challenge's BMCA) equals ``dermxai evaluate --labels`` on the challenge's ground-truth layout."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from dermxai.cli import app
from tests.test_export import tiny_bundle

runner = CliRunner()
COLUMNS = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]


def test_isic_submission_scores_as_evaluate_does(tmp_path, fixture_table):
    bundle = tiny_bundle(tmp_path / "bundle")
    truth = pd.DataFrame({"image": fixture_table["image_id"]})
    for column in COLUMNS:
        truth[column] = (fixture_table["dx"].str.upper() == column).astype(float)
    truth.to_csv(tmp_path / "gt.csv", index=False)
    paths = [str(p) for p in fixture_table["path"]]
    result = runner.invoke(
        app, ["predict", *paths, "--model", str(bundle), "--format", "isic", "--out", str(tmp_path / "sub.csv")]
    )
    assert result.exit_code == 0, result.output
    submission = pd.read_csv(tmp_path / "sub.csv")
    assert list(submission.columns) == ["image", *COLUMNS] and len(submission) == len(fixture_table)
    assert np.allclose(submission[COLUMNS].sum(1), 1, atol=1e-5)
    merged = truth.merge(submission, on="image", suffixes=("_true", "_pred"))
    true = merged[[f"{c}_true" for c in COLUMNS]].to_numpy().argmax(1)
    predicted = merged[[f"{c}_pred" for c in COLUMNS]].to_numpy().argmax(1)
    bmca = np.mean([np.mean(predicted[true == k] == k) for k in np.unique(true)])
    images = fixture_table["path"].map(lambda p: str(__import__("pathlib").Path(p).parent)).iloc[0]
    folder = __import__("pathlib").Path(images).parent
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--model",
            str(bundle),
            "--labels",
            str(tmp_path / "gt.csv"),
            "--images",
            str(folder),
            "--out",
            str(tmp_path / "eval"),
            "--bootstrap",
            "20",
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert abs(metrics["balanced_accuracy"] - bmca) < 1e-9
    one = runner.invoke(app, ["predict", paths[0], "--model", str(bundle), "--format", "isic"])
    assert one.exit_code == 2 and "--format isic needs --out" in one.output
