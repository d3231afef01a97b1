"""The scripts of examples/ run, with small arguments, as a user would run them (each in its
own process, one CPU thread), and leave what they promise: a loadable run, features, probe
results, sample images."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def run_example(name: str, *args: str, tmp_path: Path, timeout: float = 300) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", JEPA_CACHE=str(tmp_path / "cache"),
               PYTHONUNBUFFERED="1")
    env.pop("JEPA_OFFLINE", None)
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=tmp_path, env=env, text=True,
                          capture_output=True, timeout=timeout)
    assert proc.returncode == 0, f"{name} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_every_example_is_listed_in_the_readme_and_tested():
    readme = (EXAMPLES / "README.md").read_text()
    this = Path(__file__).read_text()
    for script in sorted(EXAMPLES.glob("*.py")):
        assert script.name in readme, f"{script.name} is not listed in examples/README.md"
        assert f'"{script.name}"' in this, f"{script.name} has no test here"


def test_custom_dataset_trainer(tmp_path):
    run_dir = tmp_path / "run"
    out = run_example("custom_dataset_trainer.py", "--run-dir", str(run_dir), "--steps", "2", tmp_path=tmp_path)
    assert "load_run: method ijepa, step 2, features (4, 32)" in out
    assert (run_dir / "config.yaml").is_file() and (run_dir / "checkpoints" / "latest.pt").is_file()
    ckpt = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)
    assert ckpt["method"] == "ijepa" and ckpt["config"]["data"]["image_size"] == 32


def test_pretrained_features(tmp_path):
    out = run_example("pretrained_features.py", "--out", str(tmp_path / "f.pt"), tmp_path=tmp_path)
    assert "ijepa_vith14_in1k" in out  # list_pretrained()
    assert "tokens (4, 36, 64) -> features (4, 64)" in out
    saved = torch.load(tmp_path / "f.pt", weights_only=True)
    assert saved["features"].shape == (4, 64) and torch.isfinite(saved["features"]).all()


def test_pretrained_features_by_name_offline(tmp_path):
    out = run_example("pretrained_features.py", "--as-name", "ijepa_vith14_in1k", "--num-images", "2",
                      tmp_path=tmp_path)
    assert "ijepa_vith14_in1k/IN1K-vit.h.14-300e.pth.tar: official checkpoint" in out
    assert "features (2, 64)" in out


@pytest.mark.slow
def test_video_attentive_probe(tmp_path):
    out = run_example("video_attentive_probe.py", "--epochs", "1", tmp_path=tmp_path)
    assert "20 videos in 2 classes: left, right" in out
    assert "tokens (20, 256, 32)" in out
    assert "attentive probe: validation accuracy" in out


@pytest.mark.slow
def test_skeleton_sjepa(tmp_path):
    run_dir = tmp_path / "run"
    out = run_example("skeleton_sjepa.py", "--run-dir", str(run_dir), "--steps", "2", "--train", "40",
                      "--test", "20", tmp_path=tmp_path)
    assert "S-JEPA: 2 steps" in out
    assert "linear probe, S-JEPA:" in out and "linear probe, random init:" in out
    assert (run_dir / "config.yaml").is_file()


def test_generative_djepa(tmp_path):
    run_dir = tmp_path / "run"
    out = run_example("generative_djepa.py", "--run-dir", str(run_dir), "--steps", "2", tmp_path=tmp_path)
    assert "D-JEPA: 2 steps" in out and "model.generate: (2, 1, 28, 28)" in out
    assert (run_dir / "samples" / "class_0.png").is_file() and (run_dir / "samples" / "class_7.png").is_file()
    with __import__("numpy").load(run_dir / "samples" / "samples.npz") as z:
        assert z["images"].shape[0] == 4
