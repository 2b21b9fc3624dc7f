"""Knowledge distillation: the loss, the teacher's targets and their cache, and a student run from a teacher bundle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from dermxai.cli import app
from dermxai.models.bundle import load_bundle, read_config, write_config
from dermxai.models.ensemble import make_ensemble
from dermxai.preprocessing import to_batch
from dermxai.training.config import TrainConfig
from dermxai.training.distill import TARGETS_FILE, DistillationLoss, cached_teacher_targets, teacher_log_probs
from tests.test_export import tiny_bundle
from tests.test_training import split_file, train_args  # noqa: F401  (split_file: a module fixture)

runner = CliRunner()
CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")


def test_the_soft_term_is_zero_at_the_teacher_and_pulls_the_student_towards_it():
    teacher = torch.tensor([[2.0, 0.5, -1.0, 0.0, 0.0, 0.0, 0.0]]).log_softmax(1)
    labels = torch.tensor([0])
    loss = DistillationLoss(nn.CrossEntropyLoss(), weight=1.0, temperature=2.0)
    at_teacher = loss(teacher.clone(), labels, teacher)
    assert float(at_teacher) == pytest.approx(0.0, abs=1e-6)
    student = torch.zeros(1, 7, requires_grad=True)
    loss(student, labels, teacher).backward()
    assert float(loss(student.detach(), labels, teacher)) > 0.01
    # a gradient step moves the student's distribution towards the teacher's
    stepped = (student - 0.5 * student.grad).detach()
    assert F.kl_div(stepped.log_softmax(1), teacher, log_target=True, reduction="sum") < F.kl_div(
        student.detach().log_softmax(1), teacher, log_target=True, reduction="sum"
    )


def test_weight_zero_is_the_hard_loss_and_class_weights_weigh_each_image():
    logits, labels = torch.randn(6, 7), torch.tensor([0, 1, 5, 5, 5, 6])
    teacher = torch.randn(6, 7).log_softmax(1)
    hard = nn.CrossEntropyLoss()
    assert torch.allclose(DistillationLoss(hard, 0.0, 2.0)(logits, labels, teacher), hard(logits, labels))
    only_nv = torch.zeros(7)
    only_nv[5] = 1.0
    weighted = DistillationLoss(hard, 1.0, 1.0, only_nv)(logits, labels, teacher)
    nv = labels == 5
    expected = F.kl_div(logits[nv].log_softmax(1), teacher[nv], log_target=True, reduction="batchmean")
    assert torch.allclose(weighted, expected, atol=1e-6)


@pytest.mark.parametrize(
    "options, message",
    [({"distill_weight": 1.5}, "--distill-weight"), ({"distill_temperature": 0}, "--distill-temperature")],
)
def test_out_of_range_distillation_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**options)


def test_teacher_targets_are_flip_averaged_probabilities_and_cached_per_teacher(tmp_path):
    teacher = tiny_bundle(tmp_path / "teacher")
    images = np.random.default_rng(0).integers(0, 256, (5, 48, 64, 3), dtype=np.uint8)
    plain = teacher_log_probs(teacher, images, CLASSES, flips=False)
    model, config = load_bundle(teacher)
    with torch.inference_mode():
        expected = model(to_batch(images, config)).log_softmax(1).numpy()
    np.testing.assert_allclose(plain, expected, atol=1e-4)
    flipped = teacher_log_probs(teacher, images, CLASSES, flips=True)
    np.testing.assert_allclose(np.exp(flipped).sum(1), 1.0, atol=1e-4)
    assert not np.allclose(flipped, plain, atol=1e-3)

    ids = [f"ISIC_{i}" for i in range(5)]
    first = cached_teacher_targets(tmp_path / "run", teacher, ids, images, CLASSES, flips=True)
    np.testing.assert_allclose(first, flipped, atol=1e-6)
    stamp = (tmp_path / "run" / TARGETS_FILE).stat().st_mtime_ns
    again = cached_teacher_targets(tmp_path / "run", teacher, ids, images, CLASSES, flips=True)
    assert (tmp_path / "run" / TARGETS_FILE).stat().st_mtime_ns == stamp and np.array_equal(again, first)
    other = cached_teacher_targets(tmp_path / "run", teacher, ids, images, CLASSES, flips=False)
    np.testing.assert_allclose(other, plain, atol=1e-6)  # another recipe recomputes them


def test_a_second_student_of_the_same_teacher_reuses_the_shared_targets(tmp_path, monkeypatch):
    teacher = tiny_bundle(tmp_path / "teacher")
    images = np.random.default_rng(0).integers(0, 256, (4, 48, 64, 3), dtype=np.uint8)
    ids = [f"ISIC_{i}" for i in range(4)]
    shared = tmp_path / "dataset_cache"
    first = cached_teacher_targets(tmp_path / "run1", teacher, ids, images, CLASSES, flips=False, shared=shared)
    monkeypatch.setattr("dermxai.training.distill.teacher_log_probs", lambda *args, **kwargs: 1 / 0)
    again = cached_teacher_targets(tmp_path / "run2", teacher, ids, images, CLASSES, flips=False, shared=shared)
    assert np.array_equal(again, first) and (tmp_path / "run2" / TARGETS_FILE).is_file()
    with pytest.raises(ZeroDivisionError):  # other images, or another precision, are not served from the cache
        cached_teacher_targets(tmp_path / "run3", teacher, ids[:3], images[:3], CLASSES, flips=False, shared=shared)
    with pytest.raises(ZeroDivisionError):
        cached_teacher_targets(tmp_path / "run4", teacher, ids, images, CLASSES, flips=False, bf16=True, shared=shared)
    (tmp_path / "run5").mkdir()
    (tmp_path / "run5" / TARGETS_FILE).write_bytes(b"not an npz")  # an unreadable copy is replaced
    assert np.array_equal(
        cached_teacher_targets(tmp_path / "run5", teacher, ids, images, CLASSES, flips=False, shared=shared), first
    )


def test_an_ensemble_bundle_teaches_with_the_mean_of_its_members(tmp_path):
    members = [tiny_bundle(tmp_path / name) for name in ("a", "b")]
    ensemble = make_ensemble(members, tmp_path / "ensemble")
    images = np.random.default_rng(1).integers(0, 256, (3, 48, 64, 3), dtype=np.uint8)
    model, config = load_bundle(ensemble)
    with torch.inference_mode():
        expected = model(to_batch(images, config)).log_softmax(1).numpy()
    np.testing.assert_allclose(teacher_log_probs(ensemble, images, CLASSES, flips=False), expected, atol=1e-4)


def test_a_teacher_with_other_classes_or_no_bundle_is_refused_in_one_line(tmp_path, fixture_dir, split_file):  # noqa: F811
    teacher = tiny_bundle(tmp_path / "teacher")
    write_config(teacher, read_config(teacher).replace(classes=("a", "b", "c", "d", "e", "f", "g")))
    for folder, message in ((teacher, "answers"), (tmp_path / "nothing", "not a bundle folder")):
        args = train_args(fixture_dir, split_file, tmp_path / f"run_{folder.name}", tmp_path / "cache")
        result = runner.invoke(app, [*args, "--teacher", str(folder)])
        assert result.exit_code == 2 and message in result.output, result.output
        assert "Traceback" not in result.output


def test_a_student_trains_from_a_teacher_bundle_and_records_it(tmp_path, fixture_dir, split_file):  # noqa: F811
    teacher = tiny_bundle(tmp_path / "teacher")
    out = tmp_path / "student"
    args = train_args(fixture_dir, split_file, out, tmp_path / "cache", "--epochs", "2", "--teacher", str(teacher))
    result = runner.invoke(app, [*args, "--distill-weight", "0.7"])
    assert result.exit_code == 0, result.output
    kept = np.load(out / TARGETS_FILE)
    n_train = int((pd.read_csv(split_file)["split"] == "train").sum())
    assert kept["log_probs"].shape == (n_train, 7) and np.isfinite(kept["log_probs"]).all()
    recipe = read_config(out / "bundle").recipe
    assert recipe["teacher"] == str(teacher) and recipe["distill_weight"] == 0.7 and recipe["teacher_flips"]
