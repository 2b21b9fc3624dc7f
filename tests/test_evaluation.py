"""Evaluation units: metrics on hand-computed cases, bootstrap, calibration, TTA, the metrics.json contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dermxai.data.labels import CLASSES
from dermxai.evaluation.calibration import (
    ValidationSet,
    calibrate_config,
    fit_temperature,
    fit_temperature_and_bias,
    malignant_threshold,
)
from dermxai.evaluation.contract import check_metrics
from dermxai.evaluation.metrics import (
    binary_auc,
    bootstrap_ci,
    classification_report,
    expected_calibration_error,
    negative_log_likelihood,
    operating_point,
    scalar_metrics,
)
from dermxai.evaluation.predict import predict_logits, tta_views
from dermxai.evaluation.subgroups import age_band, subgroup_table
from dermxai.models.bundle import BundleConfig
from dermxai.probabilities import softmax

CLASSES3 = ["akiec", "bcc", "bkl"]  # two malignant, one benign


def one_hot_probs(predicted: list[int], n_classes: int = 3, top: float = 0.6) -> np.ndarray:
    probs = np.full((len(predicted), n_classes), (1 - top) / (n_classes - 1))
    probs[np.arange(len(predicted)), predicted] = top
    return probs


@pytest.fixture
def hand_case():
    # confusion rows (true): akiec [1,1,0], bcc [0,3,0], bkl [1,0,1]
    y = np.array([0, 0, 1, 1, 1, 2, 2])
    return y, one_hot_probs([0, 1, 1, 1, 1, 2, 0])


def test_headline_metrics_match_a_hand_computed_case(hand_case):
    y, probs = hand_case
    m = scalar_metrics(y, probs, CLASSES3, threshold=0.5)
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert m["macro_recall"] == pytest.approx(m["balanced_accuracy"])
    assert m["macro_precision"] == pytest.approx((1 / 2 + 3 / 4 + 1) / 3)
    f1 = np.array([0.5, 6 / 7, 2 / 3])
    assert m["macro_f1"] == pytest.approx(f1.mean())
    assert m["weighted_f1"] == pytest.approx((f1 * [2, 3, 2]).sum() / 7)


def test_confusion_matrix_and_per_class_entries(hand_case):
    y, probs = hand_case
    report = classification_report(y, probs, CLASSES3, threshold=0.5)
    assert report["confusion_matrix"] == [[1, 1, 0], [0, 3, 0], [1, 0, 1]]
    assert report["per_class"]["bcc"] == pytest.approx(
        {"precision": 0.75, "recall": 1.0, "f1": 6 / 7, "auc": report["per_class"]["bcc"]["auc"], "support": 3}
    )
    # malignant = akiec+bcc score; 0.6+0.2 = 0.8 when predicted malignant, 0.4 when predicted bkl
    assert report["malignant"] == pytest.approx({"threshold": 0.5, "sensitivity": 1.0, "specificity": 0.5})


def test_binary_auc_hand_cases_and_agreement_with_sklearn():
    assert binary_auc(np.array([True, True, False, False]), np.array([0.9, 0.4, 0.5, 0.1])) == pytest.approx(0.75)
    assert binary_auc(np.array([True, False]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    assert np.isnan(binary_auc(np.array([True, True]), np.array([0.1, 0.2])))
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    truth, score = rng.random(300) < 0.3, rng.integers(0, 10, 300) / 10  # many ties
    assert binary_auc(truth, score) == pytest.approx(roc_auc_score(truth, score))


def test_ece_on_a_two_bin_case():
    probs = np.array([[0.4, 0.3, 0.3], [0.45, 0.3, 0.25], [0.8, 0.1, 0.1], [0.9, 0.05, 0.05]])
    y = np.array([0, 1, 0, 2])
    # bin (0, .5]: acc .5, conf .425; bin (.5, 1]: acc .5, conf .85; each holds half the images
    assert expected_calibration_error(y, probs, bins=2) == pytest.approx(0.5 * 0.075 + 0.5 * 0.35)


def test_ece_agrees_with_torchmetrics():
    from torchmetrics.functional.classification import multiclass_calibration_error

    rng = np.random.default_rng(2)
    probs = softmax(rng.normal(size=(500, 7)) * 2)
    y = rng.integers(0, 7, 500)
    expected = multiclass_calibration_error(torch.tensor(probs), torch.tensor(y), 7, n_bins=15, norm="l1")
    assert expected_calibration_error(y, probs) == pytest.approx(float(expected), abs=1e-6)


def test_bootstrap_of_identical_resamples_is_a_point():
    values = np.ones(50)
    ci = bootstrap_ci(lambda i: {"mean": values[i].mean()}, np.arange(50), n_resamples=50)
    assert ci["mean"] == [1.0, 1.0]


def test_bootstrap_of_a_bernoulli_mean_matches_the_analytic_interval():
    rng = np.random.default_rng(0)
    x = (rng.random(400) < 0.3).astype(float)
    p, se = x.mean(), np.sqrt(x.mean() * (1 - x.mean()) / len(x))
    lo, hi = bootstrap_ci(lambda i: {"mean": x[i].mean()}, np.arange(400), n_resamples=2000, seed=1)["mean"]
    assert lo == pytest.approx(p - 1.96 * se, abs=0.01) and hi == pytest.approx(p + 1.96 * se, abs=0.01)


def test_bootstrap_keeps_lesion_images_together_and_is_seeded():
    groups = np.array(["a", "a", "a", "b", "c", "c", "d"])
    seen = []

    def record(i):
        seen.append(np.bincount(i, minlength=len(groups)))
        return {"n": float(len(i))}

    first = bootstrap_ci(record, groups, n_resamples=200, seed=3)
    for counts in seen:
        assert counts[0] == counts[1] == counts[2] and counts[4] == counts[5]
        assert counts[[0, 3, 4, 6]].sum() == 4  # as many lesions drawn as there are
    assert len({tuple(c) for c in seen}) > 10
    assert first == bootstrap_ci(record, groups, n_resamples=200, seed=3)


def test_temperature_scaling_recovers_the_temperature_and_improves_calibration():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(4000, 7)) * 1.5
    true_probs = softmax(true_logits)
    y = np.array([rng.choice(7, p=p) for p in true_probs])
    overconfident = true_logits * 3
    temperature = fit_temperature(overconfident, y)
    assert temperature == pytest.approx(3.0, rel=0.08)
    before, after = softmax(overconfident), softmax(overconfident, temperature)
    assert negative_log_likelihood(y, after) < negative_log_likelihood(y, before) - 0.1
    assert expected_calibration_error(y, after) < 0.5 * expected_calibration_error(y, before)


def test_the_probability_bias_undoes_a_prior_shift_that_a_temperature_cannot_and_keeps_the_labels():
    rng = np.random.default_rng(1)
    prior = np.array([0.03, 0.05, 0.11, 0.01, 0.11, 0.67, 0.02])
    true_logits = rng.normal(size=(6000, 7)) * 2 + np.log(prior)
    y = np.array([rng.choice(7, p=p) for p in softmax(true_logits)])
    adjusted = true_logits - np.log(prior)  # a balanced decision rule's logits: the prior taken out
    temperature, bias = fit_temperature_and_bias(adjusted, y)
    assert bias == pytest.approx(np.log(prior) - np.log(prior).mean(), abs=0.15)
    with_bias = softmax(adjusted / temperature + bias)
    alone = softmax(adjusted, fit_temperature(adjusted, y))
    assert negative_log_likelihood(y, with_bias) < negative_log_likelihood(y, alone) - 0.1
    assert expected_calibration_error(y, with_bias) < 0.02
    config = BundleConfig("resnet18", tuple(CLASSES), 32, 32, (0.5,) * 3, (0.2,) * 3, logit_bias=(0.0,) * 7)
    config = config.replace(temperature=temperature, probability_bias=tuple(bias))
    assert (config.served_labels(adjusted) == adjusted.argmax(1)).all()  # the decision rule is untouched
    assert config.served_probabilities(adjusted) == pytest.approx(with_bias)
    assert (config.served_labels(adjusted) != config.served_probabilities(adjusted).argmax(1)).any()


def test_malignant_threshold_reaches_the_target_and_is_the_highest_that_does():
    rng = np.random.default_rng(5)
    probs = softmax(rng.normal(size=(300, 7)))
    y = rng.integers(0, 7, 300)
    for target in (0.5, 0.9, 0.95, 1.0):
        threshold = malignant_threshold(probs, y, target)
        assert operating_point(y, probs, CLASSES, threshold)["sensitivity"] >= target
        assert operating_point(y, probs, CLASSES, threshold + 1e-9)["sensitivity"] < target
    with pytest.raises(ValueError, match="no malignant"):
        malignant_threshold(probs, np.full(300, 5), 0.9)


def test_calibration_steps_run_in_order_and_keep_other_keys():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 7)) * 4
    y = rng.integers(0, 7, 200)
    seen = []

    def extra_step(val, config):
        seen.append(config.temperature)
        return {"abstain": {"min_confidence": 0.2, "max_energy": 1.0}}

    from dermxai.evaluation.calibration import CALIBRATION_STEPS

    config = calibrate_config(
        ValidationSet(logits, y, [str(i) for i in range(200)], list(CLASSES)),
        BundleConfig("x", tuple(CLASSES), 8, 8, (0.5,) * 3, (0.5,) * 3, thresholds={"other": 0.3}),
        [*CALIBRATION_STEPS, extra_step],
    )
    assert config.arch == "x" and config.thresholds["other"] == 0.3
    assert seen == [config.temperature] and config.abstain == {"min_confidence": 0.2, "max_energy": 1.0}
    assert config.calibration["nll_after"] <= config.calibration["nll_before"]
    assert config.calibration["val_sensitivity"] >= 0.9


class PooledLinear(nn.Module):
    """Global average pool + linear: invariant to flips and rotations."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(3, 7)

    def forward(self, x):
        return self.head(x.mean((2, 3)))


def test_tta_views_and_invariance():
    square, wide = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 12)
    assert len(tta_views(square)) == 8 and len(tta_views(wide)) == 4
    assert all(v.shape == wide.shape for v in tta_views(wide))
    assert len({tuple(v.flatten().tolist()) for v in tta_views(square)}) == 8
    config = BundleConfig("x", tuple("abcdefg"), 8, 12, (0.5,) * 3, (0.25,) * 3)
    images = np.random.default_rng(0).integers(0, 256, (5, 8, 12, 3), dtype=np.uint8)
    model = PooledLinear()
    plain = predict_logits(model, config, images, batch_size=2)
    augmented = predict_logits(model, config, images, tta=True, batch_size=2)
    np.testing.assert_allclose(softmax(plain), softmax(augmented), atol=1e-5)
    with pytest.raises(ValueError, match="8, 12, 3"):
        predict_logits(model, config, images[:, :4])


def test_predict_logits_matches_a_manual_forward():
    config = BundleConfig("x", tuple("abcdefg"), 8, 12, (0.5, 0.4, 0.3), (0.2, 0.3, 0.4))
    images = np.random.default_rng(1).integers(0, 256, (3, 8, 12, 3), dtype=np.uint8)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 12, 7))
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(config.mean).view(1, 3, 1, 1)) / torch.tensor(config.std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(predict_logits(model, config, images, batch_size=2), expected, atol=1e-5)


def test_age_bands_and_subgroup_rows():
    import pandas as pd

    assert [age_band(a) for a in (5, 29.9, 30, 44, 45, 60, 74, 75, 90, None, float("nan"), "")] == [
        "<30",
        "<30",
        "30-44",
        "30-44",
        "45-59",
        "60-74",
        "60-74",
        ">=75",
        ">=75",
        "unknown",
        "unknown",
        "unknown",
    ]
    meta = pd.DataFrame(
        {
            "sex": ["male", "male", "female", None],
            "age": [20, 80, 20, None],
            "localization": ["back", "back", "face", "face"],
        }
    )
    y = np.array([0, 2, 1, 2])
    table = subgroup_table(meta, y, one_hot_probs([0, 0, 1, 2]), CLASSES3, 0.5)
    male = next(r for r in table["sex"] if r["group"] == "male")
    assert male == {
        "group": "male",
        "n": 2,
        "accuracy": 0.5,
        "balanced_accuracy": 0.5,
        "n_malignant": 1,
        "malignant_sensitivity": 1.0,
    }
    assert [r["group"] for r in table["age_band"]] == ["<30", ">=75", "unknown"]
    unknown = next(r for r in table["sex"] if r["group"] == "unknown")
    assert unknown["balanced_accuracy"] is None and unknown["malignant_sensitivity"] is None


def test_contract_check_rejects_broken_metrics(hand_case):
    y, probs = hand_case
    good = {
        "n": 7,
        "classes": CLASSES3,
        **classification_report(y, probs, CLASSES3, 0.5),
        "ci95": {k: [0.0, 1.0] for k in scalar_metrics(y, probs, CLASSES3, 0.5)},
    }
    check_metrics(good)
    for broken, message in (
        ({k: v for k, v in good.items() if k != "macro_auc"}, "lacks macro_auc"),
        ({**good, "n": 8}, "summing to n"),
        ({**good, "malignant": {"threshold": 0.5}}, "malignant must hold"),
        ({**good, "per_class": {**good["per_class"], "bkl": {"f1": 1.0}}}, "per_class\\[bkl\\]"),
    ):
        with pytest.raises(ValueError, match=message):
            check_metrics(broken)
