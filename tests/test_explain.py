"""CAMs, figures and the explain commands on tiny models and the committed fixture."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_grad_cam.utils.image import scale_cam_image
from torch import nn
from typer.testing import CliRunner

from dermxai.cli import app
from dermxai.data.labels import CLASSES
from dermxai.explain.commands import METHOD_HELP
from dermxai.explain.io import read_mask
from dermxai.inference.cams import METHODS, explain, target_layer
from dermxai.models.bundle import BundleConfig, save_bundle
from dermxai.models.registry import create_model

runner = CliRunner()


@pytest.mark.parametrize(
    "arch, layer",
    [
        ("resnet18", "layer4"),
        ("densenet121", "features.norm5"),
        ("efficientnet_b0", "features.8"),
        ("efficientnet_lite0", "bn2"),
        ("resnet10t", "layer4"),
    ],
)  # the last: a timm model, found by the rule
def test_target_layer_of_each_architecture(arch, layer):
    model, _ = create_model(arch, weights="none")
    config = BundleConfig(arch, tuple(CLASSES), 64, 64, (0.5,) * 3, (0.5,) * 3)
    assert config.target_layer() == layer  # the registry's (or timm's rule) when the bundle names none
    assert config.replace(cam_layer="layer1").target_layer() == "layer1"
    assert target_layer(model, layer) is model.get_submodule(layer)


def test_target_layer_errors_name_the_problem():
    model, _ = create_model("resnet18", weights="none")
    config = BundleConfig("not_a_net", tuple(CLASSES), 64, 64, (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ValueError, match="unknown architecture 'not_a_net'"):
        config.target_layer()
    with pytest.raises(ValueError, match="'layer9' is not in ResNet"):
        target_layer(model, "layer9")
    with pytest.raises(ValueError, match="CAMs need a convolutional network"):
        config.replace(arch="vit_tiny_patch16_224").target_layer()


class TopLeftModel(nn.Module):
    """Sees the whole image (red and green detectors everywhere) but its logits read only the top-left quadrant."""

    def __init__(self):
        super().__init__()
        self.detect = nn.Conv2d(3, 2, 1, bias=False)
        self.detect.weight.data = torch.tensor([[1.0, -1, -1], [-1, 1, -1]])[..., None, None]  # red, green
        self.act = nn.ReLU()
        self.head = nn.Linear(2, 2)
        self.head.weight.data = torch.tensor([[10.0, 10.0], [-10.0, -10.0]])
        self.head.bias.data.zero_()

    def forward(self, x):
        a = self.act(self.detect(x))
        h, w = a.shape[-2:]
        return self.head((a[:, :, : h // 2, : w // 2] ** 2).mean((2, 3)))


def two_squares(first: int) -> torch.Tensor:
    """Black 24x32 image: a square of colour ``first`` (0 red, 1 green) top-left, of the other bottom-right."""
    image = torch.zeros(1, 3, 24, 32)
    image[0, first, 3:9, 4:12] = 1.0
    image[0, 1 - first, 15:21, 20:28] = 1.0
    return image


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "scorecam"])
@pytest.mark.parametrize("first", [0, 1])
def test_cam_lands_in_the_quadrant_the_model_reads(method, first):
    model = TopLeftModel()
    cams, logits = explain(model, "act", two_squares(first), method, [0])
    cam = cams[0]
    assert cam.shape == (24, 32)
    assert cam[:12, :16].sum() / cam.sum() > 0.9
    row, col = np.unravel_index(cam.argmax(), cam.shape)
    assert row < 12 and col < 16
    assert torch.allclose(logits, model(two_squares(first)))


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_eigencam_lights_the_blob_whatever_the_sign_of_the_activations(sign):
    model = nn.Sequential(nn.Conv2d(3, 1, 1, bias=False), nn.Flatten(), nn.LazyLinear(2))
    model[0].weight.data.fill_(sign)
    image = torch.zeros(1, 3, 24, 32)
    image[0, :, 14:20, 20:28] = 1.0
    model(image)  # materialise the lazy head
    cam = explain(model, "0", image, "eigencam")[0][0]
    assert cam[14:20, 20:28].mean() > 0.8 > cam[:10, :10].max()


def test_densenet_batch_keeps_pre_relu_activations_and_the_plain_logits():
    torch.manual_seed(0)
    model, _ = create_model("densenet121", weights="none")
    model.eval()
    batch = torch.randn(2, 3, 64, 64)
    cams, logits = explain(model, "features.norm5", batch, "gradcam")
    with torch.no_grad():
        plain = model(batch)
    assert torch.allclose(logits, plain, atol=1e-5)
    # Grad-CAM by hand, with norm5's output before DenseNet's in-place ReLU
    features = model.features(batch)
    features.retain_grad()
    out = model.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(torch.relu(features), 1), 1))
    out.gather(1, out.argmax(1, keepdim=True)).sum().backward()
    assert (features < 0).any()
    manual = (features.grad.mean((2, 3), keepdim=True) * features).sum(1).clamp(min=0).detach().numpy()
    expected = scale_cam_image(scale_cam_image(manual, (64, 64))[:, None].mean(1))
    assert cams.shape == (2, 64, 64)
    assert np.allclose(cams, expected, atol=1e-4)
    assert not np.allclose(cams[0], cams[1])


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """Two tiny random-weight bundles of different architectures and input sizes; temperature 2."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("bundles")
    made = []
    for arch, (height, width) in (("resnet18", (32, 48)), ("efficientnet_lite0", (32, 40))):
        model, info = create_model(arch, weights="none")
        config = BundleConfig(arch, tuple(CLASSES), height, width, info.mean, info.std, temperature=2.0)
        made.append(save_bundle(root / arch, model, config, note="test"))
    return made


@pytest.fixture(scope="module")
def lesion(fixture_table):
    return fixture_table[fixture_table["mask_path"].notna()].iloc[0]


def png(path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_explain_prints_the_calibrated_probability_and_writes_a_png(tmp_path, bundles, lesion, monkeypatch):
    from dermxai.explain.io import read_model_input
    from dermxai.inference import cams
    from dermxai.models.bundle import load_bundle
    from dermxai.preprocessing import to_batch

    out = tmp_path / "cam.png"
    result = runner.invoke(app, ["explain", "--model", str(bundles[0]), lesion["path"], "--out", str(out)])
    assert result.exit_code == 0, result.output
    model, config = load_bundle(bundles[0])
    with torch.no_grad():
        probs = torch.softmax(model(to_batch(read_model_input(lesion["path"], config.size), config)) / 2.0, -1)[0]
    top = int(probs.argmax())
    assert result.output.split()[:2] == [CLASSES[top], f"{probs[top]:.3f}"]
    single = png(out)
    monkeypatch.setattr(cams, "METHODS", {k: v for k, v in METHODS.items() if k != "scorecam"})  # slow on CPU
    result = runner.invoke(
        app,
        ["explain", "--model", str(bundles[0]), lesion["path"], "--out", str(out), "--all-methods", "--class", "mel"],
    )
    assert result.exit_code == 0, result.output
    width, height = png(out)
    assert width > single[0] and height > single[1]  # 7 panels in rows of 4 against 2 panels


def test_explain_uses_the_default_bundle_from_the_environment(tmp_path, bundles, lesion, monkeypatch):
    monkeypatch.setenv("DERMXAI_MODEL", str(bundles[1]))
    result = runner.invoke(app, ["explain", lesion["path"], "--out", str(tmp_path / "a.png"), "--method", "layercam"])
    assert result.exit_code == 0, result.output
    monkeypatch.setenv("DERMXAI_MODEL", str(tmp_path / "nothing"))
    result = runner.invoke(app, ["explain", lesion["path"], "--out", str(tmp_path / "b.png")])
    assert result.exit_code == 2 and "DERMXAI_MODEL" in result.output


def test_explain_errors_are_clear(tmp_path, bundles, lesion):
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    base = ["explain", "--model", str(bundles[0]), "--out", str(tmp_path / "x.png")]
    for extra, message in (
        ([str(tmp_path / "missing.jpg")], "no such image file"),
        ([str(text)], "not an image"),
        ([lesion["path"], "--method", "magic"], "unknown CAM method 'magic'"),
        ([lesion["path"], "--class", "wart"], "unknown class 'wart': use one of akiec"),
    ):
        result = runner.invoke(app, base + extra)
        assert result.exit_code == 2, result.output
        assert "error:" in result.output and message in result.output
    assert all(name in METHOD_HELP for name in METHODS)


def test_mask_is_resized_like_the_image(lesion):
    mask = read_mask(lesion["mask_path"], (40, 56))
    full = np.asarray(Image.open(lesion["mask_path"]).convert("L")) > 127  # 450 x 600, same aspect as 150 x 200
    assert mask.shape == (40, 56)
    assert mask.mean() == pytest.approx(full.mean(), abs=0.03)


def test_explain_compare_draws_images_by_models_with_masks(tmp_path, bundles, fixture_dir, fixture_table):
    rows = fixture_table[fixture_table["mask_path"].notna()].head(2)
    out = tmp_path / "grid.png"
    args = ["explain-compare", "--models", *map(str, bundles), "--images", *rows["path"], "--out", str(out)]
    result = runner.invoke(app, args + ["--data", str(fixture_dir)])
    assert result.exit_code == 0, result.output
    assert "2 image(s) x 2 model(s), lesion masks for 2" in result.output
    width, height = png(out)
    assert width > height  # 3 columns (image + 2 models) by 2 rows
    beside = tmp_path / "beside"
    beside.mkdir()
    image = shutil.copy(rows.iloc[0]["path"], beside)
    alone = runner.invoke(app, ["explain-compare", "--models", str(bundles[0]), "--images", image, "--out", str(out)])
    assert alone.exit_code == 0 and "lesion masks for 0" in alone.output, alone.output
    shutil.copy(rows.iloc[0]["mask_path"], beside)
    result = runner.invoke(app, ["explain-compare", "--models", str(bundles[0]), "--images", image, "--out", str(out)])
    assert result.exit_code == 0 and "lesion masks for 1" in result.output, result.output


def test_explain_score_writes_the_metrics_contract(tmp_path, bundles, fixture_dir, fixture_table, monkeypatch):
    from dermxai.explain import evaluate

    monkeypatch.setattr(evaluate, "SLOW_METHODS", ("layercam",))  # stands in for scorecam, which is slow on CPU
    split = tmp_path / "split.csv"
    test_ids = set(fixture_table.groupby("dx").head(2)["image_id"])
    fixture_table.assign(
        lesion_group=fixture_table["lesion_id"],
        split=fixture_table["image_id"].map(lambda i: "test" if i in test_ids else "train"),
    )[["image_id", "lesion_group", "split"]].to_csv(split, index=False)
    out = tmp_path / "scores"
    result = runner.invoke(
        app,
        [
            "explain-score",
            "--model",
            str(bundles[0]),
            "--data",
            str(fixture_dir),
            "--split",
            str(split),
            "--subset",
            "test",
            "--method",
            "gradcam",
            "--method",
            "layercam",
            "--limit",
            "4",
            "--scorecam-limit",
            "2",
            "--steps",
            "4",
            "--bootstrap",
            "50",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "explain_metrics.json").read_text())
    assert metrics["method"] == "gradcam" and metrics["n_images"] == 4
    for key in ("in_mask_energy", "pointing_game", "deletion_auc", "insertion_auc"):
        low, high = metrics[key]["ci95"]
        assert low <= metrics[key]["mean"] <= high
    assert metrics["per_method"]["layercam"]["n_images"] == 2 and not metrics["per_method"]["layercam"]["stability"]
    assert set(metrics["stability"]) == {"hflip", "vflip", "rot180"}
    assert metrics["per_class"] and sum(c["n"] for c in metrics["per_class"].values()) == 4
    assert set(metrics["baselines"]["gaussian"]["in_mask_energy"]) >= {"mean", "ci95"}
    assert metrics["provenance"]["subset"] == "test" and metrics["provenance"]["arch"] == "resnet18"
    per_image = __import__("pandas").read_csv(out / "explain_per_image.csv")
    uniform = per_image[per_image["method"].eq("baseline:uniform")]
    assert metrics["baselines"]["uniform"]["in_mask_energy"]["mean"] == pytest.approx(uniform["mask_share"].mean())
    difference = metrics["per_method"]["gradcam"]["minus_gaussian"]["in_mask_energy"]["mean"]
    gaussian = metrics["baselines"]["gaussian"]["in_mask_energy"]["mean"]
    assert difference == pytest.approx(metrics["in_mask_energy"]["mean"] - gaussian)
    assert "| gradcam | 4 |" in (out / "explain_report.md").read_text()
    result = runner.invoke(
        app,
        [
            "explain-score",
            "--model",
            str(bundles[0]),
            "--data",
            str(fixture_dir),
            "--split",
            str(split),
            "--subset",
            "val",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 2 and "no images in subset 'val'" in result.output

    quick = tmp_path / "quick"
    args = ["explain-score", "--model", str(bundles[0]), "--data", str(fixture_dir), "--split", str(split)]
    args += ["--method", "gradcam", "--limit", "4", "--bootstrap", "50", "--out", str(quick)]
    result = runner.invoke(app, [*args, "--layer", "layer3", "--localisation-only"])
    assert result.exit_code == 0, result.output
    fast = json.loads((quick / "explain_metrics.json").read_text())
    assert fast["provenance"]["cam_layer"] == "layer3" and not fast["provenance"]["faithfulness_scored"]
    assert fast["deletion_auc"]["mean"] is None and not fast["stability"]
    assert fast["in_mask_energy"]["mean"] != metrics["in_mask_energy"]["mean"]  # another layer, another map
    assert fast["per_method"]["gradcam"]["minus_gaussian"]["in_mask_energy"]["mean"] is not None
    result = runner.invoke(app, [*args, "--layer", "no.such.layer"])
    assert result.exit_code == 2 and "no.such.layer" in result.output


class Equivariant(nn.Module):
    """Per-pixel features pooled over the whole image: flipping the image flips the CAM."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.detect = nn.Conv2d(3, 4, 1)
        self.act = nn.ReLU()
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head((self.act(self.detect(x)) ** 2).mean((2, 3)))


def test_stability_is_one_for_a_flip_equivariant_model_and_low_for_a_fixed_quadrant():
    from dermxai.explain.evaluate import _stability
    from dermxai.explain.scores import pearson

    config = BundleConfig("x", ("a", "b"), 24, 32, (0, 0, 0), (1, 1, 1), cam_layer="act")
    images = (np.random.default_rng(0).random((2, 24, 32, 3)) * 255).astype(np.uint8)
    images[:, 2:8, 3:9] = [255, 0, 0]  # an off-centre red square
    from dermxai.preprocessing import to_batch

    for model, expect_stable in ((Equivariant(), True), (TopLeftModel(), False)):
        cams, _ = explain(model, "act", to_batch(images, config), "hirescam", [0, 0])
        result = _stability(model, config, images, cams, "hirescam", [0, 0])
        assert set(result) == {"hflip", "vflip", "rot180"}
        values = np.array(list(result.values()))
        assert (values > 0.99).all() if expect_stable else (values < 0.5).all(), values
    assert pearson(cams[0], cams[0]) == pytest.approx(1.0)
