"""Refusing what the model cannot judge and surviving hostile input: the feature gate, bundle checks,
bounded preprocessing, batch prediction, and the API's error shape and offline docs."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dermxai.app import advice
from dermxai.app.address import phone_url
from dermxai.cli import app
from dermxai.inference.feature_gate import GATE_NAME, fit_gate, fit_threshold, load_gate
from dermxai.inference.onnx_backend import OnnxBackend, TorchBackend, load_backend
from dermxai.inference.predictor import OOD_REASON, Predictor
from dermxai.models.bundle import BundleError, load_bundle, read_config, save_bundle, update_config
from dermxai.models.features import WithFeatures, pooled_mean_std
from dermxai.models.registry import create_model
from tests.test_export import tiny_bundle

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = next((ROOT / "examples").glob("nv_*.jpg"))
CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return tiny_bundle(tmp_path_factory.mktemp("trust") / "bundle")


# --- the feature gate -------------------------------------------------------------------------------------


def test_gate_accepts_the_target_share_and_withholds_far_away_features(tmp_path):
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(20, 20))
    train, val = rng.normal(size=(2000, 20)) @ mixing, rng.normal(size=(1000, 20)) @ mixing
    gate = fit_threshold(fit_gate(train, components=8), val, 0.95)
    assert np.mean(gate.withheld(val)) == pytest.approx(0.05, abs=0.002)
    assert np.mean(gate.withheld(rng.normal(size=(500, 20)) @ mixing)) < 0.1  # fresh in-distribution
    assert gate.withheld(rng.normal(size=(200, 20)) @ mixing + 25).all()  # far away
    assert gate.withheld(train.mean(0) + 10 * train.std(0) * np.eye(20)).all()  # ten sigma along any feature
    loaded = load_gate(gate.save(tmp_path).parent)
    assert np.allclose(loaded.scores(val), gate.scores(val), rtol=1e-4) and loaded.threshold == gate.threshold
    with pytest.raises(ValueError, match="features of shape"):
        gate.scores(np.zeros((3, 7)))


def test_the_class_conditional_gate_is_fair_to_a_rare_class_that_one_gaussian_withholds(tmp_path):
    rng = np.random.default_rng(3)
    centres = np.zeros((2, 20))
    centres[1, :5] = 6.0  # the rare class sits far from the common one

    def draw(n_common: int, n_rare: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.r_[np.zeros(n_common, int), np.ones(n_rare, int)]
        return centres[labels] + rng.normal(size=(len(labels), 20)), labels

    (train, labels), (val, _), (test, test_labels) = draw(3000, 60), draw(1500, 30), draw(1500, 300)
    single = fit_threshold(fit_gate(train, components=8), val, 0.95)
    conditional = fit_threshold(fit_gate(train, components=8, labels=labels), val, 0.95)
    rare = test_labels == 1
    assert single.withheld(test[rare]).mean() > 0.5  # one Gaussian: most of the rare class is withheld
    assert conditional.withheld(test[rare]).mean() < 0.15 and conditional.withheld(test[~rare]).mean() < 0.1
    assert conditional.withheld(rng.normal(size=(200, 20)) + 25).all()  # far from every class
    loaded = load_gate(conditional.save(tmp_path).parent)
    assert loaded.class_means.shape == (2, 20) and np.allclose(loaded.scores(test), conditional.scores(test), rtol=1e-4)


def test_class_scales_keep_a_more_varied_class_from_being_withheld_more(tmp_path):
    """A class whose lesions vary more sits farther from its own mean; its scale (the median training distance)
    brings its withheld share to the others'."""
    from dataclasses import replace

    rng = np.random.default_rng(4)
    centres = np.zeros((2, 20))
    centres[1, :5] = 8.0

    def draw(n_common: int, n_varied: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.r_[np.zeros(n_common, int), np.ones(n_varied, int)]
        spread = np.where(labels == 1, 1.8, 1.0)[:, None]
        return centres[labels] + spread * rng.normal(size=(len(labels), 20)), labels

    (train, labels), (val, _), (test, test_labels) = draw(3000, 150), draw(1500, 75), draw(1500, 300)
    scaled = fit_threshold(fit_gate(train, components=8, labels=labels), val, 0.95)
    unscaled = fit_threshold(replace(scaled, class_scales=None), val, 0.95)
    varied = test_labels == 1
    assert unscaled.withheld(test[varied]).mean() > 0.5  # the tied covariance fits the common class
    shares = [scaled.withheld(test[varied]).mean(), scaled.withheld(test[~varied]).mean()]
    assert max(shares) < 2 * scaled.withheld(test).mean()
    assert scaled.withheld(rng.normal(size=(200, 20)) + 25).all()
    loaded = load_gate(scaled.save(tmp_path).parent)
    assert np.allclose(loaded.class_scales, scaled.class_scales) and np.allclose(
        loaded.scores(test), scaled.scores(test)
    )


def test_class_thresholds_spend_the_budget_on_the_common_answer_and_keep_a_rare_class_inside(tmp_path):
    """Held-out images of a rare class lie farther out than its (fitted) training images, so one threshold
    withholds them far more often than the rest; thresholds by answered class (the common answer takes what the
    others do not use of the same 5%) bring that class under twice the overall share."""
    rng = np.random.default_rng(5)
    centres = np.zeros((2, 20))
    centres[1, :5] = 8.0

    def draw(n_common: int, n_rare: int, rare_spread: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        labels = np.r_[np.zeros(n_common, int), np.ones(n_rare, int)]
        x = centres[labels] + np.where(labels == 1, rare_spread, 1.0)[:, None] * rng.normal(size=(len(labels), 20))
        answered = np.where(rng.random(len(labels)) < 0.02, 1 - labels, labels)  # a classifier right 98% of the time
        return x, labels, answered

    (train, labels, _), (val, _, val_answered), (test, test_labels, test_answered) = (
        draw(3000, 150, 1.0),
        draw(1500, 75, 1.4),
        draw(3000, 600, 1.4),
    )
    single = fit_threshold(fit_gate(train, components=8, labels=labels), val, 0.95)
    rare = test_labels == 1
    assert single.withheld(test[rare]).mean() > 3 * single.withheld(test).mean()  # unfair with one threshold
    fair = fit_threshold(single, val, 0.95, answered=val_answered, n_classes=2, other_withheld=0.02)
    assert fair.threshold == single.threshold and fair.class_thresholds.shape == (2,)
    assert np.mean(fair.withheld(val, val_answered)) == pytest.approx(0.05, abs=0.002)  # one budget in all
    assert np.mean(fair.withheld(val[val_answered == 1], val_answered[val_answered == 1])) <= 0.03
    withheld = fair.withheld(test, test_answered)
    assert withheld[rare].mean() < 2 * withheld.mean() and withheld[~rare].mean() < 2 * withheld.mean()
    assert fair.withheld(rng.normal(size=(200, 20)) + 25, np.ones(200, int)).all()  # far away, whatever answered
    with pytest.raises(ValueError, match="pass one per image"):
        fair.withheld(test)
    loaded = load_gate(fair.save(tmp_path).parent)
    assert np.array_equal(loaded.class_thresholds, fair.class_thresholds)
    assert np.array_equal(loaded.withheld(test, test_answered), withheld)
    with pytest.raises(ValueError, match="one answered class"):
        fit_threshold(single, val, 0.95, answered=val_answered)  # without n_classes


def test_a_malformed_gate_file_is_a_clear_error(tmp_path):
    (tmp_path / GATE_NAME).write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="not a valid out-of-distribution gate"):
        load_gate(tmp_path)
    assert load_gate(tmp_path / "elsewhere") is None


def test_features_are_the_pooled_statistics_of_the_gate_layer():
    model, _ = create_model("resnet18", "none")
    model.eval()
    seen = {}
    model.layer3.register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        logits, features = WithFeatures(model, "layer3")(x)
        assert torch.allclose(logits, model(x))
    assert torch.allclose(features, pooled_mean_std(seen["out"]))
    assert features.shape == (2, 2 * 256)


def test_predictor_withholds_what_the_gate_rejects_and_says_why(bundle, tmp_path):
    folder = Path(shutil.copytree(bundle, tmp_path / "gated"))
    predictor = Predictor(folder)
    image = encode(Image.open(EXAMPLE))
    features = [predictor.outputs(np.asarray(Image.open(EXAMPLE).convert("RGB").resize((64, 48)))[None])[1][0]]
    gate = fit_gate(np.random.default_rng(0).normal(size=(50, len(features[0]))))
    for threshold, expected in ((-1.0, True), (1e12, False)):
        fit_threshold(gate, np.zeros((2, len(features[0]))))  # fitting keeps the gate itself unchanged
        gate.__class__(**{**gate.__dict__, "threshold": threshold}).save(folder)
        answer = Predictor(folder).predict(image)
        assert answer.out_of_distribution is expected and answer.ood_score is not None
        assert (answer.abstain_reasons[:1] == [OOD_REASON]) is expected
        body = answer.to_dict()
        assert body["abstain"] is expected and body["out_of_distribution"] is expected


# --- hostile input and broken bundles ---------------------------------------------------------------------


def test_a_20000_by_1_png_is_resized_without_allocating_gigabytes(tmp_path):
    """B1: under a 1 GiB address-space cap (the old resize-then-crop needed ~1.3 GB for this image)."""
    script = textwrap.dedent(f"""
        import resource, io, sys
        sys.path.insert(0, {str(ROOT / "src")!r})
        from PIL import Image
        from dermxai.preprocessing import resize_cover
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        for size in ((20000, 1), (1, 60000)):
            out = resize_cover(Image.new("RGB", size, (200, 100, 50)), (300, 400))
            assert out.shape == (300, 400, 3), out.shape
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]


def test_thin_images_get_an_answer(bundle):
    answer = Predictor(bundle).predict(encode(Image.new("RGB", (20000, 1), (120, 80, 60))))
    assert abs(sum(answer.probabilities.values()) - 1) < 1e-6


def test_bundle_whose_classes_disagree_with_the_onnx_outputs_is_refused(bundle, tmp_path):
    """B2: the graph has 7 outputs; a config naming 3 classes must not be served silently."""
    assert runner.invoke(app, ["export", "--model", str(bundle)]).exit_code == 0
    folder = Path(shutil.copytree(bundle, tmp_path / "three"))
    update_config(folder, classes=("mel", "nv", "bkl"))
    with pytest.raises(BundleError, match="outputs 7 classes"):
        load_backend(folder)
    result = runner.invoke(app, ["predict", str(EXAMPLE), "--model", str(folder)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "the weights were trained for akiec, bcc, bkl, df, mel, nv, vasc" in result.output  # caught first


def test_onnx_graph_is_stale_when_the_config_changes_and_ignored_when_garbage(bundle, tmp_path):
    assert runner.invoke(app, ["export", "--model", str(bundle)]).exit_code == 0
    assert isinstance(load_backend(bundle), OnnxBackend)
    resized = Path(shutil.copytree(bundle, tmp_path / "resized"))
    update_config(resized, height=96, width=128)
    with pytest.warns(UserWarning, match="weights and config"):
        assert isinstance(load_backend(resized), TorchBackend)
    garbage = Path(shutil.copytree(bundle, tmp_path / "garbage"))
    (garbage / "model.onnx").write_bytes(b"\x00garbage" * 100)
    with pytest.warns(UserWarning, match="cannot be read"):
        assert isinstance(load_backend(garbage), TorchBackend)


@pytest.mark.parametrize("breakage", ["missing key", "not json", "garbage weights", "wrong shape weights"])
def test_broken_bundles_are_one_line_errors(bundle, tmp_path, breakage):
    """B3: every broken bundle ends in one red line and exit code 2, never a traceback."""
    folder = Path(shutil.copytree(bundle, tmp_path / "broken"))
    (folder / "model.onnx").unlink(missing_ok=True)
    config = json.loads((folder / "config.json").read_text())
    if breakage == "missing key":  # written by hand: no BundleConfig can lack it
        del config["classes"]
        (folder / "config.json").write_text(json.dumps(config))
    elif breakage == "not json":
        (folder / "config.json").write_text("{arch: resnet18")
    elif breakage == "garbage weights":
        (folder / "model.safetensors").write_bytes(b"\x00" * 64)
    else:
        other, _ = create_model("densenet121", "none")
        save_bundle(tmp_path / "other", other, read_config(folder).replace(arch="densenet121"))
        shutil.copy(tmp_path / "other" / "model.safetensors", folder / "model.safetensors")
    result = runner.invoke(app, ["predict", str(EXAMPLE), "--model", str(folder)])
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and "Traceback" not in result.output
    if breakage.endswith("weights"):
        with pytest.raises(BundleError, match="does not fit resnet18"):
            load_bundle(folder)


def test_batch_predict_answers_the_good_files_and_reports_the_bad(bundle, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"definitely not an image")
    result = runner.invoke(
        app,
        ["predict", str(EXAMPLE), str(bad), "/dev/zero", str(tmp_path / "nope.png"), "--model", str(bundle), "--json"],
    )
    assert result.exit_code == 1
    answers = json.loads(result.stdout)
    assert [a.get("error") is None for a in answers] == [True, False, False, False]
    assert answers[0]["image"] == str(EXAMPLE) and "probabilities" in answers[0]
    assert "not a regular file" in answers[2]["error"] and "no such file" in answers[3]["error"]


# --- front ends -------------------------------------------------------------------------------------------


def test_api_errors_have_one_shape_and_docs_work_offline(bundle):
    from fastapi.testclient import TestClient

    from dermxai.app.api import create_app

    client = TestClient(create_app(bundle))
    cases = [
        client.get("/nowhere"),
        client.delete("/predict"),
        client.post("/predict"),
        client.post("/explain?method=scorecam", files={"file": ("a.jpg", EXAMPLE.read_bytes())}),
        client.post("/explain?opacity=7", files={"file": ("a.jpg", EXAMPLE.read_bytes())}),
        client.post("/predict", files={"file": ("a.txt", b"hello")}),
    ]
    assert [r.status_code for r in cases] == [404, 405, 422, 400, 422, 415]
    for response in cases:
        body = response.json()
        assert set(body) == {"detail", "reason"} and isinstance(body["detail"], str) and body["reason"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/static/docs/swagger-ui-bundle.js" in docs.text and "cdn" not in docs.text
    bundle_js = client.get("/static/docs/swagger-ui-bundle.js")
    assert bundle_js.status_code == 200 and '"5.' in bundle_js.text  # Swagger UI 5 renders OpenAPI 3.1
    assert client.get("/openapi.json").json()["openapi"].startswith("3.1")
    assert "scorecam" not in client.get("/models").json()[0]["cam_methods"]


def test_app_binds_this_machine_by_default_and_the_qr_code_tells_the_truth():
    import inspect

    from dermxai.app.commands import app_command

    assert inspect.signature(app_command).parameters["address"].default == "127.0.0.1"
    assert phone_url("http://localhost:8501/", "127.0.0.1") is None
    assert phone_url("http://localhost:8501/", "192.168.1.20") == "http://192.168.1.20:8501/"


def test_advice_never_calls_a_flagged_spot_harmless():
    for code in CLASSES:
        assert advice.next_step(code, True) == advice.SEE_SOON
        assert advice.next_step(code, True, ["mel"]).endswith(advice.SEE_SOON)
        assert "harmless" not in advice.next_step(code, True, ["mel"])
    assert "harmless" in advice.next_step("nv", False)
    text = advice.threshold_meaning(0.16, 0.9, 0.92, 0.8)
    assert "92%" in text and "20%" in text and "1 in 5" in text


@pytest.mark.parametrize("source", [(600, 103), (13, 7), (828, 1792), (767, 1022), (200, 150), (600, 450)])
@pytest.mark.parametrize("target", [(150, 200), (64, 85), (224, 224)])
def test_resize_cover_never_fails_on_awkward_sizes(source, target):
    from dermxai.preprocessing import resize_cover

    assert resize_cover(Image.new("RGB", source, (10, 20, 30)), target).shape == (*target, 3)


def test_the_heatmap_explains_the_served_label(bundle, tmp_path):
    folder = Path(shutil.copytree(bundle, tmp_path / "biased"))
    bias = [0.0] * 7
    bias[CLASSES.index("df")] = 50.0  # a decision rule that always serves df
    update_config(folder, logit_bias=tuple(bias))
    (folder / "model.onnx").unlink(missing_ok=True)
    explanation = Predictor(folder).explain(EXAMPLE.read_bytes())
    assert explanation.prediction.top_class == "df" == explanation.target_class


def test_the_feature_hook_keeps_nothing_from_other_forward_passes():
    model, _ = create_model("resnet18", "none")
    wrapped = WithFeatures(model.eval(), "layer3")
    with torch.no_grad():
        model(torch.randn(1, 3, 48, 64))  # e.g. a CAM pass on the shared model
        assert wrapped._activation == {}
        wrapped(torch.randn(1, 3, 48, 64))
        assert wrapped._activation == {}


def test_a_jpeg_corrupted_mid_stream_is_refused_not_decoded_into_garbage(bundle):
    from dermxai.inference.inputs import InvalidImage, read_image

    data = bytearray(EXAMPLE.read_bytes())
    middle = len(data) // 2
    for k in range(middle, middle + 40):
        data[k] ^= 0x5A
    with pytest.raises(InvalidImage, match="damaged"):
        read_image(bytes(data))
    assert read_image(EXAMPLE.read_bytes()).size == (200, 150)
    result = runner.invoke(app, ["predict", str(EXAMPLE), "--model", str(bundle)])
    assert result.exit_code == 0


def test_probabilities_shown_to_people_never_read_100_or_0_percent():
    from dermxai.app.advice import percent

    assert [percent(p) for p in (0.9999, 0.995, 0.994, 0.5, 0.006, 0.004, 0.0)] == [
        "> 99%",
        "> 99%",
        "99%",
        "50%",
        "1%",
        "< 1%",
        "< 1%",
    ]
