"""Hostile and mistaken command lines: one clear line, exit 2 (1 for a batch with some bad files), no traceback."""

from __future__ import annotations

import io
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from dermxai.assets import DEFAULT_MODEL, EXAMPLES
from dermxai.cli import app
from dermxai.inference.feature_gate import GATE_NAME

runner = CliRunner()


class Exploit:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.fixture(scope="module")
def splits(tmp_path_factory, fixture_table) -> dict[str, Path]:
    """A lesion-grouped split, one without validation images, and a leaky one (a lesion in train and test)."""
    root = tmp_path_factory.mktemp("splits")
    lesions = sorted(fixture_table["lesion_id"].unique())
    part = {lesion: ("train", "val", "test")[i % 3] for i, lesion in enumerate(lesions)}
    frame = pd.DataFrame(
        {
            "image_id": fixture_table["image_id"],
            "lesion_group": fixture_table["lesion_id"],
            "split": fixture_table["lesion_id"].map(part),
        }
    )
    frame.to_csv(root / "good.csv", index=False)
    frame.assign(split=frame["split"].replace("val", "train")).to_csv(root / "no_val.csv", index=False)
    shared = fixture_table.groupby("lesion_id").size().loc[lambda n: n > 1].index[0]
    rows = frame.index[frame["lesion_group"] == shared]
    leaky = frame.copy()
    leaky.loc[rows[0], "split"], leaky.loc[rows[1:], "split"] = "train", "test"
    leaky.to_csv(root / "leaky.csv", index=False)
    return {"good": root / "good.csv", "no_val": root / "no_val.csv", "leaky": root / "leaky.csv"}


def one_line_error(result, code: int = 2, *words: str) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and "Aborted" not in result.output
    assert result.output.strip(), "an error must say something"
    for word in words:
        assert word in result.output, result.output


@pytest.fixture()
def bundle(tmp_path) -> Path:
    return Path(shutil.copytree(DEFAULT_MODEL, tmp_path / "bundle"))


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda gate: gate.write_bytes(gate.read_bytes()[:200]), ("not a valid",)),
        (lambda gate: gate.write_bytes(b""), ("not a valid",)),
    ],
    ids=["truncated gate", "empty gate"],
)
def test_predict_with_a_damaged_gate(bundle, damage, words):
    damage(bundle / GATE_NAME)
    image = str(next(EXAMPLES.glob("*.jpg")))
    one_line_error(runner.invoke(app, ["predict", image, "--model", str(bundle)]), 2, *words)


def test_an_unreadable_file_in_a_batch_is_named_and_the_rest_answered():
    image = str(next(EXAMPLES.glob("*.jpg")))
    result = runner.invoke(app, ["predict", image, "/proc/self/mem", "--json"])
    one_line_error(result, 1, "/proc/self/mem", "cannot be read")
    assert '"top_class"' in result.output


@pytest.mark.parametrize(
    "args, words",
    [
        (["serve", "--port", "99999"], ("--port",)),
        (["serve", "--max-mib", "-1"], ("--max-mib",)),
        (["app", "--port", "0"], ("--port",)),
    ],
)
def test_server_options_out_of_range(args, words):
    one_line_error(runner.invoke(app, args), 2, *words)


TINY_RUN = ["--arch", "resnet18", "--weights", "none", "--epochs", "1", "--height", "32", "--width", "32"]
TINY_RUN += ["--no-progress"]


def train(fixture_dir, split, out, *extra) -> object:
    args = ["train", "--data", str(fixture_dir), "--split", str(split), "--out", str(out)]
    return runner.invoke(app, [*args, *TINY_RUN, *extra])


def test_training_options_and_files_that_cannot_work(fixture_dir, splits, tmp_path):
    good = splits["good"]
    (tmp_path / "garbage.pth").write_bytes(b"\x00garbage")
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00garbage")
    (tmp_path / "exploit.pth").write_bytes(pickle.dumps(Exploit()))
    (tmp_path / "a_file").write_text("x")
    cases = [
        (["--limit-train-batches", "inf"], ("--limit-train-batches",)),
        (["--weights", str(tmp_path / "garbage.pth")], ("not a readable state dict",)),
        (["--weights", str(tmp_path / "garbage.safetensors")], ("not a readable state dict",)),
        (["--weights", str(tmp_path / "exploit.pth")], ("not a readable state dict",)),
        (["--devices", "0"], ("--devices",)),
        (["--devices", "abc"], ("--devices",)),
        (["--max-minutes", "-1"], ("--max-minutes",)),
    ]
    for extra, words in cases:
        result = train(fixture_dir, good, tmp_path / "run", *extra)
        one_line_error(result, 2, *words)
        assert "pwned" not in result.output
    one_line_error(train(fixture_dir, good, tmp_path / "a_file"), 2, "is a file")
    one_line_error(train(fixture_dir, splits["no_val"], tmp_path / "run"), 2, "no val images")
    one_line_error(train(fixture_dir, splits["leaky"], tmp_path / "run"), 2, "leaky split", "--allow-leaky-split")


def cut_off_archive() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", b"x" * 4096)
    return buffer.getvalue()[:1000]


@pytest.mark.parametrize("content", [lambda: pickle.dumps(Exploit()), cut_off_archive], ids=["pickle", "cut off"])
def test_a_hostile_or_damaged_checkpoint_is_refused_on_resume(fixture_dir, splits, tmp_path, content):
    """Refused before anything is loaded: neither file is a complete torch archive."""
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "last.ckpt").write_bytes(content())
    result = train(fixture_dir, splits["good"], tmp_path / "run", "--resume")
    one_line_error(result, 2, "last.ckpt is refused")
    assert "pwned" not in result.output


def test_a_hostile_checkpoint_in_torchs_own_format_is_refused_not_unpickled(fixture_dir, splits, tmp_path):
    """A complete torch archive whose pickle would run code: Lightning's loader refuses it (weights only).

    In a process of its own: Lightning's loggers outlive CliRunner's captured streams."""
    import torch

    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    torch.save(Exploit(), tmp_path / "run" / "checkpoints" / "last.ckpt")
    args = ["--data", str(fixture_dir), "--split", str(splits["good"]), "--out", str(tmp_path / "run")]
    result = subprocess.run(
        [sys.executable, "-m", "dermxai.cli", "train", *args, *TINY_RUN, "--resume"], capture_output=True, text=True
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "last.ckpt is refused" in result.stderr and "Traceback" not in result.stderr
    assert "pwned" not in result.stdout + result.stderr


def test_a_model_trained_on_an_allowed_leaky_split_says_so_in_its_bundle(fixture_dir, splits, tmp_path):
    import json

    result = train(fixture_dir, splits["leaky"], tmp_path / "run", "--allow-leaky-split", "--batch-size", "4")
    assert result.exit_code == 0, result.output
    bundle = tmp_path / "run" / "bundle"
    assert "lesion" in json.loads((bundle / "config.json").read_text())["leaky_split"]
    assert (bundle / "MODEL_CARD.md").read_text().startswith("**LEAKY SPLIT**")


def test_evaluate_refuses_a_leaky_split_unless_allowed_and_then_says_so_first(bundle, fixture_dir, splits, tmp_path):
    base = ["evaluate", "--model", str(bundle), "--data", str(fixture_dir), "--bootstrap", "5"]
    one_line_error(
        runner.invoke(app, [*base, "--split", str(splits["leaky"]), "--out", str(tmp_path / "e")]), 2, "leaky split"
    )
    one_line_error(
        runner.invoke(app, [*base, "--split", str(splits["good"]), "--out", str(tmp_path / "e"), "--batch-size", "0"]),
        2,
        "--batch-size",
    )
    result = runner.invoke(
        app, [*base, "--split", str(splits["leaky"]), "--out", str(tmp_path / "e"), "--allow-leaky-split"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "e" / "report.md").read_text().startswith("**LEAKY SPLIT")
