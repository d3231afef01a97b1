"""Fault tolerance: a run killed with SIGKILL at random steps, and inside checkpoint writes,
resumes each time and ends with the weights of an uninterrupted run; no checkpoint on disk is
ever unreadable."""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from jepa_core import checkpoint as ckpt
from jepa_core.testing import last_logged_step

WORKER = Path(__file__).with_name("dist_worker.py")
STEPS = 30
DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in DIST_ENV}
    env.update(OMP_NUM_THREADS="1", **extra)
    return env


def _cmd(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, str(WORKER), str(run_dir), "--steps", str(STEPS), "--checkpoint-every", "1",
            "--resume", *extra]


def _temp_files(run_dir: Path) -> list[Path]:
    folder = run_dir / "checkpoints"
    return [p for p in folder.iterdir() if p.name.endswith(".tmp")] if folder.is_dir() else []


def _all_checkpoints_load(run_dir: Path) -> int:
    """Load every checkpoint file; return the newest step."""
    files = sorted((run_dir / "checkpoints").glob("*.pt"))
    steps = [int(ckpt.load(p)["step"]) for p in files]  # raises on any unreadable file
    return max(steps, default=0)


@pytest.mark.slow
def test_sigkill_at_random_steps_and_inside_writes_then_resume(tmp_path):
    ref = tmp_path / "ref"
    subprocess.run(_cmd(ref), check=True, env=_env(), timeout=120, capture_output=True)

    run = tmp_path / "run"
    rng = random.Random(6)
    # Each checkpoint write sleeps 0.2 s between fsync and rename, so kills land inside writes.
    env = _env(JEPA_TEST_CHECKPOINT_DELAY_S="0.2")
    kills = []
    for attempt in range(5):
        proc = subprocess.Popen(_cmd(run, "--step-sleep", "0.02"), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        start = last_logged_step(run)
        inside_write = attempt % 2 == 0  # the last kill too: the resume must clean up
        target = start + rng.randint(1, 5)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            if last_logged_step(run) >= target and (not inside_write or _temp_files(run)):
                break
            time.sleep(0.005)
        assert proc.poll() is None, f"the run ended before the kill: {proc.stderr.read()[-2000:]}"
        mid_write = bool(_temp_files(run))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL
        newest = _all_checkpoints_load(run)
        kills.append((last_logged_step(run), newest, mid_write))
        if inside_write:
            assert mid_write, "the kill was meant to land inside a checkpoint write"
    assert kills[-1][2] and len({k[0] for k in kills}) > 1, kills

    done = subprocess.run(_cmd(run), env=_env(), timeout=120, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    print("kills (logged step, newest checkpoint, inside a write):", kills)
    assert _all_checkpoints_load(run) == STEPS and not _temp_files(run)

    a = torch.load(ref / "checkpoints" / "latest.pt", weights_only=True)
    b = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert a["batches_consumed"] == b["batches_consumed"] == STEPS
    # the metrics of the resumed run are those of the uninterrupted one, step for step
    la = [r["loss"] for r in csv.DictReader(open(ref / "metrics.csv"))]
    lb = [r["loss"] for r in csv.DictReader(open(run / "metrics.csv"))]
    assert la == lb and len(la) == STEPS
