"""Ensemble bundles: one model (mean of member logits) that calibrate, export, the Predictor and CAMs treat as any."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dermxai.cli import app
from dermxai.data.labels import CLASSES
from dermxai.inference.predictor import Predictor
from dermxai.models.bundle import BundleConfig, BundleError, load_bundle, read_config, save_bundle, validate_bundle
from dermxai.models.registry import create_model
from dermxai.preprocessing import to_batch

runner = CliRunner()


def member(folder, arch: str, seed: int, size=(48, 64), mean=None, std=None):
    torch.manual_seed(seed)
    model, entry = create_model(arch, weights="none")
    config = BundleConfig(arch, tuple(CLASSES), *size, mean or entry.mean, std or entry.std, seed=seed, val_bacc=0.5)
    return save_bundle(folder, model, config)


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble")
    members = [member(root / "a", "resnet18", 0), member(root / "b", "resnet18", 1, mean=(0.5,) * 3, std=(0.5,) * 3)]
    result = runner.invoke(app, ["ensemble", *map(str, members), "--out", str(root / "ens"), "--explain-member", "1"])
    assert result.exit_code == 0, result.output
    return root / "ens", members


def test_the_ensemble_serves_the_mean_of_its_members_logits_each_normalised_its_own_way(ensemble):
    folder, members = ensemble
    model, config = load_bundle(folder)
    assert config.arch == "ensemble" and [m["seed"] for m in config.members] == [0, 1]
    assert config.cam_layer == "members.1.layer4" and config.gate_layer == "members.1.layer3"
    pixels = np.random.default_rng(0).integers(0, 256, (3, 48, 64, 3), dtype=np.uint8)
    with torch.inference_mode():
        got = model(to_batch(pixels, config)).numpy()
        expected = []
        for path in members:
            net, own = load_bundle(path)
            expected.append(net(to_batch(pixels, own)).numpy())
    assert not np.allclose(expected[0], expected[1])
    np.testing.assert_allclose(got, np.mean(expected, axis=0), atol=1e-5)


def test_the_ensemble_is_calibrated_exported_and_served_as_one_model(ensemble, fixture_dir, tmp_path):
    folder, _ = ensemble
    result = runner.invoke(app, ["export", "--model", str(folder)])
    assert result.exit_code == 0, result.output
    predictor = Predictor(folder)
    assert predictor.backend.name == "onnxruntime"
    image = next(fixture_dir.rglob("*.jpg")).read_bytes()
    onnx_answer = predictor.predict(image)
    torch_answer = Predictor(folder, prefer_onnx=False).predict(image)
    for c in CLASSES:
        assert onnx_answer.probabilities[c] == pytest.approx(torch_answer.probabilities[c], abs=1e-4)
    explanation = predictor.explain(image)
    assert explanation.cam.shape == (48, 64) and explanation.cam.max() > 0


def test_members_that_do_not_fit_together_are_refused_in_one_line(ensemble, tmp_path):
    _, (a, _) = ensemble
    small = member(tmp_path / "small", "resnet18", 2, size=(32, 64))
    result = runner.invoke(app, ["ensemble", str(a), str(small), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "smaller than the first member's" in result.output
    result = runner.invoke(app, ["ensemble", str(a), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "at least two" in result.output
    with pytest.raises(BundleError, match="'members' must be given exactly"):
        read_config(a).replace(arch="ensemble")


def test_served_flip_tta_averages_the_logits_of_the_four_flips_and_keeps_cams_and_gate_working(ensemble, tmp_path):
    _, members = ensemble
    result = runner.invoke(app, ["ensemble", str(members[0]), "--flips", "--out", str(tmp_path / "tta")])
    assert result.exit_code == 0, result.output
    model, config = load_bundle(tmp_path / "tta")
    assert config.flip_tta and len(config.members) == 1
    pixels = np.random.default_rng(1).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    net, own = load_bundle(members[0])
    x = to_batch(pixels, own)
    with torch.inference_mode():
        expected = torch.stack([net(v) for v in (x, x.flip(3), x.flip(2), x.flip(2, 3))]).mean(0)
        np.testing.assert_allclose(model(x).numpy(), expected.numpy(), atol=1e-5)
    assert runner.invoke(app, ["export", "--model", str(tmp_path / "tta")]).exit_code == 0
    predictor = Predictor(tmp_path / "tta")
    image = np.asarray(pixels[0])
    from PIL import Image

    explanation = predictor.explain(Image.fromarray(image))
    assert explanation.cam.shape == (48, 64)
    assert predictor.outputs(pixels)[1].shape[0] == 2  # gate features: one row per image, not per view


def test_a_member_trained_at_a_larger_size_sees_the_ensembles_input_upsampled(ensemble, tmp_path):
    _, (a, _) = ensemble
    large = member(tmp_path / "large", "resnet18", 3, size=(72, 96))
    result = runner.invoke(app, ["ensemble", str(a), str(large), "--out", str(tmp_path / "mixed")])
    assert result.exit_code == 0, result.output
    model, config = load_bundle(tmp_path / "mixed")
    assert config.size == (48, 64) and "height" not in config.members[0]
    assert (config.members[1]["height"], config.members[1]["width"]) == (72, 96)
    pixels = np.random.default_rng(2).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    with torch.inference_mode():
        net_a, own_a = load_bundle(a)
        net_b, own_b = load_bundle(large)
        assert (own_a.mean, own_a.std) == (own_b.mean, own_b.std)
        upsampled = torch.nn.functional.interpolate(to_batch(pixels, own_a), size=(72, 96), mode="bilinear")
        expected = (net_a(to_batch(pixels, own_a)) + net_b(upsampled)) / 2
        np.testing.assert_allclose(model(to_batch(pixels, config)).numpy(), expected.numpy(), atol=1e-5)
    assert runner.invoke(app, ["export", "--model", str(tmp_path / "mixed")]).exit_code == 0
    from PIL import Image

    image = Image.fromarray(pixels[0])
    on_onnx, on_torch = Predictor(tmp_path / "mixed"), Predictor(tmp_path / "mixed", prefer_onnx=False)
    assert on_onnx.backend.name == "onnxruntime"
    for c in CLASSES:
        assert on_onnx.predict(image).probabilities[c] == pytest.approx(
            on_torch.predict(image).probabilities[c], abs=1e-4
        )
    with pytest.raises(BundleError, match="both or neither"):
        read_config(tmp_path / "mixed").replace(members=({**config.members[1], "width": None}, config.members[0]))


def test_the_gate_can_join_several_members_features_and_serves_them_from_one_graph(ensemble, tmp_path):
    from dermxai.models.features import WithFeatures

    _, members = ensemble
    args = ["ensemble", *map(str, members), "--gate-member", "1", "--gate-member", "0", "--out", str(tmp_path / "j")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    model, config = load_bundle(tmp_path / "j")
    assert config.gate_layer == "members.1.layer3+members.0.layer3" and config.cam_layer == "members.0.layer4"
    pixels = np.random.default_rng(2).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    x = to_batch(pixels, config)
    with torch.inference_mode():
        _, joined = WithFeatures(model, config.gate_layer)(x)
        singles = [WithFeatures(model, f"members.{i}.layer3")(x)[1] for i in (1, 0)]
    np.testing.assert_allclose(joined.numpy(), torch.cat(singles, 1).numpy(), atol=1e-6)
    assert runner.invoke(app, ["export", "--model", str(tmp_path / "j")]).exit_code == 0
    predictor = Predictor(tmp_path / "j")
    assert predictor.backend.name == "onnxruntime"
    np.testing.assert_allclose(predictor.outputs(pixels)[1], joined.numpy(), rtol=1e-3, atol=1e-3)


def test_a_gate_member_out_of_range_twice_or_not_a_layer_is_refused_in_one_line(ensemble, tmp_path):
    folder, members = ensemble
    for extra, message in ((["--gate-member", "2"], "between 0 and 1"), (["--gate-member", "1"] * 2, "twice")):
        result = runner.invoke(app, ["ensemble", *map(str, members), *extra, "--out", str(tmp_path / "x")])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    broken = tmp_path / "broken"
    model, config = load_bundle(folder)
    save_bundle(broken, model, config.replace(gate_layer="members.1.layer3+members.0.nowhere"))
    with pytest.raises(BundleError, match="gate_layer 'members.0.nowhere' is not a layer"):
        validate_bundle(broken)


def test_a_gate_only_member_feeds_the_gate_but_does_not_vote(ensemble, tmp_path):
    from dermxai.models.features import WithFeatures

    folder, members = ensemble
    extra = member(tmp_path / "c", "resnet18", 3)
    args = ["ensemble", *map(str, members), "--gate-only", str(extra), "--out", str(tmp_path / "g")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    model, config = load_bundle(tmp_path / "g")
    assert [m.get("votes", True) for m in config.members] == [True, True, False]
    assert config.gate_layer == "members.2.layer3" and config.cam_layer == "members.0.layer4"
    pixels = np.random.default_rng(3).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    x = to_batch(pixels, config)
    voting, _ = load_bundle(folder)
    net, own = load_bundle(extra)
    with torch.inference_mode():
        logits, features = WithFeatures(model, config.gate_layer)(x)
        np.testing.assert_allclose(logits.numpy(), voting(x).numpy(), atol=1e-5)  # the vote ignores the extra
        np.testing.assert_allclose(
            features.numpy(), WithFeatures(net, "layer3")(to_batch(pixels, own))[1].numpy(), atol=1e-5
        )
    assert runner.invoke(app, ["export", "--model", str(tmp_path / "g")]).exit_code == 0
    predictor = Predictor(tmp_path / "g")
    np.testing.assert_allclose(predictor.outputs(pixels)[1], features.numpy(), rtol=1e-3, atol=1e-3)
    result = runner.invoke(app, [*args[:-1], str(tmp_path / "h"), "--explain-member", "2"])
    assert result.exit_code == 2 and "--explain-member must be between 0 and 1" in result.output
    with pytest.raises(BundleError, match="two voting records"):
        config.replace(members=tuple({**m, "votes": False} for m in config.members[1:]))


def test_the_ensemble_converts_to_channels_last_as_the_explanation_scorer_needs(ensemble):
    folder, _ = ensemble
    model, config = load_bundle(folder)
    x = to_batch(np.random.default_rng(4).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8), config)
    with torch.inference_mode():
        expected = model(x)
        got = model.to(memory_format=torch.channels_last)(x)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-5)
