"""A broken bundle is refused when it is loaded, in one line, by the Predictor, the CLI and the API."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dermxai.assets import DEFAULT_MODEL, EXAMPLES
from dermxai.cli import app
from dermxai.inference.feature_gate import GATE_NAME
from dermxai.inference.predictor import Predictor

runner = CliRunner()


@pytest.fixture()
def bundle(tmp_path) -> Path:
    return Path(shutil.copytree(DEFAULT_MODEL, tmp_path / "bundle"))


def edit_config(folder: Path, **changes) -> None:
    """Write raw JSON (NaN and Infinity included, as Python's JSON writer spells them)."""
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def edit_gate(folder: Path, **changes) -> None:
    with np.load(folder / GATE_NAME) as arrays:
        values = dict(arrays)
    values.update(changes)
    np.savez(folder / GATE_NAME, **values)


CONFIG_CASES = {
    "logit_bias NaN": ({"logit_bias": [float("nan")] * 7}, "logit_bias"),
    "std zeros": ({"std": [0, 0, 0]}, "std"),
    "malignant threshold NaN": ({"thresholds": {"malignant": float("nan")}}, "thresholds"),
    "malignant threshold 7": ({"thresholds": {"malignant": 7}}, "thresholds"),
    "temperature Infinity": ({"temperature": float("inf")}, "temperature"),
    "mean NaN": ({"mean": [0.5, float("nan"), 0.5]}, "mean"),
    "cam_layer blocks.99": ({"cam_layer": "blocks.99"}, "cam_layer 'blocks.99' is not a layer"),
    "gate_layer bogus": ({"gate_layer": "nowhere"}, "gate_layer 'nowhere' is not a layer"),
    "two classes only": (
        {"classes": ["a", "b"], "logit_bias": None, "probability_bias": None},
        "outputs 7 classes|weights were trained for",
    ),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_a_broken_config_is_refused_at_load(bundle, case):
    changes, message = CONFIG_CASES[case]
    edit_config(bundle, **changes)
    with pytest.raises(ValueError, match=message):
        Predictor(bundle)


GATE_CASES = {
    "threshold NaN": (lambda b: edit_gate(b, threshold=np.float64("nan")), "threshold is nan"),
    "scale zeros": (lambda b: edit_gate(b, scale=np.zeros(len(np.load(b / GATE_NAME)["scale"]))), "above 0"),
    "wrong feature dimension": (
        lambda b: edit_gate(
            b, **{k: v[..., :10] if v.ndim else v for k, v in np.load(b / GATE_NAME).items() if k != "variances"}
        ),
        "the gate expects 10 features",
    ),
    "threshold +inf (gate off)": (lambda b: edit_gate(b, threshold=np.float64("inf")), "threshold is inf"),
    "threshold -inf (withholds all)": (lambda b: edit_gate(b, threshold=np.float64("-inf")), "threshold is -inf"),
    "an archive with no arrays": (lambda b: np.savez(b / GATE_NAME), "not a valid"),
    "a folder": (lambda b: ((b / GATE_NAME).unlink(), (b / GATE_NAME).mkdir()), "not a file"),
    "truncated": (lambda b: (b / GATE_NAME).write_bytes((b / GATE_NAME).read_bytes()[:100]), "not a valid"),
    "a member of the wrong type": (lambda b: edit_gate(b, threshold=np.array("high")), "not a valid"),
    "class thresholds NaN": (lambda b: edit_gate(b, class_thresholds=np.full(7, np.nan)), "class thresholds hold NaN"),
    "class thresholds for 3 classes": (
        lambda b: edit_gate(b, class_thresholds=np.ones(3)),
        "thresholds for 3 classes, the model answers 7",
    ),
}


@pytest.mark.parametrize("case", list(GATE_CASES))
def test_a_broken_gate_is_refused_at_load_not_switched_off(bundle, case):
    damage, message = GATE_CASES[case]
    damage(bundle)
    with pytest.raises(ValueError, match=message):
        Predictor(bundle)


CLI_CASES = {
    "temperature Infinity": (lambda b: edit_config(b, temperature=float("inf")), "temperature"),
    "gate_layer bogus": (lambda b: edit_config(b, gate_layer="blocks.99"), "gate_layer"),
    "cam_layer bogus": (lambda b: edit_config(b, cam_layer="blocks.99"), "cam_layer"),
    "the gate a folder": (GATE_CASES["a folder"][0], "not a file"),
    "a gate member of the wrong type": (GATE_CASES["a member of the wrong type"][0], "not a valid"),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_the_cli_and_the_server_refuse_a_broken_bundle_in_one_line(bundle, case):
    damage, words = CLI_CASES[case]
    damage(bundle)
    image = str(next(EXAMPLES.glob("*.jpg")))
    for args in (["predict", image, "--model", str(bundle)], ["serve", "--model", str(bundle), "--port", "8765"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert words in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) <= 2


def test_evaluate_refuses_a_broken_bundle_before_reading_any_image(bundle, tmp_path):
    """A NaN bundle fails at once, not after a whole evaluation (the data folder here holds no images)."""
    edit_config(bundle, logit_bias=[float("nan")] * 7)
    data = tmp_path / "no_images"
    data.mkdir()
    result = runner.invoke(app, ["evaluate", "--model", str(bundle), "--data", str(data), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert "logit_bias" in result.output and "Traceback" not in result.output


def test_a_config_that_relabels_the_outputs_is_refused(tmp_path):
    from dermxai.models.bundle import BundleConfig, save_bundle
    from dermxai.models.registry import create_model

    model, arch = create_model("resnet18", "none")
    classes = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
    folder = save_bundle(tmp_path / "b", model, BundleConfig("resnet18", classes, 32, 32, arch.mean, arch.std))
    Predictor(folder)
    edit_config(folder, classes=list(reversed(classes)))
    with pytest.raises(ValueError, match="the weights were trained for akiec, bcc"):
        Predictor(folder)
