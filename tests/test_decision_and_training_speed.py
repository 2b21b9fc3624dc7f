"""The fast training loop's pieces (precision, channels_last, EMA, class weights) and the balanced decision rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dermxai.cli import app
from dermxai.data.labels import CLASSES
from dermxai.evaluation.calibration import ValidationSet, calibrate_config, decision_step
from dermxai.evaluation.metrics import balanced_accuracy, expected_calibration_error
from dermxai.models.bundle import BundleConfig
from dermxai.models.registry import architecture, create_model
from dermxai.probabilities import TAU_GRID, decision_logits, logit_adjustment
from dermxai.training.config import TrainConfig
from dermxai.training.losses import class_weights
from dermxai.training.module import Classifier
from dermxai.training.precision import cpu_has_bf16, resolve_precision

runner = CliRunner()
UNCALIBRATED = BundleConfig("resnet18", tuple(CLASSES), 64, 64, (0.5,) * 3, (0.5,) * 3)


def test_auto_precision_follows_the_hardware(tmp_path):
    flags = tmp_path / "cpuinfo"
    flags.write_text("processor : 0\nflags : fpu sse avx512f avx512_bf16\n")
    assert cpu_has_bf16(flags)
    flags.write_text("processor : 0\nflags : fpu sse avx2\n")
    assert not cpu_has_bf16(flags)
    assert not cpu_has_bf16(tmp_path / "missing")
    assert resolve_precision("auto", gpu=False, cpu_bf16=True) == "bf16-mixed"
    assert resolve_precision("auto", gpu=False, cpu_bf16=False) == "32-true"
    assert resolve_precision("16-mixed", gpu=False, cpu_bf16=True) == "16-mixed"
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("fp8", gpu=False)


def test_square_root_class_weights_are_milder_than_inverse():
    counts = torch.tensor([400.0, 100.0, 25.0])
    inverse, sqrt = class_weights(counts, 1.0), class_weights(counts, 0.5)
    assert torch.allclose(inverse / inverse[0], torch.tensor([1.0, 4.0, 16.0]))
    assert torch.allclose(sqrt / sqrt[0], torch.tensor([1.0, 2.0, 4.0]))
    assert torch.isclose(sqrt.mean(), torch.tensor(1.0))


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--lr", "-1", "--lr must be positive"),
        ("--epochs", "0", "--epochs must be at least 1"),
        ("--height", "0", "--height/--width must be at least 16"),
        ("--precision", "fp8", "--precision must be one of"),
        ("--ema-decay", "1.5", "--ema-decay must be in"),
    ],
)
def test_bad_training_arguments_are_one_line_errors(tmp_path, fixture_dir, option, value, message):
    result = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(fixture_dir),
            "--split",
            str(tmp_path / "s.csv"),
            "--out",
            str(tmp_path / "run"),
            option,
            value,
        ],
    )
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_ema_weights_are_validated_and_shipped_and_the_model_is_channels_last():
    torch.manual_seed(0)
    model, arch = create_model("resnet18", "none", len(CLASSES))
    module = Classifier(
        model, architecture("resnet18"), TrainConfig(arch="resnet18", ema_decay=0.9), torch.nn.CrossEntropyLoss()
    )
    assert module.final_model is module.ema.module
    conv = module.model.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    ema_before = module.ema.module.conv1.weight.detach().clone()
    with torch.no_grad():
        module.model.conv1.weight.add_(1.0)  # a "training step"
    module.ema.update(module.model, step=10)
    moved = module.ema.module.conv1.weight
    assert not torch.equal(moved, ema_before) and not torch.equal(moved, module.model.conv1.weight)
    optimised = {
        id(p)
        for group in torch.optim.AdamW([p for _, p in module.model.named_parameters()]).param_groups
        for p in group["params"]
    }
    assert not any(id(p) in optimised for p in module.ema.module.parameters())
    plain = Classifier(
        create_model("resnet18", "none", 7)[0], arch, TrainConfig(arch="resnet18"), torch.nn.CrossEntropyLoss()
    )
    assert plain.ema is None and plain.final_model is plain.model


def skewed_validation(seed: int = 0) -> ValidationSet:
    """Logits of a model trained towards the skewed prior: minority classes need a push to be found."""
    rng = np.random.default_rng(seed)
    counts = np.array([230, 360, 770, 80, 780, 4690, 100])
    labels = np.repeat(np.arange(7), 60)
    logits = rng.normal(0, 1, (len(labels), 7))
    logits[np.arange(len(labels)), labels] += 1.5
    logits += 0.9 * np.log(counts / counts.sum())  # the prior the model learnt
    return ValidationSet(logits, labels, [str(i) for i in range(len(labels))], list(CLASSES), train_counts=counts)


def test_logit_adjustment_is_chosen_on_validation_and_raises_balanced_accuracy():
    val = skewed_validation()
    keys = decision_step(val, UNCALIBRATED)
    tau = keys["calibration"]["tau"]
    assert tau in TAU_GRID and tau > 0
    scores = keys["calibration"]["val_bacc_by_tau"]
    assert scores[str(tau)] > scores["0.0"] + 0.05
    assert np.allclose(keys["logit_bias"], logit_adjustment(val.train_counts, tau))
    adjusted = decision_logits(val.logits, keys["logit_bias"])
    assert balanced_accuracy(val.labels, adjusted.argmax(1), 7) == pytest.approx(scores[str(tau)], abs=1e-4)


def test_no_adjustment_when_the_model_is_already_balanced():
    val = skewed_validation()
    val.logits -= 0.9 * np.log(val.train_counts / val.train_counts.sum())  # remove the learnt prior
    assert decision_step(val, UNCALIBRATED)["calibration"]["tau"] == 0.0
    assert decision_step(ValidationSet(val.logits, val.labels, val.image_ids, val.classes), UNCALIBRATED) == {}


def test_served_probabilities_agree_with_the_served_label_and_are_calibrated_after_the_rule():
    val = skewed_validation()
    config = calibrate_config(val, UNCALIBRATED)
    probs = config.served_probabilities(val.logits)
    assert np.array_equal(config.served_labels(val.logits), config.decision_logits(val.logits).argmax(1))
    agree = (probs.argmax(1) == config.served_labels(val.logits)).mean()
    assert agree == pytest.approx(config.calibration["label_is_most_probable"])  # the bias may move the top class
    assert config.calibration["ece_after"] <= config.calibration["ece_before"] + 1e-9
    assert expected_calibration_error(val.labels, probs) == pytest.approx(config.calibration["ece_after"])
    assert config.malignant_threshold is not None and config.abstain is not None
    again = calibrate_config(val, config)  # recalibrating starts from the raw logits, not the adjusted ones
    assert again.logit_bias == pytest.approx(config.logit_bias)
    assert again.temperature == pytest.approx(config.temperature)


def test_a_poorly_calibrated_bundle_gets_a_warning_in_its_card_not_a_crippled_rule(tmp_path):
    from dermxai.evaluation.calibration import ECE_BAR, calibration_warning, mark_card

    card = tmp_path / "MODEL_CARD.md"
    card.write_text("# a model\n\nsome text\n")
    mark_card(card, calibration_warning({"ece_after": ECE_BAR + 0.01, "balanced_ece_after": 0.09}))
    mark_card(card, calibration_warning({"ece_after": ECE_BAR + 0.02, "balanced_ece_after": 0.1}))
    text = card.read_text()
    assert text.count("Calibration warning") == 1 and "0.060" in text and text.startswith("# a model")
    mark_card(card, calibration_warning({"ece_after": ECE_BAR - 0.01}))
    assert card.read_text() == "# a model\n\nsome text\n"


def test_class_balanced_ece_weights_every_true_class_equally():
    labels = np.array([0] * 90 + [1] * 10)
    probs = np.tile([0.9, 0.1], (100, 1))  # always "0" at 90%: right for class 0, wrong for class 1
    assert expected_calibration_error(labels, probs) == pytest.approx(0.0)
    assert expected_calibration_error(labels, probs, class_balanced=True) == pytest.approx(0.4)
