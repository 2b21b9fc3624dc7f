"""Scores of saliency maps against lesion masks: hand-made maps, closed forms, a known-probability model."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import erf

from dermxai.explain import scores


def square_mask(height=20, width=30, top=5, left=10, size=8) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[top : top + size, left : left + size] = True
    return mask


def test_in_mask_energy_is_the_share_of_map_mass_on_the_mask():
    mask = square_mask()
    saliency = np.zeros(mask.shape)
    saliency[mask] = 3.0
    saliency[0, 0] = 1.0  # one unit of mass outside, 64 x 3 inside
    assert scores.in_mask_energy(saliency, mask) == pytest.approx(192 / 193)
    assert scores.in_mask_energy(np.where(mask, 0.0, 1.0), mask) == 0.0


def test_a_constant_or_empty_map_scores_the_mask_area_share():
    mask = square_mask()
    for saliency in (np.zeros(mask.shape), np.ones(mask.shape)):
        assert scores.in_mask_energy(saliency, mask) == pytest.approx(64 / 600)
        assert scores.pointing_game(saliency, mask) == pytest.approx(64 / 600)


def test_pointing_game_hits_only_when_the_maximum_is_on_the_mask():
    mask = square_mask()
    saliency = np.random.default_rng(0).random(mask.shape) * 0.5
    saliency[7, 12] = 1.0  # inside the square
    assert scores.pointing_game(saliency, mask) == 1.0
    saliency[19, 0] = 2.0  # outside
    assert scores.pointing_game(saliency, mask) == 0.0


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="differ in shape"):
        scores.in_mask_energy(np.ones((4, 4)), np.ones((4, 5), bool))
    with pytest.raises(ValueError, match="empty"):
        scores.pointing_game(np.ones((4, 4)), np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="non-negative"):
        scores.in_mask_energy(-np.ones((4, 4)), np.ones((4, 4), bool))


def test_uniform_baseline_energy_equals_the_mask_area_share():
    mask = np.random.default_rng(1).random((45, 60)) < 0.37
    assert scores.in_mask_energy(scores.uniform_map(45, 60), mask) == pytest.approx(mask.mean())


def test_gaussian_baseline_matches_its_closed_form_on_a_rectangle():
    height, width, sigma = 112, 150, scores.GAUSSIAN_SIGMA
    top, bottom, left, right = 20, 90, 30, 100  # rows 20..89, columns 30..99
    mask = np.zeros((height, width), bool)
    mask[top:bottom, left:right] = True

    def share(n, lo, hi):  # discrete: sum of the normalised 1-D Gaussian over pixel centres lo..hi-1
        x = np.arange(n) - (n - 1) / 2
        g = np.exp(-0.5 * (x / (sigma * n)) ** 2)
        return g[lo:hi].sum() / g.sum()

    exact = share(height, top, bottom) * share(width, left, right)
    assert scores.in_mask_energy(scores.gaussian_map(height, width), mask) == pytest.approx(exact, rel=1e-12)

    def integral(n, lo, hi):  # continuous: the Gaussian's mass over [lo, hi) in pixel-edge coordinates
        z = lambda e: (e - n / 2) / (sigma * n * np.sqrt(2))  # noqa: E731
        return (erf(z(hi)) - erf(z(lo))) / (erf(z(n)) - erf(z(0)))

    assert exact == pytest.approx(integral(height, top, bottom) * integral(width, left, right), abs=2e-3)
    assert scores.gaussian_map(height, width).sum() == pytest.approx(1.0)


def test_gaussian_pointing_game_hits_a_central_lesion_and_misses_a_corner_one():
    g = scores.gaussian_map(20, 30)
    assert scores.pointing_game(g, square_mask(top=6, left=11)) == 1.0
    assert scores.pointing_game(g, square_mask(top=0, left=0, size=5)) == 0.0


def revealed_share_model(image_region: np.ndarray):
    """A 'model' whose probability is the share of the region's pixels that still hold the image (1), not blank (0)."""
    return lambda batch: batch[:, image_region, 0].mean(axis=1)


def test_deletion_and_insertion_auc_on_a_known_probability_model():
    region = np.zeros((16, 16), bool)
    region[:8, :8] = True  # a quarter of the pixels
    image, blank = np.ones((16, 16, 1)), np.zeros((16, 16, 1))
    model = revealed_share_model(region)
    # a map ranking the region first: probability falls linearly to 0 over the first quarter of removals
    deletion, insertion = scores.deletion_insertion_auc(model, image, blank, region.astype(float), steps=16)
    assert deletion == pytest.approx(0.125)
    assert insertion == pytest.approx(0.875)
    # a map ranking the region last: nothing changes until the last quarter
    deletion, insertion = scores.deletion_insertion_auc(model, image, blank, (~region).astype(float), steps=16)
    assert deletion == pytest.approx(0.875)
    assert insertion == pytest.approx(0.125)
    # a uniform map removes pixels in random order: the curves are close to the diagonal
    deletion, insertion = scores.deletion_insertion_auc(model, image, blank, np.ones((16, 16)), steps=16)
    assert deletion == pytest.approx(0.5, abs=0.08) and insertion == pytest.approx(0.5, abs=0.08)


def test_perturbation_series_changes_the_requested_share_of_pixels_in_one_batch():
    image = np.full((6, 10, 3), 200, np.uint8)
    blank = np.zeros_like(image)
    deletion, insertion = scores.perturbation_series(image, blank, np.random.default_rng(0).random((6, 10)), steps=4)
    assert deletion.shape == insertion.shape == (5, 6, 10, 3)
    assert [int((d == 0).all(-1).sum()) for d in deletion] == [0, 15, 30, 45, 60]
    assert [int((i == 200).all(-1).sum()) for i in insertion] == [0, 15, 30, 45, 60]


@pytest.mark.parametrize("shape", [(6, 10), (7, 7)])
def test_stability_transforms_invert_and_keep_the_size(shape):
    a = np.random.default_rng(2).random(shape)
    names = scores.stability_transforms(*shape)
    assert len(names) == (5 if shape[0] == shape[1] else 3)
    for name in names:
        forward, inverse = scores.TRANSFORMS[name]
        assert forward(a).shape == shape
        assert np.array_equal(inverse(forward(a)), a)
        assert not np.array_equal(forward(a), a)


def test_pearson_scores_an_equivariant_map_1_and_a_fixed_one_less():
    cam = np.zeros((8, 12))
    cam[1:3, 2:5] = 1.0  # an off-centre blob
    forward, inverse = scores.TRANSFORMS["hflip"]
    equivariant = inverse(forward(cam))  # a CAM that moves with the image, mapped back
    fixed = inverse(cam)  # a CAM stuck in place, mapped back: mirrored
    assert scores.pearson(equivariant, cam) == pytest.approx(1.0)
    assert scores.pearson(fixed, cam) < 0.1
    assert scores.pearson(np.ones((3, 3)), np.ones((3, 3))) == 1.0
    assert scores.pearson(np.ones((3, 3)), cam[:3, :3]) == 0.0


def test_bootstrap_resamples_lesions_not_images():
    values = np.array([1.0, 1, 1, 1, 0, 0, 0, 0])
    lesions = np.array(["a"] * 4 + ["b"] * 4)
    by_image = scores.bootstrap_mean(values, None, n_boot=2000)
    by_lesion = scores.bootstrap_mean(values, lesions, n_boot=2000)
    assert by_image["mean"] == by_lesion["mean"] == 0.5 and by_lesion["n"] == 8
    assert by_lesion["ci95"] == [0.0, 1.0]  # two lesions: every resample is all-a, all-b or half
    assert 0.1 < by_image["ci95"][0] < 0.5 < by_image["ci95"][1] < 0.9
    assert scores.bootstrap_mean(np.array([]))["mean"] is None


def test_image_id_of_finds_the_isic_id_inside_a_renamed_file():
    from dermxai.explain.io import image_id_of

    assert image_id_of("examples/mel_ISIC_0024313.jpg") == "ISIC_0024313"
    assert image_id_of("photos/ISIC_0024313.JPG") == "ISIC_0024313"
    assert image_id_of("my_mole.png") == "my_mole"
