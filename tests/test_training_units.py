"""Training building blocks: registry, offline weights, augmentation, losses, sampler."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dermxai.models.pretrained import PretrainedWeightsUnavailable
from dermxai.models.registry import architecture, create_model
from dermxai.training.augment import AugmentConfig, augment_batch
from dermxai.training.config import AUGMENT_PRESETS
from dermxai.training.datamodule import EpochSampler
from dermxai.training.losses import FocalLoss, build_loss, class_weights


@pytest.mark.parametrize("name", ["resnet18", "densenet121", "efficientnet_b0", "efficientnet_lite0"])
def test_registered_architectures_have_a_7_class_head_and_a_cam_layer(name):
    model, arch = create_model(name, weights="none")
    assert model.get_submodule(arch.classifier).out_features == 7
    assert isinstance(model.get_submodule(arch.cam_layer), torch.nn.Module)
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 7)


def test_any_timm_model_by_rule_and_unknown_names():
    arch = architecture("resnet10t")
    assert arch.library == "timm" and arch.cam_layer.startswith("layer4")
    model, _ = create_model("resnet10t", weights="none")
    assert model.get_submodule(arch.classifier).out_features == 7
    with pytest.raises(ValueError, match="unknown architecture 'not_a_net'"):
        architecture("not_a_net")


def test_torchvision_imagenet_weights_come_from_a_prefilled_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference, _ = create_model("resnet18", weights="none", num_classes=1000)
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(reference.state_dict(), checkpoints / "resnet18-f37072fd.pth")
    model, _ = create_model("resnet18", weights="imagenet")
    assert torch.equal(model.conv1.weight, reference.conv1.weight)
    assert model.fc.out_features == 7


def test_torchvision_imagenet_weights_offline_with_empty_cache_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(
        "torch.hub.download_url_to_file", lambda *a, **k: (_ for _ in ()).throw(OSError("network is unreachable"))
    )
    with pytest.raises(
        PretrainedWeightsUnavailable,
        match=rf"Place resnet18-f37072fd\.pth .* in {tmp_path}/hub/checkpoints/.*--weights PATH or --weights none",
    ):
        create_model("resnet18", weights="imagenet")


def test_weights_file_must_fit(tmp_path):
    model, _ = create_model("resnet18", weights="none")
    torch.save(model.state_dict(), tmp_path / "r18.pth")
    loaded, _ = create_model("resnet18", weights=str(tmp_path / "r18.pth"))
    assert torch.equal(loaded.fc.weight, model.fc.weight)
    with pytest.raises(ValueError, match="weights do not fit densenet121"):
        create_model("densenet121", weights=str(tmp_path / "r18.pth"))


def test_augmentation_without_jitter_or_scaling_only_flips_and_rotates_each_image_on_its_own():
    config = AugmentConfig(max_rotation_deg=0, scale=(1, 1), max_translate=0, brightness=0, contrast=0, saturation=0)
    images = torch.rand(16, 3, 8, 8)
    out = augment_batch(images, config, torch.Generator().manual_seed(0))
    transforms = [
        lambda x, k=k, f=f: torch.rot90(x.flip(-1) if f else x, k, (-2, -1)) for k in range(4) for f in (0, 1)
    ]
    matched = [
        next(n for n, t in enumerate(transforms) if torch.allclose(t(img), o, atol=1e-5)) for img, o in zip(images, out)
    ]
    assert len(set(matched)) > 3  # different images got different transforms


def test_augmentation_keeps_shape_and_range_and_is_seeded():
    images = torch.rand(4, 3, 20, 30)
    a = augment_batch(images, AugmentConfig(), torch.Generator().manual_seed(1))
    b = augment_batch(images, AugmentConfig(), torch.Generator().manual_seed(1))
    assert a.shape == images.shape and a.min() >= 0 and a.max() <= 1 and torch.equal(a, b)
    assert not torch.equal(a, augment_batch(images, AugmentConfig(), torch.Generator().manual_seed(2)))


def _flip_symmetric(n: int) -> torch.Tensor:
    """Images in [0.3, 0.7] that every flip leaves unchanged (rings around the centre), with fine detail."""
    y, x = torch.meshgrid(torch.arange(32) - 15.5, torch.arange(48) - 23.5, indexing="ij")
    rings = torch.stack([torch.sin((x**2 + y**2).sqrt() * (0.8 + 0.3 * k)) for k in range(n)])
    return (0.5 + 0.2 * rings)[:, None].repeat(1, 3, 1, 1)


def test_jpeg_augmentation_reencodes_each_image_at_a_quality_of_its_range():
    from torchvision.io import decode_jpeg, encode_jpeg

    config = replace(AUGMENT_PRESETS["light"], brightness=0, jpeg_probability=1.0, jpeg_quality=(30, 60))
    images = _flip_symmetric(6)
    out = augment_batch(images, config, torch.Generator().manual_seed(0))
    pixels = (images * 255).round().to(torch.uint8)

    def quality_of(image: torch.Tensor, result: torch.Tensor) -> int | None:
        return next(
            (
                q
                for q in range(1, 101)
                if torch.equal(decode_jpeg(encode_jpeg(image, quality=q)), (result * 255).round().to(torch.uint8))
            ),
            None,
        )

    qualities = [quality_of(p, o) for p, o in zip(pixels, out)]
    assert all(q is not None and 30 <= q <= 60 for q in qualities), qualities
    assert len(set(qualities)) > 1
    assert torch.equal(out, augment_batch(images, config, torch.Generator().manual_seed(0)))


def test_noise_augmentation_gives_each_image_its_own_sigma_within_the_bound():
    config = AugmentConfig(
        max_rotation_deg=0, scale=(1, 1), max_translate=0, brightness=0, contrast=0, saturation=0, noise_std=0.1
    )
    images = _flip_symmetric(16)
    residual = augment_batch(images, config, torch.Generator().manual_seed(3)) - images
    sigmas = residual.flatten(1).std(1)
    assert sigmas.max() < 0.11 and sigmas.max() > 0.05 and sigmas.min() < 0.05
    assert residual.flatten(1).mean(1).abs().max() < 0.01


def test_robust_preset_is_light_plus_jpeg_and_noise():
    light, robust = AUGMENT_PRESETS["light"], AUGMENT_PRESETS["robust"]
    assert robust.rigid and robust.brightness == light.brightness
    assert robust.jpeg_probability > 0 and robust.noise_std > 0 and light.jpeg_probability == light.noise_std == 0


def test_focal_loss_with_gamma_zero_is_cross_entropy_and_focuses_on_hard_examples():
    logits, target = torch.randn(32, 7), torch.randint(0, 7, (32,))
    assert torch.allclose(FocalLoss(gamma=0)(logits, target), F.cross_entropy(logits, target))
    easy = torch.full((1, 7), -5.0)
    easy[0, 0] = 5.0
    assert FocalLoss()(easy, torch.tensor([0])) < 0.01 * F.cross_entropy(easy, torch.tensor([0]))


def test_class_weights_are_inverse_frequency_with_mean_one():
    weights = class_weights(torch.tensor([100.0, 10.0, 0.0, 1.0]))
    assert weights[2] == 0 and torch.isclose(weights[[0, 1, 3]].mean(), torch.tensor(1.0))
    assert torch.isclose(weights[1] / weights[0], torch.tensor(10.0))
    assert isinstance(build_loss("focal", torch.tensor([5, 5]), True, 0.1), FocalLoss)
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        build_loss("hinge", torch.tensor([5, 5]), False, 0.0)


def test_sampler_balances_classes_is_deterministic_per_epoch_and_splits_ranks():
    labels = np.array([5] * 900 + [3] * 20 + [6] * 80)
    sampler = EpochSampler(labels, seed=0, balanced=True)
    drawn = labels[list(sampler)]
    shares = np.bincount(drawn, minlength=7)[[3, 5, 6]] / len(drawn)
    assert np.allclose(shares, 1 / 3, atol=0.05)
    sampler.set_epoch(1)
    first = list(sampler)
    assert first == list(sampler) and first != list(EpochSampler(labels, 0, True))
    ranks = [EpochSampler(labels, 0, False, rank, 2) for rank in (0, 1)]
    assert sorted(list(ranks[0]) + list(ranks[1])) == list(range(1000))
