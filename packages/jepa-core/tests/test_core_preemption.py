"""Graceful preemption and hung ranks (issue #13, items 2 and 5): SIGTERM / SIGINT / SIGUSR1
stop a run at the next step boundary with a checkpoint of that step, and exit status 75
(``Preempted.exit_code``), from which a resume ends with the weights of an uninterrupted run;
``train.dist_timeout_s`` bounds how long a rank waits for a stopped peer.

Also a worker script: ``python test_core_preemption.py RUN_DIR [--steps N] [--step-sleep S]
[--resume] [--dist-timeout S]`` (plain python, or under torchrun)."""

from __future__ import annotations

import argparse
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from jepa_core.testing import last_logged_step

THIS = Path(__file__)
STEPS = 40
DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


# -- the worker ------------------------------------------------------------------------------------


def _build(run_dir, steps: int, step_sleep: float = 0.0, dist_timeout_s: float = 1800.0, callbacks=()):
    from jepa_core.config import OptimConfig, TrainConfig
    from jepa_core.testing import LinearJEPA, PointsDataset, collate_points
    from jepa_core.trainer import Trainer

    torch.manual_seed(0)
    oc = OptimConfig(epochs=100, warmup=0.2, start_lr=0.01, lr=0.05, final_lr=0.001, weight_decay=0.04,
                     final_weight_decay=0.4, ema=(0.9, 1.0), max_steps=steps, clip_grad=1.0)
    # checkpoint_every far beyond the run: the only checkpoints are the signal's and the final one
    tc = TrainConfig(device="cpu", progress=False, log_every=1, checkpoint_every=10_000, num_threads=1,
                     dist_timeout_s=dist_timeout_s)
    cbs = list(callbacks)
    if step_sleep:
        cbs.append(lambda trainer, step, row: time.sleep(step_sleep))
    return Trainer(LinearJEPA(hidden=16), PointsDataset(n=64), collate_points, oc, tc, run_dir, batch_size=8,
                   callbacks=cbs)


def _worker() -> int:
    from jepa_core.distributed import shutdown_distributed
    from jepa_core.trainer import Preempted

    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--step-sleep", type=float, default=0.0)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--dist-timeout", type=float, default=1800.0)
    a = ap.parse_args()
    run_dir = Path(a.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / f"pid-rank{os.environ.get('RANK', '0')}.txt").write_text(str(os.getpid()))
    tr = _build(run_dir, a.steps, a.step_sleep, a.dist_timeout)
    try:
        tr.fit(resume=a.resume)
    except Preempted as e:  # what jepa_core.cli.main does
        shutdown_distributed(tr.dist)
        print(f"jepa: {e}", file=sys.stderr)
        return e.exit_code
    shutdown_distributed(tr.dist)
    return 0


# -- helpers ---------------------------------------------------------------------------------------


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in DIST_ENV}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _cmd(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, str(THIS), str(run_dir), "--steps", str(STEPS), *extra]


def _wait_for_step(proc: subprocess.Popen, run_dir: Path, step: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and last_logged_step(run_dir) < step:
        time.sleep(0.01)
    assert proc.poll() is None, f"the run ended before the signal: {proc.communicate()[1][-3000:]}"
    assert last_logged_step(run_dir) >= step, "the run did not get going"


def _model(run_dir: Path) -> dict:
    from jepa_core import checkpoint as ckpt

    return ckpt.load(run_dir / "checkpoints" / "latest.pt")


def _stop_with(tmp_path: Path, sig: int) -> tuple[Path, int, str]:
    """A run sent ``sig`` after step 5: its folder, the step it stopped at, its stderr."""
    from jepa_core.trainer import PREEMPTED_EXIT_CODE

    run = tmp_path / "run"
    proc = subprocess.Popen(_cmd(run, "--step-sleep", "0.1"), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_step(proc, run, 5)
        os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == PREEMPTED_EXIT_CODE == 75, err[-3000:]
    stopped = last_logged_step(run)
    assert 5 <= stopped < STEPS
    name = signal.Signals(sig).name
    line = f"jepa: stopped by {name} at step {stopped} after saving a checkpoint; resume with --resume"
    assert err.rstrip().splitlines()[-1] == line, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    ck = _model(run)
    assert ck["step"] == stopped  # saved at the step it stopped, not at a periodic checkpoint
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*.pt")) == [f"step-{stopped}.pt"]
    return run, stopped, err


# -- tests -----------------------------------------------------------------------------------------


@pytest.mark.fault
@pytest.mark.slow
def test_sigterm_saves_the_step_exits_75_and_resume_matches_an_uninterrupted_run(tmp_path):
    ref = tmp_path / "ref"
    subprocess.run(_cmd(ref), check=True, env=_env(), timeout=120, capture_output=True)
    run, stopped, _ = _stop_with(tmp_path, signal.SIGTERM)

    done = subprocess.run(_cmd(run, "--resume"), env=_env(), timeout=120, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = list(csv.DictReader(open(run / "metrics.csv", newline="")))
    assert [int(r["step"]) for r in rows] == list(range(1, STEPS + 1))  # no step lost or redone
    a, b = _model(ref), _model(run)
    assert a["step"] == b["step"] == STEPS
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


@pytest.mark.fault
@pytest.mark.slow
def test_sigint_saves_a_checkpoint_with_one_line_and_no_traceback(tmp_path):
    _, _, err = _stop_with(tmp_path, signal.SIGINT)
    assert "KeyboardInterrupt" not in err


@pytest.mark.fault
def test_a_signal_stops_fit_at_the_step_boundary_and_restores_the_handlers(tmp_path):
    from jepa_core.trainer import Preempted

    def usr1_at_step_3(trainer, step, row):
        if step == 3:
            os.kill(os.getpid(), signal.SIGUSR1)
            os.kill(os.getpid(), signal.SIGTERM)  # a second signal while stopping changes nothing

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    tr = _build(tmp_path / "run", 20, callbacks=[usr1_at_step_3])
    with pytest.raises(Preempted) as info:
        tr.fit()
    assert info.value.step == 3 and info.value.signum == signal.SIGUSR1 and info.value.exit_code == 75
    assert str(info.value) == "stopped by SIGUSR1 at step 3 after saving a checkpoint; resume with --resume"
    assert {s: signal.getsignal(s) for s in before} == before
    assert _model(tmp_path / "run")["step"] == 3
    res = _build(tmp_path / "run", 20).fit(resume=True)
    assert res.steps == 20


@pytest.mark.fault
def test_cli_turns_preempted_into_one_line_and_exit_75(monkeypatch, capsys):
    from jepa_core.cli import main
    from jepa_core.trainer import Preempted

    def stopped(*a, **k):
        raise Preempted(7, signal.SIGTERM)

    monkeypatch.setattr("jepa_core.run.pretrain", stopped)
    assert main(["pretrain", "ijepa", "--run-dir", "unused"]) == 75
    err = capsys.readouterr().err
    assert err.strip() == "jepa: stopped by SIGTERM at step 7 after saving a checkpoint; resume with --resume"


@pytest.mark.fault
def test_the_launcher_requeues_a_preempted_job_through_submitits_handler(monkeypatch):
    pytest.importorskip("submitit")
    from jepa_core.launch import RequeueableJob
    from jepa_core.trainer import Preempted

    calls = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))
    try:
        job = RequeueableJob(print, "run")
        job._requeue_after(Preempted(4, signal.SIGTERM), rank=1)
        assert calls == []  # only rank 0 requeues
        job._requeue_after(Preempted(4, signal.SIGTERM), rank=0)
        assert calls == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, previous)


@pytest.mark.fault
def test_dist_timeout_is_validated_and_passed_to_the_process_group(monkeypatch):
    import datetime

    import torch.distributed as dist
    from jepa_core import distributed
    from jepa_core.config import ConfigError, TrainConfig

    assert TrainConfig().dist_timeout_s == 1800
    for bad in (0, -5):
        with pytest.raises(ConfigError, match="train.dist_timeout_s must be a positive"):
            TrainConfig(dist_timeout_s=bad)
    seen = {}
    monkeypatch.setattr(distributed, "launched_by_torchrun", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: seen.update(kw))
    monkeypatch.setattr(dist, "get_rank", lambda: 0)
    monkeypatch.setattr(dist, "get_world_size", lambda: 1)
    monkeypatch.setenv("LOCAL_RANK", "0")
    distributed.init_distributed(torch.device("cpu"), 12.5)
    assert seen == {"backend": "gloo", "timeout": datetime.timedelta(seconds=12.5)}


@pytest.mark.fault
@pytest.mark.slow
@pytest.mark.distributed
def test_a_stopped_rank_fails_the_other_within_the_dist_timeout(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(THIS),
           str(run), "--steps", "400", "--step-sleep", "0.05", "--dist-timeout", "10"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stopped_pid = None
    try:
        _wait_for_step(proc, run, 3, timeout=120)
        stopped_pid = int((run / "pid-rank1.txt").read_text())
        rank0 = int((run / "pid-rank0.txt").read_text())
        os.kill(stopped_pid, signal.SIGSTOP)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60 and _alive(rank0):
            time.sleep(0.1)
        waited = time.monotonic() - t0
        assert not _alive(rank0), "rank 0 still waits for the stopped rank after 60 s"
        out, _ = proc.communicate(timeout=120)
    finally:
        if stopped_pid is not None:
            with _suppress():
                os.kill(stopped_pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert waited < 60
    assert "train.dist_timeout_s=10 s" in out and "DistributedTimeoutError" in out, out[-5000:]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by torchrun) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _suppress():
    import contextlib

    return contextlib.suppress(ProcessLookupError)


if __name__ == "__main__":
    sys.exit(_worker())
