"""int8 serving: `dermxai export --int8` quantizes the graph, checks it against float32 on val, and what is
fitted or evaluated afterwards runs on the int8 graph."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import dermxai.quantize as quantize
from dermxai.cli import app
from dermxai.inference.onnx_backend import OnnxBackend, float_graph_path, int8_kernels_exact, load_backend
from dermxai.inference.predictor import Predictor
from dermxai.models.bundle import BundleConfig, load_bundle, read_config, save_bundle
from dermxai.models.registry import create_model
from dermxai.quantize import Agreement, QuantizationError, check_agreement, compare

runner = CliRunner()
CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")


@pytest.fixture(scope="module", autouse=True)
def exact_int8_kernels():
    """The int8 machinery is tested as served where its kernels are exact (x86 with VNNI, ARM), on any CPU."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("dermxai.inference.onnx_backend.int8_kernels_exact", lambda: True)
        yield


@pytest.fixture(scope="module")
def split_file(tmp_path_factory, fixture_table):
    """Lesion-grouped thirds of the fixture: train, val and test."""
    lesions = sorted(fixture_table["lesion_id"].unique())
    subset = {lesion: ("train", "val", "test")[i % 3] for i, lesion in enumerate(lesions)}
    path = tmp_path_factory.mktemp("split") / "split.csv"
    pd.DataFrame(
        {
            "image_id": fixture_table["image_id"],
            "lesion_group": fixture_table["lesion_id"],
            "split": fixture_table["lesion_id"].map(subset),
        }
    ).to_csv(path, index=False)
    return path


def exported_bundle(folder):
    torch.manual_seed(0)
    model, arch = create_model("resnet18", weights="none")
    save_bundle(folder, model, BundleConfig("resnet18", CLASSES, 48, 64, arch.mean, arch.std))
    result = runner.invoke(app, ["export", "--model", str(folder)])
    assert result.exit_code == 0, result.output
    return folder


def int8_export(bundle, fixture_dir, split_file, *extra):
    return runner.invoke(
        app,
        ["export", "--model", str(bundle), "--int8", "--data", str(fixture_dir), "--split", str(split_file), *extra],
    )


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory, fixture_dir, split_file):
    """A tiny bundle exported with --int8 (bars off: an untrained net's near-ties flip under any rounding)."""
    bundle = exported_bundle(tmp_path_factory.mktemp("int8") / "bundle")
    result = int8_export(bundle, fixture_dir, split_file, "--min-agreement", "0", "--max-drop", "1")
    assert result.exit_code == 0, result.output
    assert "served label unchanged on" in result.output and "Re-run calibrate" in result.output
    return bundle


def test_the_int8_graph_is_quantized_served_and_recorded(int8_bundle, split_file):
    graph = onnx.load(str(int8_bundle / "model.onnx"))
    ops = {node.op_type for node in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    backend = load_backend(int8_bundle)
    assert isinstance(backend, OnnxBackend) and backend.name == "onnxruntime-int8"  # still current: digests kept
    record = read_config(int8_bundle).onnx_int8
    n_val = (pd.read_csv(split_file)["split"] == "val").sum()
    assert record["val_images"] == n_val and 0 <= record["val_label_agreement"] <= 1
    assert record["onnx_mib"]["int8"] < record["onnx_mib"]["float32"]
    assert set(record["p50_ms_graph_single_image"]) == {"float32", "int8"}
    assert record["source"]["checked_on"] == "val"


def test_the_predictor_serves_the_int8_graph(int8_bundle, fixture_dir):
    predictor = Predictor(int8_bundle)
    assert predictor.backend.name == "onnxruntime-int8"
    result = predictor.predict(next((fixture_dir / "images").rglob("*.jpg")).read_bytes())
    assert abs(sum(result.probabilities.values()) - 1) < 1e-4


def test_calibrate_is_fitted_on_the_int8_graph(int8_bundle, tmp_path, fixture_dir, split_file):
    bundle = shutil.copytree(int8_bundle, tmp_path / "bundle")
    result = runner.invoke(
        app, ["calibrate", "--model", str(bundle), "--data", str(fixture_dir), "--split", str(split_file)]
    )
    assert result.exit_code == 0, result.output
    assert read_config(bundle).calibration["scored_by"] == "onnxruntime-int8"


def test_a_plain_export_writes_float32_again_and_clears_the_record(int8_bundle, tmp_path):
    bundle = shutil.copytree(int8_bundle, tmp_path / "bundle")
    assert runner.invoke(app, ["export", "--model", str(bundle)]).exit_code == 0
    assert load_backend(bundle).name == "onnxruntime" and read_config(bundle).onnx_int8 is None


def test_quantizing_an_int8_graph_again_is_refused(int8_bundle, tmp_path, fixture_dir, split_file):
    bundle = shutil.copytree(int8_bundle, tmp_path / "bundle")
    with pytest.raises(QuantizationError, match="already int8"):
        quantize.quantize_on_split(bundle, fixture_dir, split_file, min_agreement=0, max_drop=1)


def test_a_graph_that_answers_differently_is_refused_and_nothing_changes(
    tmp_path, fixture_dir, split_file, monkeypatch
):
    bundle = exported_bundle(tmp_path / "bundle")
    before, config_before = (bundle / "model.onnx").read_bytes(), (bundle / "config.json").read_text()
    monkeypatch.setattr(quantize, "compare", lambda *args: Agreement(0.5, 0.4, 0.4, 3.0))
    with pytest.raises(QuantizationError, match=r"agrees with float32 on 50\.0% .*nothing written"):
        quantize.quantize_on_split(bundle, fixture_dir, split_file)
    assert (bundle / "model.onnx").read_bytes() == before and (bundle / "config.json").read_text() == config_before
    assert sorted(p.name for p in bundle.iterdir()) == [
        "MODEL_CARD.md",
        "config.json",
        "model.onnx",
        "model.safetensors",
    ]


@pytest.mark.parametrize(
    ("agreement", "message"),
    [
        (Agreement(0.85, 0.70, 0.70, 1.0), r"agrees with float32 on 85\.0% of the validation images"),
        (Agreement(0.95, 0.70, 0.68, 1.0), r"balanced accuracy 0\.680 is more than 0\.01 below float32's 0\.700"),
    ],
)
def test_the_agreement_bars(agreement, message):
    with pytest.raises(QuantizationError, match=message):
        check_agreement(agreement, min_agreement=0.9, max_drop=0.01)
    check_agreement(agreement, min_agreement=0.8, max_drop=0.03)  # passes under looser bars


def test_compare_measures_served_labels_not_argmax():
    config = BundleConfig("resnet18", ("a", "b"), 8, 8, (0.5,) * 3, (0.5,) * 3, logit_bias=(0.0, 1.0))
    float_logits = np.array([[1.5, 0.0], [0.0, 2.0], [3.0, 0.0]])
    int8_logits = np.array([[0.5, 0.0], [0.0, 2.0], [3.0, 0.0]])  # row 0: argmax unchanged, served label changed
    agreement = compare(config, float_logits, int8_logits, np.array([0, 1, 0]))
    assert agreement.label_agreement == pytest.approx(2 / 3)
    assert agreement.bacc_float32 == 1.0 and agreement.bacc_int8 == pytest.approx(0.75)
    assert agreement.max_abs_logit_change == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "--int8 needs --data and --split"),
        (["--data", "x"], "--int8 needs --data and --split"),
    ],
)
def test_int8_without_data_is_one_line(tmp_path, extra, message):
    bundle = exported_bundle(tmp_path / "bundle")
    result = runner.invoke(app, ["export", "--model", str(bundle), "--int8", *extra])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert json.loads((bundle / "config.json").read_text()).get("onnx_int8") is None


def test_where_int8_kernels_can_saturate_int8_export_is_refused_and_nothing_changes(
    tmp_path, fixture_dir, split_file, monkeypatch
):
    bundle = exported_bundle(tmp_path / "bundle")
    graph = (bundle / "model.onnx").read_bytes()
    monkeypatch.setattr("dermxai.inference.onnx_backend.int8_kernels_exact", lambda: False)
    result = int8_export(bundle, fixture_dir, split_file)
    assert result.exit_code == 2 and "cannot be checked here" in result.output and "Traceback" not in result.output
    assert (bundle / "model.onnx").read_bytes() == graph
    assert json.loads((bundle / "config.json").read_text()).get("onnx_int8") is None


def test_where_int8_kernels_can_saturate_a_cached_float_graph_serves(int8_bundle, monkeypatch, tmp_path):
    monkeypatch.setattr("dermxai.inference.onnx_backend.int8_kernels_exact", lambda: False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.warns(UserWarning, match="writing a float32 graph"):
        backend = load_backend(int8_bundle)
    (graph,) = (tmp_path / "cache" / "dermxai" / "graphs").glob("*.onnx")
    assert backend.name == "onnxruntime" and {n.op_type for n in onnx.load(str(graph)).graph.node}.isdisjoint(
        {"QuantizeLinear", "DequantizeLinear"}
    )
    batch = np.random.default_rng(0).normal(size=(3, 3, 48, 64)).astype(np.float32)
    model, _ = load_bundle(int8_bundle)
    with torch.inference_mode():
        expected = model.eval()(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(backend.logits(batch), expected, atol=1e-4)
    written = graph.stat().st_mtime_ns
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second load reuses the graph, silently
        assert load_backend(int8_bundle).name == "onnxruntime"
    assert graph.stat().st_mtime_ns == written
    assert Predictor(int8_bundle).backend.name == "onnxruntime"


def test_an_unreadable_cached_float_graph_is_not_served(int8_bundle, monkeypatch, tmp_path):
    monkeypatch.setattr("dermxai.inference.onnx_backend.int8_kernels_exact", lambda: False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    graph = float_graph_path(int8_bundle, read_config(int8_bundle))
    graph.parent.mkdir(parents=True)
    graph.write_bytes(b"not an onnx graph")
    with pytest.warns(UserWarning, match="cannot be read"):
        assert load_backend(int8_bundle).name == "pytorch"


def test_where_no_float_graph_can_be_written_pytorch_serves(int8_bundle, monkeypatch, tmp_path):
    monkeypatch.setattr("dermxai.inference.onnx_backend.int8_kernels_exact", lambda: False)
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))
    with pytest.warns(UserWarning, match="no VNNI"):
        backend = load_backend(int8_bundle)
    assert backend.name == "pytorch" and not list(tmp_path.rglob("*.partial"))


@pytest.mark.parametrize(
    ("machine", "cpuinfo", "exact"),
    [
        ("x86_64", "flags : fpu avx2 fma", False),
        ("x86_64", "flags : fpu avx2 avx512f avx512_vnni", True),
        ("AMD64", "flags : avx2 avx_vnni", True),
        ("aarch64", "Features : fp asimd", True),
    ],
)
def test_int8_kernels_are_exact_with_vnni_or_off_x86(machine, cpuinfo, exact):
    assert int8_kernels_exact(machine, cpuinfo) is exact  # imported before the module fixture patches it
