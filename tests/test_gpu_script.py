"""The prepared GPU command (scripts/gpu_run.sh), run end to end on the CPU with a tiny configuration."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from dermxai.models.bundle import load_bundle

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20


def test_pack_unpack_round_trip_keeps_every_byte(tmp_path, fixture_dir):
    from dermxai.data import load_dataset

    packed = tmp_path / "packed" / "fixture"
    subprocess.run(
        [sys.executable, "scripts/pack_images.py", "pack", "--data", str(fixture_dir), "--out", str(packed)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [sys.executable, "scripts/pack_images.py", "unpack", str(packed), "--out", str(tmp_path / "data")],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    original, rebuilt = load_dataset(fixture_dir), load_dataset(tmp_path / "data")
    assert sorted(original["image_id"]) == sorted(rebuilt["image_id"])
    by_id = dict(zip(rebuilt["image_id"], rebuilt["path"]))
    for image_id, path in zip(original["image_id"], original["path"]):
        assert Path(by_id[image_id]).read_bytes() == Path(path).read_bytes()
    assert (original.set_index("image_id")["dx"] == rebuilt.set_index("image_id")["dx"]).all()


@pytest.mark.slow  # about 3 minutes on 2 cores: `make test-slow`
def test_gpu_command_runs_on_cpu_with_a_tiny_config_and_returns_small_parts(tmp_path, fixture_dir):
    packed = tmp_path / "packed" / "fixture"
    subprocess.run(
        [sys.executable, "scripts/pack_images.py", "pack", "--data", str(fixture_dir), "--out", str(packed)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    out, work = tmp_path / "out", tmp_path / "work"
    env = {
        **os.environ,
        "TINY": "1",
        "OUT": str(out),
        "WORK": str(work),
        "PACKED": str(packed),
        "PYTHON": sys.executable,
    }
    done = subprocess.run(
        ["bash", "scripts/gpu_run.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800
    )
    log = (out / "gpu_run.log").read_text() if (out / "gpu_run.log").is_file() else done.stdout + done.stderr
    parts = sorted(out.glob("gpu_bundles.tar.part-*"))
    assert parts, log[-3000:]
    assert len(list(out.iterdir())) <= 8 and all(p.stat().st_size <= 16 * MIB for p in out.iterdir())
    tar_path = tmp_path / "joined.tar"
    tar_path.write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(tar_path) as archive:
        archive.extractall(tmp_path / "bundles", filter="data")
    names = sorted(p.name for p in (tmp_path / "bundles").iterdir())
    assert names == ["densenet121", "efficientnet_b0", "lite0_hires", "resnet18"], log[-3000:]
    for name in names:
        model, config = load_bundle(tmp_path / "bundles" / name)
        assert config.calibration.get("n_val") and (tmp_path / "bundles" / name / "metrics.json").is_file(), name
