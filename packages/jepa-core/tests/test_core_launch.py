"""The submitit launcher: the sbatch script it would submit, a tiny job run by submitit's local
executor (two tasks forming a process group), and requeue + resume after a time-out signal."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

submitit = pytest.importorskip("submitit", reason="the launcher tests need jepa-core[slurm]")

from jepa_core import checkpoint as ckpt  # noqa: E402
from jepa_core.launch import RequeueableJob, SlurmOptions, make_executor  # noqa: E402


def _worker():
    # Loaded without a sys.modules entry: cloudpickle then ships its functions by value, so the
    # job's process needs no access to this tests folder.
    spec = importlib.util.spec_from_file_location("jepa_launch_worker", Path(__file__).with_name("dist_worker.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_sbatch_script_has_the_requested_resources(tmp_path, monkeypatch):
    # No srun here: tell submitit it is on a SLURM cluster, then read the script, never submit.
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    opts = SlurmOptions(nodes=2, gpus_per_node=4, cpus_per_task=10, mem_gb=200, time_min=90, partition="gpu",
                        account="proj42", qos="high", job_name="ijepa-vith", signal_delay_s=180,
                        max_requeues=7, setup=["module load cuda"])
    ex = make_executor(tmp_path, opts, "slurm")
    text = ex._executor._make_submission_file_text("python -u -m submitit.core._submit x", "uid")
    lines = set(text.splitlines())
    for want in ("--nodes=2", "--gpus-per-node=4", "--ntasks-per-node=4", "--cpus-per-task=10", "--mem=200GB",
                 "--time=90", "--partition=gpu", "--account=proj42", "--qos=high", "--job-name=ijepa-vith",
                 "--signal=USR2@180"):
        assert f"#SBATCH {want}" in lines, (want, text)
    assert "module load cuda" in lines and "#SBATCH --requeue" in lines
    srun = [line for line in lines if line.startswith("srun ")]
    assert len(srun) == 1 and "--kill-on-bad-exit=1" in srun[0]
    assert ex._executor.max_num_timeout == 7
    # one task per GPU by default; a CPU-only node gets one task
    assert SlurmOptions(gpus_per_node=0).executor_parameters("slurm")["tasks_per_node"] == 1


def test_checkpoint_requeues_the_same_job_resuming(tmp_path):
    job = RequeueableJob(print, tmp_path / "run", resume=False, steps=3)
    delayed = job.checkpoint()
    assert isinstance(delayed, submitit.helpers.DelayedSubmission)
    again = delayed.function
    assert isinstance(again, RequeueableJob) and again.resume and again.kwargs == {"steps": 3}
    assert again.run_dir == job.run_dir


@pytest.mark.slow
@pytest.mark.distributed
def test_local_executor_runs_a_two_task_job(tmp_path):
    run = tmp_path / "run"
    ex = make_executor(tmp_path / "submitit", SlurmOptions(gpus_per_node=0, tasks_per_node=2, time_min=5), "local")
    job = ex.submit(RequeueableJob(_worker().train, run, batch_size=8, steps=4, strategy="ddp"))
    results = job.results()
    assert sorted(r["rank"] for r in results) == [0, 1]
    assert all(r["world_size"] == 2 and r["steps"] == 4 for r in results)
    assert ckpt.load(run / "checkpoints" / "latest.pt")["world_size"] == 2


@pytest.mark.slow
def test_local_executor_requeues_on_time_out_and_resumes(tmp_path):
    run = tmp_path / "run"
    # USR2 comes 16 s after the start (24 s limit, 8 s warning); the first attempt sleeps 0.3 s a
    # step for 200 steps, so it is interrupted mid-run; the requeued one resumes and runs fast.
    opts = SlurmOptions(gpus_per_node=0, time_min=24 / 60, signal_delay_s=8, max_requeues=2)
    ex = make_executor(tmp_path / "submitit", opts, "local")
    job = ex.submit(RequeueableJob(_worker().train, run, steps=200, checkpoint_every=2, step_sleep=0.3,
                                   slow_until_resumed=True))
    result = job.result()
    log = job.stdout() + (job.stderr() or "")
    assert "timed-out" in log and "Requeued" in log, log[-3000:]
    assert result["resume"] and result["first_step"] > 1, result  # continued from a checkpoint
    assert result["steps"] == 200
    assert ckpt.load(run / "checkpoints" / "latest.pt")["step"] == 200


def test_missing_submitit_is_a_clear_cli_error(tmp_path, monkeypatch, capsys):
    import sys

    from jepa_core.cli import main
    from jepa_core.extras import MissingExtraError
    from jepa_core.launch import _submitit

    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(MissingExtraError, match=r"--launcher slurm needs submitit, which is not installed: "
                                                r"pip install 'jepa-core\[slurm\]'"):
        _submitit()
    monkeypatch.setattr("jepa_core.registry.get_method", lambda name: pytest.fail("must not get this far"))
    monkeypatch.setattr("jepa_core.launch.submit_pretrain", lambda *a, **k: _submitit())
    assert main(["pretrain", "ijepa", "--launcher", "slurm", "--run-dir", str(tmp_path / "r")]) == 2
    assert "jepa-core[slurm]" in capsys.readouterr().err


def test_slurm_options_without_a_launcher_are_refused(capsys):
    from jepa_core.cli import main

    with pytest.raises(SystemExit):
        main(["pretrain", "ijepa", "--nodes", "2", "--partition", "gpu"])
    assert "--nodes, --partition apply to a launcher: add --launcher slurm" in capsys.readouterr().err
