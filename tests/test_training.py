"""Training end to end on the committed fixture with tiny inputs: learning, resume after a kill, faults, DDP."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from dermxai.cli import app
from dermxai.data.labels import CLASSES
from dermxai.inference.predictor import Predictor
from dermxai.models.bundle import BUNDLE_VERSION, load_bundle
from dermxai.models.registry import architecture
from dermxai.preprocessing import load_resized, to_batch, to_unit
from dermxai.training.config import TrainConfig
from dermxai.training.module import Classifier
from tests.test_export import tiny_bundle

runner = CliRunner()
TINY = [
    "--arch",
    "resnet18",
    "--weights",
    "none",
    "--height",
    "32",
    "--width",
    "32",
    "--batch-size",
    "8",
    "--no-progress",
    "--accelerator",
    "cpu",
]


@pytest.fixture(scope="module")
def split_file(tmp_path_factory, fixture_table) -> Path:
    """One lesion per class in val, every other lesion in train (a learning check, not an evaluation)."""
    path = tmp_path_factory.mktemp("split") / "split.csv"
    val = fixture_table.groupby("dx").head(1)["lesion_id"]
    pd.DataFrame(
        {
            "image_id": fixture_table["image_id"],
            "lesion_group": fixture_table["lesion_id"],
            "split": fixture_table["lesion_id"].isin(val).map({True: "val", False: "train"}),
        }
    ).to_csv(path, index=False)
    return path


def train_args(fixture_dir, split_file, out, cache, *extra) -> list[str]:
    return [
        "train",
        "--data",
        str(fixture_dir),
        "--split",
        str(split_file),
        "--out",
        str(out),
        "--cache",
        str(cache),
        *TINY,
        *extra,
    ]


def metrics(out: Path) -> pd.DataFrame:
    from dermxai.training.run import run_metrics

    return run_metrics(out)


def test_training_loss_falls_and_the_model_beats_chance_on_its_training_images(
    tmp_path, fixture_dir, split_file, fixture_table
):
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        train_args(
            fixture_dir,
            split_file,
            out,
            tmp_path / "cache",
            "--epochs",
            "10",
            "--batch-size",
            "4",
            "--height",
            "48",
            "--width",
            "48",
            "--lr",
            "1e-3",
            "--augment",
            "none",
            "--patience",
            "100",
        ),
    )
    assert result.exit_code == 0, result.output
    losses = metrics(out)["train/loss"].dropna().tolist()
    assert len(losses) == 10 and losses[-1] < 0.5 * losses[0]
    assert metrics(out)["time/epoch_s"].dropna().gt(0).all()
    model, config = load_bundle(out / "bundle")
    assert config.classes == tuple(CLASSES) and config.epochs_trained == 10 and config.version == BUNDLE_VERSION
    last = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in last.items() if k.startswith("model.")})
    pixels = np.stack([load_resized(p, (48, 48)) for p in fixture_table["path"]])
    with torch.no_grad():
        predicted = model.eval()(to_batch(pixels, config)).argmax(1)
    truth = torch.tensor([CLASSES.index(d) for d in fixture_table["dx"]])
    assert (predicted == truth).float().mean() > 0.6  # chance is 1/7


def run_cli(args: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dermxai.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        **kwargs,
    )


def test_killed_run_resumes_from_its_last_checkpoint_to_the_same_result(tmp_path, fixture_dir, split_file):
    epochs = ["--epochs", "8", "--patience", "100"]
    killed = tmp_path / "killed"
    process = run_cli(train_args(fixture_dir, split_file, killed, tmp_path / "cache", *epochs))
    last = killed / "checkpoints" / "last.ckpt"
    writes, seen, deadline = 0, None, time.time() + 300
    while writes < 2 and time.time() < deadline:  # kill right after the second epoch's checkpoint
        stamp = last.stat().st_mtime_ns if last.is_file() else None
        if stamp != seen and stamp is not None:
            writes, seen = writes + 1, stamp
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert last.is_file() and not (killed / "bundle").exists()
    stopped_at = torch.load(last, weights_only=True)["epoch"]
    assert 1 <= stopped_at < 7  # 0-based epoch of the last completed epoch

    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "dermxai.cli",
            *train_args(fixture_dir, split_file, killed, tmp_path / "cache", *epochs, "--resume"),
        ],
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert torch.load(last, weights_only=True)["epoch"] == 7  # 0-based: the eighth epoch
    logged = metrics(killed)
    assert logged["val/balanced_accuracy"].notna().sum() == 8  # the killed part's logs are kept too
    assert logged.loc[0, "train/loss"] > 0

    straight = tmp_path / "straight"
    result = runner.invoke(app, train_args(fixture_dir, split_file, straight, tmp_path / "cache", *epochs))
    assert result.exit_code == 0, result.output
    a = torch.load(last, weights_only=True)["state_dict"]
    b = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)


def test_resume_without_a_checkpoint_and_overwriting_a_run_are_refused(tmp_path, fixture_dir, split_file):
    result = runner.invoke(app, train_args(fixture_dir, split_file, tmp_path / "none", tmp_path / "cache", "--resume"))
    assert result.exit_code == 2 and "no checkpoint to resume" in " ".join(result.output.split())


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(
    tmp_path, fixture_dir, split_file, monkeypatch
):
    from dermxai.training import run

    real_build = run.build_loss

    def poisoned(*args):
        loss, calls = real_build(*args), {"n": 0}

        def forward(logits, target):
            calls["n"] += 1
            value = torch.nn.functional.cross_entropy(logits, target)
            return value * float("nan") if calls["n"] > 5 else value  # 3 steps per epoch: NaN in epoch 1

        loss.forward = forward
        return loss

    monkeypatch.setattr(run, "build_loss", poisoned)
    out = tmp_path / "run"
    result = runner.invoke(app, train_args(fixture_dir, split_file, out, tmp_path / "cache", "--epochs", "4"))
    text = " ".join(result.output.split())
    assert result.exit_code == 1 and "training stopped: loss became nan at epoch 1" in text
    assert "the last good checkpoint is" in text
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0


def test_full_disk_stops_with_a_clear_message_and_an_intact_checkpoint(tmp_path, fixture_dir, split_file, monkeypatch):
    import lightning as L

    real_save, calls = L.Trainer.save_checkpoint, {"n": 0}

    def save(self, filepath, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:  # epoch 0 writes best + last; the disk fills up in epoch 1
            Path(filepath).write_bytes(b"torn")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, filepath, *args, **kwargs)

    monkeypatch.setattr(L.Trainer, "save_checkpoint", save)
    out = tmp_path / "run"
    result = runner.invoke(app, train_args(fixture_dir, split_file, out, tmp_path / "cache", "--epochs", "3"))
    text = " ".join(result.output.split())
    assert result.exit_code == 1 and "No space left on device" in text and "continue with --resume" in text
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0


def test_missing_image_stops_before_training(tmp_path, fixture_dir, split_file):
    (tmp_path / "labels.csv").write_text("image_id,dx\nISIC_0024307,nv\nISIC_0000000,mel\n")
    result = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(tmp_path / "labels.csv"),
            "--images",
            str(fixture_dir),
            "--split",
            str(split_file),
            "--out",
            str(tmp_path / "run"),
            *TINY,
        ],
    )
    assert result.exit_code == 2 and "image not found" in " ".join(result.output.split())


def test_two_process_ddp_on_cpu_trains_and_writes_exactly_one_bundle(tmp_path, fixture_dir, split_file):
    out = tmp_path / "ddp"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dermxai.cli",
            *train_args(
                fixture_dir, split_file, out, tmp_path / "cache", "--epochs", "2", "--devices", "2", "--strategy", "ddp"
            ),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PL_DISABLE_FORK": "1"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "distributed_backend=gloo" in result.stdout + result.stderr
    assert "All distributed processes registered. Starting with 2 processes" in result.stdout + result.stderr
    assert [p.parent.name for p in out.rglob("model.safetensors")] == ["bundle"]
    assert len(metrics(out)["train/loss"].dropna()) == 2


def test_experiment_config_trains_each_model_into_its_own_run_folder(tmp_path, fixture_dir, split_file):
    config = tmp_path / "exp.yaml"
    config.write_text(
        f"data: {fixture_dir}\nsplit: {split_file}\nout: {tmp_path / 'runs'}\n"
        "models: [resnet18, efficientnet_lite0]\n"
        "recipe: {weights: none, height: 32, width: 32, epochs: 1, batch_size: 8}\n"
    )
    result = runner.invoke(app, ["experiment", str(config), "--accelerator", "cpu", "--no-progress"])
    assert result.exit_code == 0, result.output
    for arch in ("resnet18", "efficientnet_lite0"):
        _, bundle = load_bundle(tmp_path / "runs" / arch / "bundle")
        assert bundle.arch == arch and (tmp_path / "runs" / arch / "logs" / "metrics.csv").is_file()
    again = runner.invoke(app, ["experiment", str(config), "--accelerator", "cpu", "--no-progress"])
    assert again.exit_code == 0 and again.output.count("already in") == 2
    config.write_text(
        f"data: {fixture_dir}\nsplit: {split_file}\nout: {tmp_path / 'bad'}\n"
        "models: [resnet18]\nrecipe: {epochz: 3}\n"
    )
    bad = runner.invoke(app, ["experiment", str(config)])
    assert bad.exit_code == 2 and "unknown training option(s): epochz" in " ".join(bad.output.split())


def test_training_forward_equals_the_served_model_on_the_same_image(tmp_path, fixture_table):
    """The one preprocessing: Classifier's to_unit + standardise == the bundle served by the Predictor."""
    model, config = load_bundle(tiny_bundle(tmp_path))
    module = Classifier(model, architecture("resnet18"), TrainConfig(arch="resnet18", weights="none"), nn.Identity())
    pixels = load_resized(fixture_table["path"].iloc[0], config.size)
    with torch.no_grad():
        trained = module.eval()(to_unit(torch.from_numpy(pixels.copy())[None]))[0].numpy()
    served = Predictor(tmp_path).logits(pixels[None])[0]
    np.testing.assert_allclose(served, trained, rtol=1e-4, atol=1e-4)
