"""Similar confirmed cases: the feature index, its file, the Predictor, the API's JSON and `dermxai index`."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from dermxai.assets import DEFAULT_MODEL
from dermxai.cli import app
from dermxai.data.labels import CLASSES
from dermxai.evaluation.similar_cases import knn_balanced_accuracy
from dermxai.inference.predictor import Predictor
from dermxai.inference.similar import INDEX_NAME, SimilarCase, fit_index, load_index, majority_vote, read_thumbnail
from dermxai.models.bundle import read_config


def clusters(rng, n_per_class: int, dimension: int = 40, spread: float = 0.3):
    """Features in one tight cluster per class, with image ids, lesion ids (two images each) and labels."""
    centres = rng.normal(size=(len(CLASSES), dimension)) * 3
    labels = np.repeat(np.arange(len(CLASSES)), n_per_class)
    features = centres[labels] + rng.normal(size=(len(labels), dimension)) * spread
    ids = [f"ISIC_{n:07d}" for n in range(len(labels))]
    lesions = [f"HAM_{n // 2:07d}" for n in range(len(labels))]
    return features, ids, lesions, labels


def test_nearest_cases_are_one_image_per_lesion_and_their_vote_recovers_the_class(tmp_path):
    rng = np.random.default_rng(0)
    features, ids, lesions, labels = clusters(rng, 20)
    index = fit_index(features, ids, lesions, [CLASSES[k] for k in labels], components=16)
    cases = index.nearest(features[:1], k=6)[0]
    assert len(cases) == 6 and len({c.lesion_id for c in cases}) == 6
    assert cases[0].image_id == ids[0] and cases[0].similarity == pytest.approx(1.0, abs=1e-2)
    assert all(a.similarity >= b.similarity for a, b in zip(cases, cases[1:]))
    assert index.nearest(features[:1], k=6, exclude_lesions=[lesions[0]])[0][0].lesion_id != lesions[0]
    queries, *_, truth = clusters(np.random.default_rng(0), 20)  # the same centres, new noise
    queries = queries + np.random.default_rng(1).normal(size=queries.shape) * 0.3
    assert knn_balanced_accuracy(index, queries, truth, list(CLASSES), 6) > 0.95
    loaded = (index.save(tmp_path), load_index(tmp_path))[1]
    assert [[c.image_id for c in row] for row in loaded.nearest(features[:3], 6)] == [
        [c.image_id for c in row] for row in index.nearest(features[:3], 6)
    ]
    assert loaded.vectors.dtype == np.float16 and loaded.image_ids[0] == ids[0]


def test_the_vote_breaks_ties_by_similarity():
    cases = [SimilarCase("a", "1", "nv", 0.5), SimilarCase("b", "2", "mel", 0.9), SimilarCase("c", "3", "nv", 0.2)]
    assert CLASSES[majority_vote(cases, list(CLASSES))] == "nv"  # two votes beat one
    assert CLASSES[majority_vote(cases[:2], list(CLASSES))] == "mel"  # one each: the more similar


def index_arrays(**changes) -> dict:
    """The arrays of a valid two-image index of 3 features, with some replaced."""
    arrays = {
        "mean": np.zeros(3),
        "scale": np.ones(3),
        "components": np.eye(3),
        "vectors": np.zeros((2, 3)),
        "image_ids": np.array(["a", "b"]),
        "lesion_ids": np.array(["a", "b"]),
        "dx": np.array(["nv", "nv"]),
    }
    return {**arrays, **changes}


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: p.write_bytes(b"not a zip"), "not a valid feature index"),
        (lambda p: np.savez(p, mean=np.zeros(3)), "not a valid feature index"),
        (lambda p: np.savez(p, **index_arrays(vectors=np.zeros((2, 2)))), "inconsistent shapes"),
        (lambda p: np.savez(p, **index_arrays(mean=np.full(3, np.nan))), "NaN"),
    ],
    ids=["not a zip", "missing arrays", "shapes", "NaN"],
)
def test_a_broken_index_is_refused_in_one_line(tmp_path, damage, message):
    path = tmp_path / INDEX_NAME
    damage(path)
    with pytest.raises(ValueError, match=message):
        load_index(tmp_path)


@pytest.fixture(scope="module")
def indexed_bundle(tmp_path_factory, fixture_dir) -> tuple[Path, list[Path]]:
    """A copy of the default bundle indexed on the fixture images (each its own lesion)."""
    bundle = Path(shutil.copytree(DEFAULT_MODEL, tmp_path_factory.mktemp("indexed") / "bundle"))
    paths = sorted(fixture_dir.rglob("*.jpg"))[:12]
    predictor = Predictor(bundle)
    from dermxai.evaluation.gate import _open, features_of

    features = features_of(predictor, _open(map(str, paths)))
    fit_index(features, [p.stem for p in paths], [p.stem for p in paths], ["nv"] * len(paths), 8).save(bundle)
    return bundle, paths


def test_the_predictor_returns_similar_cases_and_the_api_json_carries_them(indexed_bundle):
    bundle, paths = indexed_bundle
    predictor = Predictor(bundle)
    prediction = predictor.predict(paths[3].read_bytes())
    assert len(prediction.similar) == 6 and prediction.similar[0].image_id == paths[3].stem
    body = prediction.to_dict()["similar_cases"]
    assert body[0] == {
        "image_id": paths[3].stem,
        "lesion_id": paths[3].stem,
        "dx": "nv",
        "similarity": pytest.approx(1, abs=0.01),
    }


def test_an_index_that_does_not_fit_the_model_is_refused_at_load(tmp_path, indexed_bundle):
    bundle = Path(shutil.copytree(indexed_bundle[0], tmp_path / "bundle"))
    rng = np.random.default_rng(0)
    features, ids, lesions, labels = clusters(rng, 3, dimension=10)
    fit_index(features, ids, lesions, [CLASSES[k] for k in labels], 4).save(bundle)
    with pytest.raises(Exception, match="feature index expects 10 features"):
        Predictor(bundle)


def test_dermxai_index_writes_the_index_thumbnails_and_its_validation_figure(tmp_path, fixture_dir, fixture_table):
    bundle = Path(shutil.copytree(DEFAULT_MODEL, tmp_path / "bundle"))
    lesions = sorted(fixture_table["lesion_id"].unique())
    val = set(lesions[: len(lesions) // 3])
    split = tmp_path / "split.csv"
    pd.DataFrame(
        {
            "image_id": fixture_table["image_id"],
            "lesion_group": fixture_table["lesion_id"],
            "split": fixture_table["lesion_id"].map(lambda lesion: "val" if lesion in val else "train"),
        }
    ).to_csv(split, index=False)
    result = CliRunner().invoke(
        app, ["index", "--model", str(bundle), "--data", str(fixture_dir), "--split", str(split)]
    )
    assert result.exit_code == 0, result.output
    assert "Validation balanced accuracy" in result.output
    record = read_config(bundle).similar_cases
    assert record["n_train"] == (~fixture_table["lesion_id"].isin(val)).sum() and record["components"] in (
        32,
        64,
        128,
        256,
    )
    first = fixture_table.loc[~fixture_table["lesion_id"].isin(val), "image_id"].iloc[0]
    thumbnail = read_thumbnail(bundle, first)
    assert thumbnail is not None and thumbnail[:2] == b"\xff\xd8"
    assert Image.open(io.BytesIO(thumbnail)).size == (80, 60)
    assert Predictor(bundle).predict(next(fixture_dir.rglob("*.jpg")).read_bytes()).similar
