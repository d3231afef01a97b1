"""Cluster launchers: SLURM through submitit (``jepa pretrain ... --launcher slurm``), with
automatic requeue and resume on preemption or time limit.

submitit (``pip install jepa-core[slurm]``) writes an sbatch script that starts one task per
GPU with ``srun``, and sends ``USR2`` to the job ``signal_delay_s`` seconds before its time
limit (``#SBATCH --signal=USR2@<delay>``; SLURM also sends it on preemption). Its handler then
calls the job's :meth:`RequeueableJob.checkpoint`, which returns the same job with
``resume=True``, and requeues it (``scontrol requeue``). The requeued job resumes from the run
folder's newest readable checkpoint, so at most ``train.checkpoint_every`` steps are redone.
Each task sets the ``torchrun``-style variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``) from submitit's ``JobEnvironment``, so the trainer
initialises its process group exactly as under ``torchrun``.

A job stopped by SIGTERM, SIGINT or SIGUSR1 (e.g. SLURM's preemption, which sends SIGTERM
``GraceTime`` seconds before SIGKILL) saves a checkpoint at the step it stopped and raises
:class:`~jepa_core.trainer.Preempted` (exit status 75 from ``jepa pretrain``); the job then
requeues itself the same way as on ``USR2`` (rank 0 runs submitit's requeue handler) and resumes
from that checkpoint, so no step is redone.

``--launcher local`` runs the same job through submitit's ``LocalExecutor`` on this machine
(one node), to try a submission without a cluster.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jepa_core.config import ConfigError

log = logging.getLogger(__name__)


class LauncherError(ConfigError):
    """A launcher that cannot be used here (e.g. submitit not installed)."""


def _submitit():
    from jepa_core.extras import require

    return require("submitit", extra="slurm", purpose="--launcher slurm")


@dataclass
class SlurmOptions:
    """What the sbatch script asks for. ``tasks_per_node`` defaults to ``gpus_per_node`` (one
    process per GPU; one task on a CPU-only node)."""

    nodes: int = 1
    gpus_per_node: int = 1
    tasks_per_node: int | None = None
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    time_min: int = 24 * 60
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    job_name: str = "jepa"
    signal_delay_s: int = 120  # USR2 this long before the time limit: time to stop cleanly
    max_requeues: int = 20  # requeues after a time-out (preemptions are not counted by submitit)
    setup: list[str] = field(default_factory=list)  # shell lines run before srun (module load ...)
    additional: dict[str, Any] = field(default_factory=dict)  # any other #SBATCH option

    def executor_parameters(self, cluster: str) -> dict[str, Any]:
        """``AutoExecutor.update_parameters`` arguments (generic names, ``slurm_`` prefixed ones)."""
        tasks = self.tasks_per_node or max(1, self.gpus_per_node)
        params: dict[str, Any] = {
            "nodes": self.nodes, "tasks_per_node": tasks, "gpus_per_node": self.gpus_per_node,
            "timeout_min": self.time_min, "name": self.job_name,
        }
        if self.cpus_per_task:
            params["cpus_per_task"] = self.cpus_per_task
        if self.mem_gb:
            params["mem_gb"] = self.mem_gb
        if cluster == "slurm":
            params["slurm_signal_delay_s"] = self.signal_delay_s
            # One task failing (an error, not a preemption) ends the others instead of leaving
            # them waiting in a collective.
            params["slurm_srun_args"] = ["--kill-on-bad-exit=1"]
            for key in ("partition", "account", "qos", "constraint"):
                if getattr(self, key):
                    params[f"slurm_{key}"] = getattr(self, key)
            if self.setup:
                params["slurm_setup"] = list(self.setup)
            # --requeue: the job may be requeued even where the cluster's default (JobRequeue) is 0.
            params["slurm_additional_parameters"] = {"requeue": True, **self.additional}
        elif cluster == "local":  # submitit.LocalExecutor's own names
            params = {"tasks_per_node": tasks, "gpus_per_node": self.gpus_per_node,
                      "timeout_min": self.time_min, "signal_delay_s": self.signal_delay_s}
            if self.setup:
                params["setup"] = list(self.setup)
        return params


def make_executor(folder: str | Path, options: SlurmOptions, cluster: str = "slurm"):
    """A configured ``submitit.AutoExecutor(cluster="slurm")``, or ``submitit.LocalExecutor``."""
    if cluster not in ("slurm", "local"):
        raise LauncherError(f"the launcher must be slurm or local, got {cluster!r}")
    submitit = _submitit()
    if cluster == "local" and options.nodes > 1:
        raise LauncherError("--launcher local runs on this machine: use --nodes 1")
    if cluster == "local":
        executor = submitit.LocalExecutor(folder=str(folder), max_num_timeout=options.max_requeues)
    else:
        executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster,
                                         slurm_max_num_timeout=options.max_requeues)
    executor.update_parameters(**options.executor_parameters(cluster))
    return executor


def _has_checkpoint(run_dir: Path) -> bool:
    folder = run_dir / "checkpoints"
    return folder.is_dir() and any(p.suffix == ".pt" and not p.name.startswith(".") for p in folder.iterdir())


class RequeueableJob:
    """A training job for submitit: ``fn(**kwargs, resume=...)`` run in every task with the
    distributed environment set, and requeued with ``resume=True`` on preemption or time-out
    (submitit calls :meth:`checkpoint`, then requeues).

    ``resume`` is also switched on when the run folder already holds a checkpoint, so a job
    that SLURM itself restarted (node failure, ``--requeue``) continues instead of failing.
    """

    def __init__(self, fn: Callable[..., Any], run_dir: str | Path, resume: bool = False, **kwargs: Any):
        self.fn, self.run_dir, self.resume, self.kwargs = fn, str(run_dir), resume, kwargs

    def __call__(self) -> Any:
        submitit = _submitit()
        env = submitit.JobEnvironment()
        if env.num_tasks > 1:
            local = env.cluster == "local"
            os.environ.update(
                RANK=str(env.global_rank), WORLD_SIZE=str(env.num_tasks), LOCAL_RANK=str(env.local_rank),
                LOCAL_WORLD_SIZE=str(env.num_tasks // env.num_nodes),
                MASTER_ADDR="127.0.0.1" if local else env.hostnames[0],
                MASTER_PORT=os.environ.get("MASTER_PORT") or str(_port(env.job_id)),
            )
        resume = self.resume or _has_checkpoint(Path(self.run_dir))
        if env.global_rank == 0:
            log.info("%s: %s, resume=%s", env, self.run_dir, resume)
        from jepa_core.trainer import Preempted

        try:
            return self.fn(run_dir=self.run_dir, resume=resume, **self.kwargs)
        except Preempted as e:
            return self._requeue_after(e, env.global_rank)

    def _requeue_after(self, stop: Exception, rank: int) -> None:
        """A clean stop by a signal with a checkpoint saved: requeue to resume. On rank 0 this
        runs submitit's handler of its requeue signal (``USR2``), which calls :meth:`checkpoint`,
        runs ``scontrol requeue`` and exits; the other ranks just return (the requeue restarts
        the whole job)."""
        import signal

        log.warning("%s; requeuing %s to resume", stop, self.run_dir)
        if rank != 0:
            return None
        signum = _submitit().JobEnvironment._usr_sig()
        handler = signal.getsignal(signum)
        if not callable(handler):
            raise LauncherError(
                f"{stop}, but submitit's {signal.Signals(signum).name} handler is not installed, so the job "
                "cannot requeue itself: resubmit it with --resume"
            ) from stop
        handler(signum, None)
        return None

    def checkpoint(self, *args: Any, **kwargs: Any):
        """submitit's requeue protocol: the job to run after the requeue (the same, resuming).
        The weights are not saved here (a signal handler on rank 0 cannot run the collective
        save); the trainer's periodic checkpoints are what the requeued job resumes from."""
        submitit = _submitit()
        log.warning("preempted or timed out: requeuing %s to resume from its newest checkpoint", self.run_dir)
        return submitit.helpers.DelayedSubmission(
            RequeueableJob(self.fn, self.run_dir, resume=True, **self.kwargs)
        )


def _port(job_id: str) -> int:
    """A rendezvous port derived from the job id (the same after a requeue)."""
    digits = "".join(c for c in str(job_id) if c.isdigit()) or "0"
    return 20000 + int(digits) % 20000


def submit_pretrain(
    method: str,
    preset: str | None,
    config_file: str | None,
    overrides: list[str] | None,
    run_dir: str | Path | None,
    resume: bool,
    options: SlurmOptions,
    cluster: str = "slurm",
):
    """Submit ``jepa pretrain`` as a requeueable job; returns the submitit job.

    The run folder is fixed at submission (default ``runs/<method>-<preset>-<time>``), so a
    requeued job finds its checkpoints; submitit's logs and pickles go to ``<run>/submitit``.
    """
    from jepa_core import registry
    from jepa_core.run import pretrain, resolve_run_dir

    spec = registry.get_method(method)
    cfg = spec.load_config(preset, config_file, overrides)  # fail here, not on the cluster
    run_dir = resolve_run_dir(cfg, run_dir, resume)
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    executor = make_executor(run_dir / "submitit", options, cluster)
    job = executor.submit(RequeueableJob(
        pretrain, run_dir, resume=resume, method=method, preset=preset, config_file=config_file,
        overrides=list(overrides or []),
    ))
    log.info("submitted job %s (%s); logs in %s", job.job_id, cluster, run_dir / "submitit")
    return job
