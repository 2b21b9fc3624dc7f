"""The Predictor and its input checks: each oddity of untrusted images, calibration, malignant score, abstention."""

from __future__ import annotations

import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dermxai.app import advice
from dermxai.assets import DEFAULT_MODEL as DEFAULT
from dermxai.assets import EXAMPLES
from dermxai.cli import app
from dermxai.data.labels import CLASSES
from dermxai.inference.bundles import default_bundle, installed_bundles
from dermxai.inference.inputs import InvalidImage, read_image
from dermxai.inference.onnx_backend import int8_kernels_exact
from dermxai.inference.ood import calibrated_probabilities, energy, fit_abstention
from dermxai.inference.predictor import Predictor, make_prediction
from dermxai.models.bundle import BundleConfig, update_config
from dermxai.preprocessing import load_resized, resize_cover


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of ``width`` x ``height`` zero pixels: a few hundred KiB that decode to gigapixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row * 1000) for _ in range(height // 1000)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(DEFAULT)


@pytest.fixture()
def bundle_copy(tmp_path) -> Path:
    """A copy of the default bundle whose config a test may change."""
    return Path(shutil.copytree(DEFAULT, tmp_path / "bundle"))


# --- input validation -------------------------------------------------------------------------------------


def test_format_is_read_from_content_not_name(tmp_path, predictor):
    disguised = tmp_path / "photo.jpg"
    disguised.write_bytes(encode(Image.open(next(EXAMPLES.glob("mel_*.jpg"))), "PNG"))
    result = CliRunner().invoke(app, ["predict", "--model", str(DEFAULT), str(disguised), "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)[0]
    assert answer["model_id"] == predictor.model_id and abs(sum(answer["probabilities"].values()) - 1) < 1e-6

    text = tmp_path / "notes.jpg"
    text.write_text("not a picture at all\n")
    result = CliRunner().invoke(app, ["predict", "--model", str(DEFAULT), str(text)])
    assert result.exit_code == 1 and "not an image" in " ".join(result.output.split())  # reported, not fatal
    with pytest.raises(InvalidImage) as error:
        read_image(text.read_bytes())
    assert error.value.reason == "not_an_image"


def test_empty_and_unsupported_formats_are_refused():
    with pytest.raises(InvalidImage, match="empty"):
        read_image(b"")
    with pytest.raises(InvalidImage) as error:
        read_image(encode(Image.new("RGB", (8, 8)), "PPM"))
    assert error.value.reason == "unsupported_format" and "PPM" in str(error.value)


def test_byte_limit():
    data = encode(Image.new("RGB", (64, 64), "red"), "PNG")
    assert read_image(data, max_bytes=len(data)).size == (64, 64)
    with pytest.raises(InvalidImage) as error:
        read_image(data, max_bytes=len(data) - 1)
    assert error.value.reason == "too_many_bytes"


def test_pixel_limit_and_decompression_bomb_are_refused_from_the_header():
    data = encode(Image.new("RGB", (100, 80)), "PNG")
    assert read_image(data, max_pixels=8000).size == (100, 80)
    with pytest.raises(InvalidImage) as error:
        read_image(data, max_pixels=7999)
    assert error.value.reason == "too_many_pixels"

    bomb = png_bomb(30_000, 30_000)  # 900 megapixels in a few hundred KiB
    assert len(bomb) < 500_000
    with pytest.raises(InvalidImage) as error:
        read_image(bomb)
    assert error.value.reason == "too_many_pixels"
    smaller = png_bomb(10_000, 8_000)  # 80 MP: under Pillow's own guard, over ours (60 MP)
    with pytest.raises(InvalidImage, match="10000x8000"):
        read_image(smaller)


def test_exif_orientation_is_applied():
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (255, 0, 0)  # left half red, right half blue
    stored[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    data = encode(Image.fromarray(stored), "JPEG", exif=exif, quality=95)
    upright = np.asarray(read_image(data)).astype(int)
    assert upright.shape == (40, 20, 3)  # now portrait
    assert upright[5, 10, 0] > 200 and upright[5, 10, 2] < 60  # the left side is now the top: red
    assert upright[35, 10, 2] > 200 and upright[35, 10, 0] < 60  # bottom: blue


@pytest.mark.parametrize(
    "mode, value, expected",
    [
        ("RGBA", (255, 0, 0, 0), (255, 255, 255)),  # fully transparent -> white background
        ("RGBA", (255, 0, 0, 255), (255, 0, 0)),
        ("LA", (0, 128), (128, 128, 128)),  # half-transparent black over white
        ("L", 77, (77, 77, 77)),
        ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
    ],
)
def test_modes_are_converted_to_rgb(mode, value, expected):
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    image = read_image(encode(Image.new(mode, (6, 4), value), fmt, **({"quality": 100} if fmt == "JPEG" else {})))
    assert image.mode == "RGB" and image.size == (6, 4)
    np.testing.assert_allclose(np.asarray(image)[2, 3], expected, atol=3)


def test_16_bit_greyscale_is_rescaled_not_clipped():
    values = np.array([[0, 257 * 64, 32768, 65535]], dtype=np.uint16)
    source = Image.fromarray(values)
    assert source.mode == "I;16"
    image = read_image(encode(source, "PNG"))
    assert image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(image)[0, :, 0], [0, 64, 128, 255])


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (10, 10), colour) for colour in ("red", "blue", "green")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(buffer.getvalue())).n_frames == 3
    pixel = np.asarray(read_image(buffer.getvalue()))[5, 5].astype(int)
    assert pixel[0] > 200 and pixel[2] < 50


def test_truncated_and_corrupt_jpegs_are_refused():
    data = next(EXAMPLES.glob("*.jpg")).read_bytes()
    for broken in (data[: len(data) // 2], data[:200], data[:2] + b"\x00" * 500):
        with pytest.raises(InvalidImage) as error:
            read_image(broken)
        assert error.value.reason in ("corrupt", "not_an_image")
        assert "Traceback" not in str(error.value)


def test_load_resized_and_resize_cover_share_the_training_preprocessing():
    path = next(EXAMPLES.glob("*.jpg"))
    from_file = load_resized(str(path), (75, 100))
    np.testing.assert_array_equal(from_file, resize_cover(Image.open(path).convert("RGB"), (75, 100)))
    assert resize_cover(Image.new("RGB", (300, 60)), (75, 100)).shape == (75, 100, 3)  # very wide: cover


# --- predictions -------------------------------------------------------------------------------------------


def test_probabilities_are_softmax_of_logits_over_temperature(bundle_copy):
    update_config(bundle_copy, temperature=2.5, thresholds={}, logit_bias=None, probability_bias=None)  # plain argmax
    predictor = Predictor(bundle_copy)
    data = next(EXAMPLES.glob("bcc_*.jpg")).read_bytes()
    logits = predictor.logits(resize_cover(read_image(data), predictor.config.size)[None])[0]
    expected = np.exp(logits / 2.5) / np.exp(logits / 2.5).sum()
    prediction = predictor.predict(data)
    np.testing.assert_allclose([prediction.probabilities[c] for c in predictor.classes], expected, rtol=1e-5)
    assert prediction.top_class == predictor.classes[int(np.argmax(logits))]
    assert prediction.malignant_threshold is None and prediction.malignant_flag is None  # no invented threshold
    assert prediction.energy == pytest.approx(-2.5 * np.log(np.exp(logits / 2.5).sum()), rel=1e-5)


def test_malignant_score_is_the_sum_of_three_classes_and_uses_the_bundle_threshold(bundle_copy):
    update_config(bundle_copy, thresholds={"malignant": 0.3})
    predictor = Predictor(bundle_copy)
    for path in sorted(EXAMPLES.glob("*.jpg")):
        p = predictor.predict(path.read_bytes())
        assert p.malignant_score == pytest.approx(sum(p.probabilities[c] for c in ("akiec", "bcc", "mel")))
        assert p.malignant_flag == (p.malignant_score >= 0.3)
        assert p.to_dict()["malignant"]["threshold"] == 0.3


def test_fit_abstention_accepts_the_target_share_of_validation():
    rng = np.random.default_rng(0)
    val_logits = rng.normal(0, 1, (1000, 7)) + 4 * np.eye(7)[rng.integers(0, 7, 1000)]
    params = fit_abstention(val_logits, temperature=1.5, target_accept=0.9)
    confidence = calibrated_probabilities(val_logits, 1.5).max(axis=1)
    accepted = (confidence >= params["min_confidence"]) & (energy(val_logits, 1.5) <= params["max_energy"])
    assert 0.9 <= accepted.mean() <= 0.905 and params["val_accept_rate"] == pytest.approx(accepted.mean(), abs=1e-4)
    with pytest.raises(ValueError):
        fit_abstention(val_logits, 1.0, target_accept=1.0)


def test_low_confidence_or_unfamiliar_logits_give_an_uncertain_answer_with_a_differential(bundle_copy):
    rng = np.random.default_rng(1)
    val_logits = rng.normal(0, 0.5, (500, 7)) + 6 * np.eye(7)[rng.integers(0, 7, 500)]
    update_config(bundle_copy, abstain=fit_abstention(val_logits, 1.0), logit_bias=None, probability_bias=None)
    predictor = Predictor(bundle_copy)
    confident = predictor.interpret(np.array([0, 0, 0, 0, 8.0, 0, 0]))
    assert (
        not confident.uncertain and confident.top_class == "mel" and [c for c, _ in confident.differential] == ["mel"]
    )
    flat = predictor.interpret(np.zeros(7))  # uniform: low confidence and low logit mass
    assert flat.uncertain and not flat.abstain  # an uncertain answer is still an answer
    assert any("unsure" in r for r in flat.uncertain_reasons) and any("unlike" in r for r in flat.uncertain_reasons)
    assert len(flat.differential) == 7  # seven equal shares: 90% needs all of them
    two_way = predictor.interpret(np.array([0, 0, 0, 0, 6.0, 6.0, 0]))  # typical energy, split vote
    assert two_way.uncertain_reasons and all("unsure" in r for r in two_way.uncertain_reasons)
    assert sorted(c for c, _ in two_way.differential) == ["mel", "nv"]
    body = two_way.to_dict()
    assert body["uncertain"] is True and body["abstain"] is False
    assert {d["class"] for d in body["differential"]} == {"mel", "nv"}


def test_the_differential_keeps_the_served_class_when_it_is_not_among_the_most_probable():
    probabilities = np.array([0.02, 0.02, 0.02, 0.02, 0.03, 0.88, 0.01])
    prediction = make_prediction("m", list(CLASSES), probabilities, 0.5, [], label="mel")
    assert [c for c, _ in prediction.differential] == ["nv", "mel"] and prediction.top_class == "mel"
    assert prediction.most_probable == "nv" and prediction.confidence == pytest.approx(0.03)


def test_the_advice_names_the_cancers_of_the_differential_when_the_flag_fires():
    flagged = advice.next_step("nv", True, ["nv", "mel", "bcc"])
    assert "Melanoma" in flagged and "Basal cell carcinoma" in flagged and "Usually harmless" not in flagged
    assert advice.next_step("nv", False, ["nv", "mel"]) == advice.CLASSES["nv"].advice
    note = advice.uncertain_note([("bcc", 0.41), ("df", 0.3), ("nv", 0.22)], ["the model is unsure"])
    assert "bcc (41%), df (30%) or nv (22%)" in note and "energy" not in note


def test_default_bundle_is_calibrated_and_uses_its_fitted_abstention(predictor):
    config = predictor.config
    assert config.temperature != 1.0 and 0 < config.malignant_threshold < 1
    assert predictor.config.abstain and predictor.config.abstain["target_accept"] == 0.95
    flat = predictor.interpret(np.zeros(7))  # a flat answer is below the fitted confidence: uncertain
    assert flat.uncertain and not flat.abstain
    example = predictor.predict((EXAMPLES / "nv_ISIC_0024308.jpg").read_bytes())
    assert not example.abstain and example.top_class == "nv"


def test_explain_returns_the_served_prediction_and_a_cam_of_its_label(predictor):
    data = next(EXAMPLES.glob("mel_*.jpg")).read_bytes()
    explanation = predictor.explain(data, "gradcam")
    assert explanation.cam.shape == predictor.config.size and 0 <= explanation.cam.min() <= explanation.cam.max() <= 1
    plain = predictor.predict(data)
    for c in predictor.classes:
        assert explanation.prediction.probabilities[c] == pytest.approx(plain.probabilities[c], abs=1e-5)
    assert explanation.target_class == plain.top_class
    overlay = explanation.overlay(0.5, width=200)
    assert overlay.size == (200, 150) and overlay.mode == "RGB"
    assert predictor.explain(data, "gradcam", target_class="nv").target_class == "nv"
    with pytest.raises(ValueError, match="unknown class"):
        predictor.explain(data, target_class="cancer")


def test_the_overlay_keeps_a_square_uploads_aspect_and_dims_what_the_model_did_not_see(predictor):
    square = io.BytesIO()
    Image.open(next(EXAMPLES.glob("mel_*.jpg"))).crop((25, 0, 175, 150)).save(square, "JPEG", quality=95)
    explanation = predictor.explain(square.getvalue(), "gradcam")
    overlay = np.asarray(explanation.overlay(0.0, width=300), dtype=np.float32)  # no heat: only the dimming
    plain = np.asarray(explanation.image.resize((300, 300)), dtype=np.float32)
    assert overlay.shape == (300, 300, 3)  # the upload's aspect, not the model's 4:3
    top_band, middle = slice(0, 30), slice(120, 180)  # the model saw the centre 300x225 crop
    assert overlay[top_band].mean() < 0.6 * plain[top_band].mean()
    assert abs(overlay[middle].mean() - plain[middle].mean()) < 2


def test_explain_defaults_to_the_bundles_cam_method(bundle_copy):
    data = next(EXAMPLES.glob("mel_*.jpg")).read_bytes()
    assert Predictor(bundle_copy).explain(data).method == Predictor(DEFAULT).config.cam_method
    update_config(bundle_copy, cam_method="layercam")
    assert Predictor(bundle_copy).explain(data).method == "layercam"
    assert Predictor(bundle_copy).explain(data, "gradcam").method == "gradcam"


def test_default_model_location_and_env_override(monkeypatch, bundle_copy, tmp_path):
    monkeypatch.delenv("DERMXAI_MODEL", raising=False)
    assert default_bundle() == DEFAULT
    monkeypatch.setenv("DERMXAI_MODEL", str(bundle_copy))
    assert default_bundle() == bundle_copy
    assert bundle_copy.resolve() in {p.resolve() for p in installed_bundles().values()}
    monkeypatch.setenv("DERMXAI_MODEL", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="DERMXAI_MODEL"):
        default_bundle()
    result = CliRunner().invoke(app, ["predict", str(next(EXAMPLES.glob("*.jpg")))])
    assert result.exit_code == 2 and "not a model bundle" in " ".join(result.output.split())
    monkeypatch.delenv("DERMXAI_MODEL")
    monkeypatch.chdir(tmp_path)  # extra bundles: ./models of the working folder, wherever dermxai is installed
    shutil.copytree(bundle_copy, tmp_path / "models" / "mine")
    assert set(installed_bundles()) == {DEFAULT.name, "mine"}


def test_calibration_fits_abstention_on_validation_after_the_temperature():
    from dermxai.data.labels import CLASSES
    from dermxai.evaluation.calibration import ValidationSet, calibrate_config

    rng = np.random.default_rng(2)
    labels = rng.integers(0, 7, 300)
    logits = rng.normal(0, 1, (300, 7)) + 3 * np.eye(7)[labels]
    uncalibrated = BundleConfig("resnet18", tuple(CLASSES), 64, 64, (0.5,) * 3, (0.5,) * 3)
    config = calibrate_config(ValidationSet(logits, labels, [str(i) for i in range(300)], list(CLASSES)), uncalibrated)
    assert config.temperature != 1.0
    assert config.abstain == fit_abstention(logits, config.temperature)


def test_advice_follows_the_threshold_and_never_invents_one():
    from dermxai.app import advice
    from dermxai.data.labels import CLASSES

    assert "no threshold" in advice.malignant_advice(0.9, None) and "%" in advice.malignant_advice(0.9, None)
    assert "dermatologist soon" in advice.malignant_advice(0.30, 0.25)
    assert "does not rule out" in advice.malignant_advice(0.20, 0.25)
    assert {c for c, item in advice.CLASSES.items() if item.advice == advice.SEE_SOON} == {"akiec", "bcc", "mel"}
    assert all("diagnos" not in item.advice.lower() for item in advice.CLASSES.values())
    assert [(c, item.code) for c, item in advice.CLASSES.items()] == [(c, c) for c in CLASSES]
    assert advice.CLASSES["nv"].name == "Melanocytic nevus (mole)"  # the one name, from data.labels


def test_default_model_has_a_gate_that_withholds_a_document_and_passes_the_examples(predictor):
    from PIL import ImageDraw

    served = "onnxruntime-int8" if int8_kernels_exact() else "onnxruntime"  # else a float32 graph of the weights
    assert predictor.gate is not None and predictor.backend.name == served
    page = Image.new("RGB", (800, 600), "white")
    draw = ImageDraw.Draw(page)
    for line in range(12):
        draw.text((40, 30 + 45 * line), "Invoice 2026-118: total due 1,240.00 EUR", fill="black", font_size=28)
    withheld = predictor.predict(encode(page, "PNG"))
    assert withheld.out_of_distribution and withheld.abstain
    passed = [not predictor.predict(e.read_bytes()).out_of_distribution for e in sorted(EXAMPLES.glob("*.jpg"))]
    assert sum(passed) >= len(passed) - 1, passed  # real test-split dermoscopy (akiec is withheld 12%: docs/ood.md)
