"""`torchrun` on CPU (gloo): two processes share one run, and a single-process torchrun works."""

from __future__ import annotations

import csv
import json
import re
import subprocess

import pytest
import torch
from jepa_core.testing import run_pretrain

TINY = [
    "model.encoder=custom", "model.embed_dim=32", "model.depth=2", "model.num_heads=2",
    "model.pred_depth=1", "model.pred_emb_dim=16", "model.patch_size=4",
    "data.batch_size=16", "data.num_workers=0", "data.pin_memory=false",
    "train.num_threads=1", "train.progress=false", "train.log_every=1", "optim.max_steps=4",
    "eval.enabled=false", "train.device=cpu",
]


def _torchrun(nproc: int, run_dir) -> subprocess.CompletedProcess:
    return run_pretrain("ijepa", TINY, run_dir, nproc=nproc, timeout=240)


def _summaries(stdout: str) -> list[dict]:
    return [json.loads(m) for m in re.findall(r"^\{\n.*?^\}", stdout, flags=re.S | re.M)]


def _check_run(run_dir, world_size: int):
    latest = torch.load(run_dir / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    assert latest["step"] == 4
    assert "encoder.pos_embed" in latest["model"]
    rows = list(csv.DictReader(open(run_dir / "metrics.csv", newline="")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]  # written once, by rank 0
    # Each process gets 1/world_size of the 12,000 demo images, so an epoch has fewer steps.
    ipe = (12000 // world_size) // 16
    assert float(rows[-1]["epoch"]) == pytest.approx(4 / ipe, abs=1e-4)
    return latest


@pytest.mark.slow
@pytest.mark.distributed
def test_torchrun_two_processes(tmp_path):
    run = tmp_path / "r"
    proc = _torchrun(2, run)
    _check_run(run, world_size=2)
    # Only rank 0 reports (issue #13: quiet non-main ranks); nobody claims to be a single process.
    summaries = _summaries(proc.stdout)
    assert len(summaries) == 1, proc.stdout
    assert summaries[0]["steps"] == 4 and summaries[0]["world_size"] == 2
    assert "this is a single process" not in proc.stderr
    assert (run / "report.md").is_file() and (run / "config.yaml").is_file()


@pytest.mark.slow
@pytest.mark.distributed
def test_torchrun_single_process(tmp_path):
    run = tmp_path / "r"
    proc = _torchrun(1, run)
    _check_run(run, world_size=1)
    assert len(_summaries(proc.stdout)) == 1


def _run(nproc: int, run_dir, batch: int, *extra: str, resume: bool = False) -> subprocess.CompletedProcess:
    """``jepa pretrain ijepa`` on ``nproc`` processes (torchrun on gloo; 0: a plain process)."""
    args = [*TINY, f"data.batch_size={batch}", "optim.max_steps=6", "train.checkpoint_every=3", *extra]
    return run_pretrain("ijepa", args, run_dir, nproc=nproc, resume=resume)


def _state(run_dir) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    assert ckpt["step"] == 6
    return {f"model.{k}": v for k, v in ckpt["model"].items()}


def _losses(run_dir) -> list[float]:
    return [float(r["loss"]) for r in csv.DictReader(open(run_dir / "metrics.csv", newline=""))]


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.fault
def test_two_processes_train_like_one_process_with_the_global_batch(tmp_path):
    """Issue #13 item 6, on the real tiny I-JEPA: 2 processes x 8 images and 1 process x 16
    images draw the same masks and crops (keyed by seed, step and global slot) and end with the
    same weights (encoder, predictor, EMA target) within float tolerance; a run started on 2
    processes resumes on 1 like the uninterrupted 1-process run; the official per-process
    draws (train.draw_scope=process) differ."""
    one, two = tmp_path / "one", tmp_path / "two"
    _run(0, one, 16)
    _run(2, two, 8)
    ref = _state(one)
    assert any("target" in k for k in ref)  # the EMA target is compared too
    tol = 1e-6  # measured: 4e-9 (float summation order); the per-process draws differ by ~1e-3
    assert _max_diff(_state(two), ref) < tol
    assert _losses(two) == pytest.approx(_losses(one), rel=1e-5, abs=1e-6)
    # Resume on another number of processes: the 2-process run's step-3 checkpoint, 1 process on.
    moved = tmp_path / "moved"
    (moved / "checkpoints").mkdir(parents=True)
    for name in ("config.yaml", "metrics.csv"):
        (moved / name).write_bytes((two / name).read_bytes())
    (moved / "checkpoints" / "step-3.pt").write_bytes((two / "checkpoints" / "step-3.pt").read_bytes())
    _run(0, moved, 16, resume=True)
    assert _max_diff(_state(moved), ref) < tol
    # The official per-process scope draws other masks and crops on 2 processes.
    process = tmp_path / "process"
    _run(2, process, 8, "train.draw_scope=process")
    assert _max_diff(_state(process), ref) > 100 * tol
