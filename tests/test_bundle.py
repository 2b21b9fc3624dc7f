"""The bundle contract: ``BundleConfig`` reads every config written so far, refuses malformed ones in one line,
and is the only way into a bundle's config.json."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import dermxai
from dermxai.assets import DEFAULT_MODEL
from dermxai.models.bundle import (
    BUNDLE_VERSION,
    BundleConfig,
    BundleError,
    read_config,
    update_config,
    write_config,
)
from dermxai.probabilities import softmax

SEVEN = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")


@pytest.fixture()
def bundle(tmp_path) -> Path:
    """A copy of the shipped default bundle."""
    return Path(shutil.copytree(DEFAULT_MODEL, tmp_path / "bundle"))


def test_a_config_written_before_the_contract_loads_and_round_trips_unchanged(bundle):
    written = json.loads((bundle / "config.json").read_text())
    written.pop("version", None)  # as configs were written before BundleConfig
    (bundle / "config.json").write_text(json.dumps(written))
    config = read_config(bundle)
    assert config.version == BUNDLE_VERSION and config.classes == SEVEN and config.size == (150, 200)
    assert (
        config.cam_method == written["cam_method"] and config.malignant_threshold == written["thresholds"]["malignant"]
    )
    assert config.to_dict() == {"version": BUNDLE_VERSION, **written}  # every key kept, with its value


def test_unknown_keys_are_kept_and_version_1_names_are_migrated():
    config = BundleConfig.from_dict(
        {"arch": "resnet18", "classes": ["a", "b"], "height": 8, "width": 8, "mean": [0, 0, 0], "std": [1, 1, 1]}
        | {"wall_time_s": 12.5, "note": {"by": "a later tool"}, "empty": None, "abstain": {}, "logit_bias": None}
        | {"cam_method": ""}
    )
    assert config.train_time_s == 12.5 and config.extra == {"note": {"by": "a later tool"}, "empty": None}
    assert config.abstain is None and config.logit_bias is None  # version 1 wrote {}, "" and null for "none"
    assert config.cam_method == "gradcam" and config.temperature == 1.0 and config.thresholds == {}
    assert BundleConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "change, message",
    [
        ({"temperature": -1}, "'temperature' must be a finite number above 0"),
        ({"temperature": "hot"}, "'temperature' must be a finite number above 0"),
        ({"logit_bias": [0.0, 1.0]}, "'logit_bias' must have one finite value per class"),
        ({"thresholds": {"malignant": "high"}}, "'thresholds' must map names to numbers"),
        ({"abstain": {"min_confidence": 0.3}}, "'abstain' must hold numbers"),
        ({"classes": ["nv", "nv"]}, "at least two distinct classes"),
        ({"classes": []}, "at least two distinct classes"),
        ({"classes": ["nv", 3]}, "at least two distinct classes"),
        ({"mean": []}, "mean and std 3 finite numbers each"),
        ({"height": 4}, "height and width must be >= 8"),
        ({"height": True}, "'height' must be an integer"),
        ({"classes": "nv"}, "'classes' must be a list"),
        ({"mean": [0.5, 0.5]}, "mean and std 3 finite numbers each"),
        ({"cam_layer": 4}, "'cam_layer' must be a string"),
        ({"version": BUNDLE_VERSION + 1}, "newer than this dermxai reads"),
        ({"version": "2"}, "'version' must be a positive integer"),
        ({"version": True}, "'version' must be a positive integer"),
    ],
)
def test_malformed_configs_are_refused_in_one_line_naming_the_file(bundle, change, message):
    written = json.loads((bundle / "config.json").read_text())
    (bundle / "config.json").write_text(json.dumps({**written, **change}))  # by hand: BundleConfig cannot
    with pytest.raises(BundleError, match=re.escape(message)) as caught:
        read_config(bundle)
    assert str(caught.value).startswith(f"{bundle}/config.json") and "\n" not in str(caught.value)


def test_update_is_checked_before_it_writes_and_replaces_the_file_atomically(bundle):
    before = (bundle / "config.json").read_bytes()
    with pytest.raises(BundleError, match="one finite value per class"):
        update_config(bundle, logit_bias=(1.0, 2.0))
    assert (bundle / "config.json").read_bytes() == before  # a refused change writes nothing
    updated = update_config(bundle, temperature=2.0, cam_method="gradcam")
    assert read_config(bundle) == updated and updated.temperature == 2.0 and updated.cam_method == "gradcam"
    assert sorted(p.name for p in bundle.glob("config.json*")) == ["config.json"]  # no partial file left
    with pytest.raises(TypeError):
        update_config(bundle, temprature=1.0)  # a misspelt field is an error, not a new key


def test_a_failed_write_leaves_the_old_config_whole(bundle, monkeypatch):
    before = (bundle / "config.json").read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("dermxai.models.bundle.os.replace", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_config(bundle, read_config(bundle).replace(temperature=3.0))
    assert (bundle / "config.json").read_bytes() == before
    assert sorted(p.name for p in bundle.glob("config.json*")) == ["config.json"]  # the partial file removed


def test_the_config_serves_its_decision_rule_then_its_temperature():
    config = BundleConfig("resnet18", ("a", "b", "c"), 8, 8, (0.5,) * 3, (0.5,) * 3, temperature=2.0)
    logits = np.array([[2.0, 1.0, 0.0]])
    np.testing.assert_allclose(config.served_probabilities(logits), softmax(logits / 2.0))
    biased = config.replace(logit_bias=(0.0, 0.0, 3.0))
    np.testing.assert_allclose(biased.served_probabilities(logits), softmax(np.array([[2.0, 1.0, 3.0]]) / 2.0))
    assert biased.served_probabilities(logits).argmax() == 2


def test_only_the_bundle_module_reads_config_keys():
    """The contract's done-when: no ``config.get(`` or ``config["`` on a bundle config outside models/bundle.py."""
    source = Path(dermxai.__file__).parent
    readers = [
        f"{path.relative_to(source)}:{n}"
        for path in source.rglob("*.py")
        if path.name != "bundle.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\bconfig(\.get\(|\[[\"'])", line)
    ]
    assert readers == []
