"""The training loop shared by every method: devices, precision, DDP or FSDP2, gradient
accumulation and clipping, per-iteration schedules, the target update, checkpoints and
resume, a NaN/inf policy, bad-sample accounting, progress and metrics. The method's own
algorithm lives in its ``forward(batch)``; the rest of what the loop needs from it comes
through the :class:`~jepa_core.method.JEPAMethod` hooks.

One step of :meth:`Trainer.fit`: ``_set_hyperparameters`` (schedules onto the optimizer's
groups), ``_train_step`` (``_forward_backward`` over the micro-batches, ``_clip_gradients``,
``_skip`` for the non-finite policy, optimizer step, ``update_target``), ``_log_row`` every
``train.log_every`` steps, ``_maybe_checkpoint``; ``_prepare`` before the first step and
``_finish`` after the last."""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import random
import resource
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset

from jepa_core import checkpoint as ckpt
from jepa_core.config import ConfigError, OptimConfig, TrainConfig, dump_yaml, to_dict, validate
from jepa_core.data import StampedDataset, StepBatchSampler
from jepa_core.distributed import (
    DistInfo,
    TrainableStep,
    all_reduce_max,
    all_reduce_mean,
    all_reduce_sum,
    barrier,
    broadcast_module_state,
    fully_shard_method,
    init_distributed,
    resolve_device,
    resolve_strategy,
)
from jepa_core.extras import require
from jepa_core.method import JEPAMethod
from jepa_core.optim import maybe_compile
from jepa_core.schedules import (
    CosineWD,
    LinearDecay,
    LinearMomentum,
    WarmupConstant,
    WarmupCosine,
    schedule_length,
)

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped without overwriting good checkpoints."""


class TooManyBadSamplesError(RuntimeError):
    """More corrupt samples than ``train.max_bad_fraction`` allows."""


#: The exit status of a run stopped by a signal after saving a checkpoint (``EX_TEMPFAIL``
#: from sysexits.h: "try again later"): resume with ``--resume``. The SLURM launcher requeues it.
PREEMPTED_EXIT_CODE = 75

#: The signals that stop :meth:`Trainer.fit` at the next step boundary with a checkpoint.
#: ``SIGUSR2`` is left to the SLURM launcher (submitit's requeue signal).
STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1")


class Preempted(Exception):
    """``fit`` was stopped by a signal (SIGTERM, SIGINT, SIGUSR1): every rank stopped after the
    same step and a checkpoint of that step was written. ``jepa pretrain`` exits with
    :data:`PREEMPTED_EXIT_CODE`; ``fit(resume=True)`` continues from it."""

    exit_code = PREEMPTED_EXIT_CODE

    def __init__(self, step: int, signum: int, checkpoint: Path | None = None):
        self.step, self.signum, self.checkpoint = step, signum, checkpoint
        try:
            self.signal_name = signal.Signals(signum).name
        except ValueError:
            self.signal_name = f"signal {signum}"
        super().__init__(
            f"stopped by {self.signal_name} at step {step} after saving a checkpoint; resume with --resume"
        )


class DistributedTimeoutError(RuntimeError):
    """A collective waited longer than ``train.dist_timeout_s`` for the other processes."""


@dataclass
class TrainState:
    step: int = 0  # optimizer steps completed
    samples_seen: int = 0
    bad_samples: int = 0
    batches_consumed: int = 0  # loader batches used, skipped all-corrupt ones included
    skipped_nonfinite: int = 0  # steps whose update was dropped (train.nonfinite=skip)
    last_loss: float = float("nan")  # the last logged loss (kept in checkpoints for the summary)


@dataclass
class FitResult:
    steps: int
    final_loss: float
    seconds: float
    samples_per_second: float
    run_dir: Path
    bad_samples: int = 0
    skipped_nonfinite: int = 0
    history: list[dict] = field(default_factory=list)
    start_step: int = 0  # the step this fit started (resumed) at


@dataclass
class _Loop:
    """What one ``fit`` call carries from step to step: the writers, and the sums over the
    updates since the last logged row."""

    metrics: MetricsWriter
    rank_metrics: MetricsWriter | None
    bar: Any
    autocast: Any
    nonfinite: torch.Tensor  # a kept update had a non-finite loss (stop policy: raise at the next row)
    loss_sum: torch.Tensor
    loss_count: int = 0  # micro-batches summed in loss_sum
    extra_sums: dict[str, torch.Tensor | float] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    t_start: float = 0.0
    t_log: float = 0.0
    step_at_log: int = 0
    samples_at_log: int = 0
    samples_at_start: int = 0
    step_at_start: int = 0
    last_loss: float = float("nan")
    consecutive_skips: int = 0


def move_to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(v, device) for v in batch)
    return batch


class Trainer:
    """Runs ``model`` on ``dataset`` (map-style) with ``collate_fn`` under the given configs.

    The data order, augmentations and masks of every step are functions of (seed, step, rank)
    (see :mod:`jepa_core.data`), and the checkpoint holds model, target, optimizer, step and
    RNG state, so ``fit(resume=True)`` continues exactly where a killed run stopped.
    Callbacks are called as ``cb(trainer, step, logs)`` after each logged step.

    The Trainer knows a method only through the :class:`~jepa_core.method.JEPAMethod` hooks:
    ``forward(batch)["loss"]``, ``trainable_modules()`` (wrapped, clipped),
    ``target_modules()`` and ``update_target(m)`` (broadcast or sharded, then updated after each
    optimizer step when there are any), ``build_optimizer(...)``.

    ``loss_hook(step, loss) -> loss``: for tests of the fault policies, called on each
    micro-batch's loss of (1-based) optimizer step ``step`` before the backward pass, e.g.
    :func:`jepa_core.testing.nan_at_steps`.
    """

    def __init__(
        self,
        model: JEPAMethod,
        dataset: Dataset,
        collate_fn: Callable,
        optim: OptimConfig,
        train: TrainConfig,
        run_dir: str | Path,
        batch_size: int,
        num_workers: int = 0,
        pin_memory: bool = False,
        config_dict: dict | None = None,
        callbacks: list[Callable] | None = None,
        loss_hook: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
        config: Any = None,
    ):
        # Settings out of range fail here with the key named, not as a ZeroDivisionError mid-run.
        validate(optim, "optim")
        validate(train, "train")
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ConfigError(f"data.batch_size must be >= 1, got data.batch_size={batch_size}")
        self.model, self.dataset, self.collate_fn = model, dataset, collate_fn
        self.loss_hook = loss_hook
        self.optim_cfg, self.train_cfg = optim, train
        self.run_dir = Path(run_dir)
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        if config is not None and config_dict is not None:
            raise ValueError("pass the run's config once: config=<method config> (or config_dict=<its dict>)")
        # The method's config (e.g. IJEPAConfig) makes the checkpoints first-class: they carry it,
        # and fit() writes <run_dir>/config.yaml, so `jepa eval` / `jepa convert` rebuild the model.
        self.config_dict = to_dict(config) if config is not None else (config_dict or {})
        self.callbacks = list(callbacks or [])
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.state = TrainState()

    # -- setup ---------------------------------------------------------------------------------

    def _setup(self) -> None:
        """Device, process group and precision; the model on the device and wrapped for the
        strategy; the optimizer (:meth:`JEPAMethod.build_optimizer`); the schedules."""
        tc = self.train_cfg
        if tc.num_threads:
            torch.set_num_threads(tc.num_threads)
        self.device = resolve_device(tc.device)
        self.dist: DistInfo = init_distributed(self.device, tc.dist_timeout_s)
        precision = tc.precision
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        self.amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None
        self.model.to(self.device)
        self.has_targets = bool(self.model.target_modules())
        self._wrap_model()
        accum = max(1, self.optim_cfg.grad_accum)
        self.global_batch = self.batch_size * self.dist.world_size * accum
        self._build_optimizer()
        self._build_schedules()

    def _num_samples(self) -> int:
        """``len(dataset)``: the Trainer takes map-style datasets, which have one."""
        return len(self.dataset)  # type: ignore[arg-type]

    def _record_config(self) -> None:
        """``config.yaml`` for a run the Python API started with a method config (``jepa pretrain``
        writes its own first, which is kept); a warning when there is no config to record."""
        if not self.config_dict.get("method"):
            log.warning("Trainer without config=<method config>: the checkpoints in %s carry no config, so "
                        "`jepa eval` / `jepa convert` cannot rebuild %s from them; pass config=cfg "
                        "(e.g. jepa_image.ijepa.IJEPAConfig) to make them loadable", self.ckpt_dir,
                        type(self.model).__name__)
            return
        path = self.run_dir / "config.yaml"
        if not path.exists():
            dump_yaml(self.config_dict, path)

    def _wrap_model(self) -> None:
        """Only the trainable modules go to the engine (DDP or FSDP2); the target modules get no
        gradients: DDP leaves them out (broadcast once from rank 0), FSDP shards them alike."""
        tc = self.train_cfg
        self.strategy = resolve_strategy(tc.strategy, self.dist)
        self.net: torch.nn.Module = self.model
        self.fsdp_roots: list = []
        if self.strategy == "ddp":
            for target in self.model.target_modules().values():
                broadcast_module_state(target, self.dist)
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DDP(TrainableStep(self.model), device_ids=ids)
        elif self.strategy == "fsdp":
            self.fsdp_roots = fully_shard_method(self.model, self.device, self.dist)
        if self.dist.is_main and self.dist.initialized:
            log.info("strategy %s over %d processes", self.strategy, self.dist.world_size)
        elif not self.dist.initialized and tc.strategy != "auto":
            log.info("train.strategy=%s applies under torchrun; this is a single process", tc.strategy)
        self.net = maybe_compile(self.net, tc.compile)

    def _lr_scale(self) -> float:
        """Linear LR scaling by the global batch (``optim.lr_scale_batch``), else 1."""
        oc = self.optim_cfg
        return self.global_batch / oc.lr_scale_batch if oc.lr_scale_batch else 1.0

    def _build_optimizer(self) -> None:
        try:
            optimizer = self.model.build_optimizer(self.optim_cfg, self.optim_cfg.start_lr * self._lr_scale(),
                                                   self.device)
        except ValueError as e:  # torch.optim's own checks (e.g. "Invalid beta parameter at index 1: 2.0")
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"the optimizer refuses these settings: {e}; check the optim.* keys "
                              f"(optim.betas={list(self.optim_cfg.betas)}, optim.eps={self.optim_cfg.eps:g})") from e
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"{type(self.model).__name__}.build_optimizer returned {type(optimizer).__name__}; it must return "
                "a torch.optim.Optimizer over the trainable modules' parameters"
            )
        self.optimizer = optimizer

    def _build_schedules(self) -> None:
        """Per-iteration LR, weight-decay and (with targets) EMA-momentum schedules over
        ``int(ipe_scale * epochs * ipe)`` steps (ijepa:src/train.py), ``ipe`` counting optimizer
        steps (micro-batches / ``grad_accum``)."""
        tc, oc = self.train_cfg, self.optim_cfg
        accum = max(1, oc.grad_accum)
        try:
            probe = StepBatchSampler(self._num_samples(), self.batch_size, 1, tc.seed, self.dist.rank,
                                     self.dist.world_size)
        except ValueError as e:  # the sampler's size checks (e.g. a dataset smaller than one batch) name the fix
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(str(e)) from e
        loader_ipe = probe.steps_per_epoch // accum
        if loader_ipe < 1:
            raise ConfigError(f"one epoch holds {probe.steps_per_epoch} micro-batches of data.batch_size="
                              f"{self.batch_size}, fewer than optim.grad_accum={accum}; lower optim.grad_accum "
                              "or data.batch_size")
        self.ipe = oc.ipe or loader_ipe
        T = schedule_length(oc.epochs, self.ipe, oc.ipe_scale)
        warm = int(oc.warmup * self.ipe)
        scale = self._lr_scale()
        start_lr, ref_lr, final_lr = oc.start_lr * scale, oc.lr * scale, oc.final_lr * scale
        self.lr_schedule: WarmupCosine | LinearDecay | WarmupConstant
        if oc.lr_schedule == "cosine":
            self.lr_schedule = WarmupCosine(start_lr, ref_lr, final_lr, warm, T)
        elif oc.lr_schedule == "linear":
            self.lr_schedule = LinearDecay(ref_lr, final_lr, T)
        else:
            self.lr_schedule = WarmupConstant(start_lr, ref_lr, warm)
        self.wd_schedule = CosineWD(oc.weight_decay, oc.final_weight_decay, T)
        # The EMA momentum only matters for a method with target modules.
        self.momentum_schedule = LinearMomentum(oc.ema[0], oc.ema[1], T) if self.has_targets else None
        self.warmup_steps = warm
        self.total_steps = int(oc.epochs * self.ipe)
        if oc.max_steps is not None and oc.max_steps < self.total_steps:
            self.total_steps = oc.max_steps
            if self.dist.is_main:  # the documented choice: a cut, not a rescaled schedule
                log.info("optim.max_steps=%d stops the run at step %d of its %d-step schedules (LR then %.3g, "
                         "not yet annealed); to run a whole, shorter schedule lower optim.epochs or optim.ipe",
                         oc.max_steps, oc.max_steps, T, self.lr_schedule.value(oc.max_steps))

    def _loader(self, start_batch: int) -> DataLoader:
        # Endless: a batch whose samples were all corrupt is skipped, so a run may need more
        # batches than steps; the position to resume from is the number of batches consumed.
        tc = self.train_cfg
        sampler = StepBatchSampler(
            self._num_samples(), self.batch_size, None, tc.seed, self.dist.rank, self.dist.world_size,
            start_step=start_batch,
        )
        return DataLoader(
            StampedDataset(self.dataset, tc.seed), batch_sampler=sampler, collate_fn=self.collate_fn,
            num_workers=self.num_workers, pin_memory=self.pin_memory and self.device.type == "cuda",
            persistent_workers=False, prefetch_factor=4 if self.num_workers else None,
        )

    # -- checkpoints -----------------------------------------------------------------------------

    def _rng_state(self) -> dict:
        state = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def full_state_dicts(self) -> tuple[dict, dict]:
        """Model and optimizer state dicts in their unsharded form. Under FSDP this is a
        collective (every rank must call it) that gathers onto rank 0's CPU
        (``torch.distributed.checkpoint.state_dict.get_model_state_dict`` with
        ``full_state_dict=True, cpu_offload=True``); the other ranks get empty dicts. The
        optimizer state is then keyed by parameter name instead of number."""
        if self.strategy != "fsdp":
            return self.model.state_dict(), self.optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return (
            get_model_state_dict(self.model, options=opts),
            get_optimizer_state_dict(self.model, self.optimizer, options=opts),
        )

    def _last_loss(self) -> float:
        loop = getattr(self, "_loop", None)
        return self.state.last_loss if loop is None else loop.last_loss

    def save_checkpoint(self) -> Path | None:
        model_sd, optim_sd = self.full_state_dicts()
        if self.dist.is_main:
            obj = {
                "format": "jepa-run",
                "version": 1,
                "step": self.state.step,
                "samples_seen": self.state.samples_seen,
                "bad_samples": self.state.bad_samples,
                "batches_consumed": self.state.batches_consumed,
                "skipped_nonfinite": self.state.skipped_nonfinite,
                # A resume with no step left still reports the run's final loss (None: none logged yet).
                "last_loss": None if math.isnan(self._last_loss()) else self._last_loss(),
                "model": model_sd,
                "optimizer": optim_sd,
                "optimizer_keys": "names" if self.strategy == "fsdp" else "ids",
                "world_size": self.dist.world_size,
                "data_layout": [self.batch_size * self.dist.world_size, max(1, self.optim_cfg.grad_accum)],
                "scaler": self.scaler.state_dict() if self.scaler else None,
                "rng": self._rng_state(),
                "config": self.config_dict,
                "method": self.config_dict.get("method"),
                "model_class": f"{type(self.model).__module__}.{type(self.model).__qualname__}",
            }
            path = ckpt.atomic_save(obj, self.ckpt_dir / f"step-{self.state.step}.pt")
            ckpt.atomic_link(path, self.ckpt_dir / "latest.pt")
            for _, old in ckpt.step_checkpoints(self.ckpt_dir)[: -max(1, self.train_cfg.keep_last)]:
                old.unlink(missing_ok=True)
        barrier(self.dist)
        return self.ckpt_dir / "latest.pt"

    def _load_states(self, obj: dict, path: Path | None = None) -> None:
        # Shapes first: a checkpoint of another architecture is named as such, not a
        # size-mismatch traceback from load_state_dict.
        ckpt.check_fits(self.model.state_dict(), obj["model"], path or "checkpoint", self.run_dir,
                        getattr(self.model, "explain_checkpoint_mismatch", None))
        by_name = obj.get("optimizer_keys") == "names"
        if self.strategy != "fsdp" and not by_name:
            self.model.load_state_dict(obj["model"])
            self.optimizer.load_state_dict(obj["optimizer"])
            return
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        optim_sd = obj["optimizer"] if by_name else self._optimizer_state_by_name(obj["optimizer"])
        opts = StateDictOptions(full_state_dict=True)
        set_model_state_dict(self.model, obj["model"], options=opts)
        set_optimizer_state_dict(self.model, self.optimizer, optim_sd, options=opts)

    def _optimizer_state_by_name(self, sd: dict) -> dict:
        """A ``torch.optim`` state dict (parameters numbered in param-group order) keyed by
        parameter name instead, the form ``set_optimizer_state_dict`` takes."""
        names = {id(p): n for n, p in self.model.named_parameters()}
        order = [names[id(p)] for g in self.optimizer.param_groups for p in g["params"]]
        saved = [i for g in sd["param_groups"] for i in g["params"]]
        if len(saved) != len(order):
            raise ckpt.CheckpointError(
                f"the checkpoint's optimizer has {len(saved)} parameters, this model trains {len(order)}"
            )
        to_name = dict(zip(saved, order))
        return {
            "state": {to_name[i]: v for i, v in sd["state"].items()},
            "param_groups": [dict(g, params=[to_name[i] for i in g["params"]]) for g in sd["param_groups"]],
        }

    def _resume(self) -> bool:
        # The newest file with model/optimizer/step that loads; files that fail are logged and
        # skipped, and a folder whose checkpoint files all fail raises (before metrics.csv is
        # touched) rather than silently starting over.
        found = ckpt.latest_valid(self.ckpt_dir, required=ckpt.RUN_KEYS, strict=True)
        if found is None:
            return False
        path, obj = found
        self._load_states(obj, path)
        if self.scaler and obj.get("scaler"):
            self.scaler.load_state_dict(obj["scaler"])
        rng = obj.get("rng", {})
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "python" in rng:
            random.setstate(_as_python_rng_state(rng["python"]))
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        accum = max(1, self.optim_cfg.grad_accum)
        self.state = TrainState(
            obj["step"], obj.get("samples_seen", 0), obj.get("bad_samples", 0),
            obj.get("batches_consumed", obj["step"] * accum), obj.get("skipped_nonfinite", 0),
            float("nan") if obj.get("last_loss") is None else float(obj["last_loss"]),
        )
        if self.dist.is_main:
            log.info("resumed from %s at step %d", path, self.state.step)
            # Ranks interleave the epoch permutation, so the data order only depends on the
            # samples per loader step over all ranks and on the micro-batches per step.
            layout = (self.batch_size * self.dist.world_size, accum)
            saved = tuple(obj.get("data_layout", layout))
            if saved != layout:
                log.warning(
                    "the checkpoint was written with %d samples per loader step over all processes and "
                    "%d micro-batches per step, this run has %d and %d: the weights and schedules continue, "
                    "but the data order from here on differs from the original run", *saved, *layout,
                )
        return True

    # -- the loop --------------------------------------------------------------------------------

    def fit(self, resume: bool = False) -> FitResult:
        """Train to ``total_steps`` (resuming from the newest readable checkpoint with
        ``resume``): per step, set the schedules' values, run the micro-batches and the update,
        log a row every ``train.log_every`` steps and checkpoint every ``train.checkpoint_every``.

        While it runs, SIGTERM, SIGINT and SIGUSR1 (:data:`STOP_SIGNALS`; handlers installed in
        the main thread only, the previous ones restored afterwards) stop the run at the next
        step boundary: all ranks agree on that step, a checkpoint of it is written and
        :class:`Preempted` is raised. A collective that waits longer than
        ``train.dist_timeout_s`` for a hung rank raises :class:`DistributedTimeoutError`."""
        with self._stop_signals():
            try:
                self._prepare(resume)
                data_iter = iter(self._loader(self.state.batches_consumed))
                for step in range(self.state.step, self.total_steps):
                    hp = self._set_hyperparameters(step)
                    self._train_step(step, data_iter, hp)
                    self.state.step = step + 1
                    is_last = self.state.step == self.total_steps
                    if self.state.step % self.train_cfg.log_every == 0 or is_last:
                        self._log_row(step, hp)
                    if self._loop.bar is not None:
                        self._loop.bar.update(1)
                    self._maybe_checkpoint(step, is_last)
                    self._maybe_stop(step, is_last)
                return self._finish()
            except RuntimeError as e:
                if isinstance(e, DistributedTimeoutError) or not _is_timeout(e):
                    raise
                dist_info = getattr(self, "dist", None)
                if dist_info is None or not dist_info.initialized or dist_info.world_size < 2:
                    raise
                raise DistributedTimeoutError(
                    f"rank {dist_info.rank}: a collective waited more than train.dist_timeout_s="
                    f"{self.train_cfg.dist_timeout_s:g} s for the other processes, so one of them is hung, "
                    "stopped or dead. Check the other ranks' logs, then resume with --resume (raise "
                    f"train.dist_timeout_s if a step legitimately takes longer). ({e})"
                ) from e

    @contextlib.contextmanager
    def _stop_signals(self):
        """For the duration of ``fit``: :data:`STOP_SIGNALS` only record the first signal
        (``self._stop_signal``), acted on at the next step boundary (:meth:`_maybe_stop`). A
        second signal does not interrupt the checkpoint write."""
        self._stop_signal = 0
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be installed in the main thread
            return

        def on_signal(signum, frame):
            dist_info = getattr(self, "dist", None)
            quiet = dist_info is not None and not dist_info.is_main
            name = signal.Signals(signum).name
            if not self._stop_signal:
                self._stop_signal = signum
                msg = f"jepa: {name} received; stopping after this step and saving a checkpoint\n"
            else:
                msg = f"jepa: {name} received; already stopping, the checkpoint is being saved\n"
            if not quiet:
                with contextlib.suppress(OSError):
                    os.write(2, msg.encode())

        previous = {}
        for name in STOP_SIGNALS:
            signum = getattr(signal, name, None)
            if signum is not None:
                previous[signum] = signal.signal(signum, on_signal)
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

    def _maybe_stop(self, step: int, is_last: bool) -> None:
        """At a step boundary: whether a stop signal came to any rank (with several processes one
        all-reduce every ``train.stop_check_every`` steps, so that all stop after the same step). If so, write a checkpoint of this step
        (unless :meth:`_maybe_checkpoint` just did), close the writers and raise
        :class:`Preempted`."""
        if self.dist.initialized and self.dist.world_size > 1:
            if not (self.state.step % self.train_cfg.stop_check_every == 0 or is_last):
                return  # ranks agree only every train.stop_check_every steps (a host sync each time)
            flag = torch.tensor(float(self._stop_signal), device=self.device)
            signum = int(all_reduce_max(flag, self.dist).item())
        else:
            signum = self._stop_signal
        if not signum:
            return
        if not (self.state.step % self.train_cfg.checkpoint_every == 0 or is_last):
            self._save_unless_nonfinite(step)
        self._finish()
        raise Preempted(self.state.step, signum, self.ckpt_dir / "latest.pt")

    def _prepare(self, resume: bool) -> None:
        """Set up, clean interrupted checkpoint writes, resume, open the metrics writers and
        start the per-fit accumulators (``self._loop``)."""
        self._setup()
        if self.dist.is_main:
            for p in ckpt.remove_stale_temp_files(self.ckpt_dir):
                log.info("removed %s, left by an interrupted checkpoint write", p.name)
        barrier(self.dist)
        if resume and not self._resume() and self.dist.is_main:
            log.info("no checkpoint in %s; starting from scratch", self.ckpt_dir)
        tc = self.train_cfg
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._record_config()
        barrier(self.dist)
        metrics = MetricsWriter(
            self.run_dir, self.state.step, enabled=self.dist.is_main, tensorboard=tc.tensorboard,
            wandb=tc.wandb, config=self.config_dict,
        )
        rank_metrics = None
        if tc.per_rank_metrics:
            rank_metrics = MetricsWriter(self.run_dir, self.state.step, name=f"metrics-rank{self.dist.rank}.csv")
        bar = None
        if tc.progress and self.dist.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.total_steps, initial=self.state.step, desc="pretrain", unit="step", dynamic_ncols=True)
        autocast = (
            torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else contextlib.nullcontext()
        )
        now = time.perf_counter()
        self._loop = _Loop(
            metrics=metrics, rank_metrics=rank_metrics, bar=bar, autocast=autocast,
            nonfinite=torch.zeros((), dtype=torch.bool, device=self.device),
            loss_sum=torch.zeros((), device=self.device),
            t_start=now, t_log=now, step_at_log=self.state.step,
            samples_at_log=self.state.samples_seen, samples_at_start=self.state.samples_seen,
            last_loss=self.state.last_loss, step_at_start=self.state.step,
        )
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.model.train()

    def _set_hyperparameters(self, step: int) -> dict[str, float]:
        """The schedules' values for update ``step`` (0-based), set on the optimizer's groups:
        ``lr`` on all, ``weight_decay`` on those without ``WD_exclude``. Returns them (and the
        EMA momentum when the method has targets) for the log."""
        lr, wd = self.lr_schedule.value(step), self.wd_schedule.value(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            if not group.get("WD_exclude", False):
                group["weight_decay"] = wd
        hp = {"lr": lr, "wd": wd}
        if self.momentum_schedule is not None:
            hp["momentum"] = self.momentum_schedule.value(step)
        return hp

    def _train_step(self, step: int, data_iter, hp: dict[str, float]) -> None:
        """One optimizer step: the micro-batches' forward and backward, gradient clipping, the
        non-finite policy, then the optimizer step and the target update, or (skip policy) no
        update at all."""
        step_bad, step_loss, step_extras = self._forward_backward(step, data_iter)
        for p in self.model.idle_parameters():  # zero gradients DDP needed: no update, as in one process
            p.grad = None
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        step_bad = self._clip_gradients(step, step_bad)
        if self._skip(step_bad):
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler:
                self.scaler.update()
            self.state.skipped_nonfinite += 1
            self._loop.consecutive_skips += 1
            self._check_skips(step, self._loop.consecutive_skips)
            return
        self._loop.consecutive_skips = 0
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.has_targets:
            self.model.update_target(hp["momentum"])
        loop = self._loop
        loop.nonfinite |= step_bad
        loop.loss_sum += step_loss
        loop.loss_count += max(1, self.optim_cfg.grad_accum)
        for k, v in step_extras.items():
            loop.extra_sums[k] = loop.extra_sums.get(k, 0.0) + v

    def _forward_backward(self, step: int, data_iter) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """``grad_accum`` micro-batches: forward under autocast, backward of ``loss / accum``
        (gradients synchronised on the last one only). Returns whether any loss was non-finite,
        the sum of the losses and the sums of the other logged outputs."""
        accum = max(1, self.optim_cfg.grad_accum)
        step_bad = torch.zeros((), dtype=torch.bool, device=self.device)
        step_loss = torch.zeros((), device=self.device)
        step_extras: dict[str, torch.Tensor | float] = {}
        for micro in range(accum):
            batch = move_to(self._next_batch(data_iter), self.device)
            last = micro == accum - 1
            for root in self.fsdp_roots:
                root.set_requires_gradient_sync(last)
            no_sync = isinstance(self.net, DDP) and not last
            with self.net.no_sync() if no_sync else contextlib.nullcontext():
                with self._loop.autocast:
                    out = self.net(batch)
                loss = out["loss"]
                if self.loss_hook is not None:
                    loss = self.loss_hook(step + 1, loss)
                scaled = loss.float() / accum
                (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            step_bad |= ~torch.isfinite(loss.detach())
            step_loss += loss.detach().float()
            for k, v in out.items():
                if k != "loss":
                    v = v.detach().float() if isinstance(v, torch.Tensor) else float(v)
                    step_extras[k] = step_extras.get(k, 0.0) + v
        return step_bad, step_loss, step_extras

    def _clip_gradients(self, step: int, step_bad: torch.Tensor) -> torch.Tensor:
        """With ``optim.clip_grad``, after warm-up: each trainable module's gradient norm clipped
        separately (jepa:app/vjepa/train.py). Under the skip policy a non-finite norm marks
        the step bad."""
        clip = self.optim_cfg.clip_grad
        if clip is not None and step >= self.warmup_steps:
            for module in self.model.trainable_modules().values():
                norm = torch.nn.utils.clip_grad_norm_(module.parameters(), clip, foreach=True)
                if self.train_cfg.nonfinite == "skip":
                    step_bad |= ~torch.isfinite(_full(norm))
        return step_bad

    def _skip(self, step_bad: torch.Tensor) -> bool:
        """Skip policy: whether to drop this step's update. One host sync per step, agreed by all
        ranks: every rank skips or none does. Stop policy: never (checked at the next log)."""
        if self.train_cfg.nonfinite != "skip":
            return False
        return bool(all_reduce_sum(step_bad.float(), self.dist).item() > 0)

    def _log_row(self, step: int, hp: dict[str, float]) -> None:
        """A metrics row (means over the updates since the last row, all ranks), to metrics.csv,
        TensorBoard / W&B, the progress bar and the callbacks. Stops on a non-finite loss."""
        loop = self._loop
        local_loss = loop.loss_sum / max(loop.loss_count, 1)
        mean_loss = all_reduce_mean(local_loss, self.dist)
        if bool(all_reduce_mean(loop.nonfinite.float(), self.dist).item() > 0):
            self._stop_nonfinite(step)
        counts = all_reduce_sum(
            torch.tensor([self.state.bad_samples, self.state.samples_seen], dtype=torch.float64,
                         device=self.device), self.dist,
        ).tolist()
        loop.last_loss = float(mean_loss) if loop.loss_count else float("nan")
        now = time.perf_counter()
        dt = max(now - loop.t_log, 1e-9)
        local_rate = (self.state.samples_seen - loop.samples_at_log) / dt
        row = {
            "step": self.state.step,
            "epoch": round(self.state.step / self.ipe, 4),
            "loss": loop.last_loss,
            **hp,
            "samples_per_s": round(local_rate * self.dist.world_size, 2),
            "step_time_s": round(dt / max(self.state.step - loop.step_at_log, 1), 5),
            "elapsed_s": round(now - loop.t_start, 2),
            "bad_samples": int(counts[0]),
            "skipped_nonfinite": self.state.skipped_nonfinite,
            "peak_mem_mb": round(_peak_memory_mb(self.device), 1),
        }
        for k, v in loop.extra_sums.items():
            row[k] = float(v) / max(loop.loss_count, 1)
        loop.metrics.write(row)
        if loop.rank_metrics is not None:
            loop.rank_metrics.write(dict(
                row, loss=float(local_loss) if loop.loss_count else float("nan"),
                samples_per_s=round(local_rate, 2), bad_samples=self.state.bad_samples, rank=self.dist.rank,
            ))
        loop.history.append(row)
        if loop.bar is not None:
            loop.bar.set_postfix(loss=f"{loop.last_loss:.4f}", lr=f"{hp['lr']:.2e}",
                                 img_s=f"{row['samples_per_s']:.0f}", refresh=False)
        for cb in self.callbacks:
            cb(self, self.state.step, row)
        loop.loss_sum.zero_()
        loop.loss_count = 0
        loop.extra_sums = {}
        loop.t_log, loop.samples_at_log, loop.step_at_log = now, self.state.samples_seen, self.state.step

    def _maybe_checkpoint(self, step: int, is_last: bool) -> None:
        """Every ``train.checkpoint_every`` steps and at the end; never over a non-finite run."""
        if self.state.step % self.train_cfg.checkpoint_every == 0 or is_last:
            self._save_unless_nonfinite(step)

    def _save_unless_nonfinite(self, step: int) -> None:
        if bool(all_reduce_mean(self._loop.nonfinite.float(), self.dist).item() > 0):
            self._stop_nonfinite(step)
        self.save_checkpoint()

    def _finish(self) -> FitResult:
        loop = self._loop
        if loop.bar is not None:
            loop.bar.close()
        loop.metrics.close()
        if loop.rank_metrics is not None:
            loop.rank_metrics.close()
        seconds = time.perf_counter() - loop.t_start
        samples = (self.state.samples_seen - loop.samples_at_start) * self.dist.world_size
        return FitResult(
            steps=self.state.step, final_loss=loop.last_loss, seconds=seconds,
            samples_per_second=samples / max(seconds, 1e-9), run_dir=self.run_dir,
            bad_samples=self.state.bad_samples, skipped_nonfinite=self.state.skipped_nonfinite,
            history=loop.history, start_step=loop.step_at_start,
        )

    def _check_skips(self, step: int, consecutive: int) -> None:
        tc = self.train_cfg
        total = self.state.skipped_nonfinite
        if consecutive > tc.max_nonfinite_consecutive or total > tc.max_nonfinite:
            raise NonFiniteLossError(
                f"the loss or gradients were NaN/inf at step {step + 1}: {consecutive} steps in a row and "
                f"{total} in all were skipped (limits train.max_nonfinite_consecutive="
                f"{tc.max_nonfinite_consecutive}, train.max_nonfinite={tc.max_nonfinite}). Lower optim.lr, "
                "set optim.clip_grad, use train.precision=fp32 (or bf16 rather than fp16) or check the inputs; "
                "then continue with --resume"
            )

    def _next_batch(self, data_iter) -> Any:
        """The next usable batch; counts corrupt samples and skips batches with none left."""
        while True:
            batch = next(data_iter)
            self.state.batches_consumed += 1
            if isinstance(batch, dict):
                self.state.bad_samples += int(batch.pop("num_bad", 0) or 0)
                skip = batch.pop("skip", False)
            else:
                skip = False
            n = 0 if skip else _batch_len(batch)
            self.state.samples_seen += n
            self._check_bad_samples()
            if not skip:
                return batch

    def _check_bad_samples(self) -> None:
        seen = self.state.samples_seen + self.state.bad_samples
        limit = self.train_cfg.max_bad_fraction
        # Judge the fraction only once enough samples were seen for it to mean something.
        if self.state.bad_samples and seen >= 100 and self.state.bad_samples / seen > limit:
            raise TooManyBadSamplesError(
                f"{self.state.bad_samples} of {seen} samples could not be read "
                f"(more than train.max_bad_fraction={limit}); check the dataset, or raise the limit"
            )

    def _stop_nonfinite(self, step: int) -> None:
        latest = self.ckpt_dir / "latest.pt"
        where = f"the last good checkpoint is {latest}" if latest.exists() else "no checkpoint was written yet"
        then = "then continue with --resume" if latest.exists() else "then run again"
        raise NonFiniteLossError(
            f"the loss became NaN or infinite by step {step + 1}; stopped without saving ({where}). Lower optim.lr, "
            "set optim.clip_grad, use train.precision=fp32 (or bf16 rather than fp16), check the inputs, or set "
            f"train.nonfinite=skip; {then}"
        )


def _is_timeout(e: BaseException) -> bool:
    """A collective's time-out (gloo: "Timed out waiting ...ms", NCCL: "... timeout ...")."""
    text = str(e).lower()
    return "timed out" in text or "timeout" in text


def _full(t: torch.Tensor) -> torch.Tensor:
    """A plain tensor from a (replicated) DTensor, e.g. a grad norm under FSDP2."""
    full_tensor = getattr(t, "full_tensor", None)
    return full_tensor() if callable(full_tensor) else t


def _peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: ``torch.cuda.max_memory_allocated`` on CUDA, else the peak
    resident set size (``resource.getrusage``, KiB on Linux)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _batch_len(batch: Any) -> int:
    if isinstance(batch, dict):
        for v in batch.values():
            if isinstance(v, torch.Tensor):
                return int(v.shape[0])
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return int(batch[0].shape[0])
    return 0


def _as_python_rng_state(state: Any) -> tuple:
    # weights_only loading gives lists where random.getstate() had tuples.
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def _rewrite_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    """Replace ``path`` by a CSV of ``rows``, atomically: a kill during the rewrite (on resume,
    or when new columns appear) leaves the old file, never an empty or half-written one."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class MetricsWriter:
    """metrics.csv (one row per logged step; rows past a resume point are dropped) and,
    optionally, TensorBoard scalars and Weights & Biases."""

    def __init__(
        self, run_dir: Path, start_step: int, enabled: bool = True, tensorboard: bool = False,
        wandb: bool | dict = False, config: dict | None = None, name: str = "metrics.csv",
    ):
        self.enabled = enabled
        self.path = run_dir / name
        self.fields: list[str] | None = None
        self.tb = None
        self.wandb = None
        if not enabled:
            return
        kept: list[dict] = []
        if self.path.exists():
            with open(self.path, newline="") as f:
                reader = csv.DictReader(f)
                self.fields = list(reader.fieldnames) if reader.fieldnames else None
                kept = [r for r in reader if int(float(r["step"])) <= start_step]
        if self.fields:
            with self._naming_storage_errors():
                _rewrite_csv(self.path, self.fields, kept)
        if tensorboard:
            tensorboard_module = require("torch.utils.tensorboard", extra="tensorboard", purpose="train.tensorboard=true")
            self.tb = tensorboard_module.SummaryWriter(str(run_dir / "tensorboard"))
        if wandb:
            self.wandb = _start_wandb(run_dir, wandb if isinstance(wandb, dict) else {}, config or {})

    @contextlib.contextmanager
    def _naming_storage_errors(self):
        """A full disk (or a read-only folder) raises a :class:`~jepa_core.checkpoint.StorageError`
        that names this file."""
        try:
            yield
        except OSError as e:
            ckpt.raise_storage_error(e, self.path, "metrics file")
            raise

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        with self._naming_storage_errors():
            self._write_csv(row)
        scalars = {k: v for k, v in row.items()
                   if k != "step" and isinstance(v, (int, float)) and math.isfinite(v)}
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, row["step"])
        if self.wandb is not None:
            self.wandb.log(scalars, step=row["step"])

    def _write_csv(self, row: dict) -> None:
        if self.fields is None:
            self.fields = list(row)
            with open(self.path, "w", newline="") as f:
                csv.DictWriter(f, fieldnames=self.fields).writeheader()
        elif any(k not in self.fields for k in row):
            # A resumed run of an older version logs new columns: rewrite the header.
            with open(self.path, newline="") as f:
                rows = list(csv.DictReader(f))
            self.fields = self.fields + [k for k in row if k not in self.fields]
            _rewrite_csv(self.path, self.fields, rows)
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore").writerow(row)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def _start_wandb(run_dir: Path, settings: dict, config: dict):
    """``wandb.init`` with a run id kept in the run folder, so that a resumed (or requeued)
    run continues the same W&B run (``resume="allow"``)."""
    wandb = require("wandb", extra="wandb", purpose="train.wandb (or set train.wandb=false)")
    id_file = run_dir / "wandb-id.txt"
    if id_file.is_file():
        run_id = id_file.read_text().strip()
    else:
        run_id = settings.get("id") or wandb.util.generate_id()
        id_file.write_text(run_id)
    kwargs = {"name": run_dir.name, "dir": str(run_dir), "config": config, "resume": "allow"}
    kwargs.update(settings)
    kwargs["id"] = run_id
    return wandb.init(**kwargs)
