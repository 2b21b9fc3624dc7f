"""ONNX export: parity with PyTorch on the fixture, dynamic batch, backend choice, clear failures."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dermxai.cli import app
from dermxai.export import export_onnx
from dermxai.inference.graph import ParityError, check_images
from dermxai.inference.onnx_backend import OnnxBackend, TorchBackend, load_backend
from dermxai.models.bundle import BundleConfig, load_bundle, save_bundle
from dermxai.models.registry import create_model
from dermxai.preprocessing import to_batch
from dermxai.probabilities import softmax

runner = CliRunner()


def tiny_bundle(folder):
    torch.manual_seed(0)
    model, arch = create_model("resnet18", weights="none")
    classes = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
    return save_bundle(folder, model, BundleConfig("resnet18", classes, 48, 64, arch.mean, arch.std, temperature=1.7))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny bundle exported with the CLI into its own folder (model.onnx beside the weights)."""
    bundle = tiny_bundle(tmp_path_factory.mktemp("export") / "bundle")
    result = runner.invoke(app, ["export", "--model", str(bundle)])
    assert result.exit_code == 0, result.output
    assert "max probability difference" in result.output
    return bundle


def test_onnx_matches_pytorch_on_the_fixture_at_batch_1_and_3(exported, fixture_dir):
    model, config = load_bundle(exported)
    pixels, source = check_images(fixture_dir, config.size)
    assert len(pixels) == 35 and "ham_mini" in source
    batch = to_batch(pixels, config).numpy()
    onnx = OnnxBackend(exported / "model.onnx", threads=1)
    with torch.inference_mode():
        expected = model(torch.from_numpy(batch)).numpy()
    for size in (1, 3):
        got = np.concatenate([onnx.logits(batch[i : i + size]) for i in range(0, size * (len(batch) // size), size)])
        assert got.shape == (size * (len(batch) // size), 7)
        difference = softmax(got, 1.7) - softmax(expected[: len(got)], 1.7)
        assert np.abs(difference).max() < 1e-4
    assert expected.std() > 0  # the check compares varied outputs, not constants


def test_load_backend_prefers_onnx_and_falls_back_to_pytorch(exported, tmp_path):
    backend = load_backend(exported, threads=1)
    assert isinstance(backend, OnnxBackend)
    plain = tmp_path / "plain"
    shutil.copytree(exported, plain, ignore=shutil.ignore_patterns("*.onnx"))
    fallback = load_backend(plain)
    assert isinstance(fallback, TorchBackend)
    batch = np.random.default_rng(1).standard_normal((2, 3, 48, 64)).astype(np.float32)
    np.testing.assert_allclose(backend.logits(batch), fallback.logits(batch), atol=1e-4)
    model, _ = load_bundle(exported)
    chosen = load_backend(exported, prefer_onnx=False, model=model)
    assert isinstance(chosen, TorchBackend) and chosen.model is model


def test_a_stale_onnx_file_is_ignored(exported, tmp_path):
    stale = tmp_path / "stale"
    shutil.copytree(exported, stale)
    model, config = load_bundle(stale)
    with torch.no_grad():
        model.fc.bias.add_(1.0)
    save_bundle(stale, model, config)  # new weights, old model.onnx
    with pytest.warns(UserWarning, match="not exported from this bundle's weights"):
        backend = load_backend(stale)
    assert isinstance(backend, TorchBackend)


def test_a_graph_that_disagrees_fails_the_export_and_writes_nothing(tmp_path, monkeypatch):
    bundle = tiny_bundle(tmp_path / "bundle")
    honest = OnnxBackend.outputs

    def shifted(self, batch):
        logits, features = honest(self, batch)
        return logits + np.eye(7, dtype=np.float32)[0], features

    monkeypatch.setattr(OnnxBackend, "outputs", shifted)
    with pytest.raises(ParityError, match="disagree"):
        export_onnx(bundle)
    assert sorted(p.name for p in bundle.iterdir()) == ["MODEL_CARD.md", "config.json", "model.safetensors"]


def test_missing_bundle_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["export", "--model", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "not a model bundle" in " ".join(result.output.split())  # rich wraps long paths


def test_predictor_predicts_on_onnx_and_matches_pytorch(exported, fixture_dir):
    from dermxai.inference.predictor import Predictor

    image = next((fixture_dir / "images").rglob("*.jpg")).read_bytes()
    on_onnx, on_torch = Predictor(exported), Predictor(exported, prefer_onnx=False)
    assert on_onnx.backend.name == "onnxruntime" and on_torch.backend.name == "pytorch"
    a, b = on_onnx.predict(image), on_torch.predict(image)
    assert max(abs(a.probabilities[c] - b.probabilities[c]) for c in a.probabilities) < 1e-4
    assert on_onnx.explain(image).cam.shape == (48, 64)  # the CAM loads the PyTorch model on demand


def test_predict_path_does_not_import_torch(exported, fixture_dir):
    import subprocess
    import sys

    image = next((fixture_dir / "images").rglob("*.jpg"))
    code = (
        "import sys; from dermxai.inference.predictor import Predictor; "
        f"p = Predictor({str(exported)!r}); p.predict(open({str(image)!r}, 'rb').read()); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
