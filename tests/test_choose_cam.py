"""scripts/choose_cam.py: the heatmap is chosen by the stated rule from validation scores and stored in the bundle."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from dermxai.data.labels import CLASSES
from dermxai.models.bundle import BundleConfig, read_config, save_bundle
from dermxai.models.registry import create_model

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("choose_cam", ROOT / "scripts" / "choose_cam.py")
choose_cam = importlib.util.module_from_spec(spec)
spec.loader.exec_module(choose_cam)


def scored(folder: Path, layer: str, figures: dict[str, tuple[float, float]], subset: str = "val") -> None:
    per_method = {
        method: {
            "n_images": 200,
            "in_mask_energy": {"mean": energy},
            "pointing_game": {"mean": pointing},
            "minus_gaussian": {"in_mask_energy": {"mean": energy - 0.49}},
        }
        for method, (energy, pointing) in figures.items()
    }
    (folder / layer).mkdir(parents=True)
    (folder / layer / "explain_metrics.json").write_text(
        json.dumps({"provenance": {"subset": subset}, "per_method": per_method})
    )


def test_the_best_pointing_game_wins_among_pairs_within_the_tie_of_the_best_energy(tmp_path):
    scored(tmp_path, "blocks.4", {"gradcam": (0.52, 0.80), "layercam": (0.515, 0.90)})
    scored(tmp_path, "blocks.5", {"gradcam": (0.50, 0.99)})  # best pointing game but 0.02 below the best energy
    chosen = choose_cam.choose(choose_cam.candidates(tmp_path))
    assert (chosen["layer"], chosen["method"]) == ("blocks.4", "layercam")


def test_the_choice_is_written_to_the_bundle_and_test_scores_are_refused(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model, entry = create_model("resnet18", weights="none")
    bundle = save_bundle(tmp_path / "b", model, BundleConfig("resnet18", tuple(CLASSES), 48, 64, entry.mean, entry.std))
    scored(tmp_path / "scores", "layer3", {"hirescam": (0.6, 0.9), "gradcam": (0.4, 0.95)})
    monkeypatch.setattr("sys.argv", ["choose_cam.py", str(bundle), str(tmp_path / "scores"), "--write"])
    choose_cam.main()
    config = read_config(bundle)
    assert (config.cam_layer, config.cam_method) == ("layer3", "hirescam")
    assert config.cam_choice["subset"] == "val" and len(config.cam_choice["candidates"]) == 2
    assert config.cam_choice["beats_gaussian"] is True  # 0.6 in the mask against the Gaussian's 0.49
    scored(tmp_path / "test_scores", "layer3", {"gradcam": (0.5, 0.9)}, subset="test")
    with pytest.raises(SystemExit, match="choose on validation"):
        choose_cam.candidates(tmp_path / "test_scores")


def test_the_app_calls_a_chosen_heatmap_below_the_gaussian_a_rough_guide_and_one_above_it_validated():
    from dermxai.app.streamlit_app import heatmap_note

    config = BundleConfig("resnet18", tuple(CLASSES), 48, 64, (0.5,) * 3, (0.5,) * 3, cam_method="gradcam")
    assert heatmap_note(config, "gradcam").startswith("No heatmap method was validated")
    below = config.replace(cam_choice={"beats_gaussian": False})
    assert "rough guide" in heatmap_note(below, "gradcam")
    assert "validated for this model is Grad-CAM" in heatmap_note(below, "layercam")
    above = config.replace(cam_choice={"beats_gaussian": True})
    assert "is the method validated" in heatmap_note(above, "gradcam")
