"""`torchrun` on CPU (gloo): two processes share one run, and a single-process torchrun works."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys

import pytest
import torch

TINY = [
    "model.encoder=custom", "model.embed_dim=32", "model.depth=2", "model.num_heads=2",
    "model.pred_depth=1", "model.pred_emb_dim=16", "model.patch_size=4",
    "data.batch_size=16", "data.num_workers=0", "data.pin_memory=false",
    "train.num_threads=1", "train.progress=false", "train.log_every=1", "optim.max_steps=4",
    "eval.enabled=false", "train.device=cpu",
]


def _torchrun(nproc: int, run_dir, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
        "-m", "jepa_core.cli", "pretrain", "ijepa", *TINY, "--run-dir", str(run_dir),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


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
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
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
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _check_run(run, world_size=1)
    assert len(_summaries(proc.stdout)) == 1
