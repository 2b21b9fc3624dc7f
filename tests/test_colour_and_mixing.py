"""Shades of Gray colour constancy (trained, served, exported, in ensembles) and mixup/CutMix batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from dermxai.cli import app
from dermxai.data.labels import CLASSES
from dermxai.inference.predictor import Predictor
from dermxai.models.bundle import BundleConfig, BundleError, load_bundle, read_config, update_config
from dermxai.models.registry import architecture
from dermxai.preprocessing import colour_correct, colour_correct_array, load_resized, to_array, to_batch, to_unit
from dermxai.training.config import TrainConfig
from dermxai.training.distill import DistillationLoss, teacher_log_probs
from dermxai.training.mixing import Mix, mix_batch
from dermxai.training.module import Classifier
from tests.test_ensemble import member
from tests.test_export import tiny_bundle
from tests.test_training import split_file, train_args  # noqa: F401 (split_file: a fixture)

runner = CliRunner()
SOG = "shades_of_gray"


def test_shades_of_gray_divides_out_a_colour_cast_in_numpy_and_torch_alike():
    rng = np.random.default_rng(0)
    scene = rng.uniform(0.05, 0.6, (2, 3, 20, 30)).astype(np.float32)
    cast = np.array([1.4, 1.0, 0.7], dtype=np.float32).reshape(1, 3, 1, 1)
    corrected = colour_correct_array(scene * cast, SOG)
    ratio = corrected / colour_correct_array(scene, SOG)  # the cast is gone, up to one brightness per image
    np.testing.assert_allclose(ratio, np.broadcast_to(ratio[:, :1, :1, :1], ratio.shape), rtol=1e-4)
    torch_corrected = colour_correct(torch.from_numpy(scene * cast), SOG).numpy()
    np.testing.assert_allclose(torch_corrected, corrected, atol=1e-5)
    grey = np.full((1, 3, 4, 4), 0.5, dtype=np.float32) * cast
    np.testing.assert_allclose(colour_correct_array(grey, SOG), np.full_like(grey, 0.5 * cast.mean()), atol=1e-5)
    image = torch.from_numpy(scene)
    assert colour_correct(image, None) is image  # no step declared: the image as it is
    with pytest.raises(ValueError, match="colour constancy must be one of shades_of_gray"):
        colour_correct_array(scene, "grey_world")


def test_a_bundle_declares_its_colour_constancy_and_the_served_input_applies_it(tmp_path):
    config = update_config(tiny_bundle(tmp_path), colour_constancy=SOG)
    assert read_config(tmp_path).colour_constancy == SOG
    pixels = np.random.default_rng(1).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    plain = to_array(pixels, config.replace(colour_constancy=None))
    unit = pixels.transpose(0, 3, 1, 2).astype(np.float32) / 255
    served = to_array(pixels, config)
    assert not np.allclose(served, plain)
    mean, std = (np.asarray(v, dtype=np.float32).reshape(1, 3, 1, 1) for v in (config.mean, config.std))
    np.testing.assert_allclose(served * std + mean, colour_correct_array(unit, SOG), atol=1e-5)
    with pytest.raises(BundleError, match="'colour_constancy' must be one of shades_of_gray"):
        config.replace(colour_constancy="retinex")


def test_the_training_forward_with_colour_constancy_equals_the_served_model(tmp_path, fixture_table):
    update_config(tiny_bundle(tmp_path), colour_constancy=SOG)
    model, config = load_bundle(tmp_path)
    recipe = TrainConfig(arch="resnet18", weights="none", colour_constancy=SOG)
    module = Classifier(model, architecture("resnet18"), recipe, nn.Identity()).eval()
    pixels = load_resized(fixture_table["path"].iloc[0], config.size)
    with torch.no_grad():
        trained = module(module.unit(torch.from_numpy(pixels.copy())[None]))[0].numpy()
        uncorrected = module(to_unit(torch.from_numpy(pixels.copy())[None]))[0].numpy()
    served = Predictor(tmp_path).logits(pixels[None])[0]
    np.testing.assert_allclose(served, trained, rtol=1e-4, atol=1e-4)
    assert not np.allclose(served, uncorrected, atol=1e-3)


def test_an_ensemble_member_applies_its_colour_constancy_inside_the_one_graph(tmp_path, fixture_dir):
    plain = member(tmp_path / "a", "resnet18", 0)
    corrected = member(tmp_path / "b", "resnet18", 1, mean=(0.5,) * 3, std=(0.5,) * 3)
    update_config(corrected, colour_constancy=SOG)
    result = runner.invoke(app, ["ensemble", str(corrected), str(plain), "--out", str(tmp_path / "ens")])
    assert result.exit_code == 0, result.output
    model, config = load_bundle(tmp_path / "ens")
    assert config.colour_constancy is None and [m.get("colour_constancy") for m in config.members] == [SOG, None]
    noise = np.random.default_rng(2).uniform(0, 1, (2, 48, 64, 3))
    pixels = (255 * noise * [1.0, 0.75, 0.5]).astype(np.uint8)  # a warm colour cast the step removes
    with torch.inference_mode():
        got = model(to_batch(pixels, config)).numpy()
        expected = [load_bundle(p)[0](to_batch(pixels, read_config(p))).numpy() for p in (corrected, plain)]
        off = [
            load_bundle(p)[0](to_batch(pixels, read_config(p).replace(colour_constancy=None))).numpy()
            for p in (corrected, plain)
        ]
    np.testing.assert_allclose(got, np.mean(expected, axis=0), atol=1e-5)
    assert not np.allclose(got, np.mean(off, axis=0), atol=1e-3)  # the member's step is in the graph
    result = runner.invoke(app, ["export", "--model", str(tmp_path / "ens")])
    assert result.exit_code == 0, result.output
    image = next(fixture_dir.rglob("*.jpg")).read_bytes()
    onnx_answer, torch_answer = (
        Predictor(tmp_path / "ens").predict(image),
        Predictor(tmp_path / "ens", prefer_onnx=False).predict(image),
    )
    assert onnx_answer.probabilities == pytest.approx(torch_answer.probabilities, abs=1e-4)
    with pytest.raises(BundleError, match="belongs to its members' records"):
        config.replace(colour_constancy=SOG)
    with pytest.raises(BundleError, match="'colour_constancy' must be one of"):
        BundleConfig.from_dict(
            config.to_dict() | {"members": [config.members[0] | {"colour_constancy": "x"}, config.members[1]]}
        )


def test_mixup_blends_pairs_and_cutmix_pastes_a_box_with_lam_the_share_kept():
    x = torch.rand(6, 3, 10, 20)
    same, none = mix_batch(x, 0.4, 1.0, 0.0, seed=3)
    assert none is None and same is x
    mixed, mix = mix_batch(x, 0.4, 0.0, 1.0, seed=3)
    torch.testing.assert_close(mixed, mix.lam * x + (1 - mix.lam) * x[mix.partner])
    cut, mix = mix_batch(x, 0.0, 1.0, 1.0, seed=5)
    kept = (cut == x).all(1).float().mean((1, 2))  # share of each frame left as it was (partners differ)
    moved = mix.partner != torch.arange(6)
    assert torch.allclose(kept[moved], torch.full_like(kept[moved], mix.lam), atol=1e-6)
    again, same_mix = mix_batch(x, 0.0, 1.0, 1.0, seed=5)
    assert torch.equal(again, cut) and torch.equal(same_mix.partner, mix.partner)  # a seed fixes every draw


def test_a_mixed_distillation_loss_pairs_each_image_with_its_partners_labels_and_teacher_targets():
    logits, labels = torch.randn(4, 7), torch.tensor([0, 1, 2, 3])
    teacher = torch.randn(4, 7).log_softmax(1)
    partner = torch.tensor([2, 3, 0, 1])
    loss = DistillationLoss(nn.CrossEntropyLoss(), 0.5, 2.0, torch.arange(1.0, 8.0))
    mixed = Mix(partner, 0.7).combine(loss, logits, labels, teacher)
    expected = 0.7 * loss(logits, labels, teacher) + 0.3 * loss(logits, labels[partner], teacher[partner])
    assert mixed.item() == pytest.approx(expected.item())
    wrong = 0.7 * loss(logits, labels, teacher) + 0.3 * loss(logits, labels[partner], teacher)
    assert mixed.item() != pytest.approx(wrong.item())  # the partner's teacher targets, not the image's own


def test_a_teacher_with_colour_constancy_gives_targets_of_the_corrected_images(tmp_path):
    teacher = member(tmp_path / "t", "resnet18", 0)
    noise = np.random.default_rng(4).uniform(0, 1, (3, 48, 64, 3))
    pixels = (255 * noise * [0.5, 0.8, 1.0]).astype(np.uint8)
    before = teacher_log_probs(teacher, pixels, tuple(CLASSES), flips=False)
    config = update_config(teacher, colour_constancy=SOG)
    after = teacher_log_probs(teacher, pixels, tuple(CLASSES), flips=False)
    with torch.inference_mode():
        served = load_bundle(teacher)[0](to_batch(pixels, config)).log_softmax(1).numpy()
    np.testing.assert_allclose(after, served, atol=1e-4)
    assert not np.allclose(before, after, atol=1e-3)


def test_training_with_colour_constancy_and_mixing_records_them_in_the_bundle(
    tmp_path,
    fixture_dir,
    split_file,  # noqa: F811
):
    args = ["--epochs", "1", "--colour-constancy", SOG, "--mixup", "0.4", "--cutmix", "1", "--mix-prob", "1"]
    result = runner.invoke(app, train_args(fixture_dir, split_file, tmp_path / "run", tmp_path / "cache", *args))
    assert result.exit_code == 0, result.output
    config = read_config(tmp_path / "run" / "bundle")
    assert config.colour_constancy == SOG
    assert (config.recipe["mixup_alpha"], config.recipe["cutmix_alpha"], config.recipe["mix_prob"]) == (0.4, 1.0, 1.0)
    bad = runner.invoke(
        app, train_args(fixture_dir, split_file, tmp_path / "bad", tmp_path / "cache", "--mix-prob", "2")
    )
    assert bad.exit_code == 2 and "--mix-prob must be in [0, 1]" in bad.output
    other = ["--epochs", "1", "--mixup", "0.4", "--cutmix", "1", "--mix-prob", "1", "--resume"]  # no colour step
    resumed = runner.invoke(app, train_args(fixture_dir, split_file, tmp_path / "run", tmp_path / "cache", *other))
    assert resumed.exit_code == 2 and "colour_constancy differ" in " ".join(resumed.output.split())
